"""Measure every vertebra mask of an ELL888-layout tree into one CSV, plus overlays (``spine-monai measure``).

The tree may hold ground-truth or predicted masks, ``<masks>/<class>/ID (<n>)/<VIEW>/Ap_Vertebra.png`` or
``Lat_Vertebra.png``, or patient folders of another name, ``<masks>/<patient>/<VIEW>/`` (class left empty). The CSV
has one ``row_type="vertebra"`` row per body and one ``row_type="summary"`` row per patient and view (see
:data:`VERTEBRA_COLUMNS` and :data:`SUMMARY_COLUMNS`). Bad masks do not stop the batch: their problems are
collected, returned in ``DataFrame.attrs["problems"]`` and written next to the CSV as ``<stem>_problems.csv``. The
command line's parser lives with the others in :mod:`spine_monai.cli`.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from spine_monai.data.io import OVERLAY_COMPRESS_LEVEL, read_mask, read_radiograph, write_png_atomic
from spine_monai.data.layout import (
    CLASSES,
    IMAGE_EXTENSIONS,
    MASK_EXTENSION,
    PATIENT_DIR_PATTERN,
    STRUCTURES,
    VIEWS,
    patient_sort_key,
)
from spine_monai.errors import DataError, Problem, ProblemCollector
from spine_monai.measure.cobb import REGIONAL_COBB
from spine_monai.measure.levels import LEVELS
from spine_monai.measure.spine import SpineMeasurement, measure_spine

__all__ = [
    "CORNER_NAMES",
    "KEY_COLUMNS",
    "SUMMARY_COLUMNS",
    "VERTEBRA_COLUMNS",
    "draw_overlay",
    "measure_tree",
    "overlay_title",
]

CORNER_NAMES: tuple[str, ...] = ("superior_left", "superior_right", "inferior_right", "inferior_left")
KEY_COLUMNS: tuple[str, ...] = ("row_type", "patient", "class", "view")
VERTEBRA_COLUMNS: tuple[str, ...] = (
    "instance",
    "level",
    "missing_before",
    "area_px",
    "centroid_x",
    "centroid_y",
    *(f"{c}_{xy}" for c in CORNER_NAMES for xy in "xy"),
    "superior_angle_deg",
    "inferior_angle_deg",
    "width",
    "height_left",
    "height_middle",
    "height_right",
    "height_anterior",
    "height_posterior",
    "ratio_anterior_posterior",
    "ratio_middle_posterior",
    "ratio_neighbours",
    "height_loss",
    "genant_grade",
    "listhesis_pct",
)
SUMMARY_COLUMNS: tuple[str, ...] = (
    "n_vertebrae",
    "levels",
    "missing_levels",
    "cobb_angle_deg",
    "cobb_upper",
    "cobb_lower",
    *(f"cobb_{name}_deg" for name in REGIONAL_COBB),
    "lordosis_angle_deg",
    "lordosis_reference",
    "max_genant_grade",
    "max_genant_level",
    "max_listhesis_pct",
    "max_listhesis_level",
    "notes",
)
GRADE_COLOURS: tuple[tuple[int, int, int], ...] = ((0, 200, 255), (255, 230, 0), (255, 140, 0), (255, 30, 30))


def _patients(masks_dir: Path) -> list[tuple[str, str, Path]]:
    """(class, patient, folder) of the ELL888 layout's ``<class>/ID (<n>)`` folders, then of any other folder
    holding a view folder (``<patient>/AP/``: a patient of unknown class, ``""``)."""
    found = []
    for cls in CLASSES:
        cls_dir = masks_dir / cls
        if not cls_dir.is_dir():
            continue
        dirs = [d for d in cls_dir.iterdir() if d.is_dir() and PATIENT_DIR_PATTERN.match(d.name)]
        found += [(cls, d.name, d) for d in sorted(dirs, key=lambda d: patient_sort_key(d.name))]
    others = [d for d in masks_dir.iterdir() if d.is_dir() and d.name not in CLASSES] if masks_dir.is_dir() else []
    found += [("", d.name, d) for d in sorted(others) if any((d / v).is_dir() for v in VIEWS)]
    return found


def _vertebra_rows(m: SpineMeasurement, anterior_side: str) -> list[dict]:
    rows = []
    for v in m.vertebrae:
        g = v.geometry
        row = {
            "instance": v.instance,
            "level": v.level,
            "missing_before": v.missing_before,
            "area_px": v.area,
            "centroid_x": v.centroid[0],
            "centroid_y": v.centroid[1],
            "superior_angle_deg": g.superior_angle,
            "inferior_angle_deg": g.inferior_angle,
            "width": g.width,
            "height_left": g.height_left,
            "height_middle": g.height_middle,
            "height_right": g.height_right,
            "ratio_anterior_posterior": v.ratio_anterior_posterior,
            "ratio_middle_posterior": v.ratio_middle_posterior,
            "ratio_neighbours": v.ratio_neighbours,
            "height_loss": v.height_loss,
            "genant_grade": v.genant_grade,
            "listhesis_pct": v.listhesis_pct,
        }
        for name, (x, y) in zip(CORNER_NAMES, g.corners, strict=True):
            row[f"{name}_x"], row[f"{name}_y"] = x, y
        if m.view == "LAT":
            left, right = g.height_left, g.height_right
            row["height_anterior"], row["height_posterior"] = (
                (left, right) if anterior_side == "left" else (right, left)
            )
        rows.append(row)
    return rows


def _summary_row(m: SpineMeasurement) -> dict:
    named = [v.level for v in m.vertebrae if v.level]
    row = {
        "n_vertebrae": len(m.vertebrae),
        "levels": f"{named[0]}-{named[-1]}" if named else "",
        "missing_levels": " ".join(m.missing_levels),
        "notes": "; ".join(m.notes),
    }
    if m.view == "AP":
        row.update(cobb_angle_deg=m.cobb_angle, cobb_upper=m.cobb_levels[0], cobb_lower=m.cobb_levels[1])
        row.update({f"cobb_{name}_deg": angle for name, angle in m.regional_cobb.as_dict().items()})
    else:
        worst = max(m.vertebrae, key=lambda v: (v.genant_grade or 0, v.height_loss))
        slip, slip_level = m.max_listhesis
        row.update(
            lordosis_angle_deg=m.lordosis_angle,
            lordosis_reference=m.lordosis_reference,
            max_genant_grade=m.max_genant_grade,
            max_genant_level=worst.level if worst.genant_grade else "",
            max_listhesis_pct=slip,
            max_listhesis_level=slip_level,
        )
    return row


def _find_image(images_dir: Path, cls: str, patient: str, view: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        path = images_dir / cls / patient / view / f"{view}{ext}"
        if path.is_file():
            return path
    return None


def _background(
    mask: np.ndarray, images_dir: Path | None, cls: str, patient: str, view: str, problems: ProblemCollector
) -> Image.Image:
    """The radiograph to draw on, contrast-stretched to 8 bits; the mask itself when there is none."""
    if images_dir is not None:
        path = _find_image(images_dir, cls, patient, view)
        if path is None:
            problems.add(images_dir / cls / patient / view, f"no {view} image for the overlay; drawn on the mask")
        else:
            with problems.catch():
                grey = read_radiograph(path)
                if grey.shape != mask.shape:
                    raise DataError(
                        path,
                        f"image {grey.shape[1]}x{grey.shape[0]} differs from its mask "
                        f"{mask.shape[1]}x{mask.shape[0]}; overlay drawn on the mask",
                    )
                lo, hi = np.percentile(grey, (0.5, 99.5))
                scaled = np.clip((grey - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * 255.0
                return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
    return Image.fromarray(np.where(mask, 90, 0).astype(np.uint8)).convert("RGB")


def _extended(p: np.ndarray, q: np.ndarray, reach: float) -> list[tuple[float, float]]:
    d = (q - p) / max(float(np.linalg.norm(q - p)), 1e-9)
    return [tuple(p - reach * d), tuple(q + reach * d)]


def draw_overlay(
    image: Image.Image, m: SpineMeasurement, title: str, anterior_side: str = "left", slip_pct: float = 10.0
) -> Image.Image:
    """Draw level labels, endplates coloured by Genant grade and the whole-spine angle on a copy of ``image``.

    Args:
        image: the RGB background, the same size as the measured mask.
        m: the view's measurements.
        title: written in the top-left corner.
        anterior_side: on LAT, the side the patient faces; labels go on that side, clear of the arches.
        slip_pct: listhesis from this many % of the endplate width on is written next to the level.

    Returns:
        the annotated copy.
    """
    out = image.copy()
    draw = ImageDraw.Draw(out)
    scale = max(out.height / 576.0, 1.0)
    font = ImageFont.load_default(size=max(10, round(11 * scale)))
    thin, thick = max(1, round(scale)), max(2, round(2 * scale))
    labels_left = m.view == "LAT" and anterior_side == "left"
    for v in m.vertebrae:
        c = v.geometry.corners
        colour = GRADE_COLOURS[v.genant_grade or 0]
        draw.line([tuple(p) for p in (*c, c[0])], fill=colour, width=thin)
        draw.line([tuple(c[0]), tuple(c[1])], fill=(0, 255, 0), width=thick)
        draw.line([tuple(c[3]), tuple(c[2])], fill=(255, 0, 255), width=thick)
        text = v.level or "?"
        if v.genant_grade:
            text += f" G{v.genant_grade}"
        if np.isfinite(v.listhesis_pct) and abs(v.listhesis_pct) >= slip_pct:
            text += f" slip {v.listhesis_pct:.0f}%"
        if v.missing_before:
            text = f"(gap above) {text}"
        mid = 0.5 * (c[0] + c[3]) if labels_left else 0.5 * (c[1] + c[2])
        width = draw.textlength(text, font=font)
        x = mid[0] - width - 4 * scale if labels_left else mid[0] + 4 * scale
        draw.text((x, mid[1]), text, fill=colour, font=font, anchor="lm", stroke_width=1, stroke_fill=(0, 0, 0))
    reach = 0.6 * max(v.geometry.width for v in m.vertebrae)
    if m.view == "AP" and m.cobb_instances is not None:
        upper, lower = (m.vertebrae[i - 1].geometry.corners for i in m.cobb_instances)
        for p, q in ((upper[0], upper[1]), (lower[3], lower[2])):
            draw.line(_extended(p, q, reach), fill=(255, 255, 0), width=thick)
    if m.view == "LAT" and math.isfinite(m.lordosis_angle):
        names = [v.level for v in m.vertebrae]
        top = m.vertebrae[names.index("L1")].geometry.corners
        if m.lordosis_reference == "S1":
            low = m.vertebrae[names.index("S1")].geometry.corners
            low_line = (low[0], low[1])
        else:
            low = m.vertebrae[names.index(m.lordosis_reference.split()[0])].geometry.corners
            low_line = (low[3], low[2])
        for p, q in ((top[0], top[1]), low_line):
            draw.line(_extended(p, q, reach), fill=(255, 255, 0), width=thick)
    headline = overlay_title(m, title)
    draw.text((4 * scale, 4 * scale), headline, fill=(255, 255, 255), font=font, stroke_width=1, stroke_fill=(0, 0, 0))
    return out


def overlay_title(m: SpineMeasurement, title: str) -> str:
    """The overlay's headline: ``title`` and the view's angles with the levels they were measured between.

    End vertebrae beyond the named levels (``--anchor`` names none of them) are called by their place from the top,
    ``body 3``.

    Args:
        m: the view's measurements.
        title: what the film is, e.g. ``"Normal/ID (3) AP"``.

    Returns:
        one line, two on AP when the regional Cobb angles are known.
    """
    headline = title
    if m.view == "AP" and m.cobb_instances is not None:
        ends = [level or f"body {i}" for level, i in zip(m.cobb_levels, m.cobb_instances, strict=True)]
        headline += f"  Cobb {m.cobb_angle:.1f}° ({ends[0]}-{ends[1]})"
        if m.regional_cobb is not None:
            pt, mt, tl = m.regional_cobb.angles
            headline += f"\nPT {pt:.1f}°  MT {mt:.1f}°  TL/L {tl:.1f}°"
    if m.view == "LAT" and math.isfinite(m.lordosis_angle):
        headline += f"  LL {m.lordosis_angle:.1f}° (L1-{m.lordosis_reference})"
    return headline


def _write_reports(out_csv: Path, images: Path, problems: ProblemCollector) -> None:
    """A DICOM measurement report beside the overlays for every film read from DICOM, with the CSV's values."""
    from spine_monai.report.dicom import write_measurement_report

    written = pd.read_csv(out_csv, keep_default_na=True)
    for (patient, v), rows in written.groupby(["patient", "view"], sort=False):
        film = images / patient / v / f"{v}.dcm"
        if film.is_file():
            with problems.catch():
                records = rows.astype(object).where(rows.notna(), None).to_dict("records")
                write_measurement_report(film, records, out_csv.parent / patient / f"{v}_measurements_sr.dcm")


def measure_tree(
    masks_dir: str | os.PathLike,
    view: str | None = None,
    *,
    out_csv: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    overlay: bool = True,
    anchor: str = "S1",
    anchor_end: str = "bottom",
    anterior_side: str = "left",
    workers: int | None = None,
) -> pd.DataFrame:
    """Measure every patient's vertebra mask(s) in an ELL888-layout tree and write the CSV and overlays.

    Args:
        masks_dir: root of the tree of masks (ground truth or predictions).
        view: ``"AP"``, ``"LAT"``, or None for both.
        out_csv: the CSV to write; overlays go to ``<its folder>/<class>/ID (<n>)/<VIEW>_measure.png``.
        images_dir: root of the radiographs in the same layout (``<VIEW>/<VIEW>.jpg``) to draw overlays on;
            None draws them on the masks. A film stored as ``<VIEW>.dcm`` also gets its measurements as a DICOM
            Structured Report referencing it, ``<class>/ID (<n>)/<VIEW>_measurements_sr.dcm`` beside the overlay,
            with the values the CSV holds (:func:`spine_monai.report.dicom.write_measurement_report`).
        overlay: whether to write overlay PNGs.
        anchor: the level of the body at ``anchor_end`` (see :func:`~spine_monai.measure.levels.assign_levels`).
        anchor_end: ``"bottom"`` or ``"top"``.
        anterior_side: the side LAT films face.
        workers: films measured at once, on threads (default: one per CPU core, at most 8).

    Returns:
        the rows written, :data:`KEY_COLUMNS` then :data:`VERTEBRA_COLUMNS` then :data:`SUMMARY_COLUMNS` (empty
        where they do not apply). ``attrs["problems"]`` lists every problem as ``{"path", "reason"}``; when
        there are any they are also written to ``<out_csv stem>_problems.csv``.

    Raises:
        DataError: when ``masks_dir`` holds no ``<class>/ID (<n>)`` folder at all.
        ValueError: for an unknown view or anchor.
    """
    masks_dir = Path(masks_dir)
    out_csv = Path(out_csv)
    images = Path(images_dir) if images_dir is not None else None
    views = VIEWS if view is None else (view.upper(),)
    if any(v not in VIEWS for v in views):
        raise ValueError(f"view must be one of {', '.join(VIEWS)} or None, got {view!r}")
    if anchor not in LEVELS:
        raise ValueError(f"anchor {anchor!r} is not a level; use one of {', '.join(LEVELS)}")
    patients = _patients(masks_dir)
    if not patients:
        raise DataError(
            masks_dir, f"no {'/'.join(CLASSES)}/ID (<n>)/ or <patient>/<VIEW>/ folders: is this an ELL888-layout tree?"
        )

    def measure_one(cls: str, patient: str, patient_dir: Path, v: str) -> tuple[list[dict], list[Problem]]:
        found = ProblemCollector()
        rows: list[dict] = []
        path = patient_dir / v / f"{STRUCTURES[v][0]}{MASK_EXTENSION}"
        key = {"patient": f"{cls}/{patient}" if cls else patient, "class": cls, "view": v}
        with found.catch():
            mask = read_mask(path)
            m = measure_spine(
                mask, v, name=str(path), anchor=anchor, anchor_end=anchor_end, anterior_side=anterior_side
            )
            rows += [{"row_type": "vertebra", **key, **r} for r in _vertebra_rows(m, anterior_side)]
            rows.append({"row_type": "summary", **key, **_summary_row(m)})
            if overlay:
                background = _background(mask, images, cls, patient, v, found)
                image = draw_overlay(background, m, f"{key['patient']} {v}", anterior_side)
                write_png_atomic(
                    out_csv.parent / cls / patient / f"{v}_measure.png", image, compress_level=OVERLAY_COMPRESS_LEVEL
                )
        return rows, found.problems

    # Most of a film's time goes to compiled code that releases the GIL (two films on two cores take about the time
    # of one), so films are measured on threads; the rows and problems keep the order of a one-by-one run. A
    # 1900x2900 film holds about 150 MB while it is measured, hence the cap on a many-core machine.
    jobs = [(cls, patient, patient_dir, v) for cls, patient, patient_dir in patients for v in views]
    problems = ProblemCollector()
    rows: list[dict] = []
    with ThreadPoolExecutor(max_workers=workers or min(os.cpu_count() or 1, 8)) as pool:
        for found_rows, found_problems in pool.map(lambda job: measure_one(*job), jobs):
            rows += found_rows
            problems.extend(found_problems)
    df = pd.DataFrame(rows, columns=[*KEY_COLUMNS, *VERTEBRA_COLUMNS, *SUMMARY_COLUMNS])
    for col in ("genant_grade", "max_genant_grade", "instance", "missing_before", "area_px", "n_vertebrae"):
        df[col] = df[col].astype("Int64")
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_csv, index=False, float_format="%.3f")
    if images is not None:
        _write_reports(out_csv, images, problems)
    problems_csv = out_csv.with_name(f"{out_csv.stem}_problems.csv")
    listed = [p.to_dict() for p in problems.problems]
    if listed:
        pd.DataFrame(listed, columns=["path", "reason"]).to_csv(problems_csv, index=False)
    else:
        # A list from an earlier run would describe masks that are now fine.
        problems_csv.unlink(missing_ok=True)
    df.attrs["problems"] = listed
    return df
