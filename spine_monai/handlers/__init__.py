"""Ignite handlers for what MONAI's own handlers don't do."""

from spine_monai.handlers.checkpoint import AtomicCheckpointSaver, attach_resume, find_checkpoint, latest_checkpoint
from spine_monai.handlers.distributed import LazySummaryWriter, end_process_group, rank_zero_only
from spine_monai.handlers.metrics import MetricsByStructure, SegmentationCSVWriter, ToleranceDice, epoch_writer

__all__ = [
    "AtomicCheckpointSaver",
    "LazySummaryWriter",
    "MetricsByStructure",
    "SegmentationCSVWriter",
    "ToleranceDice",
    "attach_resume",
    "end_process_group",
    "find_checkpoint",
    "latest_checkpoint",
    "rank_zero_only",
    "epoch_writer",
]
