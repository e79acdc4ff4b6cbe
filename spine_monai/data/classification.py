"""Records for the Normal/Damaged classifier: one per patient with every view it reads, and class balancing.

A record holds each view's image under the view's name (``"AP"``, ``"LAT"``), the class (``"class"``,
``"class_label"`` and ``"label"``, the last one for MONAI's trainer) and, when the classifier is mask guided, each
view's structure masks under ``"<VIEW>_masks"``. Masks come from a predictions tree written by a segmentation
bundle's inference (or the dataset itself, for its reference masks), in the ELL888 layout:
``<mask_dir>/<class>/ID (<n>)/<VIEW>/<Structure>.png``.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from spine_monai.data.datalist import read_datalist, select_records
from spine_monai.data.inputs import InferenceInputs
from spine_monai.data.io import read_radiograph
from spine_monai.data.layout import CLASS_INDEX, CLASSES, IMAGE_EXTENSIONS, MASK_EXTENSION, VIEWS, view_of_structure
from spine_monai.errors import DataError, Problem

__all__ = [
    "BALANCE_MODES",
    "balance_loss_weights",
    "balance_sampler",
    "check_views",
    "class_weights",
    "default_mask_structures",
    "cls_inference_inputs",
    "cls_records",
    "image_keys",
    "keys_of_view",
    "mask_key",
    "mask_source",
    "view_channels",
    "view_structures",
    "weighted_sampler",
]

logger = logging.getLogger(__name__)

BALANCE_MODES = ("loss", "sampler", "none")


def check_views(views: str | Sequence[str]) -> list[str]:
    """Validate view names and return them as a list, in the order given (the channel order of the network input).

    Args:
        views: ``"AP"``, ``["AP", "LAT"]``, ... (a single name is one view).

    Raises:
        ValueError: for an unknown, repeated or missing view.
    """
    views = [views] if isinstance(views, str) else [str(v) for v in views]
    unknown = [v for v in views if v not in VIEWS]
    if not views or unknown or len(set(views)) != len(views):
        raise ValueError(f"views must be distinct names among {list(VIEWS)}, got {views}")
    return views


def mask_key(view: str) -> str:
    """The record key of a view's mask list: ``"AP"`` -> ``"AP_masks"``."""
    return f"{view}_masks"


def view_structures(views: str | Sequence[str], mask_structures: Sequence[str]) -> dict[str, list[str]]:
    """The mask structures of each view, in the order given.

    Structures of a view that is not read are left out, so that one structure list serves the dual-view model
    and its single-view ablations.

    Raises:
        ValueError: for an unknown or repeated structure name.
    """
    views = check_views(views)
    structures = list(mask_structures or ())
    if len(set(structures)) != len(structures):
        raise ValueError(f"mask structures repeat: {structures}")
    out: dict[str, list[str]] = {v: [] for v in views}
    for s in structures:
        view = view_of_structure(s)
        if view in out:
            out[view].append(s)
    return out


def mask_source(mask_guided, mask_dir: str | os.PathLike | None) -> str | None:
    """The mask folder a mask-guided (or vertebra-level) classifier reads, or ``None`` when it reads no masks.

    Args:
        mask_guided: whether masks are read (a bool or its command-line text).
        mask_dir: the predictions tree of a segmentation bundle (or a dataset root, for reference masks).

    Raises:
        ValueError: when masks are wanted but no folder is given.
    """
    from spine_monai.workflow import as_bool

    if not as_bool(mask_guided):
        return None
    if not mask_dir:
        raise ValueError(
            "mask_guided or vertebra_level is true but mask_dir is empty: pass --mask_dir, the predictions folder of "
            "the segmentation bundles' inference (<mask_dir>/<class>/ID (<n>)/<VIEW>/<Structure>.png)"
        )
    return str(mask_dir)


def default_mask_structures(vertebra_level=False) -> list[str]:
    """The bundle's default mask channels: each view's vertebra mask; at vertebra level also the LAT vertebral lines.

    The lines are where a listhesis shows as a step: with them the vertebra-level benchmark's test ROC AUC went
    from 0.957 to 0.974 (see the bundle's docs).

    Args:
        vertebra_level: whether the classifier is the vertebra-level one (a bool or its command-line text).
    """
    from spine_monai.workflow import as_bool

    lines = ["Lat_Anterior_Vertebral_Line", "Lat_Posterior_Vertebral_Line"] if as_bool(vertebra_level) else []
    return ["Ap_Vertebra", "Lat_Vertebra", *lines]


def view_channels(views: str | Sequence[str], mask_guided=False, mask_structures: Sequence[str] = ()) -> list[int]:
    """Input channels per view: one grey channel, plus one per mask structure of that view when mask guided."""
    from spine_monai.workflow import as_bool

    per_view = view_structures(views, mask_structures if as_bool(mask_guided) else ())
    return [1 + len(per_view[v]) for v in per_view]


def image_keys(views: str | Sequence[str], mask_guided=False, mask_structures: Sequence[str] = ()) -> list[str]:
    """The keys concatenated into the network input, in channel order: ``["AP", "AP_masks", "LAT", "LAT_masks"]``.

    A view without mask structures has no mask key.
    """
    from spine_monai.workflow import as_bool

    per_view = view_structures(views, mask_structures if as_bool(mask_guided) else ())
    keys: list[str] = []
    for view, structures in per_view.items():
        keys.append(view)
        if structures:
            keys.append(mask_key(view))
    return keys


def keys_of_view(keys: Sequence[str], view: str) -> list[str]:
    """The keys among ``keys`` that belong to ``view``: the view's image and its mask key, if present."""
    return [k for k in keys if k in (view, mask_key(view))]


def _class_of(record: dict) -> tuple[str | None, int | None]:
    cls, label = record.get("class"), record.get("class_label")
    if label is None and cls in CLASS_INDEX:
        label = CLASS_INDEX[cls]
    if cls is None and label is not None and 0 <= int(label) < len(CLASSES):
        cls = CLASSES[int(label)]
    return cls, None if label is None else int(label)


def _mask_paths(mask_dir: Path, view_folder: str, structures: Sequence[str]) -> list[Path]:
    return [mask_dir / view_folder / f"{s}{MASK_EXTENSION}" for s in structures]


def cls_records(
    datalist: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    views: str | Sequence[str] = ("AP", "LAT"),
    split: str = "train",
    fold: int | None = None,
    mask_dir: str | os.PathLike | None = None,
    mask_structures: Sequence[str] = (),
    mask_check: Callable[[Path], object] | None = None,
) -> list[dict]:
    """Records for the classification bundle, with absolute paths.

    Args:
        datalist: path of a datalist written by ``spine-monai datalist xray``.
        dataset_dir: the root the datalist's paths are relative to.
        views: the views the classifier reads; every patient must have them all.
        split: ``"train"``, ``"validation"``, ``"test"``, ``"training"`` or ``"all"`` (see ``select_records``).
        fold: the validation fold, for ``"train"`` and ``"validation"``.
        mask_dir: optional predictions tree to read mask channels from, in the ELL888 layout. Each view's masks
            are looked for beside the view's relative folder: ``<mask_dir>/Damaged/ID (3)/AP/Ap_Vertebra.png``.
        mask_structures: the mask channels, e.g. ``["Ap_Vertebra", "Lat_Vertebra"]``; each goes to its view, and
            those of views not read are ignored. Unused without ``mask_dir``.
        mask_check: called with each view's first mask file (see :func:`cls_inference_inputs`); the
            ``DataError`` problems it raises are reported with the others.

    Returns:
        dicts with ``patient``, ``class``, ``class_label``, ``label``, one image path per view and, with
        ``mask_dir``, a list of mask paths per view under ``"<VIEW>_masks"`` (views without structures get none).

    Raises:
        DataError: listing every patient that lacks a view, a class or a mask file, all at once.
        ValueError: for unknown views or structures, or ``mask_dir`` without a structure of the views read.
    """
    per_view = view_structures(views, mask_structures if mask_dir is not None else ())
    if mask_dir is not None and not any(per_view.values()):
        raise ValueError(f"mask_dir is given but no mask structure of the views {list(per_view)} is named")
    records = select_records(read_datalist(datalist), split, fold=fold, source=datalist)
    base = Path(dataset_dir)
    masks_root = None if mask_dir is None else Path(mask_dir)
    problems: list[Problem] = []
    out = []
    for r in records:
        patient = str(r.get("patient", "?"))
        where = f"{datalist}: {patient}"
        missing = [v for v in per_view if not r.get(v)]
        if missing:
            problems.append(Problem(where, f"patient {patient}: no {' and no '.join(missing)} image"))
            continue
        cls, label = _class_of(r)
        if label is None:
            problems.append(Problem(where, f"patient {patient}: no class (expected 'class' or 'class_label')"))
            continue
        record = {"patient": patient, "class": cls, "class_label": label, "label": label}
        for view, structures in per_view.items():
            record[view] = str(base / r[view])
            if masks_root is not None and structures:
                paths = _mask_paths(masks_root, Path(r[view]).parent.as_posix(), structures)
                absent = [p for p in paths if not p.is_file()]
                for p in absent:
                    problems.append(Problem(str(p), f"patient {patient}: missing {view} mask {p.stem}"))
                record[mask_key(view)] = [str(p) for p in paths]
        out.append(record)
    if mask_check is not None and not problems:
        firsts = [(r["patient"], Path(r[mask_key(v)][0])) for r in out for v in per_view if per_view[v]]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            problems = [p for found in pool.map(lambda item: _checked(mask_check, *item), firsts) for p in found]
    if problems:
        raise DataError(problems)
    return out


def _checked(check: Callable[[Path], object], patient: str, path: Path) -> list[Problem]:
    """The problems ``check(path)`` raises, each prefixed with the patient."""
    try:
        check(path)
    except DataError as e:
        return [Problem(p.path, f"patient {patient}: {p.reason}") for p in e.problems]
    return []


def class_weights(records: Sequence[dict], key: str = "class_label", n_classes: int = 2) -> list[float]:
    """Inverse-frequency class weights, normalised so that the mean weight over the records is 1.

    ``w_k = N / (n_classes * N_k)``: with 30 Normal and 10 Damaged patients, ``[0.667, 2.0]``. A loss weighted
    this way keeps its scale, and each class contributes equally. A class absent from the records gets 0 (it
    has nothing to weight) and a warning.

    Args:
        records: dicts holding an integer class under ``key``.
        key: the class key.
        n_classes: number of classes.

    Returns:
        one weight per class.

    Raises:
        ValueError: when there are no records, or a label outside ``0..n_classes-1``.
    """
    labels = np.asarray([int(r[key]) for r in records], dtype=np.int64)
    if labels.size == 0:
        raise ValueError("class weights of an empty record list")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1}, got {sorted(set(labels.tolist()))}")
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    absent = [k for k in range(n_classes) if counts[k] == 0]
    if absent:
        logger.warning("classes %s have no records; their weight is 0", absent)
    weights = np.where(counts > 0, labels.size / (n_classes * np.maximum(counts, 1)), 0.0)
    return [float(w) for w in weights]


def weighted_sampler(
    records: Sequence[dict],
    key: str = "class_label",
    n_classes: int = 2,
    num_samples: int | None = None,
    seed: int | None = None,
) -> WeightedRandomSampler:
    """A sampler that draws every class equally often, each record weighted by its class weight.

    Args:
        records: the training records, in dataset order.
        key: the class key.
        n_classes: number of classes.
        num_samples: draws per epoch; defaults to the number of records, so an epoch keeps its length.
        seed: seed of the sampler's own generator; ``None`` uses torch's global one (set by ``set_determinism``).

    Returns:
        a ``torch.utils.data.WeightedRandomSampler`` drawing with replacement.
    """
    weights = class_weights(records, key=key, n_classes=n_classes)
    per_record = torch.as_tensor([weights[int(r[key])] for r in records], dtype=torch.double)
    generator = None if seed is None else torch.Generator().manual_seed(int(seed))
    return WeightedRandomSampler(
        per_record, num_samples=num_samples or len(records), replacement=True, generator=generator
    )


def _check_balance(mode: str) -> str:
    mode = str(mode).lower()
    if mode not in BALANCE_MODES:
        raise ValueError(f"class_balance must be one of {', '.join(BALANCE_MODES)}, got {mode!r}")
    return mode


def balance_loss_weights(
    records: Sequence[dict], class_balance: str, n_classes: int = 2, key: str = "class_label"
) -> torch.Tensor | None:
    """Cross-entropy class weights when ``class_balance`` is ``"loss"``, else ``None`` (for configs).

    Raises:
        ValueError: for a ``class_balance`` other than ``"loss"``, ``"sampler"`` or ``"none"``.
    """
    if _check_balance(class_balance) != "loss":
        return None
    return torch.as_tensor(class_weights(records, key=key, n_classes=n_classes), dtype=torch.float32)


def balance_sampler(
    records: Sequence[dict], class_balance: str, n_classes: int = 2, key: str = "class_label", seed: int | None = None
) -> WeightedRandomSampler | None:
    """A :func:`weighted_sampler` when ``class_balance`` is ``"sampler"``, else ``None`` (for configs).

    Raises:
        ValueError: for a ``class_balance`` other than ``"loss"``, ``"sampler"`` or ``"none"``.
    """
    if _check_balance(class_balance) != "sampler":
        return None
    return weighted_sampler(records, key=key, n_classes=n_classes, seed=seed)


def _find_patients(source: Path) -> dict[Path, dict[str, list[Path]]]:
    """Patient folders under ``source``: folders holding ``<VIEW>/<VIEW>.<ext>`` (names matched case-insensitively)."""
    known = {v.lower(): v for v in VIEWS}
    patients: dict[Path, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for p in sorted(source.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        stem = p.stem.lower()
        if stem in known and p.parent.name.lower() == stem:
            patients[p.parent.parent][known[stem]].append(p)
    return patients


def cls_inference_inputs(
    source: str | os.PathLike,
    views: str | Sequence[str] = ("AP", "LAT"),
    datalist: str | os.PathLike | None = None,
    split: str = "all",
    mask_dir: str | os.PathLike | None = None,
    mask_structures: Sequence[str] = (),
    workers: int | None = None,
    mask_check: Callable[[Path], object] | None = None,
) -> InferenceInputs:
    """Find the patients to classify, from an ELL888 folder or a datalist, and check each can be read.

    A patient is a folder holding one sub-folder per view with the view's image (``ID (3)/AP/AP.jpg`` and
    ``ID (3)/LAT/LAT.dcm``). A patient missing a view, with an unreadable image or a missing mask is reported
    (``"patient Normal/ID (2): no LAT image"``) and left out; the others go on.

    Args:
        source: the folder to search, or the dataset root when ``datalist`` is given.
        views: the views the classifier reads.
        datalist: optional datalist; its records of ``split`` are used instead of a folder search.
        split: datalist split to use.
        mask_dir: predictions tree holding the mask channels of a mask-guided classifier, in the same layout.
        mask_structures: the mask channels.
        workers: threads for checking the files.
        mask_check: called with each view's first mask file (e.g. the vertebra-level classifier's check that the
            mask can be cut into body patches); a ``DataError`` it raises leaves the patient out with its reason.

    Returns:
        records with ``patient``, one image path per view (and mask lists), and a problem per skipped patient.

    Raises:
        DataError: when the folder does not exist or holds no patient at all.
    """
    per_view = view_structures(views, mask_structures if mask_dir is not None else ())
    source = Path(source)
    problems: list[Problem] = []
    # (patient id, {view: path}, {view: folder relative to the root, for the masks})
    found: list[tuple[str, dict[str, Path], dict[str, str]]] = []
    if datalist:
        for r in select_records(read_datalist(datalist), split, source=datalist):
            patient = str(r.get("patient", "?"))
            missing = [v for v in per_view if not r.get(v)]
            if missing:
                problems.append(
                    Problem(f"{datalist}: {patient}", f"patient {patient}: no {' and no '.join(missing)} image")
                )
                continue
            found.append(
                (patient, {v: source / r[v] for v in per_view}, {v: Path(r[v]).parent.as_posix() for v in per_view})
            )
    else:
        if not source.is_dir():
            raise DataError(source, "input folder not found")
        patients = _find_patients(source)
        if not patients:
            raise DataError(
                source, f"no patient folders found: expected <patient>/{'/'.join(per_view)} folders holding <VIEW>.jpg"
            )
        for folder in sorted(patients):
            rel = folder.relative_to(source).as_posix()
            patient = folder.name if rel == "." else rel
            images = patients[folder]
            bad = False
            for view in per_view:
                if not images.get(view):
                    problems.append(Problem(str(folder), f"patient {patient}: no {view} image"))
                    bad = True
                elif len(images[view]) > 1:
                    names = ", ".join(p.name for p in images[view])
                    problems.append(Problem(str(folder / view), f"patient {patient}: ambiguous {view} image ({names})"))
                    bad = True
            if not bad:
                chosen = {v: images[v][0] for v in per_view}
                found.append((patient, chosen, {v: chosen[v].parent.relative_to(source).as_posix() for v in per_view}))

    def check(item: tuple[str, dict[str, Path], dict[str, str]]) -> list[Problem]:
        patient, paths, folders = item
        out = []
        for view, path in paths.items():
            try:
                read_radiograph(path)
            except DataError as e:
                out.extend(Problem(p.path, f"patient {patient}: {p.reason}") for p in e.problems)
            if mask_dir is not None and per_view[view]:
                masks = _mask_paths(Path(mask_dir), folders[view], per_view[view])
                for m in masks:
                    if not m.is_file():
                        out.append(Problem(str(m), f"patient {patient}: missing {view} mask {m.stem}"))
                if mask_check is not None and masks[0].is_file():
                    out.extend(_checked(mask_check, patient, masks[0]))
        return out

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        checks = list(pool.map(check, found))
    records = []
    for (patient, paths, folders), issues in zip(found, checks, strict=True):
        if issues:
            problems.extend(issues)
            continue
        record: dict = {"patient": patient, **{v: str(p) for v, p in paths.items()}}
        if mask_dir is not None:
            for view, structures in per_view.items():
                if structures:
                    record[mask_key(view)] = [str(m) for m in _mask_paths(Path(mask_dir), folders[view], structures)]
        records.append(record)
    if not records and not problems:
        raise DataError(source, "no patients found to classify")
    return InferenceInputs(records, problems)
