"""``build_report``: one static, self-contained HTML page from evaluation folders and a measurement CSV.

The page needs no server and loads nothing from the network or the disk: figures, thumbnails and the enlarged
views behind them are embedded as base64 data URIs, the CSS is inline, and a few lines of inline JavaScript sort
tables when a header is clicked, show a thumbnail's enlarged view when it is clicked, and count images that
failed to decode (``<body data-images=N data-broken-images=M>`` after the load event). The file can be moved or
sent on its own.
Every piece of text that comes from the inputs goes through :func:`html.escape`.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spine_monai.errors import DataError, ProblemCollector
from spine_monai.report.inputs import (
    SEG_COLUMNS,
    SEG_METRICS,
    EvalDir,
    detect_eval_dir,
    read_csv_checked,
    read_measure_csv,
    read_metrics_json,
    roc_from_scores,
)
from spine_monai.report.plots import (
    confusion_matrix_figure,
    dice_boxplot,
    image_data_uri,
    roc_figure,
    thumbnail_data_uris,
)

__all__ = ["DEFAULT_TITLE", "build_report"]

DEFAULT_TITLE = "Spine evaluation report"
MAX_OVERLAYS_PER_CASE = 4

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:1.2em auto;
max-width:1500px;padding:0 1em;color:#222;line-height:1.35}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #d5dbe3;padding-bottom:.2em;margin-top:2.2em}
h3{margin:1.4em 0 .4em}
.meta,.path{color:#666;font-size:12px}.path{font-family:ui-monospace,Menlo,Consolas,monospace}
.note{color:#6b5416;background:#fcf8e3;border-left:4px solid #f0ad4e;padding:.3em .6em;margin:.4em 0;
font-size:13px}
.wrap{overflow-x:auto}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:13px}
caption{text-align:left;color:#555;font-size:12px;padding:.2em 0}
th,td{border:1px solid #cfd6de;padding:3px 7px;text-align:right;vertical-align:middle}
th{background:#eef2f7;font-weight:600}
th.t,td.t{text-align:left}
tbody tr:nth-child(even){background:#f8f9fb}
table.sortable th:not([data-nosort]){cursor:pointer;user-select:none}
table.sortable th:not([data-nosort]):hover{background:#dde5ef}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.bad{background:#f9d6d5}td.warn{background:#fdebd0}td.good{background:#dff0d8}
td.thumbs{white-space:nowrap;text-align:left}
td.thumbs a{display:inline-block;margin-right:4px}
img.thumb{height:160px;width:auto;display:block;background:#000;cursor:zoom-in}
#viewer{position:fixed;inset:0;background:rgba(0,0,0,.88);display:none;align-items:center;justify-content:center;
z-index:10;cursor:zoom-out}#viewer.open{display:flex}#viewer img{max-width:98vw;max-height:98vh}
figure{display:inline-block;margin:0 1.5em 1em 0;vertical-align:top}
figcaption{font-size:12px;color:#555}
img.plot{max-width:100%;height:auto}
nav ul{margin:.3em 0;padding-left:1.2em}nav li{margin:.1em 0}
"""

_JS = """
(function(){
function key(c){var v=c.getAttribute('data-sort');if(v===null)v=c.textContent.trim();if(v==='')return null;
var n=Number(v);return isNaN(n)?v.toLowerCase():n;}
function cmp(a,b){if(typeof a===typeof b)return a<b?-1:a>b?1:0;return typeof a==='number'?-1:1;}
document.querySelectorAll('table.sortable th').forEach(function(th){
if(th.hasAttribute('data-nosort'))return;th.tabIndex=0;
var go=function(){var t=th.closest('table'),i=th.cellIndex,asc=th.getAttribute('aria-sort')!=='ascending';
t.querySelectorAll('th[aria-sort]').forEach(function(h){h.removeAttribute('aria-sort');});
th.setAttribute('aria-sort',asc?'ascending':'descending');var b=t.tBodies[0];
Array.prototype.slice.call(b.rows).map(function(r,j){return[key(r.cells[i]),j,r];}).sort(function(x,y){
if(x[0]===null||y[0]===null)return(x[0]===null)-(y[0]===null)||x[1]-y[1];
return(asc?1:-1)*cmp(x[0],y[0])||x[1]-y[1];}).forEach(function(x){b.appendChild(x[2]);});};
th.addEventListener('click',go);th.addEventListener('keydown',function(e){if(e.key==='Enter')go();});});
var viewer=document.getElementById('viewer');
document.querySelectorAll('a.zoom').forEach(function(a){a.addEventListener('click',function(e){e.preventDefault();
var im=viewer.querySelector('img')||viewer.appendChild(document.createElement('img'));
im.src=a.getAttribute('data-full');im.alt=a.title;viewer.classList.add('open');});});
if(viewer){viewer.addEventListener('click',function(){viewer.classList.remove('open');});
document.addEventListener('keydown',function(e){if(e.key==='Escape')viewer.classList.remove('open');});}
window.addEventListener('load',function(){var n=document.images.length,bad=0;
for(var k=0;k<n;k++){var im=document.images[k];if(!im.complete||im.naturalWidth===0)bad++;}
document.body.setAttribute('data-images',n);document.body.setAttribute('data-broken-images',bad);});
})();
"""

_METRIC_NAMES = {
    "Dice": "Dice",
    "Jaccard": "Jaccard (IoU)",
    "IoU": "IoU",
    "FP": "FP rate",
    "FN": "FN rate",
    "ToleranceDice": "Tolerance Dice",
}
_OVERALL_NAMES = {
    "pixel_accuracy": "pixel accuracy",
    "mean_accuracy": "mean class accuracy",
    "mean_iou": "mean IoU",
    "mean_iou_no_bg": "mean IoU (no background)",
    "fw_iou": "frequency-weighted IoU",
}


def esc(value: object) -> str:
    """Text for HTML content or attribute values; ``None`` becomes an empty string."""
    return "" if value is None else html.escape(str(value), quote=True)


def _finite(v: object) -> bool:
    try:
        return v is not None and v is not pd.NA and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _fmt(v: object, digits: int = 3) -> str:
    """A number with ``digits`` decimals; NaN, None and empty text as an en dash; other text as it is."""
    if _finite(v):
        return f"{float(v):.{digits}f}"
    return "–" if v is None or v is pd.NA or isinstance(v, float) or str(v).strip() == "" else str(v)


def _sort_value(v: object) -> str:
    return repr(float(v)) if _finite(v) else ""


@dataclass
class _Cell:
    """One table cell: ``content`` is HTML (already escaped); ``sort`` the value the JS sorts by."""

    content: str
    sort: str | None = None
    cls: str = ""

    def render(self) -> str:
        attrs = f' class="{self.cls}"' if self.cls else ""
        if self.sort is not None:
            attrs += f' data-sort="{esc(self.sort)}"'
        return f"<td{attrs}>{self.content}</td>"


def _num(v: object, digits: int = 3, cls: str = "") -> _Cell:
    return _Cell(esc(_fmt(v, digits)), _sort_value(v), cls)


def _text(v: object, cls: str = "t") -> _Cell:
    text = "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    return _Cell(esc(text), text, cls)


@dataclass
class _Column:
    label: str
    text: bool = False
    sortable: bool = True
    title: str = ""
    sorted: str = ""  # "ascending" / "descending" on the column the rows arrive sorted by

    def render(self) -> str:
        attrs = ' class="t"' if self.text else ""
        if not self.sortable:
            attrs += " data-nosort"
        if self.sorted:
            attrs += f' aria-sort="{self.sorted}"'
        if self.title:
            attrs += f' title="{esc(self.title)}"'
        return f"<th{attrs}>{esc(self.label)}</th>"


def _table(
    columns: Sequence[_Column],
    rows: Iterable[tuple[str, Sequence[_Cell]]],
    *,
    caption: str = "",
    sortable: bool = True,
    table_id: str = "",
    cls: str = "",
) -> str:
    """A table; each row is (its ``data-key``, its cells)."""
    classes = " ".join(c for c in ("sortable" if sortable else "", cls) if c)
    attrs = (f' id="{esc(table_id)}"' if table_id else "") + (f' class="{classes}"' if classes else "")
    out = [f'<div class="wrap"><table{attrs}>']
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(c.render() for c in columns) + "</tr></thead><tbody>")
    for key, cells in rows:
        out.append(f'<tr data-key="{esc(key)}">' + "".join(c.render() for c in cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def _figure(uri: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img class="plot" src="{uri}" alt="{esc(alt)}">{cap}</figure>'


@dataclass
class _Section:
    anchor: str
    title: str
    body: list[str] = field(default_factory=list)

    def render(self) -> str:
        return (
            f'<section id="{esc(self.anchor)}">\n<h2>{esc(self.title)}</h2>\n' + "\n".join(self.body) + "\n</section>"
        )


class _Builder:
    def __init__(self, out: Path, thumb_height: int, view_height: int) -> None:
        self.out = out
        self.thumb_height = thumb_height
        self.view_height = view_height
        self.sections: list[_Section] = []
        self.unreadable: list[Path] = []
        self.sizes = [(thumb_height, 80)] + ([(view_height, 85)] if view_height > 0 else [])
        self._made: dict[Path, list[str] | None] = {}

    def section(self, title: str) -> _Section:
        s = _Section(f"s{len(self.sections) + 1}", title)
        self.sections.append(s)
        return s

    # ---- images ----------------------------------------------------------------------------------------
    def prefetch(self, paths: Iterable[Path]) -> None:
        """Make the thumbnails of a table's images before its rows ask for them, one file per core at a time.

        Decoding a full-size overlay is most of a thumbnail's cost, and Pillow releases the GIL while it decodes,
        resizes and encodes, so threads share the work.
        """
        todo = [p for p in dict.fromkeys(paths) if p not in self._made]
        if self.thumb_height <= 0 or not todo:
            return
        with ThreadPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1, 8)) as pool:
            self._made.update(zip(todo, pool.map(lambda p: thumbnail_data_uris(p, self.sizes), todo), strict=True))

    def thumbs(self, paths: Sequence[Path], alt: str) -> _Cell:
        """A cell of thumbnails, each enlarged on a click to a view embedded in the page, not linked to a file."""
        if self.thumb_height <= 0:
            return _Cell("", None, "thumbs")
        parts = []
        for p in paths:
            uris = self._made.pop(p) if p in self._made else thumbnail_data_uris(p, self.sizes)
            if uris is None:
                self.unreadable.append(p)
                parts.append(f'<span class="note">unreadable: {esc(p.name)}</span>')
                continue
            label = f"{alt} ({p.stem})" if len(paths) > 1 else alt
            image = f'<img class="thumb" src="{uris[0]}" alt="{esc(label)}">'
            if len(uris) == 1:
                parts.append(image)
                continue
            parts.append(
                f'<a href="#" class="zoom" data-full="{uris[1]}" title="{esc(p.name)}: click to enlarge">{image}</a>'
            )
        return _Cell("".join(parts), None, "thumbs")


def _inside(base: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(base.resolve())
        return True
    except ValueError:
        return False


def _case_images(root: Path, case_id: str, pattern: str) -> list[Path]:
    """``root/<case>/**/<pattern>`` (overlays, GradCAM maps), at most :data:`MAX_OVERLAYS_PER_CASE`, never outside
    ``root``."""
    folder = root / case_id
    if not case_id or not _inside(root, folder) or not folder.is_dir():
        return []
    return sorted(folder.rglob(pattern))[:MAX_OVERLAYS_PER_CASE]


# ---- segmentation ---------------------------------------------------------------------------------------


def _seg_view(names: Sequence[str]) -> str:
    if names and all(n.startswith("Ap_") for n in names):
        return "AP"
    if names and all(n.startswith("Lat_") for n in names):
        return "LAT"
    return ""


def _summary_from_per_case(per_case: pd.DataFrame, id_col: str, name_col: str, metrics: list[str]) -> pd.DataFrame:
    grouped = per_case.groupby(name_col, sort=False)[metrics]
    summary = grouped.mean().join(grouped.std(ddof=0).add_suffix("_sd")).reset_index()
    summary.insert(1, "cases", per_case.groupby(name_col, sort=False)[id_col].nunique().to_numpy())
    return summary


def _seg_summary_table(summary: pd.DataFrame, name_col: str) -> str:
    metrics = [m for m in SEG_METRICS if m in summary.columns]
    columns = [_Column(name_col, text=True), _Column("cases")] + [
        _Column(f"{_METRIC_NAMES[m]} mean ± sd", title=f"{m}: mean ± standard deviation over cases") for m in metrics
    ]
    rows = []
    for _, r in summary.iterrows():
        cells = [_text(r[name_col]), _num(r.get("cases"), 0)]
        for m in metrics:
            mean, sd = r[m], r.get(f"{m}_sd")
            text = _fmt(mean) + (f" ± {_fmt(sd)}" if _finite(sd) else "")
            cells.append(_Cell(esc(text), _sort_value(mean)))
        rows.append((str(r[name_col]), cells))
    return _table(columns, rows, caption="Per-structure metrics over the evaluated cases (FP/FN are rates).")


def _overall_table(overall: pd.DataFrame) -> str:
    is_mean = overall["case"].str.strip().str.lower() == "mean"
    cases = overall[~is_mean]
    metrics = [c for c in overall.columns if c != "case"]
    columns = [
        _Column("metric", text=True),
        _Column("mean ± sd"),
        _Column("min"),
        _Column("worst case", text=True),
        _Column("max"),
    ]
    rows = []
    for m in metrics:
        values = cases[m]
        mean = overall.loc[is_mean, m].iloc[-1] if is_mean.any() else values.mean()
        sd = values.std(ddof=0) if values.notna().any() else float("nan")
        worst = cases.loc[values.idxmin(), "case"] if values.notna().any() else ""
        rows.append(
            (
                m,
                [
                    _text(_OVERALL_NAMES.get(m, m)),
                    _Cell(esc(_fmt(mean) + (f" ± {_fmt(sd)}" if _finite(sd) else "")), _sort_value(mean)),
                    _num(values.min()),
                    _text(worst),
                    _num(values.max()),
                ],
            )
        )
    return _table(columns, rows, caption=f"Whole-label-map scores over {len(cases)} cases (overall.csv).")


def _seg_section(b: _Builder, ed: EvalDir, kind: str) -> None:
    id_col, name_col = SEG_COLUMNS[kind]
    per_case_csv, summary_csv = ed.path / "per_case.csv", ed.path / "summary.csv"
    sd_cols = tuple(f"{m}_sd" for m in SEG_METRICS)
    per_case = (
        read_csv_checked(per_case_csv, required=(id_col, name_col, "Dice"), numeric=SEG_METRICS)
        if per_case_csv.is_file()
        else None
    )
    summary = (
        read_csv_checked(summary_csv, required=(name_col, "Dice"), numeric=(*SEG_METRICS, *sd_cols, "cases"))
        if summary_csv.is_file()
        else None
    )
    names = list(
        dict.fromkeys((per_case if per_case is not None else summary)[name_col].astype(str))  # type: ignore[index]
    )
    if kind == "xray_seg":
        view = _seg_view(names)
        title = f"X-ray segmentation{f', {view} view' if view else ''}: {ed.label}"
    else:
        title = f"MRI segmentation: {ed.label}"
    s = b.section(title)
    s.body.append(f'<p class="path">{esc(ed.path)}</p>')

    s.body.append("<h3>Summary</h3>")
    if summary is None and per_case is not None:
        metrics = [m for m in SEG_METRICS if m in per_case.columns]
        summary = _summary_from_per_case(per_case, id_col, name_col, metrics)
        s.body.append(_note("No summary.csv: the summary below is computed from per_case.csv."))
    s.body.append(_seg_summary_table(summary, name_col))

    overall = None
    if kind == "mri_seg":
        overall_csv = ed.path / "overall.csv"
        if overall_csv.is_file():
            overall = read_csv_checked(overall_csv, required=("case",))
            for c in overall.columns:
                if c != "case":
                    overall[c] = pd.to_numeric(overall[c].str.strip(), errors="coerce")
            s.body.append("<h3>Overall (whole label map)</h3>")
            s.body.append(_overall_table(overall))
        else:
            s.body.append(_note("No overall.csv: the whole-label-map table is omitted."))

    if per_case is None:
        s.body.append(_note("No per_case.csv: the Dice box plot and the per-case table are omitted."))
        return

    background = [n for n in names if n.strip().lower() == "background"]
    foreground = [n for n in names if n not in background] or names
    s.body.append("<h3>Dice per structure</h3>" if kind == "xray_seg" else "<h3>Dice per class</h3>")
    groups = {n: per_case.loc[per_case[name_col] == n, "Dice"].to_numpy(dtype=float) for n in foreground}
    s.body.append(_figure(dice_boxplot(groups, title=f"Dice per {name_col}"), f"Box plot of Dice per {name_col}"))

    wide = per_case.groupby([id_col, name_col], sort=False)["Dice"].mean().unstack(name_col)
    ids = list(dict.fromkeys(per_case[id_col]))
    wide = wide.reindex(index=ids, columns=names)
    mean = wide[foreground].mean(axis=1, skipna=True)
    order = sorted(
        range(len(ids)), key=lambda i: (not _finite(mean.iloc[i]), mean.iloc[i] if _finite(mean.iloc[i]) else 0, i)
    )

    extra: dict[str, pd.Series] = {}
    if overall is not None:
        ov = overall[overall["case"].str.strip().str.lower() != "mean"].drop_duplicates("case").set_index("case")
        for c in ("mean_iou_no_bg", "pixel_accuracy"):
            if c in ov.columns:
                extra[c] = ov[c].reindex(ids)

    predictions = ed.path / "predictions"
    with_overlays = predictions.is_dir() and b.thumb_height > 0
    mean_label = "mean Dice" if not background else "mean Dice (no background)"
    columns = [
        _Column(id_col, text=True),
        _Column(mean_label, sorted="ascending", title="mean of the Dice of the structures"),
        _Column("worst", text=True, title="the structure with the lowest Dice"),
        *(_Column(_OVERALL_NAMES.get(c, c)) for c in extra),
        *(_Column(n) for n in names),
    ]
    if with_overlays:
        columns.append(_Column("overlay (prediction filled, truth outlined)", text=True, sortable=False))
        overlays = {case: _case_images(predictions, case, "*_overlay.png") for case in ids}
        b.prefetch(p for found in overlays.values() for p in found)
    rows = []
    for i in order:
        case = ids[i]
        dice = wide.iloc[i]
        fg = dice[foreground].dropna()
        worst = fg.idxmin() if len(fg) else ""
        cells = [_text(case), _num(mean.iloc[i], cls=_dice_class(mean.iloc[i])), _text(worst)]
        cells += [_num(extra[c].iloc[i]) for c in extra]
        cells += [_num(dice[n], cls=_dice_class(dice[n])) for n in names]
        if with_overlays:
            cells.append(b.thumbs(overlays[case], f"overlay of {case}"))
        rows.append((case, cells))
    s.body.append(f"<h3>Per case ({len(ids)}), worst first</h3>")
    if not predictions.is_dir():
        s.body.append(_note("No predictions/ folder: overlay thumbnails are omitted."))
    s.body.append(
        _table(
            columns,
            rows,
            caption=f"Dice per case, sorted by {mean_label} ascending (red below 0.5, amber below 0.8); "
            "click a header to sort by it.",
            table_id=f"{s.anchor}-per-case",
            cls="per-case",
        )
    )


def _dice_class(v: object) -> str:
    if not _finite(v):
        return ""
    f = float(v)
    return "bad" if f < 0.5 else "warn" if f < 0.8 else ""


def _grade_class(grade: object) -> str:
    """Genant grade 1 amber, 2-3 red."""
    if not _finite(grade) or float(grade) < 1:
        return ""
    return "bad" if float(grade) >= 2 else "warn"


# ---- classification -------------------------------------------------------------------------------------


def _matrix_table(cm: pd.DataFrame) -> str:
    columns = [_Column("true \\ predicted", text=True)] + [_Column(str(c)) for c in cm.columns]
    rows = []
    for name, r in cm.iterrows():
        cells = [_text(name)]
        for c, v in r.items():
            cells.append(
                _num(v, 0 if _finite(v) and float(v).is_integer() else 3, "good" if str(c) == str(name) else "")
            )
        rows.append((str(name), cells))
    return _table(columns, rows, sortable=False, caption="Rows: true class; columns: predicted class.")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _is_correct(r: pd.Series) -> bool | None:
    """Whether ``predicted`` matches the truth: a class name against ``class``, a number against ``label``."""
    pred = str(r.get("predicted", "")).strip()
    cls = str(r.get("class", "")).strip()
    label = str(r.get("label", "")).strip()
    if pred in ("", "nan"):
        return None
    if _is_number(pred) and _is_number(label):
        return float(pred) == float(label)
    if cls:
        return pred.lower() == cls.lower()
    return None


def _classification_section(b: _Builder, ed: EvalDir) -> None:
    p = ed.path
    s = b.section(f"Classification: {ed.label}")
    s.body.append(f'<p class="path">{esc(p)}</p>')

    metrics = read_metrics_json(p / "metrics.json") if (p / "metrics.json").is_file() else None
    s.body.append("<h3>Metrics</h3>")
    if metrics is None:
        s.body.append(_note("No metrics.json: the headline metrics are omitted."))
    else:
        rows = []
        names = {"accuracy": "accuracy", "roc_auc": "ROC AUC", "n": "cases (n)"}
        keys = [k for k in names if k in metrics] + [k for k in metrics if k not in names]
        for k in keys:
            v = metrics[k]
            if isinstance(v, (dict, list)):
                continue
            digits = 0 if isinstance(v, int) and not isinstance(v, bool) else 3
            cell = _num(v, digits) if _finite(v) and not isinstance(v, bool) else _text(v)
            rows.append((k, [_text(names.get(k, k)), cell]))
        s.body.append(_table([_Column("metric", text=True), _Column("value")], rows, sortable=False))

    report_csv = p / "classification_report.csv"
    s.body.append("<h3>Classification report</h3>")
    if report_csv.is_file():
        rep = read_csv_checked(report_csv, index_col=0, numeric=("precision", "recall", "f1", "f1-score", "support"))
        value_cols = list(rep.columns)
        columns = [_Column("", text=True)] + [_Column(c) for c in value_cols]
        rows = []
        for name, r in rep.iterrows():
            cells = [_text(name)] + [_num(r[c], 0 if c == "support" else 3) for c in value_cols]
            rows.append((str(name), cells))
        s.body.append(_table(columns, rows, sortable=False))
    else:
        s.body.append(_note("No classification_report.csv: the per-class report is omitted."))

    per_patient = None
    if (p / "per_patient.csv").is_file():
        per_patient = read_csv_checked(p / "per_patient.csv", required=("patient",), numeric=("label", "prob_damaged"))

    # Confusion matrix: the table from the CSV; the figure from the PNG, else drawn from the CSV.
    s.body.append("<h3>Confusion matrix and ROC curve</h3>")
    figures = []
    cm = None
    if (p / "confusion_matrix.csv").is_file():
        cm = read_csv_checked(p / "confusion_matrix.csv", index_col=0)
        cm = cm.apply(lambda c: pd.to_numeric(c.str.strip(), errors="coerce"))
    elif per_patient is not None and {"class", "predicted"} <= set(per_patient.columns):
        cm = pd.crosstab(per_patient["class"], per_patient["predicted"])
        s.body.append(_note("No confusion_matrix.csv: the matrix is counted from per_patient.csv."))
    png = image_data_uri(p / "confusion_matrix.png") if (p / "confusion_matrix.png").is_file() else None
    if png is None and cm is not None:
        png = confusion_matrix_figure(
            cm.to_numpy(dtype=float), [str(i) for i in cm.index], [str(c) for c in cm.columns]
        )
    if png is not None:
        figures.append(_figure(png, "Confusion matrix"))
    elif cm is None:
        s.body.append(_note("No confusion_matrix.csv/.png (or per_patient.csv): the confusion matrix is omitted."))

    auc = metrics.get("roc_auc") if metrics else None
    roc_png = image_data_uri(p / "roc_curve.png") if (p / "roc_curve.png").is_file() else None
    if roc_png is None and (p / "roc_curve.csv").is_file():
        roc = read_csv_checked(p / "roc_curve.csv", required=("fpr", "tpr"), numeric=("fpr", "tpr", "threshold"))
        roc = roc.dropna(subset=["fpr", "tpr"])
        fpr, tpr = roc["fpr"].to_numpy(dtype=float), roc["tpr"].to_numpy(dtype=float)
        if not _finite(auc) and len(fpr) > 1:
            o = np.lexsort((tpr, fpr))
            auc = float(np.sum(np.diff(fpr[o]) * (tpr[o][1:] + tpr[o][:-1]) / 2.0))
        roc_png = roc_figure(fpr, tpr, float(auc) if _finite(auc) else None)
    elif roc_png is None and per_patient is not None and {"label", "prob_damaged"} <= set(per_patient.columns):
        fpr, tpr, computed = roc_from_scores(per_patient["label"].to_numpy(), per_patient["prob_damaged"].to_numpy())
        roc_png = roc_figure(fpr, tpr, float(auc) if _finite(auc) else computed)
        s.body.append(_note("No roc_curve.csv: the ROC curve is computed from per_patient.csv."))
    if roc_png is not None:
        figures.append(_figure(roc_png, "ROC curve"))
    else:
        s.body.append(_note("No roc_curve.csv/.png (or per_patient.csv with label, prob_damaged): no ROC curve."))
    if cm is not None:
        s.body.append(_matrix_table(cm))
    s.body.extend(figures)

    s.body.append("<h3>Per patient</h3>")
    if per_patient is None:
        s.body.append(_note("No per_patient.csv: the per-patient table is omitted."))
        return
    cols = [c for c in ("patient", "class", "label", "prob_damaged", "predicted") if c in per_patient.columns]
    correct = [_is_correct(r) for _, r in per_patient.iterrows()]
    error = [float("nan")] * len(per_patient)
    if {"label", "prob_damaged"} <= set(cols):
        error = (per_patient["label"] - per_patient["prob_damaged"]).abs().tolist()
    # Misclassified first, the most confident mistakes at the top; then the least confident right answers.
    order = sorted(
        range(len(per_patient)), key=lambda i: (correct[i] is not False, -error[i] if _finite(error[i]) else 0.0, i)
    )
    columns = [_Column(c, text=c in ("patient", "class", "predicted")) for c in cols] + [_Column("correct", text=True)]
    cams = _cam_dir(p) if b.thumb_height > 0 else None
    if cams is not None:
        columns.append(_Column("GradCAM", text=True, sortable=False))
    elif b.thumb_height > 0:
        s.body.append(
            _note(
                "No cam/ folder beside this evaluation: run the classifier's inference.json (gradcam true) with the "
                "same output_dir to show each patient's GradCAM maps here."
            )
        )
    verdicts = {True: ("yes", "1", "t good"), False: ("no", "0", "t bad"), None: ("–", "", "t")}
    if cams is not None:
        maps = {str(patient): _case_images(cams, str(patient), "*_gradcam.png") for patient in per_patient["patient"]}
        b.prefetch(p for found in maps.values() for p in found)
    rows = []
    for i in order:
        r = per_patient.iloc[i]
        cells = [_num(r[c], 0 if c == "label" else 3) if c in ("label", "prob_damaged") else _text(r[c]) for c in cols]
        cells.append(_Cell(*verdicts[correct[i]]))
        if cams is not None:
            patient = str(r["patient"])
            cells.append(b.thumbs(maps[patient], f"GradCAM of {patient}"))
        rows.append((str(r["patient"]), cells))
    wrong = sum(c is False for c in correct)
    s.body.append(
        _table(
            columns,
            rows,
            caption=f"{len(per_patient)} patients, {wrong} misclassified; misclassified first, most confident first.",
            table_id=f"{s.anchor}-per-patient",
        )
    )


def _cam_dir(eval_dir: Path) -> Path | None:
    """The classifier's ``cam/`` folder (inference's GradCAM maps) in the evaluation folder or in its run folder."""
    for folder in (eval_dir / "cam", eval_dir.parent / "cam"):
        if folder.is_dir():
            return folder
    return None


# ---- measurements ---------------------------------------------------------------------------------------


def _measure_section(b: _Builder, csv: Path) -> None:
    summary = read_measure_csv(csv)
    s = b.section(f"Measurements: {csv.name}")
    s.body.append(f'<p class="path">{esc(csv)}</p>')
    problems_csv = csv.with_name(f"{csv.stem}_problems.csv")
    if problems_csv.is_file():
        try:
            problems = read_csv_checked(problems_csv, required=("path", "reason"))
            listed = "; ".join(f"{r.path}: {r.reason}" for r in problems.head(10).itertuples())
            more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
            s.body.append(_note(f"{len(problems)} masks could not be measured: {listed}{more}"))
        except DataError:
            s.body.append(_note(f"{problems_csv.name} is unreadable."))
    if summary.empty:
        s.body.append(_note("The CSV holds no row_type=summary rows: nothing to show."))
        return
    patients = list(dict.fromkeys(summary["patient"]))
    by_view = {
        v: summary[summary["view"].str.strip().str.upper() == v].drop_duplicates("patient").set_index("patient")
        for v in ("AP", "LAT")
    }

    def get(view: str, patient: str, col: str) -> object:
        t = by_view[view]
        return t.at[patient, col] if patient in t.index and col in t.columns else None

    with_thumbs = b.thumb_height > 0
    columns = [
        _Column("patient", text=True),
        _Column("class", text=True),
        _Column("Cobb (°)", title="AP: Cobb angle in degrees"),
        _Column("Cobb end levels", text=True),
        _Column("lordosis (°)", title="LAT: lumbar lordosis in degrees"),
        _Column("lordosis to", text=True, title="the lower reference of the lordosis (from L1)"),
        _Column("max Genant", title="LAT: the highest Genant grade"),
        _Column("Genant level", text=True),
        _Column("max listhesis (%)", title="LAT: the largest slip, in % of the endplate width"),
        _Column("listhesis level", text=True),
        _Column("vertebrae AP/LAT"),
        _Column("notes", text=True),
    ]
    if with_thumbs:
        columns += [_Column("AP overlay", text=True, sortable=False), _Column("LAT overlay", text=True, sortable=False)]
        overlays = {
            (patient, v): [path] if _inside(csv.parent, path) and path.is_file() else []
            for patient in patients
            for v in ("AP", "LAT")
            for path in [csv.parent / patient / f"{v}_measure.png"]
        }
        b.prefetch(p for found in overlays.values() for p in found)
    rows = []
    for patient in patients:
        cls = get("AP", patient, "class") or get("LAT", patient, "class") or ""
        upper, lower = get("AP", patient, "cobb_upper"), get("AP", patient, "cobb_lower")
        grade = get("LAT", patient, "max_genant_grade")
        n_ap, n_lat = get("AP", patient, "n_vertebrae"), get("LAT", patient, "n_vertebrae")
        counts = "/".join(_fmt(n, 0) for n in (n_ap, n_lat))
        notes = "; ".join(
            f"{v}: {n}" for v in ("AP", "LAT") if (n := str(get(v, patient, "notes") or "").strip()) and n != "nan"
        )
        cells = [
            _text(patient),
            _text(cls),
            _num(get("AP", patient, "cobb_angle_deg"), 1),
            _text(f"{upper}–{lower}" if upper and lower else ""),
            _num(get("LAT", patient, "lordosis_angle_deg"), 1),
            _text(get("LAT", patient, "lordosis_reference") or ""),
            _num(grade, 0, _grade_class(grade)),
            _text(get("LAT", patient, "max_genant_level") or ""),
            _num(get("LAT", patient, "max_listhesis_pct"), 1),
            _text(get("LAT", patient, "max_listhesis_level") or ""),
            _Cell(esc(counts), _sort_value(n_ap)),
            _text(notes),
        ]
        if with_thumbs:
            for v in ("AP", "LAT"):
                cells.append(b.thumbs(overlays[patient, v], f"{v} measurement overlay of {patient}"))
        rows.append((patient, cells))
    s.body.append(
        _table(
            columns,
            rows,
            caption=f"{len(patients)} patients (summary rows of the measurement CSV); click a header to sort.",
            table_id=f"{s.anchor}-measurements",
            cls="measurements",
        )
    )


# ---- the page -------------------------------------------------------------------------------------------


def _page(title: str, inputs: Sequence[str], sections: Sequence[_Section], notes: Sequence[str]) -> str:
    from spine_monai import __version__

    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    toc = "".join(f'<li><a href="#{esc(s.anchor)}">{esc(s.title)}</a></li>' for s in sections)
    src = "".join(f'<li class="path">{esc(i)}</li>' for i in inputs)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f'<meta name="generator" content="spine_monai {esc(__version__)}">',
            f"<title>{esc(title)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            f"<h1>{esc(title)}</h1>",
            f'<p class="meta">Generated {esc(stamp)} by spine_monai {esc(__version__)} from:</p><ul>{src}</ul>',
            *(_note(n) for n in notes),
            f"<nav><strong>Contents</strong><ul>{toc}</ul></nav>",
            *(s.render() for s in sections),
            '<div id="viewer" role="dialog" aria-label="enlarged view"></div>',
            f"<script>{_JS}</script>",
            "</body>",
            "</html>",
            "",
        ]
    )


def build_report(
    eval_dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    measure_csv: str | os.PathLike | None = None,
    title: str = DEFAULT_TITLE,
    *,
    thumb_height: int = 256,
    view_height: int = 1600,
) -> Path:
    """Write one self-contained HTML report of evaluation folders and a measurement CSV.

    Each folder is recognised by its files (see :func:`~spine_monai.report.inputs.detect_eval_dir`): an X-ray
    or MRI segmentation evaluation gets its per-structure summary (mean ± sd), the MRI overall table, a Dice box
    plot and a per-case table sorted worst first with overlay thumbnails; a classification evaluation gets its
    metrics, report, confusion matrix, ROC curve and per-patient table. The measurement CSV gets one row per
    patient (Cobb angle and end levels, lordosis and its reference, worst Genant grade, largest listhesis)
    with the ``_measure.png`` thumbnails. Optional files that are missing leave their part out, with a note.

    Args:
        eval_dirs: evaluation folders (``<run>/eval``, or ``<run>`` whose ``eval/`` holds the files).
        out: the HTML file to write; its folder is created.
        measure_csv: a CSV written by ``spine-monai measure``, or None.
        title: the page title and heading.
        thumb_height: height in pixels of the embedded JPEG thumbnails (shown at 160 px); 0 leaves them out.
        view_height: height in pixels (at most) of the embedded view a click on a thumbnail enlarges, enough to
            judge pedicles and vertebral lines; 0 leaves the views out and the thumbnails unclickable.

    Returns:
        the path written.

    Raises:
        DataError: for a folder with nothing recognisable, a missing measurement CSV or a malformed table;
            every problem found is listed.
        ValueError: when there is nothing to report at all.
    """
    out = Path(out)
    if not eval_dirs and measure_csv is None:
        raise ValueError("nothing to report: give at least one evaluation folder or a measurement CSV")
    problems = ProblemCollector()
    found: list[EvalDir] = []
    for d in eval_dirs:
        with problems.catch():
            found.append(detect_eval_dir(d))
    problems.raise_if_any()

    b = _Builder(out, thumb_height, view_height)
    for ed in found:
        for kind in ed.kinds:
            with problems.catch():
                if kind == "classification":
                    _classification_section(b, ed)
                else:
                    _seg_section(b, ed, kind)
    if measure_csv is not None:
        with problems.catch():
            _measure_section(b, Path(measure_csv))
    problems.raise_if_any()

    notes = [f"Unreadable image, left out: {p}" for p in b.unreadable]
    inputs = [str(ed.path) for ed in found] + ([str(measure_csv)] if measure_csv is not None else [])
    page = _page(title, inputs, b.sections, notes)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
