"""Ignite handlers of the classifier: accuracy, the evaluation report files and the predictions.

GradCAM and occlusion maps are in :mod:`spine_monai.handlers.gradcam`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events
from monai.handlers import IgniteMetricHandler
from monai.utils import evenly_divisible_all_gather, string_list_all_gather

from spine_monai.metrics.classification import (
    AccuracyMetric,
    accuracy,
    classification_report,
    confusion_matrix,
    roc_auc,
    roc_curve,
)

__all__ = [
    "ClassificationAccuracy",
    "ClassificationReportWriter",
    "PredictionCSVWriter",
]

logger = logging.getLogger(__name__)


class ClassificationAccuracy(IgniteMetricHandler):
    """Ignite handler for :py:class:`~spine_monai.metrics.classification.AccuracyMetric`.

    Args:
        threshold: decision threshold when ``y_pred`` is a single positive-class probability.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``, e.g.
            ``monai.handlers.from_engine(["pred", "label"])``.
        save_details: keep the per-sample values in ``engine.state.metric_details``.
    """

    def __init__(
        self, threshold: float = 0.5, output_transform: Callable = lambda x: x, save_details: bool = True
    ) -> None:
        super().__init__(
            metric_fn=AccuracyMetric(threshold=threshold), output_transform=output_transform, save_details=save_details
        )


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _per_sample(data, key: str) -> list:
    """One value per sample of ``key``, from a collated dict or MONAI's decollated list of dicts.

    (``monai.handlers.from_engine`` returns a tuple for a dict but the bare list for a list and one key.)
    """
    if isinstance(data, dict):
        value = data[key]
        return list(value) if isinstance(value, (list, tuple, torch.Tensor, np.ndarray)) else [value]
    return [d[key] for d in data]


class _ProbabilityCollector:
    """Collects, over an evaluation epoch, each sample's id, class probabilities and (optionally) true label.

    Under DDP the epoch's rows are gathered from every rank at the end, and only rank 0 writes.

    Args:
        class_names: names in class-id order; the probability vectors have one entry per name.
        id_key: batch key of each sample's id.
        prob_key: output key of the class probabilities (a softmax of the logits).
        label_key: output key of the true class id, or ``None`` when there is none (inference).
    """

    def __init__(
        self,
        class_names: Sequence[str] = ("Normal", "Damaged"),
        id_key: str = "patient",
        prob_key: str = "pred",
        label_key: str | None = "label",
    ) -> None:
        self.class_names = list(class_names)
        self.id_key, self.prob_key, self.label_key = id_key, prob_key, label_key
        self._ids: list[str] = []
        self._probs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._finish)

    def _reset(self, engine: Engine) -> None:
        self._ids, self._probs, self._labels = [], [], []

    def _collect(self, engine: Engine) -> None:
        ids = _per_sample(engine.state.batch, self.id_key)
        probs = _per_sample(engine.state.output, self.prob_key)
        if len(ids) != len(probs):
            raise RuntimeError(f"{len(ids)} ids for {len(probs)} predictions in an iteration")
        self._ids.extend(str(i) for i in ids)
        self._probs.extend(torch.as_tensor(p).detach().float().cpu().reshape(-1) for p in probs)
        if self.label_key is not None:
            labels = _per_sample(engine.state.output, self.label_key)
            self._labels.extend(torch.as_tensor(y).detach().cpu().reshape(-1)[:1].long() for y in labels)

    def _gathered(self) -> tuple[list[str], np.ndarray, np.ndarray | None]:
        n_classes = len(self.class_names)
        probs = torch.stack(self._probs) if self._probs else torch.zeros(0, n_classes)
        if probs.shape[1] != n_classes:
            raise ValueError(f"{probs.shape[1]} class probabilities for {n_classes} class names {self.class_names}")
        ids = string_list_all_gather(self._ids)
        probs = evenly_divisible_all_gather(probs, concat=True)
        labels = None
        if self.label_key is not None:
            local = torch.cat(self._labels) if self._labels else torch.zeros(0, dtype=torch.long)
            labels = evenly_divisible_all_gather(local, concat=True).numpy()
        return ids, probs.numpy(), labels

    def _finish(self, engine: Engine) -> None:
        ids, probs, labels = self._gathered()
        if _rank() == 0:
            self.write(engine, ids, probs, labels)

    def write(self, engine: Engine, ids: list[str], probs: np.ndarray, labels: np.ndarray | None) -> None:
        raise NotImplementedError

    def _prob_column(self, positive: int) -> str:
        return f"prob_{self.class_names[positive].lower()}"


def _figure(width: float, height: float):
    # The object-oriented API draws with the Agg canvas directly: no pyplot, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png", bbox_inches="tight")
    os.replace(tmp, path)


class ClassificationReportWriter(_ProbabilityCollector):
    """Write the evaluation of a classifier after an evaluator's epoch.

    Files in ``output_dir``:
        - ``metrics.json``: ``accuracy``, ``roc_auc`` (of the positive class; null when a class is absent), ``n``,
          and the positive class's ``sensitivity`` and ``specificity``.
        - ``classification_report.csv``: precision, recall, f1 and support per class, then the accuracy, macro and
          weighted-average rows (see :func:`~spine_monai.metrics.classification.classification_report`).
        - ``confusion_matrix.csv`` (true class on the rows, predicted on the columns) and ``confusion_matrix.png``.
        - ``roc_curve.csv`` (``fpr``, ``tpr``, ``threshold``) and ``roc_curve.png``.
        - ``per_patient.csv``: ``patient``, ``class``, ``label``, ``prob_<positive>``, ``predicted`` (class name).

    The predicted class is the most probable one (for two classes, probability at least 0.5).

    Args:
        output_dir: folder for the files.
        class_names: names in class-id order.
        positive: id of the class the ROC curve and AUC are about (``Damaged``).
        id_key: batch key of each sample's id.
        prob_key: output key of the class probabilities.
        label_key: output key of the true class id.
        summary_writer: an optional TensorBoard ``SummaryWriter`` for accuracy and AUC.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str] = ("Normal", "Damaged"),
        positive: int = 1,
        id_key: str = "patient",
        prob_key: str = "pred",
        label_key: str = "label",
        summary_writer=None,
    ) -> None:
        super().__init__(class_names=class_names, id_key=id_key, prob_key=prob_key, label_key=label_key)
        self.output_dir = Path(output_dir)
        self.positive = int(positive)
        self.summary_writer = summary_writer
        self.metrics: dict | None = None

    def write(self, engine: Engine, ids: list[str], probs: np.ndarray, labels: np.ndarray | None) -> None:
        if labels is None or len(labels) != len(ids) or len(probs) != len(ids):
            raise RuntimeError(
                f"{len(ids)} ids, {len(probs)} probability rows, {0 if labels is None else len(labels)} labels"
            )
        names = self.class_names
        predicted = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
        score = probs[:, self.positive] if len(probs) else np.zeros(0)
        positive = (labels == self.positive).astype(np.int64)
        cm = confusion_matrix(labels, predicted, len(names))
        auc = roc_auc(positive, score)
        tp, fn = cm[self.positive, self.positive], cm[self.positive].sum() - cm[self.positive, self.positive]
        tn = np.delete(np.delete(cm, self.positive, 0), self.positive, 1).sum()
        fp = cm[:, self.positive].sum() - tp
        self.metrics = {
            "n": len(ids),
            "accuracy": _json_float(accuracy(labels, predicted)),
            "roc_auc": _json_float(auc),
            "positive_class": names[self.positive],
            "sensitivity": _json_float(tp / (tp + fn) if tp + fn else float("nan")),
            "specificity": _json_float(tn / (tn + fp) if tn + fp else float("nan")),
            "class_counts": {n: int((labels == i).sum()) for i, n in enumerate(names)},
        }
        out = self.output_dir
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(self.metrics, indent=1) + "\n")
        classification_report(labels, predicted, names).to_csv(out / "classification_report.csv", float_format="%.5f")
        cm_table = pd.DataFrame(cm, index=pd.Index(names, name="true"), columns=names)
        cm_table.to_csv(out / "confusion_matrix.csv")
        fpr, tpr, thresholds = roc_curve(positive, score)
        pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thresholds}).to_csv(
            out / "roc_curve.csv", index=False, float_format="%.6f"
        )
        pd.DataFrame(
            {
                self.id_key: ids,
                "class": [names[int(y)] for y in labels],
                "label": labels.astype(np.int64),
                self._prob_column(self.positive): score,
                "predicted": [names[int(p)] for p in predicted],
            }
        ).to_csv(out / "per_patient.csv", index=False, float_format="%.5f")
        self._plot_confusion(cm, out / "confusion_matrix.png")
        self._plot_roc(fpr, tpr, auc, out / "roc_curve.png")
        if self.summary_writer is not None:
            step = engine.state.epoch
            for k in ("accuracy", "roc_auc", "sensitivity", "specificity"):
                if self.metrics[k] is not None:
                    self.summary_writer.add_scalar(f"eval/{k}", self.metrics[k], step)
            self.summary_writer.flush()
        logger.info("classification metrics (%s): %s", out, json.dumps(self.metrics))

    def _plot_confusion(self, cm: np.ndarray, path: Path) -> None:
        fig = _figure(3.6, 3.2)
        ax = fig.add_subplot(1, 1, 1)
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1))
        ticks = range(len(self.class_names))
        ax.set_xticks(ticks, self.class_names)
        ax.set_yticks(ticks, self.class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in ticks:
            for j in ticks:
                dark = cm[i, j] > cm.max() / 2
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if dark else "black")
        ax.set_title(f"confusion matrix (n={int(cm.sum())})")
        _save_figure(fig, path)

    def _plot_roc(self, fpr: np.ndarray, tpr: np.ndarray, auc: float, path: Path) -> None:
        fig = _figure(3.6, 3.4)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
        ax.plot(fpr, tpr, drawstyle="default", color="C3", linewidth=1.8)
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        label = "n/a" if math.isnan(auc) else f"{auc:.3f}"
        ax.set_title(f"ROC, {self.class_names[self.positive]} (AUC {label})")
        _save_figure(fig, path)


def _json_float(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


class PredictionCSVWriter(_ProbabilityCollector):
    """Write ``predictions.csv`` (``patient``, ``prob_<positive>``, ``predicted_class``) after an inference run.

    Args:
        output_dir: folder of ``predictions.csv``.
        class_names: names in class-id order.
        positive: id of the class whose probability is written.
        id_key: batch key of each sample's id.
        prob_key: output key of the class probabilities.
        filename: the file's name.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str] = ("Normal", "Damaged"),
        positive: int = 1,
        id_key: str = "patient",
        prob_key: str = "pred",
        filename: str = "predictions.csv",
    ) -> None:
        super().__init__(class_names=class_names, id_key=id_key, prob_key=prob_key, label_key=None)
        self.path = Path(output_dir) / filename
        self.positive = int(positive)

    def write(self, engine: Engine, ids: list[str], probs: np.ndarray, labels: np.ndarray | None) -> None:
        predicted = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
        table = pd.DataFrame(
            {
                self.id_key: ids,
                self._prob_column(self.positive): probs[:, self.positive] if len(probs) else [],
                "predicted_class": [self.class_names[int(p)] for p in predicted],
            }
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        table.to_csv(tmp, index=False, float_format="%.5f")
        os.replace(tmp, self.path)
        logger.info("%d predictions: %s", len(table), self.path)
