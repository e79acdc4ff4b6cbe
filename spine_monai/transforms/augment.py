"""Training augmentation of the classification bundle, built per view from the keys the network reads."""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import (
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    RandScaleIntensityd,
)

from spine_monai.data.classification import keys_of_view

__all__ = ["view_augmentations"]


def view_augmentations(
    views: Sequence[str],
    image_keys: Sequence[str],
    spatial_size: Sequence[int],
    rotate: float = 0.175,
    scale: float = 0.1,
    translate: float = 0.05,
) -> list[MapTransform]:
    """Random transforms for a patient's views, each view drawn on its own.

    AP and LAT are separate exposures, so each view gets its own random affine; its mask channels (mask-guided
    mode) follow their film with nearest-neighbour sampling so they stay binary. There is no flip: a mirrored
    lateral film faces the other way and a mirrored AP film swaps the patient's sides, which is not a plausible
    radiograph. Intensity changes (noise, gamma, gain) touch the grey image only.

    Args:
        views: the view keys (``"AP"``, ``"LAT"``) in the network's order.
        image_keys: every key the network reads (views and their mask keys), as from
            :func:`spine_monai.data.classification.image_keys`.
        spatial_size: the network's input size (H, W); translations are a fraction of it.
        rotate: largest rotation, radians (default about 10 degrees).
        scale: largest relative zoom.
        translate: largest shift as a fraction of each side.

    Returns:
        the transforms, to apply in order after the preprocessing.
    """
    transforms: list[MapTransform] = []
    for view in views:
        keys = keys_of_view(image_keys, view)
        transforms += [
            RandAffined(
                keys=keys,
                prob=0.8,
                rotate_range=rotate,
                scale_range=[scale, scale],
                translate_range=[translate * s for s in spatial_size],
                mode=["bilinear" if k == view else "nearest" for k in keys],
                padding_mode="zeros",
            ),
            RandGaussianNoised(keys=view, prob=0.2, std=0.02),
            RandAdjustContrastd(keys=view, prob=0.3, gamma=[0.7, 1.5]),
            RandScaleIntensityd(keys=view, prob=0.3, factors=0.1),
        ]
    return transforms
