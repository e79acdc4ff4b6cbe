"""The HTML report: folder detection, tables, sorting, escaping, errors, the command, and a headless Chromium check.

The evaluation folders are fabricated from the synthetic X-ray tree: predictions are the truth masks shifted
by a different amount per patient, scored and drawn with :func:`spine_monai.transforms.overlay_masks` as the
bundles' evaluation does; the measurement CSV comes from :func:`spine_monai.measure.measure_tree`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from spine_monai.cli import build_parser
from spine_monai.data.io import read_mask, read_radiograph, write_png_atomic
from spine_monai.data.layout import CLASSES, STRUCTURES
from spine_monai.errors import DataError
from spine_monai.report import build_report, detect_eval_dir

# --------------------------------------------------------------------------------------------------------
# Fixtures: evaluation folders of each kind and a measurement CSV.


def _patients(root: Path) -> list[str]:
    return [f"{c}/{d.name}" for c in CLASSES for d in sorted((root / c).iterdir()) if d.is_dir()]


def _scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = float((pred & truth).sum())
    fp = float((pred & ~truth).sum())
    fn = float((~pred & truth).sum())
    tn = float((~pred & ~truth).sum())
    denom = 2 * tp + fp + fn
    return {
        "Dice": 2 * tp / denom if denom else 1.0,
        "Jaccard": tp / (tp + fp + fn) if denom else 1.0,
        "FP": fp / (fp + tn) if fp + tn else 0.0,
        "FN": fn / (fn + tp) if fn + tp else 0.0,
    }


def write_xray_eval(src: Path, eval_dir: Path, view: str = "AP", patients: list[str] | None = None) -> pd.DataFrame:
    """An X-ray segmentation eval folder as the bundle writes it: CSVs and ``predictions/<patient>/<VIEW>/``."""
    from spine_monai.transforms import overlay_masks

    structures = STRUCTURES[view]
    rows = []
    for i, patient in enumerate(patients or _patients(src)):
        folder = src / patient / view
        grey = read_radiograph(folder / f"{view}.jpg")
        truth = np.stack([read_mask(folder / f"{s}.png") for s in structures])
        pred = np.roll(truth, shift=3 * i, axis=2)  # a different, known error per patient
        out = eval_dir / "predictions" / patient / view
        for s, m in zip(structures, pred, strict=True):
            write_png_atomic(out / f"{s}.png", Image.fromarray(m))
        write_png_atomic(out / f"{view}_overlay.png", Image.fromarray(overlay_masks(grey, pred, truth)))
        for s, p, t in zip(structures, pred, truth, strict=True):
            sc = _scores(p, t)
            rows.append({"patient": patient, "structure": s, **sc, "ToleranceDice": min(1.0, sc["Dice"] + 0.05)})
    per_case = pd.DataFrame(rows)
    metrics = ["Dice", "Jaccard", "FP", "FN", "ToleranceDice"]
    g = per_case.groupby("structure", sort=False)[metrics]
    summary = g.mean().join(g.std(ddof=0).add_suffix("_sd")).reset_index()
    summary.insert(1, "cases", per_case["patient"].nunique())
    per_case.to_csv(eval_dir / "per_case.csv", index=False, float_format="%.5f")
    summary.to_csv(eval_dir / "summary.csv", index=False, float_format="%.5f")
    return per_case


def write_mri_eval(eval_dir: Path) -> pd.DataFrame:
    """An MRI eval folder: per_case/summary with case/class/IoU and overall.csv; case_c lacks a class (NaN)."""
    eval_dir.mkdir(parents=True, exist_ok=True)
    classes = ["background", "vertebrae", "sacrum", "intervertebral_discs"]
    dice = {
        "case_a": [0.99, 0.9, 0.8, 0.85],
        "case_b": [0.98, 0.5, float("nan"), 0.6],
        "case_c": [0.99, 0.7, 0.9, 1.0],
    }
    rows = [
        {"case": c, "class": k, "Dice": d, "IoU": d / (2 - d), "FP": 0.01, "FN": 1 - d}
        for c, ds in dice.items()
        for k, d in zip(classes, ds, strict=True)
    ]
    per_case = pd.DataFrame(rows)
    g = per_case.groupby("class", sort=False)[["Dice", "IoU", "FP", "FN"]]
    summary = g.mean().join(g.std(ddof=0).add_suffix("_sd")).reset_index()
    summary.insert(1, "cases", 3)
    per_case.to_csv(eval_dir / "per_case.csv", index=False)
    summary.to_csv(eval_dir / "summary.csv", index=False)
    overall = pd.DataFrame(
        {
            "case": list(dice),
            "pixel_accuracy": [0.97, 0.9, 0.95],
            "mean_accuracy": [0.9, 0.7, 0.85],
            "mean_iou": [0.8, 0.5, 0.75],
            "mean_iou_no_bg": [0.75, 0.4, 0.7],
            "fw_iou": [0.95, 0.85, 0.9],
        }
    )
    mean = overall.drop(columns="case").mean().to_frame().T
    mean.insert(0, "case", "mean")
    pd.concat([overall, mean], ignore_index=True).to_csv(eval_dir / "overall.csv", index=False)
    return per_case


def write_classification_eval(eval_dir: Path, patients: list[str]) -> None:
    """The classification bundle's eval files (no PNGs: the report draws the figures from the CSVs)."""
    eval_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    label = np.array([int(p.startswith("Damaged")) for p in patients])
    prob = np.clip(0.25 + 0.5 * label + rng.normal(0, 0.2, len(patients)), 0, 1)
    prob[0] = 0.9 if label[0] == 0 else 0.1  # one confident mistake
    pred = (prob >= 0.5).astype(int)
    names = np.array(["Normal", "Damaged"])
    pd.DataFrame(
        {"patient": patients, "class": names[label], "label": label, "prob_damaged": prob, "predicted": names[pred]}
    ).to_csv(eval_dir / "per_patient.csv", index=False)
    cm = pd.DataFrame(
        [[int(((label == t) & (pred == p)).sum()) for p in (0, 1)] for t in (0, 1)], index=names, columns=names
    )
    cm.to_csv(eval_dir / "confusion_matrix.csv")
    accuracy = float((label == pred).mean())
    report = pd.DataFrame(
        {"precision": [0.8, 0.75, 0.775, 0.775, accuracy], "recall": [0.75, 0.8, 0.775, 0.775, accuracy]},
        index=["Normal", "Damaged", "macro avg", "weighted avg", "accuracy"],
    )
    report["f1"] = 2 * report.precision * report.recall / (report.precision + report.recall)
    report["support"] = [4, 4, 8, 8, 8]
    report.to_csv(eval_dir / "classification_report.csv")
    order = np.argsort(-prob)
    fpr = np.r_[0, np.cumsum(label[order] == 0) / max(1, (label == 0).sum())]
    tpr = np.r_[0, np.cumsum(label[order] == 1) / max(1, (label == 1).sum())]
    pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.r_[np.inf, prob[order]]}).to_csv(
        eval_dir / "roc_curve.csv", index=False
    )
    (eval_dir / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "roc_auc": 0.81, "n": len(patients)}))


@pytest.fixture(scope="module")
def evals(xray_root, tmp_path_factory) -> dict[str, Path]:
    """Evaluation folders of every kind (as ``<run>/eval``) and a measurement CSV with its overlays."""
    from spine_monai.measure import measure_tree

    root = tmp_path_factory.mktemp("report")
    ap = root / "runs" / "ap_seg" / "eval"
    ap.mkdir(parents=True)
    write_xray_eval(xray_root, ap, "AP")
    mri = root / "runs" / "mri_seg" / "eval"
    write_mri_eval(mri)
    cls = root / "runs" / "cls" / "eval"
    write_classification_eval(cls, _patients(xray_root))
    subset = root / "measure_in"  # three patients keep the measurement quick
    for patient in ["Normal/ID (1)", "Damaged/ID (1)", "Damaged/ID (2)"]:
        (subset / patient).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(xray_root / patient, subset / patient)
    csv = root / "measure" / "measure.csv"
    measure_tree(subset, out_csv=csv, images_dir=subset)
    return {"ap": ap, "mri": mri, "cls": cls, "measure": csv, "root": root}


@pytest.fixture(scope="module")
def full_report(evals) -> Path:
    return build_report(
        [evals["ap"], evals["mri"], evals["cls"]],
        evals["root"] / "out" / "report.html",
        measure_csv=evals["measure"],
        title="Spine <test> report & co",
    )


# --------------------------------------------------------------------------------------------------------
# A small HTML reader for tables and images, used on the file and on Chromium's rendered DOM.


class _Page(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[dict]] = {}
        self.headings: list[str] = []
        self.images: list[dict] = []
        self.body: dict = {}
        self.title = ""
        self._table: str | None = None
        self._in_body_rows = False
        self._row: dict | None = None
        self._cell: dict | None = None
        self._text: list[str] | None = None
        self._tag = ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "title":
            self._tag, self._text = "title", []
        elif tag in ("h1", "h2", "h3"):
            self._tag, self._text = tag, []
        elif tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body_rows = True
        elif tag == "tr" and self._table and self._in_body_rows:
            self._row = {"key": a.get("data-key"), "cells": []}
        elif tag == "td" and self._row is not None:
            self._cell = {"sort": a.get("data-sort"), "text": "", "imgs": 0}
        elif tag == "img":
            self.images.append(a)
            if self._cell is not None:
                self._cell["imgs"] += 1

    def handle_endtag(self, tag):
        if tag == self._tag and self._text is not None:
            text = "".join(self._text).strip()
            if tag == "title":
                self.title = text
            else:
                self.headings.append(text)
            self._tag, self._text = "", None
        elif tag == "td" and self._cell is not None:
            self._row["cells"].append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body_rows = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)
        if self._cell is not None:
            self._cell["text"] += data

    def table(self, suffix: str) -> list[dict]:
        """The rows of the only table whose id ends with ``suffix``."""
        found = [rows for tid, rows in self.tables.items() if tid.endswith(suffix)]
        assert len(found) == 1, f"{len(found)} tables end with {suffix!r}: {list(self.tables)}"
        return found[0]

    def tables_ending(self, suffix: str) -> list[list[dict]]:
        return [rows for tid, rows in self.tables.items() if tid.endswith(suffix)]


def _page(path: Path) -> _Page:
    return _Page(path.read_text(encoding="utf-8"))


def _sort_values(rows: list[dict], column: int) -> list[float]:
    return [float(r["cells"][column]["sort"]) if r["cells"][column]["sort"] else float("nan") for r in rows]


# --------------------------------------------------------------------------------------------------------
# Detection and errors.


def test_detect_each_kind(evals, tmp_path):
    assert detect_eval_dir(evals["ap"]).kinds == ("xray_seg",)
    assert detect_eval_dir(evals["mri"]).kinds == ("mri_seg",)
    assert detect_eval_dir(evals["cls"]).kinds == ("classification",)
    # The run folder is accepted for its eval/; the label is the run's name.
    found = detect_eval_dir(evals["ap"].parent)
    assert found.path == evals["ap"] and found.label == "ap_seg"
    # Any one classification file is enough; a segmentation folder may also hold classification results.
    only_png = tmp_path / "png_only"
    only_png.mkdir()
    Image.new("RGB", (20, 20), "white").save(only_png / "roc_curve.png")
    assert detect_eval_dir(only_png).kinds == ("classification",)
    both = tmp_path / "both"
    shutil.copytree(evals["mri"], both)
    shutil.copy(evals["cls"] / "metrics.json", both)
    assert detect_eval_dir(both).kinds == ("mri_seg", "classification")
    summary_only = tmp_path / "summary_only"
    summary_only.mkdir()
    shutil.copy(evals["ap"] / "summary.csv", summary_only)
    assert detect_eval_dir(summary_only).kinds == ("xray_seg",)


def test_unrecognised_folder_is_a_data_error(tmp_path, evals):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(DataError) as e:
        detect_eval_dir(empty)
    assert e.value.path == str(empty) and "nothing to report" in e.value.reason
    with pytest.raises(DataError, match="no such folder"):
        detect_eval_dir(tmp_path / "missing")
    odd = tmp_path / "odd"
    odd.mkdir()
    pd.DataFrame({"id": ["a"], "score": [1.0]}).to_csv(odd / "per_case.csv", index=False)
    with pytest.raises(DataError) as e:
        detect_eval_dir(odd)
    assert e.value.path == str(odd / "per_case.csv") and "neither" in e.value.reason
    # build_report lists every bad folder at once and writes nothing.
    out = tmp_path / "r.html"
    with pytest.raises(DataError) as e:
        build_report([empty, evals["ap"], tmp_path / "missing"], out)
    assert {p.path for p in e.value.problems} == {str(empty), str(tmp_path / "missing")}
    assert not out.exists()
    with pytest.raises(DataError, match="no such measurement CSV"):
        build_report([evals["ap"]], out, measure_csv=tmp_path / "none.csv")
    with pytest.raises(ValueError, match="nothing to report"):
        build_report([], out)


# --------------------------------------------------------------------------------------------------------
# Content.


def test_report_content(full_report, evals, xray_root):
    text = full_report.read_text(encoding="utf-8")
    page = _Page(text)
    assert page.title == "Spine <test> report & co"
    h2 = page.headings
    assert "X-ray segmentation, AP view: ap_seg" in h2
    assert "MRI segmentation: mri_seg" in h2
    assert "Classification: cls" in h2
    assert "Measurements: measure.csv" in h2
    for h3 in ("Summary", "Overall (whole label map)", "Dice per structure", "Classification report", "Per patient"):
        assert h3 in page.headings
    # Self-contained: nothing is fetched, every image is embedded.
    assert "http://" not in text and "https://" not in text and "<link" not in text
    assert all(img["src"].startswith("data:image/") for img in page.images)
    # It travels: no link leads out of the page, and every thumbnail carries its enlarged view.
    assert all(href.startswith("#") for href in re.findall(r'href="([^"]*)"', text))
    n_zoom = len(re.findall(r'<a href="#" class="zoom" data-full="data:image/jpeg;base64,', text))
    assert n_zoom == text.count('class="thumb"') > 0
    assert len(text) < 6_000_000
    # Per-case X-ray table: one row per patient, each with its overlay thumbnail.
    n = len(_patients(xray_root))
    rows = page.tables_ending("-per-case")
    xray_rows = next(r for r in rows if r[0]["key"].startswith(("Normal/", "Damaged/")))
    assert len(xray_rows) == n and all(r["cells"][-1]["imgs"] == 1 for r in xray_rows)
    # Summary means match summary.csv.
    summary = pd.read_csv(evals["ap"] / "summary.csv")
    assert f"{summary['Dice'].iloc[0]:.3f} ± {summary['Dice_sd'].iloc[0]:.3f}" in text
    # Classification: per-patient table has every patient, misclassified first.
    pp = page.table("-per-patient")
    assert len(pp) == n and pp[0]["cells"][-1]["text"] == "no"
    # Measurements: a row per patient with values from the CSV and both overlays.
    m = pd.read_csv(evals["measure"])
    s = m[m.row_type == "summary"]
    rows = page.table("-measurements")
    assert [r["key"] for r in rows] == list(dict.fromkeys(s.patient))
    ap = s[(s.view == "AP") & (s.patient == rows[0]["key"])].iloc[0]
    assert rows[0]["cells"][2]["text"] == f"{ap.cobb_angle_deg:.1f}"
    assert rows[0]["cells"][3]["text"] == f"{ap.cobb_upper}–{ap.cobb_lower}"
    lat = s[(s.view == "LAT") & (s.patient == rows[0]["key"])].iloc[0]
    assert rows[0]["cells"][5]["text"] == lat.lordosis_reference
    assert [c["imgs"] for c in rows[0]["cells"][-2:]] == [1, 1]


def test_per_case_table_sorted_worst_first(full_report, evals):
    page = _page(full_report)
    tables = page.tables_ending("-per-case")
    xray, mri = tables  # in the order the folders were given
    dice = _sort_values(xray, 1)
    assert dice == sorted(dice)
    per_case = pd.read_csv(evals["ap"] / "per_case.csv")
    expected = per_case.groupby("patient", sort=False)["Dice"].mean().sort_values(kind="stable")
    assert [r["key"] for r in xray] == list(expected.index)
    assert dice == pytest.approx(expected.to_numpy(), abs=1e-9)
    # MRI: the mean leaves out background and absent classes (NaN), worst first.
    assert [r["key"] for r in mri] == ["case_b", "case_a", "case_c"]
    assert _sort_values(mri, 1) == pytest.approx([0.55, 0.85, 2.6 / 3])
    assert mri[0]["cells"][2]["text"] == "vertebrae"  # the worst class


def test_text_is_escaped(tmp_path, evals):
    ev = tmp_path / "run<1>" / "eval"
    ev.mkdir(parents=True)
    nasty = '<script>alert("x")</script>'
    pd.DataFrame(
        {
            "patient": [f"Damaged/{nasty}", "Normal/a&b"],
            "structure": ['Ap_<img src=x onerror="alert(1)">', "Ap_Vertebra"],
            "Dice": [0.5, 0.9],
            "Jaccard": [0.3, 0.8],
            "FP": [0.1, 0.0],
            "FN": [0.2, 0.1],
        }
    ).to_csv(ev / "per_case.csv", index=False)
    out = build_report([ev], tmp_path / "r.html", title=f"T {nasty}")
    text = out.read_text(encoding="utf-8")
    assert nasty not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    assert "Normal/a&amp;b" in text and "run&lt;1&gt;" in text
    assert text.count("<script>") == 1  # only the report's own
    page = _page(out)
    assert page.title == f"T {nasty}"
    assert {r["key"] for r in page.table("-per-case")} == {f"Damaged/{nasty}", "Normal/a&b"}
    assert "No summary.csv" in text and "No predictions/ folder" in text


def test_missing_optional_files_leave_notes(tmp_path, evals):
    cls = tmp_path / "cls"
    cls.mkdir()
    shutil.copy(evals["cls"] / "metrics.json", cls)
    seg = tmp_path / "seg"
    seg.mkdir()
    shutil.copy(evals["ap"] / "summary.csv", seg)
    mri = tmp_path / "mri"
    shutil.copytree(evals["mri"], mri)
    (mri / "overall.csv").unlink()
    out = build_report([cls, seg, mri], tmp_path / "r.html")
    text = out.read_text(encoding="utf-8")
    for note in (
        "No classification_report.csv",
        "No per_patient.csv",
        "No roc_curve.csv/.png",
        "No confusion_matrix.csv/.png",
        "No per_case.csv",
        "No overall.csv",
    ):
        assert note in text, note
    # ROC and confusion matrix from per_patient.csv alone; figures given as PNGs are embedded as they are.
    cls2 = tmp_path / "cls2"
    cls2.mkdir()
    shutil.copy(evals["cls"] / "per_patient.csv", cls2)
    Image.new("RGB", (900, 600), (10, 200, 30)).save(cls2 / "roc_curve.png")
    page = _page(build_report([cls2], tmp_path / "r2.html"))
    assert len(page.images) == 2  # confusion matrix drawn, ROC from the PNG
    text = (tmp_path / "r2.html").read_text(encoding="utf-8")
    assert "counted from per_patient.csv" in text


def test_unreadable_overlay_is_noted(tmp_path, evals):
    ev = tmp_path / "ev"
    shutil.copytree(evals["ap"], ev)
    broken = next((ev / "predictions").rglob("*_overlay.png"))
    broken.write_bytes(b"not a png")
    text = build_report([ev], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Unreadable image, left out" in text and "unreadable: " in text


def test_command(tmp_path, evals, capsys):
    parser = build_parser()
    out = tmp_path / "cli" / "report.html"
    argv = ["report", "--eval-dir", str(evals["ap"]), "--eval-dir", str(evals["cls"]), "--measure"]
    args = parser.parse_args([*argv, str(evals["measure"]), "--out", str(out), "--title", "CLI", "--thumb-height", "0"])
    assert args.func(args) == 0 and out.is_file()
    assert "wrote" in capsys.readouterr().out
    assert not _page(out).tables_ending("-per-case")[0][0]["cells"][-1]["imgs"]  # no thumbnails asked for
    bad = parser.parse_args(["report", "--eval-dir", str(tmp_path), "--out", str(tmp_path / "x.html")])
    assert bad.func(bad) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nothing to report" in err and str(tmp_path) in err
    none = parser.parse_args(["report", "--out", str(tmp_path / "x.html")])
    assert none.func(none) == 2 and "--eval-dir" in capsys.readouterr().err
    malformed = tmp_path / "m.csv"
    malformed.write_text("patient,cobb\nNormal/ID (1),3\n")
    bad = parser.parse_args(["report", "--measure", str(malformed), "--out", str(tmp_path / "x.html")])
    assert bad.func(bad) == 2 and "missing column(s) row_type, view" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()
    # Measurements alone make a report too.
    only = parser.parse_args(["report", "--measure", str(evals["measure"]), "--out", str(tmp_path / "m.html")])
    assert only.func(only) == 0
    assert [h for h in _page(tmp_path / "m.html").headings if h.startswith("Measurements")] == [
        "Measurements: measure.csv"
    ]


# --------------------------------------------------------------------------------------------------------
# Headless Chromium: the page renders, every image decodes, the tables have their rows and sort on click.

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--virtual-time-budget=5000",
)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser's path; session-scoped so that a missing browser skips before any report is built."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    reason = "headless Chromium not found; install it with `apt-get install -y chromium` (Debian) to run this test"
    if os.environ.get("SPINE_MONAI_REQUIRE_BROWSER"):
        pytest.fail(reason)
    pytest.skip(reason)


def _run_chromium(browser: str, tmp_path: Path, *args: str) -> str:
    profile = tmp_path / "chromium-profile"
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # so that a hung browser and its helpers can be stopped together
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within 120 s: {args}")
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {err[-2000:]}"
    return out


_SORT_PROBE = """<script>
window.addEventListener('load', function () {
  var th = document.querySelector('table.per-case th[aria-sort]');
  th.click();  // was ascending: now descending
  document.body.setAttribute('data-sort-state', th.getAttribute('aria-sort'));
});
</script></body>"""


_ZOOM_PROBE = """<script>
window.addEventListener('load', function () {
  document.querySelector('a.zoom').click();
  var viewer = document.getElementById('viewer'), img = viewer.querySelector('img');
  var state = viewer.classList.contains('open') ? 'open' : 'closed';
  var done = function () { document.body.setAttribute('data-zoom', img.naturalHeight + ' ' + state); };
  if (img.complete && img.naturalHeight) { done(); } else { img.addEventListener('load', done); }
});
</script></body>"""


def test_report_in_headless_chromium(chromium, full_report, xray_root, tmp_path):
    browser = chromium
    dom = _run_chromium(browser, tmp_path, "--dump-dom", full_report.resolve().as_uri())
    page = _Page(dom)
    assert page.title == "Spine <test> report & co"
    assert "Spine <test> report & co" in page.headings
    assert "X-ray segmentation, AP view: ap_seg" in page.headings and "Classification: cls" in page.headings
    # The report's load handler counted the images: all of them, and none broken.
    n_images = len(_page(full_report).images)
    assert n_images > 10
    assert page.body.get("data-images") == str(n_images), "the load event did not run before the DOM was dumped"
    assert page.body.get("data-broken-images") == "0"
    xray_rows = page.tables_ending("-per-case")[0]
    assert len(xray_rows) == len(_patients(xray_root))
    assert len(page.table("-measurements")) == 3

    # Clicking the sorted header reverses the order (the report's sorting script).
    probe = tmp_path / "probe.html"
    probe.write_text(full_report.read_text(encoding="utf-8").replace("</body>", _SORT_PROBE), encoding="utf-8")
    probed = _Page(_run_chromium(browser, tmp_path, "--dump-dom", probe.as_uri()))
    assert probed.body.get("data-sort-state") == "descending"
    resorted = probed.tables_ending("-per-case")[0]
    dice = _sort_values(resorted, 1)
    assert dice == sorted(dice, reverse=True) and dice != sorted(dice)
    assert {r["key"] for r in resorted} == {r["key"] for r in xray_rows}

    # A copy sent elsewhere shows everything, and a click on a thumbnail enlarges it from what the page holds.
    sent = tmp_path / "sent" / "report.html"
    sent.parent.mkdir()
    sent.write_text(full_report.read_text(encoding="utf-8").replace("</body>", _ZOOM_PROBE), encoding="utf-8")
    moved = _Page(_run_chromium(browser, tmp_path, "--dump-dom", sent.as_uri()))
    assert moved.body.get("data-broken-images") == "0"
    height, state = moved.body.get("data-zoom", "0 closed").split()
    assert state == "open" and int(height) > 256, (height, state)  # the full view, not the 256 px thumbnail

    # A screenshot, kept with the test's files.
    shot = tmp_path / "report.png"
    _run_chromium(browser, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", full_report.resolve().as_uri())
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        grey = np.asarray(im.convert("L"), dtype=float)
    assert grey.std() > 10, "the screenshot is blank"


def test_the_classifier_gradcam_maps_appear_beside_each_patient(tmp_path, evals, xray_root):
    run = tmp_path / "cls_run"
    shutil.copytree(evals["cls"], run / "eval")
    patients = _patients(xray_root)
    for view in ("AP", "LAT"):
        folder = run / "cam" / patients[0]
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (120, 180), (200, 40, 40)).save(folder / f"{view}_gradcam.png")
    page = _page(build_report([run / "eval"], tmp_path / "r.html"))
    rows = {r["key"]: r for r in page.table("-per-patient")}
    assert rows[patients[0]]["cells"][-1]["imgs"] == 2  # both views' maps, each enlarged on a click
    assert all(rows[p]["cells"][-1]["imgs"] == 0 for p in patients[1:])
    without = build_report([evals["cls"]], tmp_path / "r2.html").read_text(encoding="utf-8")
    assert "No cam/ folder beside this evaluation" in without
