"""The one call a bundle config makes before anything is built: :func:`setup`."""

from __future__ import annotations

import logging

import torch
from monai.utils import set_determinism

from spine_monai.errors import end_with_data_errors
from spine_monai.workflow.config import check_overrides
from spine_monai.workflow.runtime import keep_freed_memory as _keep_freed_memory

__all__ = ["setup"]

logger = logging.getLogger(__name__)


def setup(
    seed: int | None = 0,
    keep_freed_memory: bool | str = False,
    backend: str | None = None,
    device: torch.device | str | None = None,
) -> bool:
    """Prepare the process for a bundle run; a config's ``initialize`` list holds this one call.

    In order: join the process group of a multi-process run (``backend``) and select this rank's GPU, refuse
    unknown command-line overrides (:func:`~spine_monai.workflow.check_overrides`), make a run that dies of bad data
    end with the files and reasons (:func:`~spine_monai.errors.end_with_data_errors`), keep freed memory for the next
    training step (:func:`~spine_monai.workflow.keep_freed_memory`), and seed every generator.

    Args:
        seed: passed to ``monai.utils.set_determinism``; ``None`` leaves the generators alone.
        keep_freed_memory: the bundle's ``keep_freed_memory`` key (a boolean, or text from the command line).
        backend: the ``torch.distributed`` backend of a ``multi_gpu_*.json`` run; ``None`` for one process.
        device: this rank's device, made the current CUDA device when it is a GPU.

    Returns:
        True, so it can sit in an expression list.

    Raises:
        UnknownOverrideError: for an override no config file of the bundle defines.
    """
    if backend is not None:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        if device is not None and torch.device(device).type == "cuda":
            torch.cuda.set_device(device)
    check_overrides()
    end_with_data_errors()
    _keep_freed_memory(keep_freed_memory)
    if seed is not None:
        set_determinism(seed=int(seed))
    return True
