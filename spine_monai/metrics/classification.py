"""Classification metrics as functions on arrays (no scikit-learn), and an accuracy metric for MONAI handlers.

Labels are integer class ids ``0..n_classes-1``; scores are the probability of the positive class (binary ROC) or
one row of class probabilities per sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from monai.metrics import CumulativeIterationMetric

__all__ = [
    "AccuracyMetric",
    "accuracy",
    "classification_report",
    "confusion_matrix",
    "precision_recall_f1",
    "roc_auc",
    "roc_curve",
]


def _labels(y) -> np.ndarray:
    return np.asarray(y).reshape(-1).astype(np.int64)


def confusion_matrix(y_true, y_pred, n_classes: int = 2) -> np.ndarray:
    """Counts with the true class on the rows and the predicted class on the columns.

    Args:
        y_true: (N,) true class ids.
        y_pred: (N,) predicted class ids.
        n_classes: number of classes.

    Returns:
        an (n_classes, n_classes) int64 array; ``cm[i, j]`` counts samples of class i predicted as j.

    Raises:
        ValueError: for arrays of different lengths or ids outside ``0..n_classes-1``.
    """
    t, p = _labels(y_true), _labels(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true labels for {p.size} predictions")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"class ids must lie in 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def accuracy(y_true, y_pred) -> float:
    """Fraction of correct predictions; NaN when there are none."""
    t, p = _labels(y_true), _labels(y_pred)
    return float(np.mean(t == p)) if t.size else float("nan")


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # An undefined ratio (nothing predicted or nothing present) is 0, as scikit-learn's zero_division default.
    return np.where(den > 0, num / np.maximum(den, 1), 0.0)


def precision_recall_f1(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall (sensitivity), F1 and support from a confusion matrix.

    Args:
        cm: (K, K) counts, true class on the rows (see :func:`confusion_matrix`).

    Returns:
        a dict of (K,) arrays ``precision``, ``recall``, ``f1`` and ``support`` (true samples per class). An
        undefined value (a class never predicted, or absent) is 0.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    precision, recall = _div(tp, predicted), _div(tp, support)
    f1 = _div(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def classification_report(y_true, y_pred, class_names: Sequence[str]) -> pd.DataFrame:
    """The per-class table of scikit-learn's ``classification_report``, as a DataFrame.

    Rows: one per class, then ``accuracy``, ``macro avg`` and ``weighted avg``; columns ``precision``,
    ``recall``, ``f1`` and ``support``. As in the text report, the accuracy row has the accuracy under ``f1``, the
    sample count under ``support`` and no precision or recall.

    Args:
        y_true: (N,) true class ids.
        y_pred: (N,) predicted class ids.
        class_names: names in id order, e.g. ``["Normal", "Damaged"]``.

    Returns:
        the table, indexed by row name (index name ``class``).
    """
    names = list(class_names)
    cm = confusion_matrix(y_true, y_pred, len(names))
    s = precision_recall_f1(cm)
    n = int(s["support"].sum())
    rows = {name: [s["precision"][i], s["recall"][i], s["f1"][i], int(s["support"][i])] for i, name in enumerate(names)}
    rows["accuracy"] = [np.nan, np.nan, accuracy(y_true, y_pred), n]
    rows["macro avg"] = [s["precision"].mean(), s["recall"].mean(), s["f1"].mean(), n]
    w = s["support"] / max(n, 1)
    rows["weighted avg"] = [(s["precision"] * w).sum(), (s["recall"] * w).sum(), (s["f1"] * w).sum(), n]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["precision", "recall", "f1", "support"])
    table["support"] = table["support"].astype(np.int64)
    table.index.name = "class"
    return table


def roc_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The receiver operating characteristic of a binary score, one point per distinct threshold.

    A sample is called positive when its score is at least the threshold. The first point is ``(0, 0)`` at
    threshold ``inf``; thresholds then decrease down to the lowest score, where the curve reaches ``(1, 1)``.

    Args:
        y_true: (N,) labels, 1 for the positive class and 0 otherwise.
        scores: (N,) scores of the positive class, higher meaning more likely positive.

    Returns:
        ``(fpr, tpr, thresholds)``; a rate is NaN when its class has no sample.

    Raises:
        ValueError: for arrays of different lengths or labels other than 0 and 1.
    """
    t = _labels(y_true)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if t.shape != s.shape:
        raise ValueError(f"{t.size} labels for {s.size} scores")
    if t.size and not np.isin(t, (0, 1)).all():
        raise ValueError("roc_curve needs binary labels 0/1")
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    # the last index of each run of equal scores: every sample there is called positive together
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.array([], dtype=np.int64)
    tps = np.cumsum(t)[last]
    fps = (last + 1) - tps
    n_pos, n_neg = int(t.sum()), int(t.size - t.sum())
    tpr = np.r_[0.0, tps / n_pos] if n_pos else np.full(last.size + 1, np.nan)
    fpr = np.r_[0.0, fps / n_neg] if n_neg else np.full(last.size + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, s[last]]


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve of a binary score: the probability that a random positive scores above a random
    negative, ties counting one half (the Mann-Whitney statistic, equal to the trapezoidal area).

    Args:
        y_true: (N,) labels 0/1.
        scores: (N,) scores of the positive class.

    Returns:
        the area, or NaN when either class has no sample.
    """
    t = _labels(y_true)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if t.shape != s.shape:
        raise ValueError(f"{t.size} labels for {s.size} scores")
    n_pos, n_neg = int((t == 1).sum()), int((t == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # average ranks of tied scores
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], s.size]
    for a, b in zip(starts, ends, strict=True):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return float((ranks[t == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


class AccuracyMetric(CumulativeIterationMetric):
    """Accuracy of class scores against labels, accumulated over iterations (for MONAI's handlers and DDP).

    ``y_pred`` is (B, C) class scores (the argmax is the prediction) or (B,) / (B, 1) positive-class
    probabilities (positive when at least ``threshold``); ``y`` is (B,) / (B, 1) class ids or (B, C) one-hot.

    Args:
        threshold: decision threshold of a single-column score.
    """

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = threshold

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y_pred, y = torch.as_tensor(y_pred), torch.as_tensor(y)
        if y_pred.ndim == 2 and y_pred.shape[1] > 1:
            pred = y_pred.argmax(dim=1)
        else:
            pred = (y_pred.reshape(y_pred.shape[0]) >= self.threshold).long()
        truth = y.argmax(dim=1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(y.shape[0]).long()
        return (pred.to(truth.device) == truth).float().reshape(-1, 1)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """The accuracy over everything accumulated so far (NaN when empty)."""
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor) or data.numel() == 0:
            return torch.tensor(float("nan"))
        return data.float().mean()
