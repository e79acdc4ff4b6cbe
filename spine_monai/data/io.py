"""Readers and writers for radiographs (JPEG, PNG, CR/DX DICOM) and per-structure binary masks.

Every failure raises :class:`~spine_monai.errors.DataError` naming the file and what is wrong.
Arrays are returned in (rows, columns) order, i.e. (H, W), as the image is seen on screen.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from spine_monai.errors import DataError

__all__ = [
    "OVERLAY_COMPRESS_LEVEL",
    "image_size",
    "read_mask",
    "read_radiograph",
    "write_mask",
    "write_overlay",
    "write_png_atomic",
]

# zlib level of the RGB overlays written beside predictions. They are full-size previews of grainy films: on a
# 1900x2900 film level 1 writes one in 0.20 s against 0.76 s at PIL's default (6), for a file a third larger (3.1
# against 2.3 MB), and at the default the overlay was the slowest step of inference (docs/performance.md).
OVERLAY_COMPRESS_LEVEL = 1


def _is_dicom(path: Path) -> bool:
    return path.suffix.lower() == ".dcm"


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Read only the header of an image and return its size.

    Args:
        path: a JPEG, PNG, TIFF or DICOM file.

    Returns:
        (width, height) in pixels.

    Raises:
        DataError: when the file is missing or not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    if _is_dicom(path):
        ds = _read_dicom(path, stop_before_pixels=True)
        return int(ds.Columns), int(ds.Rows)
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(path, f"not a readable image ({e})") from e


def read_radiograph(path: str | os.PathLike) -> np.ndarray:
    """Read a radiograph as one grey channel.

    RGB and RGBA JPEG/PNG are converted to luminance; grayscale and 16-bit files are read as they are.
    DICOM goes through the modality LUT (rescale slope and intercept) and MONOCHROME1 is inverted so that
    bone is bright in every case.

    Args:
        path: a JPEG, PNG, TIFF or DICOM (CR/DX) file.

    Returns:
        a float32 array of shape (H, W).

    Raises:
        DataError: when the file is missing, truncated, corrupt, multi-frame or has an unsupported pixel format.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    arr = _read_dicom_pixels(path) if _is_dicom(path) else _read_pil_grey(path)
    if arr.size == 0:
        raise DataError(path, "image has no pixels")
    if not np.isfinite(arr).all():
        raise DataError(path, "image contains NaN or infinite values")
    return arr


def _read_pil_grey(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA", "1", "L"):
                return np.asarray(img.convert("L"), dtype=np.float32)
            if mode.startswith("I") or mode == "F":
                return np.asarray(img, dtype=np.float32)
            raise DataError(path, f"unsupported image mode {mode!r}")
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(path, f"truncated or corrupt image ({e})") from e


def _read_dicom(path: Path, stop_before_pixels: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, OSError, EOFError, ValueError) as e:
        raise DataError(path, f"not a readable DICOM file ({e})") from e
    for tag in ("Rows", "Columns"):
        if tag not in ds:
            raise DataError(path, f"DICOM has no {tag} tag: is it an image?")
    return ds


def _read_dicom_pixels(path: Path) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    ds = _read_dicom(path)
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise DataError(path, f"multi-frame DICOM ({ds.NumberOfFrames} frames): a radiograph has one frame")
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DataError(path, f"unsupported PhotometricInterpretation {photometric!r}: expected MONOCHROME1/2")
    try:
        pixels = ds.pixel_array
    except Exception as e:  # pydicom raises many types for missing or undecodable pixel data
        raise DataError(path, f"cannot decode DICOM pixel data ({e})") from e
    arr = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)
    if arr.ndim != 2:
        raise DataError(path, f"expected a 2D radiograph, got pixel array of shape {arr.shape}")
    if photometric == "MONOCHROME1":
        # MONOCHROME1 displays its minimum as white; flip so bone is bright as in MONOCHROME2 and JPEG.
        arr = arr.max() + arr.min() - arr
    return arr


def read_mask(path: str | os.PathLike, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a binary structure mask.

    1-bit PNG is the reference format. 8-bit masks holding only {0, 1} or only {0, 255} are valid and read
    as binary; any other value is an error, since it means the file is not a mask.

    A mask with an alpha channel (RGBA, grey+alpha, or a palette with transparency) is read from its alpha
    whenever the alpha varies: the drawn pixels are the opaque ones, whatever their colour, so a structure drawn
    black or white on a transparent background reads the same. The alpha must then be binary too. A mask whose
    alpha is the same everywhere is read from its grey or colour values, as a mask without alpha.

    Args:
        path: the mask file.
        expected_size: (width, height) the mask must have, usually its image's size.

    Returns:
        a bool array of shape (H, W).

    Raises:
        DataError: when the file is missing, unreadable, of the wrong size, colour, or not binary.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "mask file not found")
    try:
        with Image.open(path) as img:
            img.load()
            size = img.size
            arr = np.asarray(img, dtype=bool) if img.mode == "1" else _mask_from_pixels(path, img)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(path, f"truncated or corrupt mask ({e})") from e
    if expected_size is not None and tuple(size) != tuple(expected_size):
        raise DataError(
            path,
            f"mask size {size[0]}x{size[1]} differs from its image's {expected_size[0]}x{expected_size[1]} (WxH)",
        )
    return arr


def _mask_from_pixels(path: Path, img: Image.Image) -> np.ndarray:
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "L")
    if img.mode in ("RGBA", "LA", "PA"):
        alpha = np.asarray(img.getchannel("A"))
        if alpha.min() != alpha.max():
            return _binarize(path, alpha, "alpha channel")
        img = img.convert("RGB" if img.mode == "RGBA" else "L")
    values = np.asarray(img)
    if img.mode == "RGB":
        if not (np.array_equal(values[..., 0], values[..., 1]) and np.array_equal(values[..., 0], values[..., 2])):
            raise DataError(path, "mask is a colour image: expected a 1-bit or grey binary PNG")
        values = values[..., 0]
    if values.ndim != 2:
        raise DataError(path, f"unsupported mask mode {img.mode!r}: expected a 1-bit or grey binary PNG")
    return _binarize(path, values, "mask")


def _binarize(path: Path, values: np.ndarray, what: str) -> np.ndarray:
    uniq = np.unique(values)
    nonzero = uniq[uniq != 0]
    if nonzero.size == 0:
        return np.zeros(values.shape, dtype=bool)
    if nonzero.size == 1 and nonzero[0] in (1, 255, 65535):
        return values != 0
    shown = ", ".join(str(v) for v in uniq[:8]) + (", ..." if uniq.size > 8 else "")
    raise DataError(path, f"{what} is not binary: values {{{shown}}}; expected only 0/1 or 0/255")


def write_png_atomic(path: str | os.PathLike, image: Image.Image, **save_kwargs) -> None:
    """Save a PIL image to ``path`` through a temporary file and a rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        image.save(tmp, format="PNG", **save_kwargs)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_overlay(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 overlay as an RGB PNG, atomically, at :data:`OVERLAY_COMPRESS_LEVEL`.

    Args:
        path: destination file.
        rgb: the overlay, as :func:`spine_monai.transforms.overlay_masks` returns it.

    Raises:
        ValueError: for an array that is not (H, W, 3) uint8.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"an overlay must be an (H, W, 3) uint8 array, got {rgb.dtype} of shape {rgb.shape}")
    write_png_atomic(path, Image.fromarray(rgb), compress_level=OVERLAY_COMPRESS_LEVEL)


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a (H, W) mask as a 1-bit PNG, the dataset's own format.

    Args:
        path: destination file.
        mask: any array; non-zero is foreground.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2D (H, W), got shape {mask.shape}")
    write_png_atomic(path, Image.fromarray(mask != 0))
