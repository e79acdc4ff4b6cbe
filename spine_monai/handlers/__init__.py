"""Ignite handlers for what MONAI's own handlers don't do."""

from spine_monai.handlers.checkpoint import (
    INPUT_GRID_KEY,
    MODEL_IDENTITY_KEY,
    AtomicCheckpointSaver,
    attach_resume,
    check_input_grid,
    find_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    record_input_grid,
)
from spine_monai.handlers.distributed import LazySummaryWriter, end_process_group, rank_zero_only
from spine_monai.handlers.metrics import MetricsByStructure, SegmentationCSVWriter, ToleranceDice, epoch_writer
from spine_monai.handlers.validation import ValidationHandler

__all__ = [
    "AtomicCheckpointSaver",
    "INPUT_GRID_KEY",
    "MODEL_IDENTITY_KEY",
    "LazySummaryWriter",
    "MetricsByStructure",
    "SegmentationCSVWriter",
    "ToleranceDice",
    "ValidationHandler",
    "attach_resume",
    "check_input_grid",
    "end_process_group",
    "find_checkpoint",
    "latest_checkpoint",
    "load_checkpoint",
    "record_input_grid",
    "rank_zero_only",
    "epoch_writer",
]
