"""Ignite handlers of the classifier: accuracy, the evaluation report files, predictions and GradCAM overlays."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor, decollate_batch
from monai.handlers import IgniteMetricHandler
from monai.transforms import Invertd
from monai.utils import evenly_divisible_all_gather, string_list_all_gather
from monai.visualize import GradCAM, OcclusionSensitivity
from torch import nn

from spine_monai.data.io import read_radiograph, write_overlay
from spine_monai.metrics.classification import (
    AccuracyMetric,
    accuracy,
    classification_report,
    confusion_matrix,
    roc_auc,
    roc_curve,
)
from spine_monai.networks.vertebra import VertebraMILClassifier

__all__ = [
    "ClassificationAccuracy",
    "ClassificationReportWriter",
    "ClassActivationWriter",
    "PredictionCSVWriter",
    "heatmap_overlay",
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


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] heat map over a grey film, more opaque where the map is hotter.

    Args:
        image: (H, W) grey image of any range; it is stretched to its 1st-99th percentile.
        heat: (H, W) map in [0, 1], the image's size.
        alpha: opacity of the hottest colour.
        colormap: a matplotlib colormap name.

    Returns:
        an RGB uint8 array (H, W, 3).
    """
    from matplotlib import colormaps

    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, (1, 99))
    grey = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    heat = np.clip(np.asarray(heat, dtype=np.float32), 0, 1)
    colour = colormaps[colormap](heat)[..., :3].astype(np.float32)
    # Cold regions keep the film readable; only the regions the class depends on are tinted strongly.
    weight = (alpha * np.sqrt(heat))[..., None]
    rgb = (1 - weight) * grey[..., None] + weight * colour
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _positive(m: torch.Tensor) -> torch.Tensor:
    """A map's evidence for the class: NaN as 0, negative values as 0."""
    return torch.nan_to_num(m.detach().float()).clamp_min(0)


def _scale(m: torch.Tensor, top: float) -> torch.Tensor:
    """A non-negative map divided by ``top`` (the largest value over the maps drawn on one scale), in [0, 1]."""
    m = _positive(m)
    return (m / top).clamp(0, 1) if top > 0 else torch.zeros_like(m)


def _leaf_input(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.detach().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args)


@contextlib.contextmanager
def _graph_cut(network: nn.Module, layers: Iterable[str]) -> Iterator[None]:
    """Make the inputs of ``layers`` autograd leaves while in the context: a backward pass stops there.

    The gradient a GradCAM reads at those layers is unchanged; the encoders before them get none.
    """
    modules = dict(network.named_modules())
    handles = [modules[name].register_forward_pre_hook(_leaf_input) for name in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class _OneView(nn.Module):
    """The classifier as a function of one view's channels, the other views held fixed (for occlusion)."""

    def __init__(self, net: nn.Module, full: torch.Tensor, start: int, stop: int) -> None:
        super().__init__()
        self.net, self.full, self.start, self.stop = net, full, start, stop

    def forward(self, part: torch.Tensor) -> torch.Tensor:
        full = self.full.expand(part.shape[0], -1, -1, -1).clone()
        full[:, self.start : self.stop] = part
        return self.net(full)


class ClassActivationWriter:
    """Write a GradCAM heat-map overlay per view per sample, at the original film size, during an evaluator's run.

    For each sample the classifier's GradCAM (:py:class:`monai.visualize.GradCAM`) is computed at each view's
    hook point (``view_features.<VIEW>`` of :py:class:`~spine_monai.networks.DualViewClassifier`), for the
    predicted class or ``class_index``. The map, at the network's input size, is mapped back through the
    view's own preprocessing trace (``Invertd``: padding removed, resize undone) and drawn over the film read
    again from its file: ``<output_dir>/<patient>/<VIEW>_gradcam.png``. The views of a patient share one colour
    scale (divided by the largest value over the views), so the view the decision rested on is the hotter one.
    With ``occlusion``, MONAI's :py:class:`~monai.visualize.OcclusionSensitivity` is also run on each view alone
    (the other views held fixed) and the drop in the class probability is drawn as ``<VIEW>_occlusion.png``; it
    takes many forward passes. For the vertebra-level network
    (:py:class:`~spine_monai.networks.VertebraMILClassifier`) the hook point holds every body of the view; each
    body's map is pasted back into its window on the film (``VertebraPatchesd``'s inverse), and occlusion is not
    available.

    Args:
        network: the classifier.
        views: the views, in input channel order.
        output_dir: root of the overlays.
        transform: the preprocessing ``Compose`` whose trace maps each view back to its original size.
        in_channels: input channels per view (one number for all views, or one per view); ``None`` takes the
            network's own ``split_sizes`` (both patient classifiers have them).
        image_key: batch key of the network input.
        id_key: batch key of the sample id (the overlay's sub-folder).
        class_index: class to explain; ``None`` explains the predicted class.
        target_layer: the hook point's name pattern, with ``{view}``.
        gradcam: write the GradCAM overlays.
        occlusion: write occlusion-sensitivity overlays too.
        occlusion_mask_size: side of the occluding patch, in network input pixels.
        occlusion_n_batch: occluded images per forward pass.
        alpha: opacity of the hottest colour of the overlay.
    """

    def __init__(
        self,
        network: nn.Module,
        views: Sequence[str],
        output_dir: str | os.PathLike,
        transform: Callable,
        in_channels: int | Sequence[int] | None = None,
        image_key: str = "image",
        id_key: str = "patient",
        class_index: int | None = None,
        target_layer: str = "view_features.{view}",
        gradcam: bool = True,
        occlusion: bool = False,
        occlusion_mask_size: int = 32,
        occlusion_n_batch: int = 16,
        alpha: float = 0.45,
    ) -> None:
        self.network = network
        self.views = [views] if isinstance(views, str) else list(views)
        if in_channels is None:
            in_channels = list(network.split_sizes)
        channels = [in_channels] * len(self.views) if isinstance(in_channels, int) else list(in_channels)
        if len(channels) != len(self.views):
            raise ValueError(f"{len(channels)} channel counts for {len(self.views)} views")
        stops = np.cumsum(channels).tolist()
        self.slices = {v: (int(s - c), int(s)) for v, c, s in zip(self.views, channels, stops, strict=True)}
        self.output_dir = Path(output_dir)
        self.image_key, self.id_key = image_key, id_key
        self.class_index = None if class_index is None else int(class_index)
        self.gradcam, self.occlusion = bool(gradcam), bool(occlusion)
        self.occlusion_mask_size, self.occlusion_n_batch = int(occlusion_mask_size), int(occlusion_n_batch)
        self.alpha = alpha
        self.layers = layers = {v: target_layer.format(view=v) for v in self.views}
        if self.occlusion and isinstance(network, VertebraMILClassifier):
            raise ValueError(
                "occlusion sensitivity occludes regions of a film; the vertebra-level classifier reads patches, so "
                "only GradCAM is available for it"
            )
        names = {n for n, _ in network.named_modules()}
        missing = [layer for layer in layers.values() if layer not in names]
        if missing:
            raise ValueError(f"the network has no layer {missing} to explain (expected a DualViewClassifier)")
        # One GradCAM per view, made once: each registers hooks on the network for good.
        self.cams = (
            {
                v: GradCAM(nn_module=network, target_layers=layer, postprocessing=_identity)
                for v, layer in layers.items()
            }
            if self.gradcam
            else {}
        )
        self.inverters = {
            v: Invertd(keys="_map", transform=transform, orig_keys=v, nearest_interp=False) for v in self.views
        }

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        batch = engine.state.batch
        samples = batch if isinstance(batch, list) else decollate_batch(batch, detach=True)
        for sample in samples:
            self.explain(sample)

    def explain(self, sample: dict[Hashable, object]) -> dict[str, Path]:
        """Compute and write the overlays of one (decollated) sample; returns the written files by name."""
        device = next(self.network.parameters()).device
        x = torch.as_tensor(sample[self.image_key]).detach().float()
        x = (x.as_tensor() if isinstance(x, MetaTensor) else x)[None].to(device)
        patient = str(sample[self.id_key])
        folder = self.output_dir / patient
        written: dict[str, Path] = {}
        maps: dict[str, tuple[str, str, torch.Tensor]] = {}  # file name -> (view, method, map)
        # Evaluators run the network without gradients; GradCAM needs them, but only from the class score back to
        # the explained feature map: cutting the graph there skips the backward pass through the encoders.
        with torch.enable_grad(), _graph_cut(self.network, self.layers.values()):
            for v, cam in self.cams.items():
                # (1, 1, H, W) for a film, or (K, 1, P, P) for the K bodies of the vertebra-level network.
                maps[f"{v}_gradcam"] = (v, "gradcam", cam(x, class_idx=self.class_index)[:, 0])
        if self.occlusion:
            maps.update({f"{v}_occlusion": (v, "occlusion", self._occlusion(x, v)) for v in self.views})
        # One colour scale per method across the patient's views: a view that barely moved the score stays cold.
        tops: dict[str, float] = {}
        for _, method, m in maps.values():
            tops[method] = max(tops.get(method, 0.0), float(_positive(m).max()))
        for name, (view, method, m) in maps.items():
            film_meta = sample[view]
            original = self._invert(_scale(m.detach().cpu(), tops[method]), sample, view)
            path = film_meta.meta.get("filename_or_obj") if isinstance(film_meta, MetaTensor) else None
            film = read_radiograph(path) if path else np.zeros(original.shape, np.float32)
            if film.shape != original.shape:
                raise RuntimeError(f"{patient} {view}: map {original.shape} does not match the film {film.shape}")
            out = folder / f"{name}.png"
            write_overlay(out, heatmap_overlay(film, original, alpha=self.alpha))
            written[name] = out
        return written

    def _invert(self, m: torch.Tensor, sample: dict, view: str) -> np.ndarray:
        data = {"_map": MetaTensor(m.reshape(-1, *m.shape[-2:])), view: sample[view]}
        inverted = self.inverters[view](data)["_map"]
        return np.asarray(torch.as_tensor(inverted).detach().cpu().float()[0].clamp(0, 1))

    def _occlusion(self, x: torch.Tensor, view: str) -> torch.Tensor:
        start, stop = self.slices[view]
        with torch.no_grad():
            self.network.eval()
            probs = torch.softmax(self.network(x), dim=1)[0]
        cls = int(probs.argmax()) if self.class_index is None else self.class_index
        model = _OneView(self.network, x, start, stop)
        occ = OcclusionSensitivity(
            nn_module=model,
            mask_size=self.occlusion_mask_size,
            n_batch=self.occlusion_n_batch,
            verbose=False,
            mode="mean_img",
            overlap=0.5,
        )
        with torch.no_grad():
            occ_map, _ = occ(x[:, start:stop])
        # (1, classes, H, W): each class's probability with the region around each pixel occluded; the drop in the
        # explained class's probability is the region's importance.
        prob_occluded = torch.as_tensor(occ_map)[0, cls].to(probs.device)
        return (probs[cls] - prob_occluded).clamp_min(0)
