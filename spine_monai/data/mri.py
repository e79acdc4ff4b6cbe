"""Sagittal lumbar MRI: read volumes and slices, check cases, scan a case tree into a datalist.

On-disk convention
------------------
A *case* is a folder under the dataset root that holds a label file, ``label.nii.gz``, ``label.nii``,
``label.png``, ``label.tif`` or ``label.tiff``, and one entry per channel, named exactly after the channel:

- ``T1w.nii.gz`` or ``T1w.nii``: a NIfTI volume;
- ``T1w/``: a folder holding one DICOM series, one file per slice (``*.dcm`` or extensionless files);
- ``T1w.png``, ``T1w.tif`` or ``T1w.tiff``: one 2D sagittal slice, 8 or 16-bit grey, shown as on screen
  (superior up, anterior left). The label of a 2D case is a 2D file too, holding the class ids.

Cases may be nested. The *patient* is the first path component under the root, so ``P007/slice_03/`` is
case ``P007/slice_03`` of patient ``P007``, and cross-validation folds keep all cases of a patient together::

    root/
      P001/            T1w.nii.gz  T2w.nii.gz  label.nii.gz
      P002/            T1w/ (DICOM)  T2w/ (DICOM)  label.nii.gz
      P007/slice_03/   T1w.png  T2w.png  label.png

The channels are a parameter (``("T1w", "T2w")`` by default); a single channel works too. The label holds
the class ids of :data:`MIDAS_LABELS` unless another map is given.

Array contract
--------------
:func:`read_volume` returns every input as a 3D float32 array with a 4x4 affine that maps voxel indices to
world RAS+ millimetres (the NIfTI convention), so that a downstream pipeline reorients every case by its
affine (for example with MONAI's ``Orientationd``) and needs no knowledge of the file format:

- NIfTI: the array in its stored voxel order and ``img.affine``;
- DICOM series: shape ``(Columns, Rows, slices)``, i.e. ``array[i, j, k]`` is column ``i`` of row ``j`` of the
  ``k``-th slice in increasing position along the slice normal (ITK's index order; dcm2niix also flips rows);
- 2D PNG/TIFF: shape ``(W, H, 1)`` as a one-slice sagittal series: axis 0 runs along the columns towards
  posterior, axis 1 down the rows towards inferior, axis 2 is the single slice (axis codes ``PIR``), with
  1 mm pixels since these files carry no geometry. A slice taken along the last axis of a volume reoriented
  to ``PIR`` has exactly this layout, so 2D files and sagittal slices of volumes go through the same
  transforms (e.g. ``Orientationd(axcodes="PIR")``, then a ``(h, w, 1)`` crop and ``SqueezeDimd(dim=-1)``).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from spine_monai.data.datalist import read_datalist, resolve_paths, select_records, split_datalist
from spine_monai.data.inputs import InferenceInputs
from spine_monai.errors import DataError, Problem

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "DEFAULT_CHANNELS",
    "LABEL_NAME",
    "MIDAS_LABELS",
    "MRIScanResult",
    "mri_records",
    "mri_inference_inputs",
    "geometry_problems",
    "label_value_problems",
    "build_mri_datalist",
    "check_case",
    "dicom_series_datasets",
    "read_volume",
    "sagittal_axis",
    "scan_mri_tree",
]

MIDAS_LABELS: dict[str, int] = {
    "background": 0,
    "vertebrae": 1,
    "sacrum": 2,
    "intervertebral_discs": 3,
    "spinal_cavity": 4,
    "subcutaneous_fat": 5,
    "epidural_fat": 6,
    "intramuscular_fat": 7,
    "retroperitoneal_fat": 8,
    "nerve_root": 9,
    "blood_vessels": 10,
    "muscle": 11,
}
DEFAULT_CHANNELS: tuple[str, ...] = ("T1w", "T2w")
LABEL_NAME = "label"
AFFINE_TOLERANCE_MM = 1e-3

VOLUME_EXTENSIONS = (".nii.gz", ".nii")
SLICE_EXTENSIONS = (".png", ".tif", ".tiff")
_FILE_EXTENSIONS = VOLUME_EXTENSIONS + SLICE_EXTENSIONS
# Record keys a channel name must not shadow.
_RESERVED = {"case", "patient", "kind", "fold", LABEL_NAME}
# Files a scan may meet and need not report: OS litter and sidecars.
_IGNORED_FILES = {"thumbs.db", "desktop.ini", "dicomdir"}
_IMAGE_LIKE = (*_FILE_EXTENSIONS, ".dcm", ".jpg", ".jpeg", ".bmp", ".mha", ".nrrd")
# A gap this many times the median slice spacing means a slice is missing from a series.
_GAP_FACTOR = 1.5
# PNG and TIFF carry no geometry: columns run posterior, rows inferior, the slice normal towards the right.
_SLICE_AFFINE = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


# --------------------------------------------------------------------------------------------------
# reading


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def read_volume(path: str | os.PathLike, label: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read one channel or label: a NIfTI file, a DICOM series folder, a single DICOM file, or a 2D PNG/TIFF.

    See the module docstring for the voxel order of each format.

    Args:
        path: ``.nii.gz``/``.nii`` file, folder of one DICOM series, ``.dcm`` file, or ``.png``/``.tif(f)``
            slice.
        label: the file is a label. A label may be all background (real slice sets have slices beyond the
            anatomy), while a constant image means a blank or failed export.

    Returns:
        (array, affine): a 3D float32 array and the 4x4 float64 affine from voxel indices to RAS+ world mm.

    Raises:
        DataError: when the path is missing, unreadable or corrupt, 4D, holds NaN or inf, is empty, is a constant
            image (not label), or is a DICOM series with mixed series, missing or duplicate slices, or inconsistent
            geometry.
    """
    path = Path(path)
    if path.is_dir():
        arr, affine = _read_dicom_series(path, _series_files(path))
    elif not path.is_file():
        raise DataError(path, "file not found")
    elif _suffix(path) in VOLUME_EXTENSIONS:
        arr, affine = _read_nifti(path)
    elif _suffix(path) in SLICE_EXTENSIONS:
        arr, affine = _read_slice(path), _SLICE_AFFINE.copy()
    elif _suffix(path) == ".dcm":
        arr, affine = _read_dicom_series(path, [path])
    else:
        raise DataError(path, "unsupported file type: expected .nii.gz, .nii, a DICOM folder, .dcm, .png or .tif")
    _check_values(path, arr, constant_ok=label)
    return arr, affine


def _check_values(path: Path, arr: np.ndarray, constant_ok: bool = False) -> None:
    if arr.size == 0:
        raise DataError(path, f"empty volume: zero size (shape {tuple(arr.shape)})")
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise DataError(path, f"contains {bad} NaN/inf voxels")
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi and not constant_ok:
        raise DataError(path, f"empty volume: all {arr.size} voxels equal {lo:g}")


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    errors = (ImageFileError, HeaderDataError, OSError, EOFError, ValueError, zlib.error)
    try:
        img = nib.load(path)
    except errors as e:
        raise DataError(path, f"unreadable or corrupt NIfTI file ({e})") from e
    shape = tuple(int(s) for s in img.shape)
    if len(shape) > 3 and any(s > 1 for s in shape[3:]):
        n = int(np.prod(shape[3:]))
        raise DataError(path, f"4D NIfTI with {n} volumes (shape {shape}): expected one 3D volume per channel file")
    try:
        arr = np.asarray(img.get_fdata(dtype=np.float32))
    except errors as e:
        raise DataError(path, f"unreadable or corrupt NIfTI file ({e})") from e
    # A 2D NIfTI is one slice; trailing singleton dimensions carry no data.
    arr = arr.reshape(shape[:3] + (1,) * (3 - len(shape[:3])))
    return arr, np.asarray(img.affine, dtype=np.float64)


def _read_slice(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            pages = int(getattr(img, "n_frames", 1) or 1)
            if pages > 1:
                raise DataError(path, f"multi-page TIFF ({pages} pages): expected one 2D slice")
            img.load()
            mode = img.mode
            # "P" keeps the palette indices, which is how class-id label PNGs are often stored.
            if mode in ("1", "L", "P", "F") or mode.startswith("I"):
                grey = np.asarray(img, dtype=np.float32)
            else:
                raise DataError(path, f"colour image (mode {mode}): expected an 8 or 16-bit grey slice")
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(path, f"truncated or corrupt image ({e})") from e
    # (H, W) on screen -> (W, H, 1), the voxel order of a one-slice DICOM series.
    return np.ascontiguousarray(grey.T[:, :, None])


def _series_files(folder: Path) -> list[Path]:
    files = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith(".") or p.name.lower() in _IGNORED_FILES:
            continue
        if p.suffix.lower() == ".dcm" or p.suffix == "":
            files.append(p)
    if not files:
        raise DataError(folder, "empty DICOM folder: no .dcm or extensionless files")
    return files


def _dcmread(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as e:
        raise DataError(path, f"not a readable DICOM file ({e})") from e


def _floats(ds, tag: str, path: Path, n: int) -> np.ndarray:
    value = getattr(ds, tag, None)
    if value is None:
        raise DataError(path, f"DICOM has no {tag} tag: cannot place the slice in space")
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(path, f"DICOM {tag} is not numeric ({value!r})") from e
    if arr.size != n:
        raise DataError(path, f"DICOM {tag} has {arr.size} values, expected {n}")
    return arr


def _slice_order(iop: Sequence[float], ipps: Sequence[Sequence[float]]) -> list[int]:
    """The slices' order along the normal of their plane: the third axis of :func:`read_volume`'s array."""
    normal = np.cross(np.asarray(iop[:3], dtype=float), np.asarray(iop[3:], dtype=float))
    return [int(i) for i in np.argsort([float(np.dot(p, normal)) for p in ipps], kind="stable")]


def dicom_series_datasets(folder: str | os.PathLike) -> list:
    """The headers of a DICOM series folder, in the order of the slices of :func:`read_volume`'s array.

    Args:
        folder: a folder holding one single-frame DICOM series.

    Returns:
        the pydicom datasets; element ``k`` is slice ``[:, :, k]`` of the volume (whose axes are the
        column, the row and the slice).

    Raises:
        DataError: for an empty folder or a file without its position and orientation.
    """
    folder = Path(folder)
    files = _series_files(folder)
    datasets = [_dcmread(p) for p in files]
    iops = [_floats(ds, "ImageOrientationPatient", p, 6) for p, ds in zip(files, datasets, strict=True)]
    ipps = [_floats(ds, "ImagePositionPatient", p, 3) for p, ds in zip(files, datasets, strict=True)]
    return [datasets[i] for i in _slice_order(iops[0], ipps)]


def _read_dicom_series(folder: Path, files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    from pydicom.pixels import apply_modality_lut

    datasets = [_dcmread(p) for p in files]
    uids = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in datasets}
    if len(uids) > 1:
        raise DataError(folder, f"mixed series: {len(uids)} series UIDs in folder; keep one series per channel folder")
    for p, ds in zip(files, datasets, strict=True):
        for tag in ("Rows", "Columns"):
            if tag not in ds:
                raise DataError(p, f"DICOM has no {tag} tag: is it an image?")
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        if frames > 1:
            raise DataError(p, f"multi-frame DICOM ({frames} frames): expected one file per slice")
    iops = [_floats(ds, "ImageOrientationPatient", p, 6) for p, ds in zip(files, datasets, strict=True)]
    ipps = [_floats(ds, "ImagePositionPatient", p, 3) for p, ds in zip(files, datasets, strict=True)]
    spacings = [_floats(ds, "PixelSpacing", p, 2) for p, ds in zip(files, datasets, strict=True)]
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(sizes) > 1:
        raise DataError(folder, f"slices differ in size (Rows x Columns: {sorted(sizes)}); keep one series")
    if not all(np.allclose(v, iops[0], atol=1e-4) for v in iops):
        raise DataError(folder, "slices differ in ImageOrientationPatient: not one series")
    if not all(np.allclose(v, spacings[0], atol=1e-4) for v in spacings):
        raise DataError(folder, "slices differ in PixelSpacing: not one series")
    row_cos, col_cos = iops[0][:3], iops[0][3:]
    normal = np.cross(row_cos, col_cos)
    order = _slice_order(iops[0], ipps)
    along = np.array([float(np.dot(ipps[i], normal)) for i in order])
    files = [files[i] for i in order]
    datasets = [datasets[i] for i in order]
    ipps = [ipps[i] for i in order]
    n = len(files)
    if n > 1:
        steps = np.diff(along)
        dup = int(np.argmin(steps))
        if steps[dup] < 1e-3:
            raise DataError(
                folder,
                f"duplicate slice position: {files[dup].name} and {files[dup + 1].name} are both at "
                f"{along[dup]:.2f} mm along the slice normal",
            )
        median = float(np.median(steps))
        gap = int(np.argmax(steps))
        if steps[gap] > _GAP_FACTOR * median:
            raise DataError(
                folder,
                f"missing slice: gap of {steps[gap]:.2f} mm between slices at {along[gap]:.2f} and "
                f"{along[gap + 1]:.2f} mm along the normal (after {files[gap].name}, slice {gap + 1} of {n}; "
                f"median spacing {median:.2f} mm)",
            )
        step_vec = (ipps[-1] - ipps[0]) / (n - 1)
    else:
        ds = datasets[0]
        thickness = getattr(ds, "SpacingBetweenSlices", None) or getattr(ds, "SliceThickness", None) or 1.0
        step_vec = normal * float(thickness)
    slices = []
    for p, ds in zip(files, datasets, strict=True):
        photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
        if photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise DataError(p, f"unsupported PhotometricInterpretation {photometric!r}: expected MONOCHROME2")
        try:
            pixels = ds.pixel_array
        except Exception as e:  # pydicom raises many types for missing or undecodable pixel data
            raise DataError(p, f"cannot decode DICOM pixel data ({e})") from e
        values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)
        if photometric == "MONOCHROME1":
            values = values.max() + values.min() - values
        # pixel_array is (Rows, Columns); the volume is indexed (column, row, slice).
        slices.append(values.T)
    arr = np.ascontiguousarray(np.stack(slices, axis=-1))
    row_spacing, col_spacing = spacings[0]
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_spacing
    lps[:3, 1] = col_cos * row_spacing
    lps[:3, 2] = step_vec
    lps[:3, 3] = ipps[0]
    # DICOM patient coordinates are LPS+; NIfTI world coordinates are RAS+.
    return arr, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def sagittal_axis(affine: np.ndarray) -> int:
    """The array axis that runs left-right, i.e. the axis along which the sagittal slices are stacked.

    Args:
        affine: a 4x4 voxel-to-RAS affine, as returned by :func:`read_volume`.

    Returns:
        0, 1 or 2.
    """
    directions = np.asarray(affine, dtype=np.float64)[:3, :3]
    directions = directions / np.linalg.norm(directions, axis=0, keepdims=True)
    return int(np.argmax(np.abs(directions[0])))


# --------------------------------------------------------------------------------------------------
# checking a case


def _format_ids(ids: Sequence[int]) -> str:
    ids = sorted(int(i) for i in ids)
    if len(ids) > 2 and ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}-{ids[-1]}"
    return ", ".join(str(i) for i in ids)


def _format_values(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:limit])
    return shown + (", ..." if values.size > limit else "")


def _affine_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a)[:3] - np.asarray(b)[:3])))


def geometry_problems(
    path: str | os.PathLike,
    what: str,
    shape: Sequence[int],
    affine: np.ndarray,
    reference: str,
    ref_shape: Sequence[int],
    ref_affine: np.ndarray,
) -> list[Problem]:
    """Problems when a volume's shape or affine (beyond :data:`AFFINE_TOLERANCE_MM`) differs from a reference.

    Args:
        path: the volume's file, for the message.
        what: how to name it, e.g. ``"label"`` or ``"channel T2w"``.
        shape, affine: its voxel shape and 4x4 affine.
        reference: how to name the reference, e.g. ``"image (T1w)"`` or ``"channel T1w"``.
        ref_shape, ref_affine: the reference's shape and affine.

    Returns:
        zero, one or two problems (shape and affine are both reported).
    """
    problems = []
    if tuple(shape) != tuple(ref_shape):
        problems.append(
            Problem(str(path), f"{what} shape {tuple(shape)} differs from {reference} shape {tuple(ref_shape)}")
        )
    diff = _affine_difference(np.asarray(affine), np.asarray(ref_affine))
    if diff > AFFINE_TOLERANCE_MM:
        problems.append(
            Problem(
                str(path),
                f"{what} affine differs from {reference} affine (max difference {diff:.4g} mm; "
                f"tolerance {AFFINE_TOLERANCE_MM:g} mm)",
            )
        )
    return problems


def label_value_problems(path: str | os.PathLike, values: np.ndarray, label_map: Mapping[str, int]) -> list[Problem]:
    """Problems when a label's distinct values are not integer ids of ``label_map``.

    Args:
        path: the label file, for the message.
        values: the label's distinct values (``np.unique``).
        label_map: class name -> id.
    """
    problems = []
    values = np.asarray(values)
    fractional = values[values != np.round(values)]
    if fractional.size:
        problems.append(
            Problem(
                str(path), f"label has non-integer values ({_format_values(fractional)}): expected integer class ids"
            )
        )
    allowed = set(int(v) for v in label_map.values())
    integral = values[values == np.round(values)].astype(np.int64)
    unexpected = np.array([v for v in integral if int(v) not in allowed])
    if unexpected.size:
        problems.append(
            Problem(
                str(path),
                f"label values {{{_format_values(unexpected)}}} are not in the label map "
                f"(allowed ids: {_format_ids(sorted(allowed))})",
            )
        )
    return problems


def check_case(
    channel_paths: Mapping[str, str | os.PathLike],
    label_path: str | os.PathLike,
    label_map: Mapping[str, int] = MIDAS_LABELS,
) -> list[Problem]:
    """Read every file of one case and report all of its problems at once.

    Args:
        channel_paths: channel name -> file or DICOM folder, in channel order; the first readable channel is
            the reference the others and the label are compared with.
        label_path: the label file.
        label_map: class name -> id; the label may hold only these ids.

    Returns:
        the problems found, empty for a good case: unreadable files, NaN/inf or empty volumes, shapes or affines
        (beyond :data:`AFFINE_TOLERANCE_MM`) that differ between channels or between label and image,
        non-integer label values and label values outside the map.
    """
    problems: list[Problem] = []
    reference: tuple[str, np.ndarray, np.ndarray] | None = None
    for name, p in channel_paths.items():
        try:
            arr, affine = read_volume(p)
        except DataError as e:
            problems.extend(e.problems)
            continue
        if reference is None:
            reference = (name, arr, affine)
        else:
            ref_name, ref_arr, ref_affine = reference
            problems += geometry_problems(
                p, f"channel {name}", arr.shape, affine, f"channel {ref_name}", ref_arr.shape, ref_affine
            )
    try:
        label, label_affine = read_volume(label_path, label=True)
    except DataError as e:
        problems.extend(e.problems)
        return problems
    if reference is not None:
        ref_name, ref_arr, ref_affine = reference
        problems += geometry_problems(
            label_path, "label", label.shape, label_affine, f"image ({ref_name})", ref_arr.shape, ref_affine
        )
    return problems + label_value_problems(label_path, np.unique(label), label_map)


# --------------------------------------------------------------------------------------------------
# scanning a tree


@dataclass
class MRIScanResult:
    """What a scan found.

    Attributes:
        records: one record per good case, with paths relative to the root and "/" separators.
        problems: what kept a case (or a folder) out of ``records``.
        warnings: things reported but not disqualifying, such as a stray image file in a case folder.
    """

    records: list[dict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def _check_channels(channels: Sequence[str]) -> tuple[str, ...]:
    channels = tuple(channels)
    if not channels:
        raise ValueError("at least one channel is needed, e.g. ('T1w', 'T2w')")
    for c in channels:
        if not c or "/" in c or c.lower() in _RESERVED:
            raise ValueError(f"invalid channel name {c!r}: it must be a plain name other than {sorted(_RESERVED)}")
    if len({c.lower() for c in channels}) != len(channels):
        raise ValueError(f"channel names repeat: {list(channels)}")
    return channels


def _children(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def _entries_named(entries: list[Path], stem: str) -> list[Path]:
    """Entries that are ``stem`` with a known file extension, or a folder named ``stem`` (case-insensitive)."""
    stem = stem.lower()
    found = []
    for p in entries:
        name = p.name.lower()
        if p.is_dir():
            if name == stem:
                found.append(p)
        elif any(name == stem + ext for ext in _FILE_EXTENSIONS):
            found.append(p)
    return found


def _label_files(entries: list[Path]) -> list[Path]:
    return [p for p in _entries_named(entries, LABEL_NAME) if p.is_file()]


def _channel_choices(channel: str) -> str:
    return f"{channel}.nii.gz, {channel}.nii, a {channel}/ DICOM folder, {channel}.png or {channel}.tif"


def _label_choices() -> str:
    return ", ".join(LABEL_NAME + ext for ext in (".nii.gz", ".nii", ".png")) + f" or {LABEL_NAME}.tif"


def scan_mri_tree(
    root: str | os.PathLike,
    channels: Sequence[str] = DEFAULT_CHANNELS,
    label_map: Mapping[str, int] = MIDAS_LABELS,
    verify: bool = True,
    workers: int | None = None,
) -> MRIScanResult:
    """Find every case folder under ``root`` (see the module docstring) and check it.

    Names are matched case-insensitively, so ``t1w.NII.GZ`` is found for channel ``T1w``.

    Args:
        root: the dataset root.
        channels: the channels every case must have, in order.
        label_map: class name -> id of the labels.
        verify: read every file with :func:`check_case`; without it only the folder structure is checked.
        workers: threads for reading; defaults to the CPU count.

    Returns:
        the good cases (``{"case", "patient", "kind": "volume" | "slice", <channel>: path, "label": path}``),
        the problems and the warnings.

    Raises:
        DataError: when the root is missing or not a folder.
        ValueError: for invalid channel names.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset root not found or not a folder")
    channels = _check_channels(channels)
    result = MRIScanResult()
    layouts: list[tuple[dict, dict[str, Path], Path | None, list[Problem]]] = []

    def visit(folder: Path) -> bool:
        """Collect the cases at or below ``folder``; True when there is one (or a case that lacks its label)."""
        entries = _children(folder)
        labels = _label_files(entries)
        if labels:
            layouts.append(_layout_of_case(folder, entries, labels, root, channels, result.warnings))
            return True
        present = [p.name for c in channels for p in _entries_named(entries, c)]
        if present:
            result.problems.append(
                Problem(
                    str(folder),
                    f"missing label: the folder holds {', '.join(present)} but no label file (expected "
                    f"{_label_choices()})",
                )
            )
            return True
        unknown = [d for d in entries if d.is_dir() and not visit(d)]
        if len(unknown) < sum(d.is_dir() for d in entries):
            # Some subfolder holds cases: name each subfolder that does not, rather than this folder.
            result.problems.extend(Problem(str(d), "unknown folder: no label file and no case inside") for d in unknown)
            return True
        return False

    top = _children(root)
    root_labels = _label_files(top)
    for p in root_labels:
        result.problems.append(Problem(str(p), "label file at the dataset root: put each case in its own folder"))
    for entry in top:
        if entry.is_dir():
            if not visit(entry):
                result.problems.append(Problem(str(entry), "unknown folder: no label file and no case inside"))
        elif entry.name.lower().endswith(_IMAGE_LIKE) and entry not in root_labels:
            result.warnings.append(Problem(str(entry), "unexpected image file at the dataset root; it is not used"))
    if not layouts:
        result.problems.append(Problem(str(root), "empty tree: no case folders with a label file found"))

    def verify_case(layout: tuple[dict, dict[str, Path], Path | None, list[Problem]]) -> list[Problem]:
        _, paths, label, problems = layout
        if problems or label is None or not verify:
            return problems
        return check_case(paths, label, label_map)

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        checked = list(pool.map(verify_case, layouts))
    for (record, _, _, _), problems in zip(layouts, checked, strict=True):
        if problems:
            result.problems.extend(problems)
        else:
            result.records.append(record)
    result.records.sort(key=lambda r: r["case"])
    return result


def _layout_of_case(
    folder: Path, entries: list[Path], labels: list[Path], root: Path, channels: Sequence[str], warnings: list[Problem]
) -> tuple[dict, dict[str, Path], Path | None, list[Problem]]:
    case = folder.relative_to(root).as_posix()
    problems: list[Problem] = []
    label: Path | None = None
    if len(labels) > 1:
        problems.append(Problem(str(folder), f"ambiguous label: found {', '.join(p.name for p in labels)}; keep one"))
    else:
        label = labels[0]
    kind = "slice" if label is not None and _suffix(label) in SLICE_EXTENSIONS else "volume"
    record: dict = {"case": case, "patient": case.split("/")[0], "kind": kind}
    paths: dict[str, Path] = {}
    used = set(labels)
    for c in channels:
        found = _entries_named(entries, c)
        used.update(found)
        if not found:
            problems.append(Problem(str(folder / c), f"missing channel {c}: expected {_channel_choices(c)}"))
        elif len(found) > 1:
            problems.append(
                Problem(str(folder), f"ambiguous channel {c}: found {', '.join(p.name for p in found)}; keep one")
            )
        else:
            paths[c] = found[0]
            record[c] = found[0].relative_to(root).as_posix()
    if label is not None:
        record[LABEL_NAME] = label.relative_to(root).as_posix()
    for p in entries:
        if p in used or p.name.lower() in _IGNORED_FILES:
            continue
        if p.is_dir():
            warnings.append(Problem(str(p), "unexpected folder in a case folder; it is not used"))
        elif p.name.lower().endswith(_IMAGE_LIKE):
            warnings.append(Problem(str(p), "unexpected image file in a case folder; it is not used"))
    return record, paths, label, problems


def build_mri_datalist(
    root: str | os.PathLike,
    channels: Sequence[str] = DEFAULT_CHANNELS,
    folds: int = 5,
    test_fraction: float = 0.0,
    seed: int = 0,
    label_map: Mapping[str, int] = MIDAS_LABELS,
    verify: bool = True,
    workers: int | None = None,
) -> dict:
    """Scan an MRI case tree and split its good cases into folds and a test list, keeping patients together.

    Args:
        root: the dataset root.
        channels: the channels every case must have, in order.
        folds: number of cross-validation folds.
        test_fraction: fraction of patients held out in ``testing``.
        seed: split seed.
        label_map: class name -> id of the labels.
        verify: read every file (see :func:`scan_mri_tree`).
        workers: threads for reading; defaults to the CPU count.

    Returns:
        the datalist document, whose ``problems`` and ``warnings`` list what was left out and why.
    """
    channels = _check_channels(channels)
    scan = scan_mri_tree(root, channels=channels, label_map=label_map, verify=verify, workers=workers)
    counts = {
        "cases": len(scan.records),
        "patients": len({r["patient"] for r in scan.records}),
        "volume": sum(r["kind"] == "volume" for r in scan.records),
        "slice": sum(r["kind"] == "slice" for r in scan.records),
    }
    return split_datalist(
        scan.records,
        scan.problems,
        scan.warnings,
        folds,
        test_fraction,
        seed,
        stratify_key=None,
        name="spine_monai MRI datalist (case folders)",
        layout="MRI cases",
        channels=list(channels),
        label_map=dict(label_map),
        counts=counts,
    )


# --------------------------------------------------------------------------------------------------
# records for a bundle


def mri_records(
    datalist: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    channels: Sequence[str],
    split: str,
    fold: int | None = None,
    with_label: bool = True,
) -> list[dict]:
    """Records for the MRI bundle: each channel's path and the label's, made absolute.

    Args:
        datalist: a datalist written by ``spine-monai datalist mri``.
        dataset_dir: the root its paths are relative to.
        channels: the channel keys, in input-channel order.
        split: ``"train"``, ``"validation"``, ``"test"``, ``"training"`` or ``"all"``.
        fold: the validation fold.
        with_label: require and resolve the label too.

    Returns:
        dicts with the channel keys, ``label``, ``case`` and ``patient``.

    Raises:
        DataError: for a missing or empty datalist, or records lacking a channel or the label (all listed).
    """
    channels = _check_channels(channels)
    records = select_records(read_datalist(datalist), split, fold=fold, source=datalist)
    keys = [*channels, LABEL_NAME] if with_label else list(channels)
    return resolve_paths(records, keys, dataset_dir, source=str(datalist))


def _has_channels(entries: list[Path], channels: Sequence[str]) -> bool:
    return all(len(_entries_named(entries, c)) == 1 for c in channels)


def mri_inference_inputs(
    source: str | os.PathLike,
    channels: Sequence[str] = DEFAULT_CHANNELS,
    datalist: str | os.PathLike | None = None,
    split: str = "all",
    workers: int | None = None,
) -> InferenceInputs:
    """Find the cases to segment and check each can be read and its channels agree.

    A case is any folder (``source`` itself included) holding one entry per channel, named as in the module
    docstring (NIfTI, DICOM series folder or 2D slice); no label is needed. With ``datalist``, its records of
    ``split`` are used instead.

    Args:
        source: a folder of cases, or the dataset root when ``datalist`` is given.
        channels: the channels every case must have.
        datalist: optional datalist.
        split: datalist split to use.
        workers: threads for checking.

    Returns:
        the readable cases (channel keys, ``case``, ``patient``) and a problem for every unreadable one.

    Raises:
        DataError: when ``source`` does not exist or holds no case at all.
    """
    channels = _check_channels(channels)
    source = Path(source)
    if datalist:
        records = mri_records(datalist, source, channels, split, with_label=False)
    else:
        if not source.is_dir():
            raise DataError(source, "input folder not found")
        folders = [source, *sorted(p for p in source.rglob("*") if p.is_dir())]
        records = []
        for folder in folders:
            entries = _children(folder)
            if _has_channels(entries, channels):
                case = folder.relative_to(source).as_posix() if folder != source else folder.name
                rec = {c: str(_entries_named(entries, c)[0]) for c in channels}
                records.append({**rec, "case": case, "patient": case.split("/")[0]})
        # A DICOM channel folder holds no channels itself, so a case is never nested in another case's channel.
        if not records:
            raise DataError(
                source, f"no cases found: no folder holds {' and '.join(_channel_choices(c) for c in channels)}"
            )

    def check(record: dict) -> list[Problem]:
        problems: list[Problem] = []
        ref = None
        for c in channels:
            try:
                arr, affine = read_volume(record[c])
            except DataError as e:
                problems.extend(e.problems)
                continue
            if ref is None:
                ref = (c, arr.shape, affine)
            else:
                problems += geometry_problems(
                    record[c], f"channel {c}", arr.shape, affine, f"channel {ref[0]}", ref[1], ref[2]
                )
        return problems

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        checks = list(pool.map(check, records))
    good = [r for r, p in zip(records, checks, strict=True) if not p]
    return InferenceInputs(good, [p for ps in checks for p in ps])
