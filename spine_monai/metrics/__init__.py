"""Metrics MONAI lacks, as functions on tensors with MONAI metric wrappers."""

from spine_monai.metrics.segmentation import (
    ToleranceDiceMetric,
    confusion_counts,
    disk_dilate,
    multiclass_scores,
    rates_from_counts,
    tolerance_dice,
)

__all__ = [
    "ToleranceDiceMetric",
    "confusion_counts",
    "disk_dilate",
    "multiclass_scores",
    "rates_from_counts",
    "tolerance_dice",
]
