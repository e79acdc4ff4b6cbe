"""The patient classifier's inputs: which views and masks it reads, at film or vertebra level, and their geometry
(each whole film fitted to one size, or one patch per vertebral body)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from monai.transforms import MapTransform, SpatialPadd

from spine_monai.data.classification import (
    check_views,
    cls_inference_inputs,
    cls_records,
    default_mask_structures,
    image_keys,
    mask_key,
    mask_source,
    view_channels,
    view_structures,
)
from spine_monai.data.inputs import InferenceInputs
from spine_monai.transforms.augment import view_augmentations
from spine_monai.transforms.io import LoadRadiographd, LoadStructureMasksd
from spine_monai.transforms.spatial import ResizeMasksToFitd, ResizeToFitd
from spine_monai.transforms.vertebrae import VertebraPatches, VertebraPatchesd
from spine_monai.workflow import as_bool

__all__ = ["ClassifierInputs", "classifier_geometry", "classifier_input_grid"]


def classifier_input_grid(spatial_size: Sequence[int], vertebra_level: bool, patch_size: int) -> list[int]:
    """The (H, W) of each view as the classifier's network receives it from :func:`classifier_geometry`.

    Args:
        spatial_size: the whole-film input size.
        vertebra_level: vertebra patches instead of whole films (text such as ``'true'`` is read as
            :func:`spine_monai.workflow.as_bool` reads it).
        patch_size: the side of a vertebra patch.

    Returns:
        ``[patch_size, patch_size]`` at vertebra level, else ``spatial_size``.
    """
    return [int(patch_size)] * 2 if as_bool(vertebra_level) else [int(s) for s in spatial_size]


def _vertebra(view: str) -> str:
    return f"{view.capitalize()}_Vertebra"


def classifier_geometry(
    views: Sequence[str],
    image_keys: Sequence[str],
    spatial_size: Sequence[int],
    vertebra_level: bool = False,
    mask_structures: Sequence[str] = (),
    patch_size: int = 32,
    max_vertebrae: int = 20,
    window: float = 2.2,
) -> list[MapTransform]:
    """The transforms that bring loaded, intensity-scaled views (and masks) to the network's input geometry.

    Whole films: each film is resized to fit ``spatial_size`` with its aspect ratio kept, its masks downsampled by
    area coverage, and everything padded to ``spatial_size``. Vertebra level: each view is cut into
    :py:class:`~spine_monai.transforms.VertebraPatchesd` patches around the bodies of its vertebra mask.

    Args:
        views: the view keys, in the network's order.
        image_keys: every key the network reads (views and mask keys), as from
            :func:`spine_monai.data.classification.image_keys`.
        spatial_size: the whole-film input size (H, W).
        vertebra_level: cut vertebra patches instead.
        mask_structures: the mask structures read; at vertebra level each view's first one must be its vertebra
            mask (``Ap_Vertebra``, ``Lat_Vertebra``).
        patch_size, max_vertebrae, window: as for :py:class:`~spine_monai.transforms.VertebraPatches`.

    Returns:
        the transforms, in order. Their trace on each view key maps network-sized maps back onto the film.

    Raises:
        ValueError: at vertebra level, when a view's first mask structure is not its vertebra mask.
    """
    mask_keys = [k for k in image_keys if k not in views]
    if not vertebra_level:
        out: list[MapTransform] = [ResizeToFitd(keys=list(views), spatial_size=spatial_size)]
        if mask_keys:
            out.append(ResizeMasksToFitd(keys=mask_keys, spatial_size=spatial_size, coverage=0.5))
        return [*out, SpatialPadd(keys=list(image_keys), spatial_size=spatial_size)]
    per_view = view_structures(views, mask_structures)
    wrong = [v for v in views if mask_key(v) not in image_keys or per_view[v][:1] != [_vertebra(v)]]
    if wrong:
        raise ValueError(
            f"the vertebra-level classifier cuts its patches around the bodies of each view's vertebra mask: "
            f"mask_structures must start, for the views {wrong}, with {[_vertebra(v) for v in wrong]}; "
            f"got {list(mask_structures)}"
        )
    return [
        VertebraPatchesd(
            keys=list(views),
            mask_keys=[mask_key(v) for v in views],
            patch_size=patch_size,
            max_vertebrae=max_vertebrae,
            window=window,
        )
    ]


class ClassifierInputs:
    """What the patient classifier reads, built once from the bundle's keys: the views, their masks, film or vertebra
    level, and the grid.

    The config builds one and refers to it for the records, the loading, geometry and augmentation transforms, the
    keys concatenated into the network's input and the network's channels per view.

    Example (the classification bundle's ``train.json``)::

        "classifier_inputs": {"_target_": "spine_monai.transforms.ClassifierInputs", "views": "@views",
                              "mask_guided": "@mask_guided", "mask_dir": "@mask_dir", ...},
        "network_def": {"_target_": "spine_monai.networks.patient_classifier",
                        "views": "$@classifier_inputs.views", "in_channels": "$@classifier_inputs.in_channels", ...}

    Args:
        views: the view names in the network's order (``["AP", "LAT"]``, or one view).
        mask_guided: add each view's structure masks as channels (text from the command line is read as a boolean).
        mask_dir: the predictions tree the masks come from (or the dataset, for its reference masks).
        mask_structures: the mask channels; ``None`` takes the bundle's default
            (:func:`~spine_monai.data.classification.default_mask_structures`).
        vertebra_level: cut one patch per vertebral body instead of fitting whole films (reads the masks too).
        spatial_size: the whole-film input size (H, W).
        patch_size: the side of a vertebra patch.
        max_vertebrae: patches per view at vertebra level.

    Raises:
        ValueError: for unknown or repeated views or structures, and for masks wanted without a ``mask_dir``.
    """

    def __init__(
        self,
        views: str | Sequence[str] = ("AP", "LAT"),
        mask_guided: bool | str = False,
        mask_dir: str | os.PathLike | None = "",
        mask_structures: Sequence[str] | None = None,
        vertebra_level: bool | str = False,
        spatial_size: Sequence[int] = (384, 256),
        patch_size: int = 32,
        max_vertebrae: int = 20,
    ) -> None:
        self.views = check_views(views)
        self.vertebra_level = as_bool(vertebra_level)
        self.mask_structures = (
            default_mask_structures(self.vertebra_level) if mask_structures is None else list(mask_structures)
        )
        self.masks_from = mask_source(as_bool(mask_guided) or self.vertebra_level, mask_dir)
        guided = self.masks_from is not None
        self.image_keys = image_keys(self.views, guided, self.mask_structures)
        self.mask_keys = [k for k in self.image_keys if k not in self.views]
        self.in_channels = view_channels(self.views, guided, self.mask_structures)
        self.spatial_size = [int(s) for s in spatial_size]
        self.patch_size = int(patch_size)
        self.max_vertebrae = int(max_vertebrae)
        self.input_grid = classifier_input_grid(self.spatial_size, self.vertebra_level, self.patch_size)
        self.mask_check = VertebraPatches(max_vertebrae=self.max_vertebrae).check_file if self.vertebra_level else None

    def records(
        self, datalist: str | os.PathLike, dataset_dir: str | os.PathLike, split: str, fold: int | None = None
    ) -> list[dict]:
        """The patients of ``split`` with every file these inputs read
        (:func:`~spine_monai.data.classification.cls_records`)."""
        return cls_records(
            datalist, dataset_dir, self.views, split, fold, self.masks_from, self.mask_structures, self.mask_check
        )

    def inference_inputs(
        self, source: str | os.PathLike, datalist: str | os.PathLike | None = None, split: str = "all"
    ) -> InferenceInputs:
        """The patients to classify, checked (:func:`~spine_monai.data.classification.cls_inference_inputs`)."""
        return cls_inference_inputs(
            source,
            self.views,
            datalist=datalist or None,
            split=split,
            mask_dir=self.masks_from,
            mask_structures=self.mask_structures,
            mask_check=self.mask_check,
        )

    def loading(self) -> list[MapTransform]:
        """The transforms that read a record's films and, when guided, their masks."""
        masks = [
            LoadStructureMasksd(keys=mask_key(v), image_key=v) for v in self.views if mask_key(v) in self.mask_keys
        ]
        return [LoadRadiographd(keys=self.views), *masks]

    def geometry(self) -> list[MapTransform]:
        """The transforms that bring the loaded views to the network's grid (:func:`classifier_geometry`)."""
        return classifier_geometry(
            self.views,
            self.image_keys,
            self.spatial_size,
            self.vertebra_level,
            self.mask_structures,
            self.patch_size,
            self.max_vertebrae,
        )

    def augmentation(self) -> list[MapTransform]:
        """Random training transforms, each view drawn on its own
        (:func:`~spine_monai.transforms.view_augmentations`)."""
        return view_augmentations(self.views, self.image_keys, self.input_grid)
