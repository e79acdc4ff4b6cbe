"""Segmentation metrics MONAI lacks: rates from confusion counts, and a distance-tolerant Dice for thin lines.

All functions take batched, channel-first binary tensors (B, C, H, W[, D]) and return (B, C) values.
A channel empty in both prediction and truth scores 1 (Dice, Jaccard) and 0 (error rates): nothing was
missed and nothing was invented.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.metrics import CumulativeIterationMetric, get_confusion_matrix
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

__all__ = [
    "confusion_counts",
    "rates_from_counts",
    "multiclass_scores",
    "disk_dilate",
    "tolerance_dice",
    "ToleranceDiceMetric",
]


def confusion_counts(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-channel [TP, FP, TN, FN] counts (MONAI's order), shape (B, C, 4)."""
    return get_confusion_matrix(pred.float(), target.float(), include_background=True)


def _safe_div(num: torch.Tensor, den: torch.Tensor, empty: float) -> torch.Tensor:
    out = num / den.clamp_min(1e-12)
    return torch.where(den > 0, out, torch.full_like(out, empty))


def rates_from_counts(counts: torch.Tensor, empty: float = 1.0) -> dict[str, torch.Tensor]:
    """Dice, Jaccard, false-positive rate and false-negative rate from confusion counts.

    Args:
        counts: (..., 4) as returned by :func:`confusion_counts`.
        empty: Dice and Jaccard of a channel empty in both prediction and truth: 1.0 (nothing missed, nothing
            invented) or ``float("nan")`` to leave it out of means, as multi-class mean IoU tables do.

    Returns:
        a dict with keys ``Dice``, ``Jaccard``, ``FP`` (FP / (FP + TN)) and ``FN`` (FN / (FN + TP)).
    """
    tp, fp, tn, fn = counts.float().unbind(-1)
    return {
        "Dice": _safe_div(2 * tp, 2 * tp + fp + fn, empty),
        "Jaccard": _safe_div(tp, tp + fp + fn, empty),
        "FP": _safe_div(fp, fp + tn, 0.0),
        "FN": _safe_div(fn, fn + tp, 0.0),
    }


def multiclass_scores(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Whole-image scores of a multi-class segmentation, per case, from one-hot confusion counts.

    With t_i the voxels of class i in the truth and n_ii those correctly labelled (Long et al., the definitions
    the lateral-lumbar X-ray study used), over the classes present in the truth or the prediction:

    - pixel accuracy: sum_i n_ii / sum_i t_i
    - mean accuracy: mean over classes present in the truth of n_ii / t_i
    - mean IoU: mean of IoU_i; ``mean_iou_no_bg`` leaves class 0 out, as the MIDAS table does
    - frequency-weighted IoU: sum_i t_i IoU_i / sum_i t_i

    Args:
        counts: (N, C, 4) [TP, FP, TN, FN] per case and class, class 0 being the background.

    Returns:
        a dict of (N,) tensors: ``pixel_accuracy``, ``mean_accuracy``, ``mean_iou``, ``mean_iou_no_bg``, ``fw_iou``.
    """
    tp, fp, _, fn = counts.double().unbind(-1)
    truth = tp + fn
    iou = _safe_div(tp, tp + fp + fn, float("nan"))
    recall = _safe_div(tp, truth, float("nan"))
    total = truth.sum(-1).clamp_min(1)
    return {
        "pixel_accuracy": tp.sum(-1) / total,
        "mean_accuracy": recall.nanmean(-1),
        "mean_iou": iou.nanmean(-1),
        "mean_iou_no_bg": iou[:, 1:].nanmean(-1),
        "fw_iou": (truth * iou.nan_to_num(0.0)).sum(-1) / total,
    }


def _disk(radius: int, ndim: int, device) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    grids = torch.meshgrid(*([r] * ndim), indexing="ij")
    return (sum(g**2 for g in grids) <= radius**2 + 1e-6).float()


def disk_dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of each channel by a disk (ball in 3D) of ``radius`` pixels.

    Args:
        mask: (B, C, *spatial) binary tensor.
        radius: dilation radius in pixels; 0 returns the mask.

    Returns:
        the dilated mask as float 0/1.
    """
    mask = mask.float()
    if radius <= 0:
        return mask
    ndim = mask.ndim - 2
    b, c = mask.shape[:2]
    kernel = _disk(radius, ndim, mask.device)[None, None]
    conv = F.conv2d if ndim == 2 else F.conv3d
    out = conv(mask.reshape(b * c, 1, *mask.shape[2:]), kernel, padding=radius)
    return (out > 0.5).float().reshape(mask.shape)


def tolerance_dice(pred: torch.Tensor, target: torch.Tensor, tolerance: int = 2) -> torch.Tensor:
    """Dice after dilating both prediction and truth by ``tolerance`` pixels.

    A 3-px line predicted 1-2 px off scores near 0 on plain Dice; this scores how well the line is
    found, which is what a reader of the film needs.

    Args:
        pred: (B, C, *spatial) binary prediction.
        target: (B, C, *spatial) binary truth.
        tolerance: dilation radius in pixels, at the resolution of the inputs.

    Returns:
        (B, C) tolerance Dice.
    """
    return rates_from_counts(confusion_counts(disk_dilate(pred, tolerance), disk_dilate(target, tolerance)))["Dice"]


class ToleranceDiceMetric(CumulativeIterationMetric):
    """Cumulative MONAI metric of :func:`tolerance_dice`, per sample and channel.

    Args:
        tolerance: dilation radius in pixels.
        reduction: MONAI reduction applied in :meth:`aggregate`.
        get_not_nans: also return the count of non-NaN values.
    """

    def __init__(
        self, tolerance: int = 2, reduction: MetricReduction | str = MetricReduction.MEAN, get_not_nans: bool = False
    ) -> None:
        super().__init__()
        self.tolerance = tolerance
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return tolerance_dice(y_pred, y, self.tolerance)

    def aggregate(self, reduction: MetricReduction | str | None = None):
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the data to aggregate must be a PyTorch Tensor.")
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f
