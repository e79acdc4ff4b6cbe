"""Aspect-preserving resizing of tall radiographs, and mask downsampling that keeps 1-px structures."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Resize, Transform
from monai.transforms.spatial.functional import resize
from monai.utils import InterpolateMode, TransformBackends, ensure_tuple_rep, get_equivalent_dtype

__all__ = ["fit_size", "ResizeToFit", "ResizeToFitd", "ResizeMasksToFit", "ResizeMasksToFitd"]


def fit_size(shape: Sequence[int], box: Sequence[int]) -> tuple[int, ...]:
    """The largest size with the aspect ratio of ``shape`` that fits inside ``box``.

    Args:
        shape: spatial shape, e.g. (H, W) = (2900, 1900).
        box: the bounding size, e.g. (384, 256).

    Returns:
        the fitted size, e.g. (384, 252); no side exceeds ``box`` and none is below 1.
    """
    scale = min(b / s for b, s in zip(box, shape, strict=True))
    return tuple(max(1, min(b, int(round(s * scale)))) for s, b in zip(shape, box, strict=True))


class ResizeToFit(Resize):
    """Resize so the image fits inside ``spatial_size`` with its aspect ratio kept.

    A 1900x2900 film resized to fit (384, 256) becomes (384, 252); pad afterwards (e.g. with
    ``SpatialPadd``) to get a fixed network input. Invertible, so predictions can be mapped back to the
    original size with ``Invertd``.

    Args:
        spatial_size: the bounding (H, W).
        mode: interpolation mode; ``"bilinear"`` with anti-aliasing suits images and probability maps.
        align_corners: as for :py:class:`monai.transforms.Resize`.
        anti_aliasing: Gaussian-smooth before downsampling to avoid aliasing.
        dtype: output data type.
    """

    backend = Resize.backend

    def __init__(
        self,
        spatial_size: Sequence[int],
        mode: str = InterpolateMode.BILINEAR,
        align_corners: bool | None = False,
        anti_aliasing: bool = True,
        dtype: torch.dtype | None = torch.float32,
    ) -> None:
        super().__init__(
            spatial_size=tuple(spatial_size),
            mode=mode,
            align_corners=align_corners,
            anti_aliasing=anti_aliasing,
            dtype=dtype,
        )

    def __call__(
        self,
        img: torch.Tensor,
        mode=None,
        align_corners=None,
        anti_aliasing=None,
        anti_aliasing_sigma=None,
        dtype=None,
        lazy=None,
    ) -> torch.Tensor:
        shape = img.peek_pending_shape() if isinstance(img, MetaTensor) else img.shape[1:]
        size = fit_size(tuple(shape), self.spatial_size)
        _dtype = get_equivalent_dtype(dtype or self.dtype or img.dtype, torch.Tensor)
        return resize(
            img,
            size,
            self.mode if mode is None else mode,
            self.align_corners if align_corners is None else align_corners,
            _dtype,
            len(shape),
            self.anti_aliasing if anti_aliasing is None else anti_aliasing,
            self.anti_aliasing_sigma if anti_aliasing_sigma is None else anti_aliasing_sigma,
            self.lazy if lazy is None else lazy,
            self.get_transform_info(),
        )


class ResizeToFitd(MapTransform, InvertibleTransform):
    """Dictionary-based wrapper of :py:class:`ResizeToFit`.

    Args:
        keys: keys to resize.
        spatial_size: the bounding (H, W).
        mode: interpolation mode, one per key or shared.
        anti_aliasing: Gaussian-smooth before downsampling.
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = ResizeToFit.backend

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        mode: str | Sequence[str] = InterpolateMode.BILINEAR,
        anti_aliasing: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.resizer = ResizeToFit(spatial_size, anti_aliasing=anti_aliasing)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key, mode in self.key_iterator(d, self.mode):
            d[key] = self.resizer(d[key], mode=mode)
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resizer.inverse(d[key])
        return d


class ResizeMasksToFit(Transform):
    """Downsample binary masks to fit ``spatial_size`` without erasing thin structures.

    Each output pixel gets the fraction of its footprint that the mask covers (area interpolation); a
    channel is on where that fraction exceeds its ``coverage`` threshold. A threshold near 0.5 keeps the
    area of thick structures unbiased; a threshold of 0 is max pooling and keeps a 1-px line continuous,
    where nearest-neighbour sampling would drop most of it.

    Args:
        spatial_size: the bounding (H, W), as for :py:class:`ResizeToFit`.
        coverage: threshold per channel (or one for all) on the covered fraction; the pixel is on when the
            fraction is strictly greater.

    Returns:
        float32 0/1 masks of the fitted size.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, spatial_size: Sequence[int], coverage: float | Sequence[float] = 0.5) -> None:
        self.spatial_size = tuple(spatial_size)
        self.coverage = coverage

    def __call__(self, masks: torch.Tensor) -> torch.Tensor:
        size = fit_size(tuple(masks.shape[1:]), self.spatial_size)
        resizer = Resize(spatial_size=size, mode=InterpolateMode.AREA)
        # Labels are never inverted (predictions are, through the image's trace), so keep no trace here.
        with resizer.trace_transform(False):
            frac = resizer(torch.as_tensor(masks, dtype=torch.float32))
        thr = torch.as_tensor(np.broadcast_to(np.asarray(self.coverage, dtype=np.float32), (masks.shape[0],)).copy())
        thr = thr.view(-1, *([1] * (frac.ndim - 1))).to(frac.device)
        return (frac > thr + 1e-6).to(torch.float32)


class ResizeMasksToFitd(MapTransform):
    """Dictionary-based wrapper of :py:class:`ResizeMasksToFit`.

    Args:
        keys: keys of (C, H, W) masks.
        spatial_size: the bounding (H, W).
        coverage: threshold per channel on the covered fraction (see :py:class:`ResizeMasksToFit`).
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = ResizeMasksToFit.backend

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        coverage: float | Sequence[float] = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.resizer = ResizeMasksToFit(spatial_size, coverage)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resizer(d[key])
        return d
