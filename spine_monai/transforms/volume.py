"""Load MRI volumes (NIfTI, DICOM series, 2D slices) as channel-first MetaTensors with their world affine."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends
from PIL import Image

from spine_monai.data.io import write_png_atomic
from spine_monai.data.mri import SLICE_EXTENSIONS, geometry_problems, label_value_problems, read_volume
from spine_monai.errors import DataError, ProblemCollector

__all__ = ["LoadVolume", "LoadVolumed", "SaveLabelVolume", "SaveLabelVolumed"]

logger = logging.getLogger(__name__)


class LoadVolume(Transform):
    """Read a volume with :func:`spine_monai.data.mri.read_volume` into a (1, X, Y, Z) MetaTensor.

    The affine (voxel to RAS mm) travels in the MetaTensor, so MONAI's ``Orientationd`` can find the sagittal
    axis whatever the stored order, and ``Invertd`` / ``SaveImaged`` can put predictions back on the input grid.
    DICOM series get the affine derived from their ImagePositionPatient / ImageOrientationPatient.

    Args:
        label: the files are labels, which may be all background (see ``read_volume``).

    Returns:
        a float32 MetaTensor of shape (1, X, Y, Z), meta with ``filename_or_obj``, ``affine`` and
        ``original_affine``.

    Raises:
        DataError: naming the file for anything unreadable, NaN or inf voxels, or an empty volume.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, label: bool = False) -> None:
        self.label = label

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        array, affine = read_volume(path, label=self.label)
        aff = torch.as_tensor(affine, dtype=torch.float64)
        meta = {
            "filename_or_obj": str(path),
            "original_affine": affine.copy(),
            "spatial_shape": np.asarray(array.shape),
            "original_channel_dim": "no_channel",
        }
        return MetaTensor(torch.as_tensor(array[None]), affine=aff, meta=meta)


class LoadVolumed(MapTransform):
    """Dictionary-based wrapper of :py:class:`LoadVolume` that also checks a case's files agree.

    Args:
        keys: keys of volume paths (e.g. ``["T1w", "T2w", "label"]``).
        reference_key: the key every other volume must match in shape and affine (within
            ``spine_monai.data.mri.AFFINE_TOLERANCE_MM``); ``None`` skips the check.
        label_key: the key of the label volume, checked against ``label_map``.
        label_map: class name -> id; the label may hold only these ids. ``None`` skips the check.
        allow_missing_keys: don't raise if a key is missing.

    Raises:
        DataError: listing every problem of the case at once.
    """

    backend = LoadVolume.backend

    def __init__(
        self,
        keys: KeysCollection,
        reference_key: str | None = None,
        label_key: str | None = None,
        label_map: Mapping[str, int] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadVolume()
        self.label_loader = LoadVolume(label=True)
        self.reference_key = reference_key
        self.label_key = label_key
        self.label_map = label_map

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        problems = ProblemCollector()
        for key in self.key_iterator(d):
            with problems.catch():
                d[key] = (self.label_loader if key == self.label_key else self.loader)(d[key])
        problems.raise_if_any()
        ref = d.get(self.reference_key) if self.reference_key else None
        for key in self.key_iterator(d):
            vol = d[key]
            path = vol.meta["filename_or_obj"]
            if ref is not None and key != self.reference_key:
                what = "label" if key == self.label_key else f"channel {key}"
                problems.extend(
                    geometry_problems(
                        path,
                        what,
                        vol.shape[1:],
                        vol.affine.numpy(),
                        self.reference_key,
                        ref.shape[1:],
                        ref.affine.numpy(),
                    )
                )
            if key == self.label_key and self.label_map is not None:
                problems.extend(label_value_problems(path, np.unique(vol.numpy()), self.label_map))
        problems.raise_if_any()
        return d


class SaveLabelVolume(Transform):
    """Write a label volume as ``<output_dir>/<subdir>/<filename>`` (NIfTI, uint8), with the volume's own affine.

    After ``Invertd`` the prediction is back on the input's voxel grid and carries the input's affine, so the
    written file matches the input (NIfTI or DICOM series) in shape and affine. A 2D slice input (PNG or TIFF,
    known from the prediction's ``filename_or_obj``) gets a PNG back instead, ``label.png`` beside where the NIfTI
    would go, with the class ids as 8-bit grey values in the input's own rows and columns, so it overlays the input
    as it is shown. Written through a temporary file and a rename. A DICOM series input also gets its label as a
    multi-frame DICOM Segmentation referencing the series, ``label_seg.dcm`` beside the NIfTI, when ``class_names``
    are given (:func:`spine_monai.report.dicom.write_series_segmentation`).

    Args:
        output_dir: root of the predictions.
        filename: file name inside each case's folder; its ``.nii.gz`` becomes ``.png`` for a slice input.
        class_names: the classes in id order, for the DICOM Segmentation of a DICOM series; ``None`` writes none.

    Returns:
        the label, unchanged.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self, output_dir: str | os.PathLike, filename: str = "label.nii.gz", class_names: Sequence[str] | None = None
    ) -> None:
        self.output_dir = Path(output_dir)
        self.filename = filename
        self.class_names = None if class_names is None else list(class_names)

    def __call__(self, label: torch.Tensor, subdir: str) -> torch.Tensor:
        array = np.asarray(label.detach().cpu())
        if array.ndim == 4:
            if array.shape[0] != 1:
                raise ValueError(f"expected a one-channel label volume, got shape {array.shape}")
            array = array[0]
        affine = label.affine.numpy() if isinstance(label, MetaTensor) else np.eye(4)
        source = str(label.meta.get("filename_or_obj", "")) if isinstance(label, MetaTensor) else ""
        if Path(source).suffix.lower() in SLICE_EXTENSIONS and array.shape[2] == 1:
            # A slice is read as (W, H, 1) (see read_volume): transposed back to the rows and columns on screen.
            path = self.output_dir / subdir / (self.filename.split(".")[0] + ".png")
            write_png_atomic(path, Image.fromarray(np.rint(array[:, :, 0].T).astype(np.uint8)))
            return label
        path = self.output_dir / subdir / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.nii.gz")
        classes = np.rint(array).astype(np.uint8)
        nib.save(nib.Nifti1Image(classes, affine), str(tmp))
        os.replace(tmp, path)
        if self.class_names is not None and source and Path(source).is_dir():
            from spine_monai.report.dicom import write_series_segmentation

            try:
                write_series_segmentation(source, classes, self.class_names, path.parent / "label_seg.dcm")
            except DataError as e:
                # The NIfTI stands; a series without the identifiers a SEG must carry gets none, and is named.
                logger.warning("no DICOM SEG for %s: %s", e.path, e.reason)
        return label


class SaveLabelVolumed(MapTransform):
    """Dictionary-based wrapper of :py:class:`SaveLabelVolume`.

    Args:
        keys: the label key(s) to write, (1, X, Y, Z) class ids on the input grid.
        output_dir: root of the predictions.
        subdir_key: key holding the case's folder relative to ``output_dir``.
        filename: file name inside each case's folder.
        class_names: the classes in id order, for the DICOM Segmentation of a DICOM series input.
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = SaveLabelVolume.backend

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        subdir_key: str = "case",
        filename: str = "label.nii.gz",
        class_names: Sequence[str] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.saver = SaveLabelVolume(output_dir, filename, class_names)
        self.subdir_key = subdir_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.saver(d[key], subdir=str(d[self.subdir_key]))
        return d
