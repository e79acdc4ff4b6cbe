"""Find out what an evaluation folder holds and read its tables, checking the columns the report needs.

Three kinds of folder are recognised by their files:

- ``xray_seg``: ``per_case.csv`` / ``summary.csv`` with ``patient, structure, Dice, Jaccard, FP, FN[, ToleranceDice]``
  (the X-ray segmentation bundles), overlays in ``predictions/<patient>/<VIEW>/<VIEW>_overlay.png``;
- ``mri_seg``: the same files with ``case, class, Dice, IoU, FP, FN``, plus ``overall.csv`` (the MRI bundle);
- ``classification``: any of ``metrics.json``, ``classification_report.csv``, ``confusion_matrix.csv``,
  ``roc_curve.csv``, ``per_patient.csv`` (and the optional ``confusion_matrix.png`` / ``roc_curve.png``).

A folder may be of a segmentation kind and ``classification`` at once; a run folder whose ``eval/`` subfolder
holds the files is accepted for that subfolder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spine_monai.errors import DataError

__all__ = [
    "CLASSIFICATION_FILES",
    "KINDS",
    "SEG_METRICS",
    "EvalDir",
    "detect_eval_dir",
    "read_csv_checked",
    "read_measure_csv",
    "read_metrics_json",
    "roc_from_scores",
]

KINDS: tuple[str, ...] = ("xray_seg", "mri_seg", "classification")
SEG_METRICS: tuple[str, ...] = ("Dice", "Jaccard", "IoU", "FP", "FN", "ToleranceDice")
CLASSIFICATION_FILES: tuple[str, ...] = (
    "metrics.json",
    "classification_report.csv",
    "confusion_matrix.csv",
    "roc_curve.csv",
    "per_patient.csv",
    "confusion_matrix.png",
    "roc_curve.png",
)
# (id column, name column) of the segmentation tables of each kind.
SEG_COLUMNS: dict[str, tuple[str, str]] = {"xray_seg": ("patient", "structure"), "mri_seg": ("case", "class")}


@dataclass(frozen=True)
class EvalDir:
    """An evaluation folder and what it holds.

    Attributes:
        path: the folder holding the files (``<run>/eval``).
        kinds: the recognised kinds, a subset of :data:`KINDS` in that order, never empty.
        label: a short name for headings: the run folder's name for ``<run>/eval``, else the folder's own.
    """

    path: Path
    kinds: tuple[str, ...]
    label: str


def _header(path: Path) -> list[str]:
    try:
        return [str(c).strip() for c in pd.read_csv(path, nrows=0).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise DataError(path, f"unreadable CSV ({type(e).__name__}: {e})") from e


def _seg_kind(path: Path) -> str | None:
    """The segmentation kind of a folder from the header of per_case.csv (else summary.csv), or None."""
    for name in ("per_case.csv", "summary.csv"):
        csv = path / name
        if not csv.is_file():
            continue
        columns = set(_header(csv))
        for kind, (id_col, name_col) in SEG_COLUMNS.items():
            need = {name_col} if name == "summary.csv" else {id_col, name_col}
            if need <= columns and "Dice" in columns:
                return kind
        raise DataError(
            csv,
            f"columns {', '.join(sorted(columns))} are neither an X-ray evaluation's (patient, structure, Dice, "
            "...) nor an MRI evaluation's (case, class, Dice, ...)",
        )
    return None


def _kinds(path: Path) -> tuple[str, ...]:
    kinds = []
    seg = _seg_kind(path)
    if seg:
        kinds.append(seg)
    if any((path / f).is_file() for f in CLASSIFICATION_FILES):
        kinds.append("classification")
    return tuple(kinds)


def detect_eval_dir(path: str | os.PathLike) -> EvalDir:
    """Recognise an evaluation folder by the files it holds.

    Args:
        path: ``<run>/eval`` (or ``<run>`` when its ``eval/`` holds the files).

    Returns:
        the folder, its kinds and a label.

    Raises:
        DataError: when the folder does not exist, holds nothing recognisable, or its ``per_case.csv`` has
            columns of no known evaluation.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(path, "no such folder")
    kinds = _kinds(path)
    if not kinds and (path / "eval").is_dir():
        path = path / "eval"
        kinds = _kinds(path)
    if not kinds:
        raise DataError(
            path,
            "nothing to report: no per_case.csv or summary.csv (segmentation) and none of "
            f"{', '.join(CLASSIFICATION_FILES[:5])} (classification); is this an evaluation's eval/ folder?",
        )
    absolute = path.resolve()
    label = absolute.parent.name if absolute.name == "eval" and absolute.parent.name else absolute.name
    return EvalDir(path=path, kinds=kinds, label=label or str(path))


def read_csv_checked(
    path: Path,
    required: tuple[str, ...] = (),
    numeric: tuple[str, ...] = (),
    index_col: int | None = None,
) -> pd.DataFrame:
    """Read a CSV with every column as text, then convert ``numeric`` columns (bad or empty cells become NaN).

    Text columns stay text, so case ids such as ``NA`` or ``001`` are kept as written.

    Raises:
        DataError: when the file cannot be parsed or lacks a ``required`` column.
    """
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=index_col)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise DataError(path, f"unreadable CSV ({type(e).__name__}: {e})") from e
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}; it has {', '.join(df.columns)}")
    for c in numeric:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c].str.strip(), errors="coerce")
    return df


def read_metrics_json(path: Path) -> dict:
    """``metrics.json`` of a classification evaluation, as a dict.

    Raises:
        DataError: when it is not a JSON object.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"unreadable JSON ({type(e).__name__}: {e})") from e
    if not isinstance(doc, dict):
        raise DataError(path, f"expected a JSON object, got {type(doc).__name__}")
    return doc


MEASURE_NUMERIC: tuple[str, ...] = (
    "n_vertebrae",
    "cobb_angle_deg",
    "lordosis_angle_deg",
    "max_genant_grade",
    "max_listhesis_pct",
)


def read_measure_csv(path: str | os.PathLike) -> pd.DataFrame:
    """The ``row_type == "summary"`` rows of a ``spine-monai measure`` CSV, one per patient and view.

    Raises:
        DataError: when the file is missing, unreadable, or lacks ``row_type``, ``patient`` or ``view``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such measurement CSV")
    df = read_csv_checked(path, required=("row_type", "patient", "view"), numeric=MEASURE_NUMERIC)
    return df[df["row_type"].str.strip() == "summary"].reset_index(drop=True)


def roc_from_scores(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The ROC curve (fpr, tpr) and its area for binary ``labels`` (1 positive) and ``scores``.

    Returns:
        fpr and tpr from (0, 0) to (1, 1), one point per distinct score, and the AUC (NaN when one class is
        absent).
    """
    labels = np.asarray(labels, dtype=float)
    scores = np.asarray(scores, dtype=float)
    keep = np.isfinite(labels) & np.isfinite(scores)
    labels, scores = labels[keep] > 0.5, scores[keep]
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0]), float("nan")
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tp = np.cumsum(labels)[last]
    fp = np.cumsum(~labels)[last]
    tpr = np.r_[0.0, tp / pos]
    fpr = np.r_[0.0, fp / neg]
    return fpr, tpr, float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
