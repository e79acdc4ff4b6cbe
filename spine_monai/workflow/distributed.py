"""What multi-process (torchrun) training needs from handlers: only rank 0 writes files, and every rank leaves the
process group together."""

from __future__ import annotations

from collections.abc import Iterable

import torch.distributed as dist
from ignite.handlers import ProgressBar
from monai.handlers import CheckpointSaver, StatsHandler, TensorBoardImageHandler, TensorBoardStatsHandler
from torch.utils.tensorboard import SummaryWriter

__all__ = ["LazySummaryWriter", "end_process_group", "rank_zero_only"]

# Handlers whose only job is to write logs, event files or checkpoints; metric handlers are kept on every rank
# because their all-gather needs every rank.
_WRITERS = (StatsHandler, TensorBoardStatsHandler, TensorBoardImageHandler, CheckpointSaver, ProgressBar)


def rank_zero_only(handlers: Iterable) -> list:
    """The handlers to attach on this process: all of them on rank 0, none of the writers elsewhere.

    Also drops ``None`` entries, which bundle configs use for optional handlers.

    Args:
        handlers: handler objects (or ``None``).

    Returns:
        the list to pass as ``train_handlers`` / ``val_handlers``.
    """
    kept = [h for h in handlers if h is not None]
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    return kept if rank == 0 else [h for h in kept if not isinstance(h, _WRITERS)]


class LazySummaryWriter(SummaryWriter):
    """A TensorBoard ``SummaryWriter`` that creates its event file on the first write, not on construction.

    Bundle configs build every handler on every rank; with a plain writer each rank would leave an event file
    even though only rank 0's handlers are attached. Sharing one lazy writer between the TensorBoard handlers
    also keeps a run's scalars and images in one file. Takes ``SummaryWriter``'s arguments.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._armed = False
        super().__init__(*args, **kwargs)
        self._armed = True

    def _get_file_writer(self):
        if not self._armed:
            return None
        return super()._get_file_writer()


def end_process_group() -> bool:
    """Leave ``torch.distributed`` at the end of a multi-process run: wait for every rank, then destroy the group.

    Ranks reach the end at different times (rank 0 still writes the last checkpoint when the others are done). A rank
    that destroyed its group and exited meanwhile was killed by ``std::terminate`` ("terminate called without an active
    exception", SIGABRT) in 6 of 31 two-process gloo runs on a CPU (``tests/test_multi_process.py`` after other tests),
    failing the whole torchrun job after training had finished; with a barrier first, in none of 40. A bundle's
    ``multi_gpu_*.json`` calls this last in ``finalize``.

    Returns:
        True when a process group was destroyed, False when none was initialised (nothing to do).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return False
    dist.barrier()
    dist.destroy_process_group()
    return True
