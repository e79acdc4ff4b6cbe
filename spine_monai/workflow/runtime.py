"""Process-wide and tensor-layout settings for training.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves every request above its mmap threshold
(at most 32 MiB) with a fresh ``mmap`` and hands it back with ``munmap`` on free, and it returns the top of its
heap to the system when more than the trim threshold is free. A training step allocates and frees the same
large activations and gradients every iteration, so each step pays again for mapping, zero-filling and
unmapping them: on one 2-core VM that was half the process's system time and 8-10 points of the X-ray trainer's
ratio to the bare loop; on another it sped the trainer and the bare loop alike (``docs/performance.md``).
:func:`keep_freed_memory` tells glibc to keep what is freed for the next step instead.

:func:`memory_format` is the layout of the network's weights and input images that a bundle's ``channels_last`` key
selects (with ``torch.channels_last`` cuDNN's convolutions may skip transposes, mostly under AMP);
:func:`channels_last_by_default` is that key's default.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from collections.abc import Sequence

import torch

from spine_monai.workflow.config import as_bool
from spine_monai.workflow.loaders import device_cache, light_loader_workers, loader_workers

__all__ = ["Runtime", "keep_freed_memory", "memory_format", "channels_last_by_default", "MALLOC_ENV"]

logger = logging.getLogger(__name__)

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# 2 GiB, the largest value a C int (mallopt's argument) holds.
_TRIM_THRESHOLD = 2**31 - 1

# The environment variables and tunables through which a user sets glibc's allocator; their choice wins.
MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory(enabled: bool = True) -> bool:
    """Keep memory freed by the C allocator inside the process, for the next training step to reuse.

    Sets glibc's ``M_MMAP_MAX`` to 0 (large blocks come from the heap rather than from ``mmap``) and its trim
    threshold to 2 GiB (freed heap stays mapped). The process's peak resident memory is then the most it had
    allocated at once, which it reaches every step anyway; memory freed after the peak is not handed back to
    the system while the process lives. It applies to the whole process and to the DataLoader workers it forks
    from then on. Call it once, before training starts (a bundle's ``initialize``).

    Nothing is changed when ``enabled`` is false, when the C library is not glibc (macOS, Windows, musl), or when
    the user has set the allocator through ``MALLOC_*_`` environment variables or ``GLIBC_TUNABLES``.

    Args:
        enabled: apply the setting; a bundle passes its ``keep_freed_memory`` key so that a user can turn it off
            (``false`` from the command line too).

    Returns:
        True if the setting was applied, else False.

    Raises:
        ValueError: for ``enabled`` text that is not a boolean.
    """
    if not as_bool(enabled):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        logger.debug("keep_freed_memory: not glibc, allocator left as it is")
        return False
    user_set = [k for k in MALLOC_ENV if k in os.environ]
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        user_set.append("GLIBC_TUNABLES")
    if user_set:
        logger.info("keep_freed_memory: the allocator is set by %s; left as it is", ", ".join(user_set))
        return False
    libc = ctypes.CDLL(None)
    # mallopt returns 1 on success and 0 on error.
    applied = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    if not applied:
        logger.warning("keep_freed_memory: glibc's mallopt refused part of the setting")
    return applied


def memory_format(channels_last: bool, spatial_dims: int = 2) -> torch.memory_format:
    """The memory format for a network's weights and its batches: channels last, or left as they are.

    Example (a bundle's ``train.json``)::

        "memory_format": "$spine_monai.workflow.memory_format(@channels_last)",
        "network": "$@network_def.to(@device, memory_format=@memory_format)",
        "train#trainer#to_kwargs": {"memory_format": "@memory_format"}

    Whether channels last helps depends on the device, the precision and the network: see
    :func:`channels_last_by_default` for the bundles' choice.

    Args:
        channels_last: store channels last (NHWC for 2D, NDHWC for 3D); text such as ``'false'`` from the
            command line is read as :func:`spine_monai.workflow.as_bool` reads it.
        spatial_dims: 2 or 3, the network's spatial dimensions.

    Returns:
        ``torch.channels_last`` (2D) or ``torch.channels_last_3d`` (3D) when ``channels_last``, else
        ``torch.preserve_format``, which ``Tensor.to`` and ``Module.to`` treat as no change.

    Raises:
        ValueError: for ``spatial_dims`` other than 2 or 3, or ``channels_last`` text that is not a boolean.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"channels-last layouts exist for 2 or 3 spatial dimensions, got spatial_dims={spatial_dims}")
    if not as_bool(channels_last):
        return torch.preserve_format
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def channels_last_by_default(device: str | torch.device) -> bool:
    """The bundles' default for ``channels_last`` on the ``device`` the network runs on: on for a CPU only.

    On both CPUs measured, channels last sped the segmentation networks' training step with the same model (losses
    within float rounding): the bare forward + backward + step by a median of 4-6 % on a 2-core Intel Xeon VM and
    8-14 % on a 2-core AMD EPYC VM, in interleaved pairs (``make bench-layout``, ``docs/performance.md``); on the
    latter the classification bundle's film and vertebra-level classifiers by 12 % and 55 %, and the MRI bundle's
    inference by 22 % per volume. On a GPU it has not been measured yet, so it stays off there until
    ``pipelines/gpu_check.sh`` has; ``--channels_last true`` turns it on.

    Args:
        device: the device the network trains or infers on, a ``torch.device`` or its name.

    Returns:
        True for a CPU device, else False.
    """
    return torch.device(device).type == "cpu"


class Runtime:
    """Where and how a bundle run computes, read once from the bundle's keys.

    The keys arrive as the config gives them or as text from the command line (``--progress_bar false``); each
    boolean is read here once (:func:`~spine_monai.workflow.as_bool`), and the config refers to the attributes.

    Example (a bundle's ``train.json``)::

        "runtime": {"_target_": "spine_monai.workflow.Runtime", "device": "@device", "amp": "@amp",
                    "channels_last": "@channels_last", "cache_on_device": "@cache_on_device",
                    "num_workers": "@num_workers", "progress_bar": "@progress_bar"},
        "network": "$@network_def.to(@device, memory_format=@runtime.memory_format)"

    Args:
        device: the device the network runs on.
        amp: mixed precision.
        channels_last: channels-last weights and batches; ``None`` takes :func:`channels_last_by_default`.
        cache_on_device: hold the cached preprocessing on ``device`` (:func:`~spine_monai.workflow.device_cache`).
        num_workers: DataLoader worker processes where workers help (:func:`~spine_monai.workflow.loader_workers`).
        progress_bar: show progress bars while caching and training.
        spatial_dims: 2 or 3, the network's spatial dimensions.

    Raises:
        ValueError: for a boolean key whose text is not a boolean.
    """

    def __init__(
        self,
        device: torch.device | str,
        amp: bool | str = False,
        channels_last: bool | str | None = None,
        cache_on_device: bool | str = False,
        num_workers: int = 0,
        progress_bar: bool | str = True,
        spatial_dims: int = 2,
    ) -> None:
        self.device = torch.device(device)
        self.amp = as_bool(amp)
        self.channels_last = channels_last_by_default(self.device) if channels_last is None else as_bool(channels_last)
        self.memory_format = memory_format(self.channels_last, spatial_dims)
        self.cache_on_device = as_bool(cache_on_device)
        self.num_workers = int(num_workers)
        self.progress_bar = as_bool(progress_bar)

    def device_cache(self, keys: Sequence[str]) -> list:
        """The transforms that end a cached chain so that the cache is on the device, when ``cache_on_device``."""
        return device_cache(keys, self.device, self.cache_on_device)

    @property
    def loader_workers(self) -> int:
        """Workers of a loader whose work per item is heavy (:func:`~spine_monai.workflow.loader_workers`)."""
        return loader_workers(self.num_workers, self.cache_on_device)

    @property
    def light_loader_workers(self) -> int:
        """Workers of a training loader over cached items (:func:`~spine_monai.workflow.light_loader_workers`)."""
        return light_loader_workers(self.num_workers, self.device, self.cache_on_device)
