"""Composition of training transforms that runs without MONAI's metadata tracking."""

from __future__ import annotations

from monai.data import get_track_meta, set_track_meta
from monai.transforms import Compose
from monai.utils import convert_to_tensor

__all__ = ["UntrackedCompose"]


class UntrackedCompose(Compose):
    """MONAI's ``Compose`` with metadata tracking off while it runs, and restored afterwards.

    Made for the random part of a training pipeline after a ``CacheDataset``'s cache. The cache keeps its
    MetaTensors (orientation, spacing and ``Invertd`` need the affine and the trace), but the augmentation and the
    trainer need neither, and tracking them costs as much as the work: profiled on 64 cached X-ray films in the
    main process, MetaTensor bookkeeping was ~40 % of the loader's time, and collating a batch of 8 MRI slices took
    5 ms as MetaTensors against 0.4 ms as plain tensors (``docs/performance.md``). Outputs are plain tensors.

    Nested in the dataset's ``Compose`` it counts as a random transform (``Compose`` is ``Randomizable``), so the
    cache stops before it. It works the same in DataLoader worker processes and in the main process (a DataLoader
    with ``num_workers=0``), where a ``worker_init_fn`` cannot turn tracking off. The switch is process-wide: it
    must not run in a thread beside other MONAI transforms that need metadata.

    Example (a bundle's ``train.json``)::

        "random": {"_target_": "spine_monai.transforms.UntrackedCompose", "transforms": "@train#augmentation"},
        "transforms": {"_target_": "Compose", "transforms": "$@preprocessing + [@train#random]"}

    Args:
        transforms: the transforms, as for ``Compose``.
        kwargs: the other arguments of ``Compose``.
    """

    def __call__(self, input_, start=0, end=None, threading=False, lazy: bool | None = None):
        """Run the transforms with metadata tracking off.

        Args:
            input_: the data, as for ``Compose``.
            start: index of the first transform to run.
            end: index after the last transform to run.
            threading: as for ``Compose`` (skip the transforms marked ``ThreadUnsafe``).
            lazy: as for ``Compose``.

        Returns:
            the transformed data, with plain tensors (numbers and arrays become tensors too, as collation would
            make them).
        """
        tracked = get_track_meta()
        set_track_meta(False)
        try:
            # Keys no transform touched (a label under intensity transforms) still hold the cache's MetaTensors,
            # and collating those carries their metadata along.
            return convert_to_tensor(
                super().__call__(input_, start=start, end=end, threading=threading, lazy=lazy), track_meta=False
            )
        finally:
            set_track_meta(tracked)
