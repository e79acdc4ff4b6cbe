"""Aspect-preserving resizing of tall radiographs, and mask downsampling that keeps 1-px structures."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.networks.layers.convutils import gaussian_1d
from monai.transforms import InvertibleTransform, MapTransform, Resize, Transform
from monai.transforms.spatial.functional import resize
from monai.utils import InterpolateMode, TransformBackends, convert_to_dst_type, ensure_tuple_rep, get_equivalent_dtype
from scipy import ndimage

__all__ = [
    "antialias_sigma",
    "fit_size",
    "gaussian_smooth_cpu",
    "ResizeToFit",
    "ResizeToFitd",
    "ResizeMasksToFit",
    "ResizeMasksToFitd",
]


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


def antialias_sigma(
    in_size: Sequence[int], out_size: Sequence[int], sigma: float | Sequence[float] | None = None
) -> list[float]:
    """The standard deviation per axis of the Gaussian that MONAI's ``Resize`` smooths with before downsampling.

    Args:
        in_size: the spatial size before resizing.
        out_size: the spatial size after it.
        sigma: ``Resize``'s ``anti_aliasing_sigma``: ``None`` for scikit-image's default, ``(factor - 1) / 2``.

    Returns:
        one value per axis; 0 where the axis is not downsampled.
    """
    # In float32, as Resize computes them, so that the kernels are Resize's to the last bit.
    factors = torch.div(torch.Tensor(list(in_size)), torch.Tensor(list(out_size)))
    if sigma is None:
        return torch.maximum(torch.zeros(factors.shape), (factors - 1) / 2).tolist()
    return [s * int(f > 1) for s, f in zip(ensure_tuple_rep(sigma, len(out_size)), factors.tolist(), strict=True)]


def gaussian_smooth_cpu(img: torch.Tensor, sigma: Sequence[float]) -> torch.Tensor:
    """MONAI's ``GaussianSmooth`` (its "erf" kernels truncated at 4 sigma, zero padding) computed with SciPy.

    ``Resize`` smooths a film this way before downsampling it; on a CPU, torch's ``conv2d`` with a one-channel
    27-tap kernel took 0.30 s for a 1900x2900 film against 0.10 s here (measured), the largest part of resizing
    it, and the result is the same to float rounding (tested against ``Resize``).

    Args:
        img: (C, *spatial) float tensor on the CPU.
        sigma: standard deviation per spatial axis; an axis with 0 is left as it is.

    Returns:
        the smoothed image, of ``img``'s type (a ``MetaTensor`` keeps its metadata).
    """
    out = np.asarray(img.detach().numpy() if isinstance(img, torch.Tensor) else img, dtype=np.float32)
    for axis, s in enumerate(sigma, start=1):
        if s > 0:
            kernel = gaussian_1d(torch.tensor(s), truncated=4.0, approx="erf").numpy()
            out = ndimage.correlate1d(out, kernel, axis=axis, mode="constant", cval=0.0)
    return convert_to_dst_type(out, img, dtype=torch.float32)[0]


class ResizeToFit(Resize):
    """Resize so the image fits inside ``spatial_size`` with its aspect ratio kept.

    A 1900x2900 film resized to fit (384, 256) becomes (384, 252); pad afterwards (e.g. with
    ``SpatialPadd``) to get a fixed network input. Invertible, so predictions can be mapped back to the
    original size with ``Invertd``.

    The anti-aliasing Gaussian is ``Resize``'s; on a CPU it is computed by :func:`gaussian_smooth_cpu`.

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
        shape = tuple(img.peek_pending_shape() if isinstance(img, MetaTensor) else img.shape[1:])
        size = fit_size(shape, self.spatial_size)
        _dtype = get_equivalent_dtype(dtype or self.dtype or img.dtype, torch.Tensor)
        anti_aliasing = self.anti_aliasing if anti_aliasing is None else anti_aliasing
        sigma = self.anti_aliasing_sigma if anti_aliasing_sigma is None else anti_aliasing_sigma
        lazy = self.lazy if lazy is None else lazy
        eager_cpu = not lazy and isinstance(img, torch.Tensor) and img.device.type == "cpu"
        if anti_aliasing and eager_cpu and _dtype == torch.float32 and any(o < i for o, i in zip(size, shape)):
            img = gaussian_smooth_cpu(img, antialias_sigma(shape, size, sigma))
            anti_aliasing = False
        return resize(
            img,
            size,
            self.mode if mode is None else mode,
            self.align_corners if align_corners is None else align_corners,
            _dtype,
            len(shape),
            anti_aliasing,
            sigma,
            lazy,
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
