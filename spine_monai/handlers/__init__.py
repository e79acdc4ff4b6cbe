"""Ignite handlers for what MONAI's own handlers don't do."""

from spine_monai.handlers.checkpoint import AtomicCheckpointSaver, CheckpointLoader, attach_resume
from spine_monai.handlers.metrics import MetricsByStructure, SegmentationCSVWriter, ToleranceDice, epoch_writer
from spine_monai.handlers.validation import ValidationHandler

__all__ = [
    "AtomicCheckpointSaver",
    "CheckpointLoader",
    "MetricsByStructure",
    "SegmentationCSVWriter",
    "ToleranceDice",
    "ValidationHandler",
    "attach_resume",
    "epoch_writer",
]
