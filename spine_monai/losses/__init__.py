"""Losses MONAI lacks."""

from spine_monai.losses.deep_supervision import StackedDeepSupervisionLoss
from spine_monai.losses.multilabel import MultiLabelDiceBCELoss, gap_pixels, tubed_skeleton

__all__ = ["MultiLabelDiceBCELoss", "StackedDeepSupervisionLoss", "gap_pixels", "tubed_skeleton"]
