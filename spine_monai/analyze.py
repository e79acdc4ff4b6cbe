"""One command from patients' films to their results: ``spine-monai analyze``.

The packaged bundles a clinical group received (zips, or unzipped folders) run through MONAI's bundle runner: the AP
and LAT segmentation bundles, then the classifier, each on every patient at once; then the measurements and one
report. Each patient gets a folder with its masks and overlays, measurements, classification and GradCAM maps, and the
DICOM SEG and SR of its DICOM films. A film that fails is listed, at the end and in ``failures.csv``; the others go on.

Inputs (any mix):

- a folder in the ELL888 layout (``<class>/ID (<n>)/<VIEW>/<VIEW>.jpg``) or of patient folders (``<patient>/AP/``);
- one patient folder holding ``AP/`` and ``LAT/``;
- films given with their view, ``AP=path/to/film.jpg`` (one patient, ``--patient`` names it);
- DICOM files or folders of them (CR/DX): the view is read from ``ViewPosition`` (AP or PA: AP; LL, RL or LAT:
  LAT) and the films are grouped into patients by ``PatientID``;
- a datalist JSON, its paths relative to ``dataset_dir`` (``--dataset-dir``; the datalist's folder by default).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from spine_monai.data.layout import IMAGE_EXTENSIONS, VIEWS
from spine_monai.errors import DataError, Problem

__all__ = ["ROLES", "AnalysisResult", "PatientFilms", "analyze", "find_bundles", "find_patients"]

logger = logging.getLogger(__name__)

# bundle name prefix -> role; a zip is named <bundle>_v<version>.zip
ROLES = {"spine_xray_ap_seg": "AP", "spine_xray_lat_seg": "LAT", "spine_xray_cls": "cls"}
# DICOM ViewPosition (PS3.3 C.8.11.5) -> view
_VIEW_POSITIONS = {"AP": "AP", "PA": "AP", "LL": "LAT", "RL": "LAT", "LAT": "LAT", "LATERAL": "LAT"}
_SAFE = re.compile(r"[^A-Za-z0-9._ ()-]+")
# role -> its bundle's output folder under work/
_RUN_DIRS = {"AP": "AP", "LAT": "LAT", "cls": "classification"}


@dataclass
class PatientFilms:
    """A patient to analyse: a name (a relative folder, ``Damaged/ID (3)`` or ``patient_7``) and a film per view."""

    name: str
    films: dict[str, Path] = field(default_factory=dict)


@dataclass
class AnalysisResult:
    """What :func:`analyze` produced: the patients' folders, the report and every problem met."""

    patients: list[str]
    report: Path | None
    problems: list[Problem]


def _dicom_view(path: Path) -> tuple[str | None, str, str]:
    """(view or None, PatientID, the ViewPosition as written) of a DICOM film."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    position = str(ds.get("ViewPosition", "")).strip().upper()
    return _VIEW_POSITIONS.get(position), str(ds.get("PatientID", "")).strip() or path.stem, position


def _view_folder_patients(root: Path) -> list[PatientFilms]:
    found = []
    # Walked with os.walk to follow linked patient folders, which rglob would not enter.
    folders = sorted(Path(d) / name for d, names, _ in os.walk(root, followlinks=True) for name in names)
    for view_dir in folders:
        if view_dir.name.upper() not in VIEWS:
            continue
        view = view_dir.name.upper()
        films = [p for p in view_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.stem.upper() == view]
        if films:
            name = view_dir.parent.relative_to(root).as_posix() if view_dir.parent != root else root.name
            found.append((name, view, sorted(films)[0]))
    patients: dict[str, PatientFilms] = {}
    for name, view, film in found:
        patients.setdefault(name, PatientFilms(name)).films[view] = film
    return list(patients.values())


def _safe_name(name: str) -> str:
    """A patient name usable as a relative folder: each part cleaned, no ``..`` or absolute part."""
    parts = [_SAFE.sub("_", part) for part in name.replace("\\", "/").split("/")]
    return "/".join(p for p in parts if p not in ("", ".", "..")) or "patient"


def find_patients(
    inputs: Sequence[str | os.PathLike], patient: str = "patient", dataset_dir: str | os.PathLike | None = None
) -> tuple[list[PatientFilms], list[Problem]]:
    """The patients and films ``inputs`` name, and a problem for every input that cannot be used.

    Args:
        inputs: folders, files, ``VIEW=FILE`` items and datalists (see the module's description).
        patient: the name of the patient that ``VIEW=FILE`` items and single films belong to.
        dataset_dir: the root a datalist's paths are relative to; the datalist's own folder when ``None``.

    Returns:
        (patients, problems): a film left out is a problem naming its file and the reason.
    """
    patients: dict[str, PatientFilms] = {}
    problems: list[Problem] = []

    def add(name: str, view: str, film: Path) -> None:
        name = _safe_name(name)
        entry = patients.setdefault(name, PatientFilms(name))
        if view in entry.films and entry.films[view] != film:
            problems.append(Problem(str(film), f"patient {name} already has a {view} film, {entry.films[view]}"))
        else:
            entry.films[view] = film

    def add_dicom(path: Path) -> None:
        try:
            view, patient_id, position = _dicom_view(path)
        except Exception as e:  # pydicom raises several types for a file that is not DICOM
            problems.append(Problem(str(path), f"not a readable DICOM file ({type(e).__name__})"))
            return
        if view is None:
            problems.append(
                Problem(str(path), f"the view is not in the DICOM tags (ViewPosition {position!r}); give it as AP=FILE")
            )
        else:
            add(patient_id, view, path)

    for item in map(str, inputs):
        key, sep, value = item.partition("=")
        if sep and key.upper() in VIEWS:
            film = Path(value)
            if not film.is_file():
                problems.append(Problem(value, "no such film"))
            else:
                add(patient, key.upper(), film)
            continue
        path = Path(item)
        if not path.exists():
            problems.append(Problem(item, "no such file or folder"))
        elif path.is_file() and path.suffix.lower() == ".json":
            from spine_monai.data.datalist import read_datalist

            try:
                document = read_datalist(path)
            except DataError as e:
                problems += e.problems
                continue
            root = Path(dataset_dir) if dataset_dir is not None else path.parent
            for split in ("training", "validation", "testing"):
                for r in document.get(split, []):
                    for view in VIEWS:
                        if view in r:
                            add(str(r.get("patient", path.stem)), view, root / r[view])
        elif path.is_file() and path.suffix.lower() == ".dcm":
            add_dicom(path)
        elif path.is_file():
            problems.append(Problem(item, "a film needs its view: give it as AP=FILE or LAT=FILE"))
        else:
            found = _view_folder_patients(path)
            for p in found:
                for view, film in p.films.items():
                    add(p.name, view, film)
            if not found:
                dicoms = sorted(q for q in path.rglob("*") if q.is_file() and q.suffix.lower() == ".dcm")
                for q in dicoms:
                    add_dicom(q)
                if not dicoms:
                    problems.append(Problem(item, "no films: neither <patient>/<VIEW>/<VIEW>.<ext> nor DICOM files"))
    return list(patients.values()), problems


def find_bundles(folder: str | os.PathLike, work: Path) -> tuple[dict[str, Path], list[Problem]]:
    """The packaged bundles in ``folder`` by role (``AP``, ``LAT``, ``cls``), zips extracted under ``work``.

    Returns:
        (role -> bundle folder, problems): an unknown or repeated bundle is a problem.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "no such folder of bundles")
    found: dict[str, Path] = {}
    problems: list[Problem] = []
    for entry in sorted(folder.iterdir()):
        if entry.suffix == ".zip":
            try:
                with zipfile.ZipFile(entry) as zf:
                    tops = {n.split("/", 1)[0] for n in zf.namelist()}
                    zf.extractall(work)
            except zipfile.BadZipFile:
                problems.append(Problem(str(entry), "not a readable zip"))
                continue
            bundle = work / sorted(tops)[0]
        elif (entry / "configs" / "inference.json").is_file():
            bundle = entry
        else:
            continue
        role = next((r for prefix, r in ROLES.items() if bundle.name.startswith(prefix)), None)
        if role is None:
            problems.append(Problem(str(entry), f"not one of the bundles analyze runs ({', '.join(ROLES)})"))
        elif role in found:
            problems.append(Problem(str(entry), f"a second {role} bundle; {found[role]} is used"))
        else:
            found[role] = bundle
    if not found:
        raise DataError(folder, f"no bundle of {', '.join(ROLES)} (zip or folder with configs/inference.json)")
    return found, problems


def _stage(patients: Sequence[PatientFilms], root: Path) -> dict[str, str]:
    """Link every film into ``root/<patient>/<VIEW>/<VIEW><ext>``, the layout the bundles and measure read.

    Returns:
        each link's path -> the film it stands for, so that problems name the user's files.
    """
    links = {}
    for p in patients:
        for view, film in p.films.items():
            target = root / p.name / view / f"{view}{film.suffix.lower()}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists() or target.is_symlink():
                target.unlink()
            os.symlink(film.resolve(), target)
            links[str(target)] = str(film)
    return links


def _run_bundle(bundle: Path, dataset_dir: Path, output_dir: Path) -> None:
    from monai.bundle import run

    configs = bundle / "configs"
    run(
        config_file=str(configs / "inference.json"),
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        bundle_root=str(bundle),
        dataset_dir=str(dataset_dir),
        output_dir=str(output_dir),
        fail_on_bad_input=False,
        num_workers=0,
    )


def _failures(csv: Path) -> list[Problem]:
    if not csv.is_file():
        return []
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    return [Problem(r["path"], r["reason"]) for _, r in table.iterrows()]


def _move_tree(src: Path, dst: Path) -> None:
    """Move every file under ``src`` to the same place under ``dst``, replacing what an earlier run left there."""
    if not src.is_dir():
        return
    for f in sorted(src.rglob("*")):
        if f.is_file():
            target = dst / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, target)


def analyze(
    bundles: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    patient: str = "patient",
    progress: bool = True,
    dataset_dir: str | os.PathLike | None = None,
) -> AnalysisResult:
    """Run the packaged bundles on patients' films, then measure and report; see the module's description.

    Args:
        bundles: a folder of bundle zips (as ``spine-monai package`` writes them) or unzipped bundle folders.
        inputs: what to analyse (see :func:`find_patients`).
        out: the output folder: ``<patient>/`` per patient, ``measurements.csv``, ``report.html``, ``failures.csv``,
            and ``work/`` with each bundle's own tables (``predictions.csv``, ``failures.csv``) and the measurements
            per view.
        patient: the patient name of ``VIEW=FILE`` items.
        progress: show a progress bar.
        dataset_dir: the root a datalist input's paths are relative to.

    Returns:
        the patients analysed, the report and every problem (also written to ``failures.csv``).

    Raises:
        DataError: when there are no bundles or no patient at all.
    """
    from tqdm import tqdm

    out = Path(out)
    work = out / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    found, problems = find_bundles(bundles, work / "bundles")
    patients, more = find_patients(inputs, patient, dataset_dir)
    problems += more
    if not patients:
        raise DataError(problems) if problems else DataError(str(out), "no patient to analyse")
    staged = work / "input"
    links = _stage(patients, staged)
    roles = [r for r in ("AP", "LAT", "cls") if r in found]
    steps = [*(f"bundle {r}" for r in roles), "measure", "report", "patients"]
    bar = tqdm(steps, desc="analyze", disable=not progress, unit="step")
    for step in bar:
        bar.set_postfix_str(step)
        if step.startswith("bundle "):
            role = step.split()[1]
            try:
                _run_bundle(found[role], staged, work / _RUN_DIRS[role])
            except Exception as e:  # one bundle failing leaves the others' results
                problems.append(Problem(str(found[role]), f"{role} bundle failed: {type(e).__name__}: {e}"))
            problems += _failures(work / _RUN_DIRS[role] / "failures.csv")
        elif step == "measure":
            _measure(work, staged, out, problems)
        elif step == "report":
            report = _report(work, out, problems)
        else:
            _patient_folders(patients, work, out)
    bar.close()
    # The unzipped bundles are the largest part of work/, and the staged films are links to the user's: what stays
    # there are the bundles' own tables.
    for scratch in (work / "bundles", staged):
        shutil.rmtree(scratch, ignore_errors=True)
    problems = [Problem(links.get(p.path, p.path), p.reason) for p in problems]
    _write_failures(out / "failures.csv", problems)
    return AnalysisResult([p.name for p in patients], report, problems)


def _measure(work: Path, staged: Path, out: Path, problems: list[Problem]) -> None:
    """Measure the AP and LAT predictions into ``out/measurements.csv``, with overlays and DICOM SRs under work."""
    from spine_monai.measure.command import measure_tree

    tables = []
    for view in ("AP", "LAT"):
        predictions = work / view / "predictions"
        if not predictions.is_dir():
            continue
        try:
            table = measure_tree(predictions, view, out_csv=work / "measure" / f"{view}.csv", images_dir=staged)
        except DataError as e:
            problems += e.problems
            continue
        problems += [Problem(p["path"], p["reason"]) for p in table.attrs.get("problems", [])]
        tables.append(table)
    if tables:
        pd.concat(tables).to_csv(out / "measurements.csv", index=False, float_format="%.3f")


def _read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def _patient_folders(patients: Sequence[PatientFilms], work: Path, out: Path) -> None:
    """Move each patient's results into ``out/<patient>/``: full-size images are not kept twice."""
    measurements = pd.read_csv(out / "measurements.csv") if (out / "measurements.csv").is_file() else None
    table = work / "classification" / "predictions.csv"
    predictions = pd.read_csv(table) if table.is_file() else None
    for p in patients:
        folder = out / p.name
        for view in ("AP", "LAT"):
            _move_tree(work / view / "predictions" / p.name / view, folder / view)
            for f in sorted((work / "measure" / p.name).glob(f"{view}_*")):
                folder.mkdir(parents=True, exist_ok=True)
                os.replace(f, folder / f.name)
        if measurements is not None:
            rows = measurements[measurements["patient"] == p.name]
            if len(rows):
                folder.mkdir(parents=True, exist_ok=True)
                rows.to_csv(folder / "measurements.csv", index=False)
        if predictions is not None:
            row = predictions[predictions["patient"] == p.name]
            if len(row):
                folder.mkdir(parents=True, exist_ok=True)
                record = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.iloc[0].items()}
                (folder / "classification.json").write_text(json.dumps(record, indent=1) + "\n")
        _move_tree(work / "classification" / "cam" / p.name, folder / "gradcam")


def _report(work: Path, out: Path, problems: list[Problem]) -> Path | None:
    """One report of every patient: the classifier's predictions with their GradCAM maps, and the measurements."""
    from spine_monai.report import build_report

    eval_dirs = []
    folder = work / "classification"
    predictions = folder / "predictions.csv"
    if predictions.is_file():
        # The classification section reads per_patient.csv and the cam/ folder beside it; no labels, so no ROC.
        table = pd.read_csv(predictions)
        prob = next((c for c in table.columns if c.startswith("prob_")), None)
        predicted = next((c for c in table.columns if c.startswith("predicted")), None)
        columns = {"patient": table["patient"]}
        if prob is not None:
            columns["prob_damaged"] = table[prob]
        if predicted is not None:
            columns["predicted"] = table[predicted]
        pd.DataFrame(columns).to_csv(folder / "per_patient.csv", index=False)
        eval_dirs.append(folder)
    measure = out / "measurements.csv"
    if not eval_dirs and not measure.is_file():
        return None
    if measure.is_file():
        # The measurement section finds its overlays beside its CSV.
        shutil.copy2(measure, work / "measure" / "measurements.csv")
    try:
        return build_report(
            eval_dirs,
            out / "report.html",
            measure_csv=work / "measure" / "measurements.csv" if measure.is_file() else None,
            title="spine-monai analysis",
        )
    except (DataError, ValueError) as e:
        problems.append(Problem(str(out / "report.html"), f"no report: {e}"))
        return None


def _write_failures(path: Path, problems: Sequence[Problem]) -> None:
    pd.DataFrame([p.to_dict() for p in problems], columns=["path", "reason"]).to_csv(path, index=False)
