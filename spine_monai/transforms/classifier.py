"""The geometry of the classifier's input: each whole film fitted to one size, or one patch per vertebral body."""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import MapTransform, SpatialPadd

from spine_monai.bundle import as_bool
from spine_monai.data.classification import mask_key, view_structures
from spine_monai.transforms.spatial import ResizeMasksToFitd, ResizeToFitd
from spine_monai.transforms.vertebrae import VertebraPatchesd

__all__ = ["CLASSIFIER_GRID_HINT", "classifier_geometry", "classifier_input_grid"]


# How to run a classifier checkpoint on the grid it was trained on (see spine_monai.handlers.check_input_grid).
CLASSIFIER_GRID_HINT = (
    'use the settings it was trained with: --spatial_size "{trained}" for whole films, --patch_size {trained[0]} at '
    "vertebra level"
)


def classifier_input_grid(spatial_size: Sequence[int], vertebra_level: bool, patch_size: int) -> list[int]:
    """The (H, W) of each view as the classifier's network receives it from :func:`classifier_geometry`.

    Args:
        spatial_size: the whole-film input size.
        vertebra_level: vertebra patches instead of whole films (text such as ``'true'`` is read as
            :func:`spine_monai.bundle.as_bool` reads it).
        patch_size: the side of a vertebra patch.

    Returns:
        ``[patch_size, patch_size]`` at vertebra level, else ``spatial_size``.
    """
    return [int(patch_size)] * 2 if as_bool(vertebra_level) else [int(s) for s in spatial_size]


def _vertebra(view: str) -> str:
    return f"{view.capitalize()}_Vertebra"


def classifier_geometry(
    views: Sequence[str],
    image_keys: Sequence[str],
    spatial_size: Sequence[int],
    vertebra_level: bool = False,
    mask_structures: Sequence[str] = (),
    patch_size: int = 32,
    max_vertebrae: int = 20,
    window: float = 2.2,
) -> list[MapTransform]:
    """The transforms that bring loaded, intensity-scaled views (and masks) to the network's input geometry.

    Whole films: each film is resized to fit ``spatial_size`` with its aspect ratio kept, its masks downsampled by
    area coverage, and everything padded to ``spatial_size``. Vertebra level: each view is cut into
    :py:class:`~spine_monai.transforms.VertebraPatchesd` patches around the bodies of its vertebra mask.

    Args:
        views: the view keys, in the network's order.
        image_keys: every key the network reads (views and mask keys), as from
            :func:`spine_monai.data.classification.image_keys`.
        spatial_size: the whole-film input size (H, W).
        vertebra_level: cut vertebra patches instead.
        mask_structures: the mask structures read; at vertebra level each view's first one must be its vertebra
            mask (``Ap_Vertebra``, ``Lat_Vertebra``).
        patch_size, max_vertebrae, window: as for :py:class:`~spine_monai.transforms.VertebraPatches`.

    Returns:
        the transforms, in order. Their trace on each view key maps network-sized maps back onto the film.

    Raises:
        ValueError: at vertebra level, when a view's first mask structure is not its vertebra mask.
    """
    mask_keys = [k for k in image_keys if k not in views]
    if not vertebra_level:
        out: list[MapTransform] = [ResizeToFitd(keys=list(views), spatial_size=spatial_size)]
        if mask_keys:
            out.append(ResizeMasksToFitd(keys=mask_keys, spatial_size=spatial_size, coverage=0.5))
        return [*out, SpatialPadd(keys=list(image_keys), spatial_size=spatial_size)]
    per_view = view_structures(views, mask_structures)
    wrong = [v for v in views if mask_key(v) not in image_keys or per_view[v][:1] != [_vertebra(v)]]
    if wrong:
        raise ValueError(
            f"the vertebra-level classifier cuts its patches around the bodies of each view's vertebra mask: "
            f"mask_structures must start, for the views {wrong}, with {[_vertebra(v) for v in wrong]}; "
            f"got {list(mask_structures)}"
        )
    return [
        VertebraPatchesd(
            keys=list(views),
            mask_keys=[mask_key(v) for v in views],
            patch_size=patch_size,
            max_vertebrae=max_vertebrae,
            window=window,
        )
    ]
