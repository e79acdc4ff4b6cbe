"""Scan an ELL888-layout tree into one record per patient, collecting every problem on the way."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from spine_monai.data.datalist import read_datalist, resolve_paths, select_records, split_datalist
from spine_monai.data.inputs import InferenceInputs
from spine_monai.data.io import image_size, read_mask, read_radiograph
from spine_monai.data.layout import (
    ALL_STRUCTURES,
    CLASS_INDEX,
    CLASSES,
    IMAGE_EXTENSIONS,
    MASK_EXTENSION,
    STRUCTURES,
    VIEWS,
    patient_sort_key,
    view_of_structure,
)
from spine_monai.errors import DataError, Problem

__all__ = ["ScanResult", "build_xray_datalist", "check_structures", "scan_xray_tree"]

_PATIENT_DIR = re.compile(r"^id ?\((\d+)\)$", re.IGNORECASE)
# Files a scan may meet and need not report: OS litter and the project's own sidecars.
_IGNORED_FILES = {"thumbs.db", "desktop.ini", "ground_truth.json"}
_IMAGE_LIKE = {".jpg", ".jpeg", ".png", ".dcm", ".tif", ".tiff", ".bmp"}


@dataclass
class ScanResult:
    """What a scan found.

    Attributes:
        patients: one record per good patient; paths are relative to the root, with "/" separators.
        problems: what kept a patient (or a folder) out of ``patients``.
        warnings: things reported but not disqualifying, such as a stray file in a view folder.
    """

    patients: list[dict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def check_structures(structures: Sequence[str]) -> tuple[str, ...]:
    """Validate structure names and return them as a tuple, in the order given.

    Raises:
        ValueError: for a name that is not one of the layout's structures, or a repeated name.
    """
    for s in structures:
        view_of_structure(s)
    if len(set(structures)) != len(structures):
        raise ValueError(f"structure names repeat: {list(structures)}")
    return tuple(structures)


def _children(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def _match_name(entries: list[Path], name: str) -> Path | None:
    lowered = name.lower()
    for p in entries:
        if p.name.lower() == lowered:
            return p
    return None


def scan_xray_tree(
    root: str | os.PathLike,
    views: Sequence[str] = VIEWS,
    structures: Sequence[str] = ALL_STRUCTURES,
    verify_pixels: bool = True,
    workers: int | None = None,
) -> ScanResult:
    """Scan ``<root>/{Normal,Damaged}/ID (<n>)/{AP,LAT}/`` into patient records.

    Folder and file names are matched case-insensitively, so ``normal/id (3)/ap/AP.JPG`` is read too.

    Args:
        root: the dataset root.
        views: the views every patient must have.
        structures: the masks every patient must have; each must belong to one of ``views``.
        verify_pixels: decode every image and mask to catch truncated files, non-binary masks and size
            mismatches. Without it only the folder structure is checked.
        workers: threads for decoding; defaults to the CPU count.

    Returns:
        the good patients, the problems and the warnings.

    Raises:
        DataError: when the root is missing or not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset root not found or not a folder")
    structures = check_structures(structures)
    for s in structures:
        if view_of_structure(s) not in views:
            raise ValueError(f"structure {s} belongs to view {view_of_structure(s)}, which is not among {list(views)}")
    result = ScanResult()
    candidates: list[tuple[str, str, Path]] = []
    for entry in _children(root):
        if entry.is_dir():
            cls = next((c for c in CLASSES if c.lower() == entry.name.lower()), None)
            if cls is None:
                result.problems.append(
                    Problem(str(entry), f"unknown folder: expected one of {', '.join(CLASSES)} at the dataset root")
                )
                continue
            for patient_dir in sorted(_children(entry), key=lambda p: patient_sort_key(p.name)):
                if not patient_dir.is_dir():
                    _stray(result, patient_dir, "a file directly under a class folder")
                elif not _PATIENT_DIR.match(patient_dir.name):
                    result.problems.append(
                        Problem(str(patient_dir), "unknown folder: expected a patient folder named 'ID (<n>)'")
                    )
                else:
                    candidates.append((cls, patient_dir.name, patient_dir))
        else:
            _stray(result, entry, "a file at the dataset root")

    layouts = [_layout_of_patient(cls, name, folder, root, views, structures) for cls, name, folder in candidates]
    if verify_pixels:
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            checked = list(pool.map(partial(_verify_patient, root=root), layouts))
    else:
        checked = layouts
    for record, problems, warnings in checked:
        result.warnings.extend(warnings)
        if problems:
            result.problems.extend(problems)
        else:
            result.patients.append(record)
    if not result.patients and not result.problems:
        result.problems.append(Problem(str(root), "empty tree: no Normal/ or Damaged/ patient folders found"))
    return result


def _stray(result: ScanResult, path: Path, where: str) -> None:
    if path.name.lower() in _IGNORED_FILES:
        return
    if path.suffix.lower() in _IMAGE_LIKE:
        result.warnings.append(Problem(str(path), f"unexpected image file ({where}); it is not used"))


def _layout_of_patient(
    cls: str, name: str, folder: Path, root: Path, views: Sequence[str], structures: Sequence[str]
) -> tuple[dict, list[Problem], list[Problem]]:
    patient = f"{cls}/{folder.name}"
    record: dict = {"patient": patient, "class": cls, "class_label": CLASS_INDEX[cls]}
    problems: list[Problem] = []
    warnings: list[Problem] = []
    entries = _children(folder)
    for p in entries:
        if p.is_dir() and not any(p.name.lower() == v.lower() for v in VIEWS):
            problems.append(Problem(str(p), f"unknown folder: expected only {' and '.join(VIEWS)} view folders"))
    for view in views:
        view_dir = _match_name(entries, view)
        if view_dir is None or not view_dir.is_dir():
            problems.append(Problem(str(folder / view), f"missing view: no {view} folder for patient {patient}"))
            continue
        files = [p for p in _children(view_dir) if p.is_file()]
        images = [p for ext in IMAGE_EXTENSIONS if (p := _match_name(files, view + ext)) is not None]
        used: set[Path] = set(images)
        if not images:
            choices = " or ".join(view + ext for ext in (".jpg", ".dcm"))
            problems.append(Problem(str(view_dir), f"missing view image: expected {choices}"))
        elif len(images) > 1:
            names = ", ".join(p.name for p in images)
            problems.append(Problem(str(view_dir), f"ambiguous view image: found {names}; keep one"))
        else:
            record[view] = images[0].relative_to(root).as_posix()
        for s in structures:
            if view_of_structure(s) != view:
                continue
            mask = _match_name(files, s + MASK_EXTENSION)
            if mask is None:
                problems.append(Problem(str(view_dir / (s + MASK_EXTENSION)), f"missing mask for structure {s}"))
            else:
                used.add(mask)
                record[s] = mask.relative_to(root).as_posix()
        known_masks = {(n + MASK_EXTENSION).lower() for n in STRUCTURES[view]}
        for p in files:
            if p in used or p.name.lower() in known_masks:
                continue
            if p.name.lower() in _IGNORED_FILES:
                continue
            if p.suffix.lower() in _IMAGE_LIKE:
                warnings.append(Problem(str(p), "unexpected image file in a view folder; it is not used"))
        for p in _children(view_dir):
            if p.is_dir():
                problems.append(Problem(str(p), "unknown folder inside a view folder"))
    return record, problems, warnings


def _verify_patient(
    layout: tuple[dict, list[Problem], list[Problem]], root: Path
) -> tuple[dict, list[Problem], list[Problem]]:
    record, problems, warnings = layout
    problems = list(problems)
    for view in VIEWS:
        if view not in record:
            continue
        image_path = root / record[view]
        try:
            read_radiograph(image_path)
            size = image_size(image_path)
        except DataError as e:
            problems.extend(e.problems)
            continue
        for s in STRUCTURES[view]:
            if s in record:
                try:
                    read_mask(root / record[s], expected_size=size)
                except DataError as e:
                    problems.extend(e.problems)
    return record, problems, warnings


def build_xray_datalist(
    root: str | os.PathLike,
    folds: int = 5,
    test_fraction: float = 0.0,
    seed: int = 0,
    views: Sequence[str] = VIEWS,
    structures: Sequence[str] = ALL_STRUCTURES,
    verify_pixels: bool = True,
) -> dict:
    """Scan an ELL888 tree and split its good patients into folds and a test list.

    Args:
        root: the dataset root.
        folds: number of cross-validation folds.
        test_fraction: fraction of each class held out in ``testing``.
        seed: split seed.
        views: views every patient must have.
        structures: masks every patient must have.
        verify_pixels: decode every file (see :func:`scan_xray_tree`).

    Returns:
        the datalist document, whose ``problems`` and ``warnings`` list what was left out and why.
    """
    scan = scan_xray_tree(root, views=views, structures=structures, verify_pixels=verify_pixels)
    return split_datalist(
        scan.patients,
        scan.problems,
        scan.warnings,
        folds,
        test_fraction,
        seed,
        stratify_key="class",
        name="spine_monai X-ray datalist (ELL888 layout)",
        layout="ELL888",
        views=list(views),
        structures=list(structures),
        classes=list(CLASSES),
        counts={c: sum(r["class"] == c for r in scan.patients) for c in CLASSES},
    )


def xray_view_records(
    datalist: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    view: str,
    structures: Sequence[str],
    split: str,
    fold: int | None = None,
) -> list[dict]:
    """Records for a segmentation bundle: one view's image and its masks, with absolute paths.

    Args:
        datalist: path of a datalist written by ``spine-monai datalist xray``.
        dataset_dir: the root the datalist's paths are relative to.
        view: ``"AP"`` or ``"LAT"``.
        structures: mask names, in channel order.
        split: ``"train"``, ``"validation"``, ``"test"``, ``"training"`` or ``"all"`` (see ``select_records``).
        fold: the validation fold.

    Returns:
        dicts with ``image`` (path), ``label`` (list of mask paths), ``patient``, ``output_subdir`` and ``stem``.

    Raises:
        DataError: for a missing or empty datalist, or records lacking the view or a structure (all listed).
    """
    structures = check_structures(structures)
    wrong = [s for s in structures if view_of_structure(s) != view]
    if wrong:
        raise ValueError(f"structures {wrong} do not belong to the {view} view")
    records = select_records(read_datalist(datalist), split, fold=fold, source=datalist)
    resolved = resolve_paths(records, [view, *structures], dataset_dir, source=str(datalist))
    return [
        {
            "image": r[view],
            "label": [r[s] for s in structures],
            "patient": r.get("patient", Path(r[view]).parent.as_posix()),
            "output_subdir": Path(src[view]).parent.as_posix(),
            "stem": Path(src[view]).stem,
        }
        for r, src in zip(resolved, records, strict=True)
    ]


_MASK_NAMES = {(s + MASK_EXTENSION).lower() for s in ALL_STRUCTURES}


def xray_inference_inputs(
    source: str | os.PathLike,
    view: str,
    datalist: str | os.PathLike | None = None,
    split: str = "all",
    workers: int | None = None,
) -> InferenceInputs:
    """Find the images to segment, from a folder or a datalist, and check each can be read.

    In a folder, images named after the view (``AP.jpg``, ``AP.dcm``, as in the ELL888 layout) are taken
    if there are any; otherwise every image file that is not a structure mask or an overlay. Outputs go
    to a folder mirroring the input: ``Damaged/ID (3)/AP/AP.jpg`` gives ``Damaged/ID (3)/AP/Ap_Vertebra.png``
    and ``scans/img7.jpg`` gives ``scans/img7/Ap_Vertebra.png``.

    Args:
        source: a folder of images, or the dataset root when ``datalist`` is given.
        view: ``"AP"`` or ``"LAT"``.
        datalist: optional datalist; its records of ``split`` are used instead of a folder search.
        split: datalist split to use.
        workers: threads for checking the files.

    Returns:
        the readable inputs and a problem for every unreadable one.

    Raises:
        DataError: when the folder does not exist or holds no image at all.
    """
    source = Path(source)
    if datalist:
        chosen = select_records(read_datalist(datalist), split, source=datalist)
        rels = [r[view] for r in chosen if view in r]
        ids = [r.get("patient", r[view]) for r in chosen if view in r]
        problems = [
            Problem(f"{datalist}: {r.get('patient', '?')}", f"record has no {view} image")
            for r in chosen
            if view not in r
        ]
    else:
        if not source.is_dir():
            raise DataError(source, "input folder not found")
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        named = [p for p in files if p.stem.lower() == view.lower()]
        if not named:
            named = [p for p in files if p.name.lower() not in _MASK_NAMES and not p.stem.endswith("_overlay")]
        rels = [p.relative_to(source).as_posix() for p in named]
        ids = [Path(r).parent.as_posix() if Path(r).stem.lower() == view.lower() else r for r in rels]
        problems = []
    if not rels and not problems:
        raise DataError(source, f"no {view} images found to segment")

    def check(rel: str) -> Problem | None:
        try:
            read_radiograph(source / rel)
        except DataError as e:
            return e.problems[0]
        return None

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        checks = list(pool.map(check, rels))
    records = []
    for rel, pid, problem in zip(rels, ids, checks, strict=True):
        if problem is not None:
            problems.append(problem)
            continue
        p = Path(rel)
        subdir = p.parent if p.stem.lower() == view.lower() else p.parent / p.stem
        records.append(
            {"image": str(source / rel), "patient": str(pid), "output_subdir": subdir.as_posix(), "stem": p.stem}
        )
    return InferenceInputs(records, problems)
