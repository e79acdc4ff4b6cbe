"""Ignite handlers: per-structure scalars, tolerance Dice, and the per-case / summary CSVs of an evaluation."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import torch
from ignite.engine import Engine, Events
from monai.handlers import IgniteMetricHandler
from monai.utils import is_scalar, string_list_all_gather

from spine_monai.metrics.segmentation import ToleranceDiceMetric, multiclass_scores, rates_from_counts

__all__ = ["ToleranceDice", "MetricsByStructure", "SegmentationCSVWriter", "epoch_writer"]

logger = logging.getLogger(__name__)


class ToleranceDice(IgniteMetricHandler):
    """Ignite handler for :py:class:`~spine_monai.metrics.segmentation.ToleranceDiceMetric`.

    Args:
        tolerance: dilation radius in pixels.
        reduction: MONAI reduction of the per-sample, per-channel values.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``.
        save_details: keep the per-sample values in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        tolerance: int = 2,
        reduction: str = "mean",
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = ToleranceDiceMetric(tolerance=tolerance, reduction=reduction)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


class MetricsByStructure:
    """Split a per-channel metric (a tensor in ``engine.state.metrics``) into one named scalar per structure.

    TensorBoard and the stats logger only record scalars, so ``val_dice_per_structure = [0.9, 0.7]`` becomes
    ``val_dice/Ap_Vertebra = 0.9`` and ``val_dice/Ap_Pedicle = 0.7``. Attach it after the metric and before
    the loggers.

    Args:
        metric_name: the per-channel metric's name.
        structures: one name per channel.
        prefix: prefix of the new names; defaults to ``metric_name``.
    """

    def __init__(self, metric_name: str, structures: Sequence[str], prefix: str | None = None) -> None:
        self.metric_name = metric_name
        self.structures = list(structures)
        self.prefix = prefix or metric_name

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        value = engine.state.metrics.pop(self.metric_name, None)
        if value is None:
            return
        values = torch.as_tensor(value).reshape(-1)
        if values.numel() != len(self.structures):
            raise ValueError(f"{self.metric_name} has {values.numel()} values for {len(self.structures)} structures")
        for name, v in zip(self.structures, values.tolist(), strict=True):
            engine.state.metrics[f"{self.prefix}/{name}"] = v


class SegmentationCSVWriter:
    """Write per-case and summary metric tables, in the seed report's form, after an evaluation.

    Reads the per-case confusion counts saved by MONAI's ``ConfusionMatrix`` handler (``save_details=True``)
    and, when present, per-case tolerance Dice, so every number in the tables comes from the same
    predictions the key metric saw. Works under DDP: case ids are gathered from every rank and rank 0 writes.

    Files:
        - ``per_case.csv``: <id>, <name>, Dice, Jaccard (or IoU), FP, FN[, ToleranceDice]
        - ``summary.csv``: <name>, cases, then the mean and sd of each metric over the cases where it is defined.
        - ``overall.csv`` (``multiclass=True``): per case and on average, pixel accuracy, mean accuracy, mean IoU
          with and without background and frequency-weighted IoU (see
          :func:`~spine_monai.metrics.segmentation.multiclass_scores`).

    Args:
        output_dir: folder for the CSVs.
        names: one name per channel (structures, or classes in id order).
        confusion_name: name under which the ``ConfusionMatrix`` handler was attached.
        tolerance_name: name of a ``ToleranceDice`` handler, or ``None``.
        id_key: batch key holding each case's id; also the first column's name.
        name_column: the second column's name, e.g. ``"structure"`` or ``"class"``.
        multiclass: the channels are the one-hot classes of one label map; a class absent from both truth and
            prediction of a case is then left out (NaN) instead of scoring 1, and ``overall.csv`` is written.
        iou_name: the column name of the Jaccard index (``"Jaccard"`` in the X-ray seed report, ``"IoU"`` for MRI).
        summary_writer: an optional TensorBoard ``SummaryWriter`` for the summary means.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        names: Sequence[str],
        confusion_name: str = "confusion",
        tolerance_name: str | None = "tolerance_dice",
        id_key: str = "patient",
        name_column: str = "structure",
        multiclass: bool = False,
        iou_name: str = "Jaccard",
        summary_writer=None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.names = list(names)
        self.confusion_name = confusion_name
        self.tolerance_name = tolerance_name
        self.id_key = id_key
        self.name_column = name_column
        self.multiclass = multiclass
        self.iou_name = iou_name
        self.summary_writer = summary_writer
        self._ids: list[str] = []
        self.per_case: pd.DataFrame | None = None
        self.summary: pd.DataFrame | None = None
        self.overall: pd.DataFrame | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._ids = []

    def _collect(self, engine: Engine) -> None:
        # The batch is a dict of collated values or, after MONAI's decollation, a list of dicts.
        batch = engine.state.batch
        ids = [item[self.id_key] for item in batch] if isinstance(batch, list) else batch[self.id_key]
        self._ids.extend([str(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])])

    def _tables(self, ids: list[str], details: dict) -> list[str]:
        counts = torch.as_tensor(details[self.confusion_name]).cpu()
        if counts.shape[0] != len(ids):
            raise RuntimeError(f"{counts.shape[0]} metric rows for {len(ids)} case ids")
        if counts.shape[1] != len(self.names):
            raise RuntimeError(f"{counts.shape[1]} metric channels for {len(self.names)} names")
        rates = rates_from_counts(counts, empty=float("nan") if self.multiclass else 1.0)
        rates[self.iou_name] = rates.pop("Jaccard")
        if self.tolerance_name and self.tolerance_name in details:
            rates["ToleranceDice"] = torch.as_tensor(details[self.tolerance_name]).cpu()
        metrics = [k for k in ("Dice", self.iou_name, "FP", "FN", "ToleranceDice") if k in rates]
        rows = [
            {self.id_key: case, self.name_column: name, **{m: float(rates[m][i, c]) for m in metrics}}
            for i, case in enumerate(ids)
            for c, name in enumerate(self.names)
        ]
        self.per_case = pd.DataFrame(rows)
        grouped = self.per_case.groupby(self.name_column, sort=False)[metrics]
        self.summary = grouped.mean().join(grouped.std(ddof=0).add_suffix("_sd")).reset_index()
        self.summary.insert(1, "cases", len(ids))
        if self.multiclass:
            scores = {k: v.numpy() for k, v in multiclass_scores(counts).items()}
            self.overall = pd.DataFrame({self.id_key: ids, **scores})
            mean = self.overall.drop(columns=self.id_key).mean().to_frame().T
            mean.insert(0, self.id_key, "mean")
            self.overall = pd.concat([self.overall, mean], ignore_index=True)
        return metrics

    def _write(self, engine: Engine) -> None:
        ids = string_list_all_gather(self._ids)
        if self.confusion_name not in engine.state.metric_details:
            raise KeyError(
                f"no per-case details named {self.confusion_name!r}: attach ConfusionMatrix(save_details=True)"
            )
        metrics = self._tables(ids, engine.state.metric_details)
        if _rank() != 0:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.per_case.to_csv(self.output_dir / "per_case.csv", index=False, float_format="%.5f")
        self.summary.to_csv(self.output_dir / "summary.csv", index=False, float_format="%.5f")
        if self.overall is not None:
            self.overall.to_csv(self.output_dir / "overall.csv", index=False, float_format="%.5f")
        if self.summary_writer is not None:
            step = engine.state.epoch
            for _, row in self.summary.iterrows():
                for m in metrics:
                    self.summary_writer.add_scalar(f"eval/{row[self.name_column]}/{m}", row[m], step)
            if self.overall is not None:
                for k, v in self.overall.iloc[-1].drop(self.id_key).items():
                    self.summary_writer.add_scalar(f"eval/{k}", float(v), step)
            self.summary_writer.flush()
        logger.info("per-case metrics: %s", self.output_dir / "per_case.csv")
        logger.info("summary:\n%s", self.summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        if self.overall is not None:
            logger.info("overall (mean over cases):\n%s", self.overall.iloc[[-1]].to_string(index=False))


def _rank() -> int:
    return (
        torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
    )


def epoch_writer(optimizer: torch.optim.Optimizer, lr_tag: str = "learning_rate") -> Callable:
    """An ``epoch_event_writer`` for MONAI's ``TensorBoardStatsHandler``: scalar metrics plus the learning rate.

    MONAI's default epoch writer records only ``engine.state.metrics``; the learning rate lives in the
    optimizer, so this writes both from one handler into one event file.

    Args:
        optimizer: the optimizer whose first parameter group's rate is logged.
        lr_tag: the TensorBoard tag of the learning rate.
    """

    def write(engine: Engine, writer) -> None:
        epoch = engine.state.epoch
        for name, value in engine.state.metrics.items():
            if is_scalar(value):
                writer.add_scalar(name, value, epoch)
        writer.add_scalar(lr_tag, optimizer.param_groups[0]["lr"], epoch)
        writer.flush()

    return write
