"""Per-channel operations on binary structure masks."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

__all__ = ["BinarizeMasks", "BinarizeMasksd"]


def _per_channel(value: float | Sequence[float], n: int, like: torch.Tensor) -> torch.Tensor:
    arr = np.broadcast_to(np.asarray(value, dtype=np.float32), (n,)).copy()
    return torch.as_tensor(arr, device=like.device).view(-1, *([1] * (like.ndim - 1)))


class BinarizeMasks(Transform):
    """Threshold each channel with its own threshold.

    After bilinear augmentation a 1-px line is spread over two pixels at about half intensity; a
    threshold of 0.5 would break it into dashes, so thin channels get a lower one than thick channels.

    Args:
        threshold: one threshold per channel, or one for all; a pixel is on where the value exceeds it.

    Returns:
        the masks as 0/1 of the input's type (MetaTensor meta kept).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, threshold: float | Sequence[float] = 0.5) -> None:
        self.threshold = threshold

    def __call__(self, masks: torch.Tensor) -> torch.Tensor:
        masks = torch.as_tensor(masks)
        return (masks > _per_channel(self.threshold, masks.shape[0], masks)).to(masks.dtype)


class BinarizeMasksd(MapTransform):
    """Dictionary-based wrapper of :py:class:`BinarizeMasks`.

    Args:
        keys: keys of (C, H, W) masks.
        threshold: per-channel or shared threshold.
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = BinarizeMasks.backend

    def __init__(
        self, keys: KeysCollection, threshold: float | Sequence[float] = 0.5, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.binarize = BinarizeMasks(threshold)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.binarize(d[key])
        return d
