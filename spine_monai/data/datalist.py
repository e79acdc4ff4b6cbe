"""Datalists: patient-level stratified folds, a held-out test list, and reading them back for a bundle.

A datalist is JSON with paths relative to the dataset root, so the file travels with the data::

    {
      "training": [{"patient": "Damaged/ID (3)", "class": "Damaged", "fold": 2, "AP": "...", ...}, ...],
      "testing": [...],
      "problems": [{"path": "...", "reason": "..."}],
      ...
    }
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spine_monai.errors import DataError, Problem

__all__ = ["assign_splits", "read_datalist", "resolve_paths", "select_records", "write_datalist"]

SPLITS = ("train", "validation", "test", "training", "all")
# "testing" is the datalist's own name for its test list, so a user who reads the file types it.
_SPLIT_ALIASES = {"testing": "test"}


def assign_splits(
    records: Sequence[dict],
    folds: int = 5,
    test_fraction: float = 0.0,
    seed: int = 0,
    stratify_key: str | None = "class",
    group_key: str = "patient",
) -> tuple[list[dict], list[dict]]:
    """Split records into k folds and a held-out test list, at the patient level and stratified.

    Records are sorted by ``group_key`` before shuffling, so the result depends only on the set of
    patients and the seed, not on scan order.

    Args:
        records: one dict per patient (or per case); each must hold ``group_key``.
        folds: number of cross-validation folds (at least 2, or 1 for no cross-validation).
        test_fraction: fraction of each stratum held out in the ``testing`` list; 1 writes a test-only datalist
            (every record in ``testing``), for a held-out set imported on its own.
        seed: random seed for the shuffle.
        stratify_key: the key to stratify on (the class); ``None`` for no stratification.
        group_key: the key that identifies a patient; records sharing it land in the same fold.

    Returns:
        (training records each with a ``fold`` key, testing records).
    """
    if folds < 1:
        raise ValueError(f"folds must be at least 1, got {folds}")
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test fraction must be in [0, 1], got {test_fraction}")
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r[group_key]].append(r)
    strata: dict[str, list[str]] = defaultdict(list)
    for gid in sorted(groups):
        strata[str(groups[gid][0].get(stratify_key, "")) if stratify_key else ""].append(gid)
    rng = np.random.default_rng(seed)
    training: list[dict] = []
    testing: list[dict] = []
    next_fold = 0
    for stratum in sorted(strata):
        ids = list(strata[stratum])
        rng.shuffle(ids)
        n_test = int(round(len(ids) * test_fraction))
        for gid in ids[:n_test]:
            testing.extend(dict(r) for r in groups[gid])
        for gid in ids[n_test:]:
            for r in groups[gid]:
                training.append({**r, "fold": next_fold % folds})
            next_fold += 1
    training.sort(key=lambda r: (r["fold"], r[group_key]))
    testing.sort(key=lambda r: r[group_key])
    return training, testing


def split_datalist(
    records: Sequence[dict],
    problems: Sequence[Problem],
    warnings: Sequence[Problem],
    folds: int,
    test_fraction: float,
    seed: int,
    stratify_key: str | None,
    **description,
) -> dict:
    """The datalist document of a scan: its records split by :func:`assign_splits`, and what was left out.

    Args:
        records: the good records, one per case, each with a ``patient`` key.
        problems: what kept records out.
        warnings: what was reported but kept.
        folds, test_fraction, seed, stratify_key: as for :func:`assign_splits`.
        description: layout-specific keys written first (name, layout, views, channels, counts, ...).

    Returns:
        the document ``write_datalist`` writes.
    """
    training, testing = assign_splits(
        records, folds=folds, test_fraction=test_fraction, seed=seed, stratify_key=stratify_key, group_key="patient"
    )
    return {
        **description,
        "paths": "relative to the dataset root",
        "num_folds": folds,
        "test_fraction": test_fraction,
        "seed": seed,
        "training": training,
        "testing": testing,
        "problems": [p.to_dict() for p in problems],
        "warnings": [p.to_dict() for p in warnings],
    }


def write_datalist(path: str | os.PathLike, datalist: dict) -> None:
    """Write a datalist as indented JSON, through a temporary file so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(datalist, indent=1) + "\n")
    os.replace(tmp, path)


def read_datalist(path: str | os.PathLike) -> dict:
    """Read a datalist JSON file.

    Raises:
        DataError: when the file is missing, not JSON, or has no ``training`` or ``testing`` list.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "datalist not found; create one with `spine-monai datalist xray --root DIR --out FILE`")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"datalist is not valid JSON ({e})") from e
    if not isinstance(data, dict) or not any(isinstance(data.get(k), list) for k in ("training", "testing")):
        raise DataError(path, "datalist has no 'training' or 'testing' list")
    return data


def select_records(
    datalist: dict, split: str, fold: int | None = None, source: str | os.PathLike = "datalist"
) -> list[dict]:
    """Pick the records of one split.

    Args:
        datalist: a datalist read by :func:`read_datalist`.
        split: ``"train"`` (training records outside ``fold``), ``"validation"`` (training records in
            ``fold``), ``"training"`` (all training records), ``"test"`` or ``"testing"`` (the testing list) or
            ``"all"``.
        fold: the validation fold; needed by ``"train"`` and ``"validation"``.
        source: the datalist's path, for error messages.

    Returns:
        copies of the selected records.

    Raises:
        DataError: when the split is empty or a training record has no fold.
        ValueError: for an unknown split name.
    """
    split = _SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)} (or testing, for test)")
    training = list(datalist.get("training") or [])
    testing = list(datalist.get("testing") or [])
    if split in ("train", "validation"):
        if fold is None:
            raise ValueError(f"split {split!r} needs a fold")
        missing = [r.get("patient", "?") for r in training if "fold" not in r]
        if missing:
            raise DataError(source, f"training records without a 'fold' key: {', '.join(map(str, missing[:5]))}")
        folds = sorted({int(r["fold"]) for r in training})
        if int(fold) not in folds:
            raise DataError(source, f"fold {fold} is not in the datalist (folds present: {folds})")
        keep = (lambda f: f != int(fold)) if split == "train" else (lambda f: f == int(fold))
        chosen = [r for r in training if keep(int(r["fold"]))]
    elif split == "training":
        chosen = training
    elif split == "test":
        chosen = testing
    else:
        chosen = training + testing
    if not chosen:
        where = f" fold {fold}" if split in ("train", "validation") else ""
        hint = {
            "test": ": the datalist has no testing list (build one with --test-fraction, or pass --eval_split all)",
            "train": ": every training record is in the validation fold",
        }.get(split, "")
        raise DataError(source, f"empty datalist: no records for split {split!r}{where}{hint}")
    return [dict(r) for r in chosen]


def resolve_paths(
    records: Sequence[dict], keys: Sequence[str], base_dir: str | os.PathLike, source: str = "datalist"
) -> list[dict]:
    """Make the path values of ``keys`` absolute against ``base_dir``, checking every record has them.

    Every missing key in every record is reported at once.

    Raises:
        DataError: listing each record and key that is missing.
    """
    base = Path(base_dir)
    problems: list[Problem] = []
    out = []
    for r in records:
        missing = [k for k in keys if k not in r]
        if missing:
            problems.append(Problem(f"{source}: {r.get('patient', r)}", f"record has no {', '.join(missing)}"))
            continue
        out.append({**r, **{k: str(base / r[k]) for k in keys}})
    if problems:
        raise DataError(problems)
    return out
