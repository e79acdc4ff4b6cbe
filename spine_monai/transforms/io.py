"""Load radiographs and per-structure masks as MetaTensors; save predicted masks and overlays in the layout."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends
from scipy import ndimage

from spine_monai.data.io import read_mask, read_radiograph, write_mask, write_overlay
from spine_monai.errors import DataError

__all__ = [
    "LoadRadiograph",
    "LoadRadiographd",
    "LoadStructureMasks",
    "LoadStructureMasksd",
    "SaveStructureMasks",
    "SaveStructureMasksd",
    "overlay_masks",
]

logger = logging.getLogger(__name__)

# Colours for overlays: one per channel, in structure order; chosen to stay distinct on a grey film.
PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [240, 50, 230], [70, 240, 240], [245, 130, 48]],
    dtype=np.float32,
)


def _meta_tensor(array: np.ndarray, path: str) -> MetaTensor:
    meta = {
        "filename_or_obj": path,
        "spatial_shape": np.asarray(array.shape[-2:]),
        "original_channel_dim": 0,
    }
    return MetaTensor(torch.as_tensor(array), affine=torch.eye(3, dtype=torch.float64), meta=meta)


class LoadRadiograph(Transform):
    """Load a radiograph (JPEG, PNG, TIFF or CR/DX DICOM) as one grey channel.

    RGB is converted to luminance; DICOM gets its modality LUT and MONOCHROME1 inversion
    (see :func:`spine_monai.data.io.read_radiograph`). Arrays keep screen order, (1, H, W).

    Returns:
        a float32 MetaTensor of shape (1, H, W) whose meta holds ``filename_or_obj`` and ``spatial_shape``.

    Raises:
        DataError: naming the file when it is missing or unreadable.
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        return _meta_tensor(read_radiograph(path)[None], str(path))


class LoadRadiographd(MapTransform):
    """Dictionary-based wrapper of :py:class:`LoadRadiograph`.

    Args:
        keys: keys whose values are image paths.
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = LoadRadiograph.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadRadiograph()

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


class LoadStructureMasks(Transform):
    """Load one binary mask per structure and stack them as channels, in the order given.

    Each structure is its own channel because the masks overlap (a pedicle lies inside a vertebra).

    Args:
        expected_size: (H, W) every mask must have, usually its image's; ``None`` skips the check.

    Returns:
        a float32 MetaTensor (C, H, W) of 0/1.

    Raises:
        DataError: listing every missing, unreadable, non-binary or wrongly sized mask of the sample.
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, paths: Sequence[str | os.PathLike], expected_size: Sequence[int] | None = None) -> MetaTensor:
        from spine_monai.errors import ProblemCollector

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        size_wh = None if expected_size is None else (int(expected_size[1]), int(expected_size[0]))
        problems = ProblemCollector()
        channels = []
        for p in paths:
            with problems.catch():
                channels.append(read_mask(p, expected_size=size_wh))
        problems.raise_if_any()
        return _meta_tensor(np.stack(channels).astype(np.float32), str(paths[0]))


class LoadStructureMasksd(MapTransform):
    """Dictionary-based wrapper of :py:class:`LoadStructureMasks`.

    Args:
        keys: keys whose values are lists of mask paths, one per structure.
        image_key: the already-loaded image whose (H, W) every mask must match; ``None`` skips the check.
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = LoadStructureMasks.backend

    def __init__(self, keys: KeysCollection, image_key: str | None = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.loader = LoadStructureMasks()

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        size = None if self.image_key is None else tuple(d[self.image_key].shape[-2:])
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key], expected_size=size)
        return d


def overlay_masks(
    image: np.ndarray,
    masks: np.ndarray,
    truth: np.ndarray | None = None,
    alpha: float = 0.45,
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """Blend binary masks over a grey image, one palette colour per channel, with a legend.

    Args:
        image: (H, W) grey image of any range; it is stretched to its 1st-99th percentile.
        masks: (C, H, W) binary masks (the prediction), drawn filled.
        truth: optional (C, H, W) reference masks, drawn as solid outlines of the same colours so that
            misses (outline without fill) and false positives (fill without outline) stand out.
        alpha: opacity of the fill.
        names: the channels' structure names; when given, a legend in the top-left corner names each colour (and
            says that outlines are the reference), so that the overlay reads on its own wherever it is sent.

    Returns:
        an RGB uint8 array (H, W, 3).
    """
    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, (1, 99))
    grey = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) * 255.0
    rgb = np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)
    # The structures cover a few percent of a film: only their pixels are blended, in floating point as a whole
    # film would be, before the conversion to bytes.
    filled = masks > 0
    covered = filled.any(axis=0)
    if covered.any():
        picked = np.repeat(grey[covered][:, None], 3, axis=1)
        for c in range(masks.shape[0]):
            m = filled[c][covered]
            picked[m] = (1 - alpha) * picked[m] + alpha * PALETTE[c % len(PALETTE)]
        rgb[covered] = picked.astype(np.uint8)
    if truth is not None:
        width = max(1, round(max(img.shape) / 600))
        for c in range(truth.shape[0]):
            t = truth[c] > 0
            edge = t & ~ndimage.binary_erosion(t, iterations=width)
            rgb[edge] = PALETTE[c % len(PALETTE)].astype(np.uint8)
    if names:
        rgb = _legend(rgb, list(names), outlined=truth is not None)
    return rgb


def _legend(rgb: np.ndarray, names: list[str], outlined: bool) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    height = rgb.shape[0]
    size = max(10, height // 70)
    font = ImageFont.load_default(size=size)
    lines = [(name, tuple(int(v) for v in PALETTE[c % len(PALETTE)])) for c, name in enumerate(names)]
    if outlined:
        lines.append(("filled: prediction, outline: reference", None))
    pad, row = size // 2, size + size // 2
    width = pad * 3 + size + max(int(font.getlength(text)) for text, _ in lines)
    box = (0, 0, min(width, rgb.shape[1]), min(pad * 2 + row * len(lines), height))
    picture = Image.fromarray(rgb)
    draw = ImageDraw.Draw(picture)
    draw.rectangle(box, fill=(0, 0, 0))
    for i, (text, colour) in enumerate(lines):
        top = pad + i * row
        if colour is not None:
            draw.rectangle((pad, top, pad + size, top + size), fill=colour)
        draw.text((pad * 2 + size, top), text, fill=(255, 255, 255), font=font)
    return np.asarray(picture)


def _numpy(x) -> np.ndarray:
    return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)


class SaveStructureMasks(Transform):
    """Write each channel of a binary prediction as a 1-bit PNG named after its structure, plus an overlay.

    When the film was read from a DICOM file, the masks are also written as a DICOM Segmentation that references it,
    ``<stem>_seg.dcm`` (:func:`spine_monai.report.dicom.write_film_segmentation`), which a PACS viewer shows over the
    film.

    Args:
        output_dir: root of the predictions.
        structures: channel names, e.g. ``["Ap_Vertebra", "Ap_Pedicle"]``; files are ``<name>.png``.
        overlay: also write ``<stem>_overlay.png`` with the image and all channels.

    Returns:
        the prediction, unchanged.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, output_dir: str | os.PathLike, structures: Sequence[str], overlay: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.structures = list(structures)
        self.overlay = overlay

    def __call__(self, pred, subdir: str, stem: str, image=None, label=None):
        masks = _numpy(pred)
        if masks.shape[0] != len(self.structures):
            raise ValueError(f"prediction has {masks.shape[0]} channels for {len(self.structures)} structures")
        folder = self.output_dir / subdir
        for name, m in zip(self.structures, masks, strict=True):
            write_mask(folder / f"{name}.png", m > 0.5)
        source = getattr(image, "meta", {}).get("filename_or_obj") if image is not None else None
        if source and Path(str(source)).suffix.lower() == ".dcm":
            from spine_monai.report.dicom import write_film_segmentation

            seg = {name: m > 0.5 for name, m in zip(self.structures, masks, strict=True)}
            try:
                write_film_segmentation(source, seg, folder / f"{stem}_seg.dcm")
            except DataError as e:
                # The PNG masks stand; a film without the identifiers a SEG must carry gets none, and is named.
                logger.warning("no DICOM SEG for %s: %s", e.path, e.reason)
        if self.overlay and image is not None:
            grey = _numpy(image)[0]
            truth = None if label is None else _numpy(label)
            write_overlay(folder / f"{stem}_overlay.png", overlay_masks(grey, masks, truth, names=self.structures))
        return pred


class SaveStructureMasksd(MapTransform):
    """Dictionary-based wrapper of :py:class:`SaveStructureMasks`.

    Args:
        keys: the prediction key, (C, H, W) binary at the image's original size.
        output_dir: root of the predictions.
        structures: channel names.
        subdir_key: key holding the folder (relative to ``output_dir``) of this sample's outputs.
        stem_key: key holding the image's file stem, used for the overlay's name.
        image_key: key of the original-size image drawn under the overlay; ``None`` for no overlay.
        label_key: key of original-size reference masks to outline on the overlay, when evaluating.
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = SaveStructureMasks.backend

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        structures: Sequence[str],
        subdir_key: str = "output_subdir",
        stem_key: str = "stem",
        image_key: str | None = "image_orig",
        label_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.saver = SaveStructureMasks(output_dir, structures, overlay=image_key is not None)
        self.subdir_key, self.stem_key, self.image_key, self.label_key = subdir_key, stem_key, image_key, label_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        image = d.get(self.image_key) if self.image_key else None
        label = d.get(self.label_key) if self.label_key else None
        for key in self.key_iterator(d):
            d[key] = self.saver(
                d[key], subdir=str(d[self.subdir_key]), stem=str(d[self.stem_key]), image=image, label=label
            )
        return d
