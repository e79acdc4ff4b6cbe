"""Gaussian noise at a fixed level, for training and evaluating on noisier acquisitions (the noise experiment)."""

from __future__ import annotations

from monai.config import KeysCollection
from monai.transforms import Identityd, MapTransform, RandGaussianNoised

__all__ = ["fixed_noise"]


def fixed_noise(keys: KeysCollection, std: float) -> MapTransform:
    """Zero-mean Gaussian noise of standard deviation ``std`` on every sample, or nothing at ``std`` 0.

    The bundles' ``noise_std`` key: the images are already scaled to [0, 1], so ``std`` is a fraction of full
    scale (``pipelines.noise`` derives it from a detector's noise and bit depth). Every sample gets the same
    level (``prob`` 1, no drawn standard deviation), unlike the augmentation's occasional noise. At 0 the
    transform is an identity that draws no random numbers, so the default leaves the random stream of the
    other transforms as it was.

    Args:
        keys: keys of the images to add noise to.
        std: standard deviation, in the images' intensity units; 0 for none.

    Returns:
        MONAI's ``RandGaussianNoised`` at that level, or ``Identityd`` for 0.

    Raises:
        ValueError: for a negative or non-finite ``std``.
    """
    std = float(std)
    if not 0.0 <= std < float("inf"):
        raise ValueError(f"noise_std must be a finite number >= 0, got {std}")
    if std == 0.0:
        return Identityd(keys=keys)
    return RandGaussianNoised(keys=keys, prob=1.0, std=std, sample_std=False)
