"""MONAI-style transforms: array transforms with their dictionary twins."""

from spine_monai.transforms.augment import view_augmentations
from spine_monai.transforms.batch import (
    AugmentBatch,
    RandGaussianNoiseBatch,
    RandGaussianNoiseBatchd,
    RandSpatialBatch,
    RandSpatialBatchd,
)
from spine_monai.transforms.classifier import ClassifierInputs, classifier_geometry, classifier_input_grid
from spine_monai.transforms.compose import UntrackedCompose
from spine_monai.transforms.intensity import LocalContrast, LocalContrastd
from spine_monai.transforms.io import (
    LoadRadiograph,
    LoadRadiographd,
    LoadStructureMasks,
    LoadStructureMasksd,
    SaveStructureMasks,
    SaveStructureMasksd,
    overlay_masks,
)
from spine_monai.transforms.masks import BinarizeMasks, BinarizeMasksd, ThinLines, ThinLinesd
from spine_monai.transforms.noise import fixed_noise
from spine_monai.transforms.spatial import (
    ResizeMasksToFit,
    ResizeMasksToFitd,
    ResizeToFit,
    ResizeToFitd,
    fit_size,
)
from spine_monai.transforms.vertebrae import VertebraPatches, VertebraPatchesd
from spine_monai.transforms.volume import LoadVolume, LoadVolumed, SaveLabelVolume, SaveLabelVolumed

__all__ = [
    "ClassifierInputs",
    "AugmentBatch",
    "BinarizeMasks",
    "BinarizeMasksd",
    "LocalContrast",
    "LocalContrastd",
    "LoadRadiograph",
    "LoadRadiographd",
    "LoadStructureMasks",
    "LoadStructureMasksd",
    "LoadVolume",
    "LoadVolumed",
    "RandGaussianNoiseBatch",
    "RandGaussianNoiseBatchd",
    "RandSpatialBatch",
    "RandSpatialBatchd",
    "ResizeMasksToFit",
    "ResizeMasksToFitd",
    "ResizeToFit",
    "ResizeToFitd",
    "SaveStructureMasks",
    "SaveLabelVolume",
    "SaveLabelVolumed",
    "SaveStructureMasksd",
    "ThinLines",
    "ThinLinesd",
    "UntrackedCompose",
    "VertebraPatches",
    "VertebraPatchesd",
    "classifier_geometry",
    "classifier_input_grid",
    "fit_size",
    "fixed_noise",
    "overlay_masks",
    "view_augmentations",
]
