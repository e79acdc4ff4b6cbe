"""Set-up of the training DataLoader's worker processes."""

from __future__ import annotations

import torch
from monai.data import set_track_meta
from monai.data.utils import worker_init_fn

__all__ = ["light_loader_workers", "untracked_worker_init"]


def light_loader_workers(num_workers: int, device: torch.device | str) -> int:
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

    Returns:
        ``num_workers`` for a CUDA device, else 0.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    return num_workers if torch.device(device).type == "cuda" else 0


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
