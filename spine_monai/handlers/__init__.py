"""Ignite handlers for what MONAI's own handlers don't do."""

from spine_monai.handlers.checkpoint import AtomicCheckpointSaver, attach_resume, find_checkpoint, latest_checkpoint
from spine_monai.handlers.metrics import MetricsByStructure, SegmentationCSVWriter, ToleranceDice, epoch_writer

__all__ = [
    "AtomicCheckpointSaver",
    "MetricsByStructure",
    "SegmentationCSVWriter",
    "ToleranceDice",
    "attach_resume",
    "find_checkpoint",
    "latest_checkpoint",
    "epoch_writer",
]
