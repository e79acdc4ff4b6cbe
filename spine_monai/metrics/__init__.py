"""Metrics MONAI lacks, as functions on tensors with MONAI metric wrappers."""

from spine_monai.metrics.segmentation import (
    RATE_NAMES,
    ToleranceDiceMetric,
    confusion_counts,
    disk_dilate,
    rates_from_counts,
    tolerance_dice,
)

__all__ = [
    "RATE_NAMES",
    "ToleranceDiceMetric",
    "confusion_counts",
    "disk_dilate",
    "rates_from_counts",
    "tolerance_dice",
]
