"""Set-up of the DataLoaders' worker processes, and of a cache held on the training device."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data import set_track_meta
from monai.data.utils import worker_init_fn
from monai.transforms import ToDeviced

from spine_monai.workflow.config import as_bool

__all__ = ["device_cache", "light_loader_workers", "loader_workers", "untracked_worker_init"]


def device_cache(keys: Sequence[str], device: torch.device | str, enabled: bool) -> list[ToDeviced]:
    """The transforms that end a cached preprocessing chain so that the cache is held on the training device.

    MONAI's fast-training recipe: the deterministic preprocessing is cached once, on the GPU, and the random
    transforms after the cache then run there, so no batch is copied from the host each step. The cache takes
    device memory (about 1.6 MB per X-ray film at 384x256 with its masks, in float32) and the loaders over it
    must run in the main process (:func:`loader_workers`). On a CPU device the cache is where it would be anyway.

    Example (a bundle's ``train.json``)::

        "device_cache": "$spine_monai.workflow.device_cache(['image', 'label'], @device, @cache_on_device)"

    Args:
        keys: the cached items to move (the image and label; indices that only choose crop centres are better
            left on the host, where reading them does not wait for the device).
        device: the training device.
        enabled: the bundle's ``cache_on_device`` key (text from the command line is read as
            :func:`spine_monai.workflow.as_bool` reads it).

    Returns:
        ``[ToDeviced(keys, device)]`` when ``enabled``, else an empty list.
    """
    return [ToDeviced(keys=list(keys), device=device)] if as_bool(enabled) else []


def loader_workers(num_workers: int, cache_on_device: bool = False) -> int:
    """Worker processes for a DataLoader over a cache: none when the cache is held on the device.

    Forked worker processes cannot use the parent's CUDA tensors, and a cache on the device needs no workers:
    loading is indexing it.

    Args:
        num_workers: the workers the bundle asks for.
        cache_on_device: the bundle's ``cache_on_device`` key.

    Returns:
        0 when ``cache_on_device``, else ``num_workers``.

    Raises:
        ValueError: for a negative ``num_workers``.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    return 0 if as_bool(cache_on_device) else num_workers


def light_loader_workers(num_workers: int, device: torch.device | str, cache_on_device: bool = False) -> int:
    """Worker processes for a training DataLoader whose work per batch is light (cached films, intensity transforms).

    Beside a GPU the workers use CPU cores that would otherwise wait for the device. On a CPU the training step's
    threads already use every core: there, worker processes slowed the X-ray trainers by more than the loading
    they took over (2 cores: 15.0 against 19.0 images/s with the loading in the main process, medians of four
    interleaved rounds, ``docs/performance.md``), so the loading runs in the main process between steps. The MRI
    bundle's loader (slices cropped from cached volumes) does the same since its bundle 0.1.5: two workers cost the
    step more than the loading they took over (trainer / bare 0.86 against 0.90 in the main process, 24.2 against 27.0
    slices/s, medians of four interleaved rounds on 2 cores, 2026-12-02).

    Args:
        num_workers: the workers to use on a GPU.
        device: the training device.
        cache_on_device: the bundle's ``cache_on_device`` key (see :func:`loader_workers`).

    Returns:
        ``num_workers`` for a CUDA device with the cache on the host, else 0.
    """
    workers = loader_workers(num_workers, cache_on_device)
    return workers if torch.device(device).type == "cuda" else 0


def untracked_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` for training loaders: MONAI's seeding of the random transforms, then no metadata.

    The cache holds MetaTensors because the deterministic part needs them (orientation and spacing read the
    affine, ``Invertd`` reads the trace). The random augmentation after the cache needs neither, and tracking
    metadata there doubles its cost (measured on the MRI bundle: 48 -> 23 ms per volume, and 5 -> 0.4 ms to
    collate a batch) on the same CPU cores the training step uses. Only the worker processes are affected;
    validation, evaluation and inference keep their metadata. A loader that runs in the main process needs
    :class:`spine_monai.transforms.UntrackedCompose` around its random part instead (the segmentation bundles).

    Args:
        worker_id: the worker's index, as PyTorch passes it.

    Returns:
        None.
    """
    worker_init_fn(worker_id)
    set_track_meta(False)
