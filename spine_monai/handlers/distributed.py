"""What multi-process (torchrun) training needs from handlers: only rank 0 writes files."""

from __future__ import annotations

from collections.abc import Iterable

import torch.distributed as dist
from ignite.handlers import ProgressBar
from monai.handlers import CheckpointSaver, StatsHandler, TensorBoardImageHandler, TensorBoardStatsHandler
from torch.utils.tensorboard import SummaryWriter

__all__ = ["LazySummaryWriter", "rank_zero_only"]

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
