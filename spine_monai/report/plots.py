"""Figures (matplotlib, Agg, no pyplot state) and image thumbnails for the report, as data URIs.

Every function returns ``data:<mime>;base64,...`` text ready for an ``<img src>``, so the report is one file.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

__all__ = [
    "confusion_matrix_figure",
    "data_uri",
    "dice_boxplot",
    "image_data_uri",
    "roc_figure",
    "thumbnail_data_uris",
]

_DPI = 100


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,<data>``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _figure_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return data_uri(buf.getvalue(), "image/png")


def dice_boxplot(groups: dict[str, Sequence[float]], title: str = "Dice per structure", ylabel: str = "Dice") -> str:
    """Box plot of each group's values (NaN dropped) with the cases drawn as points, as a PNG data URI.

    Args:
        groups: structure (or class) name -> one value per case, in the order to draw.
        title: the axes title.
        ylabel: the y-axis label.
    """
    names = list(groups)
    values = [np.asarray([v for v in groups[n] if np.isfinite(v)], dtype=float) for n in names]
    fig = Figure(figsize=(max(4.5, 0.9 * len(names) + 1.5), 3.6))
    ax = fig.add_subplot()
    positions = np.arange(1, len(names) + 1)
    drawn = [i for i, v in enumerate(values) if v.size]
    if drawn:
        ax.boxplot(
            [values[i] for i in drawn],
            positions=positions[drawn],
            widths=0.55,
            showfliers=False,
            medianprops={"color": "#c0392b"},
        )
    rng = np.random.default_rng(0)
    for p, v in zip(positions, values, strict=True):
        ax.plot(p + rng.uniform(-0.15, 0.15, v.size), v, "o", ms=3, alpha=0.55, color="#2c6fbb")
    ax.set_xticks(positions)
    tilt = len(names) > 3 or sum(len(n) for n in names) > 8 * len(names)
    ax.set_xticklabels(names, rotation=25 if tilt else 0, ha="right" if tilt else "center")
    ax.set_xlim(0.4, len(names) + 0.6)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _figure_uri(fig)


def confusion_matrix_figure(matrix: np.ndarray, true_labels: Sequence[str], pred_labels: Sequence[str]) -> str:
    """Heat map of a confusion matrix (rows true, columns predicted) with the counts written in, as a data URI."""
    m = np.asarray(matrix, dtype=float)
    fig = Figure(figsize=(1.3 * m.shape[1] + 1.8, 1.1 * m.shape[0] + 1.2))
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="Blues", vmin=0)
    peak = np.nanmax(m) if m.size and np.isfinite(m).any() else 1.0
    for (i, j), v in np.ndenumerate(m):
        text = "" if not np.isfinite(v) else (f"{v:.0f}" if float(v).is_integer() else f"{v:.2f}")
        ax.text(j, i, text, ha="center", va="center", color="white" if v > 0.6 * peak else "black", fontsize=12)
    ax.set_xticks(range(m.shape[1]))
    ax.set_xticklabels(pred_labels)
    ax.set_yticks(range(m.shape[0]))
    ax.set_yticklabels(true_labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _figure_uri(fig)


def roc_figure(fpr: np.ndarray, tpr: np.ndarray, auc: float | None = None) -> str:
    """The ROC curve with the chance diagonal, the AUC in the legend, as a data URI."""
    fig = Figure(figsize=(4.2, 4.0))
    ax = fig.add_subplot()
    label = "ROC" if auc is None or not np.isfinite(auc) else f"ROC (AUC = {auc:.3f})"
    ax.plot(fpr, tpr, color="#2c6fbb", lw=2, label=label, drawstyle="default")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC curve (Damaged positive)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _figure_uri(fig)


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, im).convert("RGB")
        return im.convert("RGB")


def thumbnail_data_uris(path: str | os.PathLike, sizes: Sequence[tuple[int, int]] = ((256, 80),)) -> list[str] | None:
    """JPEG thumbnails of an image file as data URIs, one per ``(height, quality)`` in ``sizes``, each ``height``
    pixels high (never enlarged).

    The file is decoded once for all sizes: a full-size overlay takes longer to decode than to shrink.

    Args:
        path: the image file.
        sizes: ``(height, JPEG quality)`` of each thumbnail.

    Returns:
        the URIs in the order of ``sizes``, or None when the file cannot be read as an image.
    """
    try:
        full = _open_rgb(Path(path))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    uris = []
    for height, quality in sizes:
        im = full.copy()
        if im.height > height:
            im.thumbnail((max(1, round(im.width * height / im.height)), height), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality, optimize=True)
        uris.append(data_uri(buf.getvalue(), "image/jpeg"))
    return uris


def image_data_uri(path: str | os.PathLike, max_width: int = 720) -> str | None:
    """A figure file (e.g. ``roc_curve.png``) as a PNG data URI, shrunk to at most ``max_width`` pixels wide.

    Returns:
        None when the file cannot be read as an image.
    """
    try:
        im = _open_rgb(Path(path))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    if im.width > max_width:
        im.thumbnail((max_width, max(1, round(im.height * max_width / im.width))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return data_uri(buf.getvalue(), "image/png")
