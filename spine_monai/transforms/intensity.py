"""Local contrast equalisation of radiographs (CLAHE), for films whose exposure varies across the body."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type
from skimage.exposure import equalize_adapthist

__all__ = ["LocalContrast", "LocalContrastd"]


class LocalContrast(Transform):
    """Contrast-limited adaptive histogram equalisation of each channel (scikit-image's ``equalize_adapthist``).

    A whole-spine film is dark over the lungs and bright over the abdomen; a global window leaves the upper
    thoracic bodies in a narrow band of grey. Equalising each tile's histogram, with the contrast gain limited so
    that film grain is not amplified, spreads every region over the full range.

    Args:
        clip_limit: the contrast limit, as a fraction of the tile's pixels (scikit-image's default 0.01); 0 turns
            the transform into an identity.
        tile_fraction: the tile's side as a fraction of the image's side (1/8: 8x8 tiles).

    Returns:
        the image in [0, 1], of the input's type and dtype.

    Raises:
        ValueError: for an image whose values are outside [0, 1] (scale it first), or a bad parameter.
    """

    backend = [TransformBackends.NUMPY, TransformBackends.TORCH]

    def __init__(self, clip_limit: float = 0.01, tile_fraction: float = 0.125) -> None:
        if not 0.0 <= clip_limit <= 1.0:
            raise ValueError(f"clip_limit must be in [0, 1], got {clip_limit}")
        if not 0.0 < tile_fraction <= 1.0:
            raise ValueError(f"tile_fraction must be in (0, 1], got {tile_fraction}")
        self.clip_limit = clip_limit
        self.tile_fraction = tile_fraction

    def __call__(self, img):
        if self.clip_limit == 0.0:
            return img
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
            raise ValueError(
                f"LocalContrast needs an image in [0, 1], got values in [{arr.min():g}, {arr.max():g}]; "
                "scale the intensities first"
            )
        kernel = [max(2, int(round(s * self.tile_fraction))) for s in arr.shape[1:]]
        out = np.stack(
            [equalize_adapthist(c.astype(np.float64), kernel_size=kernel, clip_limit=self.clip_limit) for c in arr]
        )
        return convert_to_dst_type(out.astype(arr.dtype), img)[0]


class LocalContrastd(MapTransform):
    """Dictionary-based wrapper of :py:class:`LocalContrast`.

    Args:
        keys: keys of the images to equalise, channel first, in [0, 1].
        clip_limit: see :py:class:`LocalContrast`.
        tile_fraction: see :py:class:`LocalContrast`.
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = LocalContrast.backend

    def __init__(
        self,
        keys: KeysCollection,
        clip_limit: float = 0.01,
        tile_fraction: float = 0.125,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = LocalContrast(clip_limit, tile_fraction)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d
