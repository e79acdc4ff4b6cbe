"""Import vertebra-corner annotations (AASCE CSV, COCO keypoints) into the ELL888 layout.

Corner landmarks are how most public spine X-ray sets are labelled: four points per vertebral body. The importer
writes each film as ``<out>/<class>/ID (<n>)/<VIEW>/<VIEW>.<ext>`` with a 1-bit vertebra mask rasterised from the
bodies' quadrilaterals, and one sidecar, ``<out>/landmarks.json``, whose ``cases`` follow the synthetic
generator's ``ground_truth.json`` (``cases[patient][view]["vertebrae"]`` with each level's corners), so the same
scoring code reads both. Published angles, when the source has them, go in the same record.

Corners are ``[superior-left, superior-right, inferior-right, inferior-left]`` in image pixels ``[x, y]`` (x right,
y down), as everywhere in the package.

Formats:

* ``aasce``: the AASCE 2019 challenge folder (SpineWeb dataset 16), ``data/<split>/*.jpg`` and
  ``labels/<split>/{filenames,landmarks,angles}.csv``; ``landmarks.csv`` holds 68 normalised x values, then 68
  y values per film, four corners per body (top-left, top-right, bottom-left, bottom-right) from T1 to L5;
  ``angles.csv`` the proximal thoracic, main thoracic and thoracolumbar/lumbar Cobb angles.
* ``coco-keypoints``: a COCO JSON whose category names its keypoints ``<level><endplate><corner>``, e.g.
  ``L1TB, L1TF, L1BB, L1BF``: top or bottom endplate, back or front corner (lateral sets), or left or right
  corner in the image (``L1TL, L1TR, ...``). A level whose corners are all unlabelled (visibility 0) is not
  annotated; one with only some of them is a problem.

A film is left out, and named with its reason, when an annotation has missing corners, a point outside the
image, a self-intersecting or degenerate quadrilateral, or when its image is missing or unreadable; every other
film is imported.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from spine_monai.data.io import image_size, read_radiograph, write_mask
from spine_monai.data.layout import CLASSES, IMAGE_EXTENSIONS, STRUCTURES, VIEWS
from spine_monai.errors import DataError, Problem

__all__ = [
    "AASCE_ANGLES",
    "AASCE_LEVELS",
    "FORMATS",
    "LandmarkFilm",
    "import_landmarks",
    "quadrilateral_problem",
    "read_aasce",
    "read_coco_keypoints",
    "vertebra_mask",
]

FORMATS: tuple[str, ...] = ("aasce", "coco-keypoints")
AASCE_LEVELS: tuple[str, ...] = tuple(f"T{i}" for i in range(1, 13)) + tuple(f"L{i}" for i in range(1, 6))
# angles.csv's columns, in the challenge's order.
AASCE_ANGLES: tuple[str, ...] = ("proximal_thoracic", "main_thoracic", "thoracolumbar_lumbar")
SIDECAR = "landmarks.json"
_KEYPOINT = re.compile(r"^(?P<level>[CTLS]\d{1,2})(?P<endplate>[TB])(?P<corner>[FBLR])$", re.IGNORECASE)
_LEVEL_ORDER = {p: i for i, p in enumerate("CTLS")}


@dataclass
class LandmarkFilm:
    """One annotated film as read from its source, before any check.

    Args:
        source: the film's name in the source annotations (used in problems and the sidecar).
        image: its image file.
        view: ``"AP"`` or ``"LAT"``.
        levels: level names, top to bottom.
        corners: ``(n, 4, 2)`` superior-left, superior-right, inferior-right, inferior-left ``[x, y]`` per level;
            NaN where a corner is missing.
        angles: published angles in degrees, by name, when the source has them.
        size: ``(width, height)`` the annotation declares, when it does.
        anterior_side: on LAT, the side of the image the patient faces, when the annotation says.
    """

    source: str
    image: Path
    view: str
    levels: list[str]
    corners: np.ndarray
    angles: dict[str, float] = field(default_factory=dict)
    size: tuple[int, int] | None = None
    anterior_side: str | None = None


def _level_key(level: str) -> tuple[int, int]:
    return _LEVEL_ORDER[level[0].upper()], int(level[1:])


def read_aasce(src: str | os.PathLike, split: str = "training") -> tuple[list[LandmarkFilm], list[Problem]]:
    """Read one split of the AASCE 2019 landmark set.

    Args:
        src: the folder holding ``data/`` and ``labels/`` (``boostnet_labeldata`` in public copies).
        split: the sub-folder name, ``"training"`` or ``"test"``.

    Returns:
        the films in ``filenames.csv`` order, and a problem for each row that cannot be read.

    Raises:
        DataError: when the split's label files are missing or their row counts disagree.
    """
    src = Path(src)
    labels = src / "labels" / split
    files = {name: labels / f"{name}.csv" for name in ("filenames", "landmarks", "angles")}
    missing = [
        Problem(str(p), "AASCE label file not found") for n, p in files.items() if n != "angles" and not p.is_file()
    ]
    if missing:
        raise DataError(missing)
    names = [line.strip() for line in files["filenames"].read_text().splitlines() if line.strip()]
    try:
        landmarks = np.loadtxt(files["landmarks"], delimiter=",", ndmin=2)
    except ValueError as e:
        raise DataError(files["landmarks"], f"not a CSV of numbers ({e})") from e
    angles = None
    if files["angles"].is_file():
        try:
            angles = np.loadtxt(files["angles"], delimiter=",", ndmin=2)
        except ValueError as e:
            raise DataError(files["angles"], f"not a CSV of numbers ({e})") from e
    n_values = 2 * 4 * len(AASCE_LEVELS)
    problems = []
    if landmarks.shape != (len(names), n_values):
        problems.append(
            Problem(
                str(files["landmarks"]),
                f"expected {len(names)} rows (one per film in filenames.csv) of {n_values} values, "
                f"got {landmarks.shape[0]} rows of {landmarks.shape[1]}",
            )
        )
    if angles is not None and angles.shape != (len(names), len(AASCE_ANGLES)):
        problems.append(
            Problem(
                str(files["angles"]), f"expected {len(names)} rows of {len(AASCE_ANGLES)} angles, got {angles.shape}"
            )
        )
    if problems:
        raise DataError(problems)
    films = []
    for k, name in enumerate(names):
        image = src / "data" / split / name
        # Normalised coordinates need the film's size; a missing or corrupt film is reported by the import.
        try:
            width, height = image_size(image)
        except DataError:
            width = height = np.nan
        xs, ys = landmarks[k, : n_values // 2], landmarks[k, n_values // 2 :]
        points = np.stack([xs * width, ys * height], axis=1).reshape(len(AASCE_LEVELS), 4, 2)
        films.append(
            LandmarkFilm(
                source=name,
                image=image,
                view="AP",
                levels=list(AASCE_LEVELS),
                # top-left, top-right, bottom-left, bottom-right -> the package's clockwise order
                corners=points[:, [0, 1, 3, 2]],
                angles={} if angles is None else dict(zip(AASCE_ANGLES, map(float, angles[k]), strict=True)),
            )
        )
    return films, []


def read_coco_keypoints(
    src: str | os.PathLike, view: str = "LAT", images_dir: str | os.PathLike | None = None
) -> tuple[list[LandmarkFilm], list[Problem]]:
    """Read a COCO keypoints file with named vertebra corners.

    Args:
        src: the COCO JSON file.
        view: the view its films show.
        images_dir: the folder ``file_name`` is relative to; default the JSON file's folder.

    Returns:
        one film per image that has an annotation, and a problem for each image or annotation that cannot be
        understood (an image without annotation, two annotations of one image, a keypoint list of the wrong
        length).

    Raises:
        DataError: when the file is not a COCO keypoints document or its keypoint names are not corner names.
    """
    src = Path(src)
    if not src.is_file():
        raise DataError(src, "COCO keypoints file not found")
    try:
        doc = json.loads(src.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(src, f"not valid JSON ({e})") from e
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DataError(src, "not a COCO document: expected 'images', 'annotations' and 'categories' lists")
    base = Path(images_dir) if images_dir is not None else src.parent
    categories = {}
    for cat in doc["categories"]:
        names = cat.get("keypoints") or []
        parsed = [_KEYPOINT.match(str(n)) for n in names]
        bad = [str(n) for n, m in zip(names, parsed, strict=True) if m is None]
        if not names or bad:
            raise DataError(
                src,
                f"category {cat.get('name', cat.get('id'))!r} keypoint names {bad or names} are not corner names "
                "<level><T|B><F|B|L|R> such as L1TB",
            )
        categories[cat["id"]] = [(m["level"].upper(), m["endplate"].upper(), m["corner"].upper()) for m in parsed]
    problems: list[Problem] = []
    by_image: dict = {}
    for ann in doc["annotations"]:
        image_id = ann.get("image_id")
        if image_id in by_image:
            problems.append(Problem(f"{src}: image {image_id}", "more than one keypoint annotation for the image"))
            by_image[image_id] = None
        else:
            by_image[image_id] = ann
    films = []
    for info in doc["images"]:
        label = f"{src}: {info.get('file_name', info.get('id'))}"
        ann = by_image.get(info.get("id"))
        if info.get("id") not in by_image:
            problems.append(Problem(label, "image has no keypoint annotation"))
            continue
        if ann is None:
            continue
        names = categories.get(ann.get("category_id"))
        if names is None:
            problems.append(Problem(label, f"annotation's category_id {ann.get('category_id')!r} is not in categories"))
            continue
        values = np.asarray(ann.get("keypoints") or [], dtype=float)
        if values.size != 3 * len(names):
            problems.append(
                Problem(label, f"{values.size} keypoint values for {len(names)} named keypoints: expected x, y, v each")
            )
            continue
        films.append(_coco_film(info, names, values.reshape(-1, 3), base, view))
    return films, problems


def _coco_film(info: dict, names: list[tuple[str, str, str]], kps: np.ndarray, base: Path, view: str) -> LandmarkFilm:
    points: dict[str, dict[tuple[str, str], np.ndarray]] = {}
    for (level, endplate, corner), (x, y, v) in zip(names, kps, strict=True):
        points.setdefault(level, {})[endplate, corner] = np.array([x, y]) if v > 0 else np.full(2, np.nan)
    levels = sorted(
        (lv for lv, pts in points.items() if not all(np.isnan(p).all() for p in pts.values())), key=_level_key
    )
    sides = {c for lv in levels for (_, c) in points[lv]}
    anterior_side = None
    if sides & {"F", "B"}:
        fronts = [p[0] for lv in levels for (e, c), p in points[lv].items() if c == "F" and np.isfinite(p).all()]
        backs = [p[0] for lv in levels for (e, c), p in points[lv].items() if c == "B" and np.isfinite(p).all()]
        anterior_side = "left" if not fronts or not backs or np.mean(fronts) <= np.mean(backs) else "right"
        left, right = ("F", "B") if anterior_side == "left" else ("B", "F")
    else:
        left, right = "L", "R"
    order = [("T", left), ("T", right), ("B", right), ("B", left)]
    nan = np.full(2, np.nan)
    corners = np.array([[points[lv].get(key, nan) for key in order] for lv in levels], dtype=float).reshape(-1, 4, 2)
    size = (int(info["width"]), int(info["height"])) if "width" in info and "height" in info else None
    return LandmarkFilm(
        source=str(info.get("file_name", info.get("id"))),
        image=base / str(info.get("file_name", "")),
        view=view,
        levels=levels,
        corners=corners,
        size=size,
        anterior_side=anterior_side,
    )


def _segments_cross(p1: np.ndarray, p2: np.ndarray, p3: np.ndarray, p4: np.ndarray) -> bool:
    def side(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))

    return side(p3, p4, p1) * side(p3, p4, p2) < 0 and side(p1, p2, p3) * side(p1, p2, p4) < 0


def quadrilateral_problem(corners: np.ndarray, size: tuple[int, int]) -> str | None:
    """What is wrong with one body's four corners, or None.

    Args:
        corners: ``(4, 2)`` in the package's clockwise order.
        size: the image's ``(width, height)``.

    Returns:
        ``"missing corners ..."``, ``"points outside the image ..."``, ``"self-intersecting ..."``,
        ``"degenerate ..."`` or None.
    """
    c = np.asarray(corners, dtype=float)
    names = ("superior-left", "superior-right", "inferior-right", "inferior-left")
    absent = [n for n, p in zip(names, c, strict=True) if not np.isfinite(p).all()]
    if absent:
        return f"missing corners: {', '.join(absent)}"
    width, height = size
    outside = [
        f"{n} ({p[0]:.1f}, {p[1]:.1f})"
        for n, p in zip(names, c, strict=True)
        if not (0 <= p[0] <= width and 0 <= p[1] <= height)
    ]
    if outside:
        return f"points outside the {width}x{height} image: {', '.join(outside)}"
    if _segments_cross(c[0], c[1], c[2], c[3]) or _segments_cross(c[1], c[2], c[3], c[0]):
        return "self-intersecting quadrilateral (corners out of order)"
    x, y = c[:, 0], c[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    if area < 1.0:
        return f"degenerate quadrilateral (area {area:.2f} px)"
    return None


def vertebra_mask(corners: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Rasterise bodies' quadrilaterals into one binary mask, boundary pixels included.

    Args:
        corners: ``(n, 4, 2)`` corners ``[x, y]``.
        size: ``(width, height)`` of the mask.

    Returns:
        a bool array of shape ``(height, width)``.
    """
    canvas = Image.new("1", tuple(size), 0)
    draw = ImageDraw.Draw(canvas)
    for quad in np.asarray(corners, dtype=float):
        draw.polygon([tuple(p) for p in quad], fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def _check_film(film: LandmarkFilm) -> tuple[tuple[int, int] | None, list[str]]:
    """The film's size and every reason it cannot be imported."""
    if not film.image.is_file():
        return None, [f"image not found: {film.image}"]
    try:
        read_radiograph(film.image)
        size = image_size(film.image)
    except DataError as e:
        return None, [f"image {film.image}: {e.reason}"]
    reasons = []
    if film.size is not None and tuple(film.size) != tuple(size):
        reasons.append(f"annotation says {film.size[0]}x{film.size[1]}, the image is {size[0]}x{size[1]}")
    if film.image.suffix.lower() not in IMAGE_EXTENSIONS:
        reasons.append(f"image format {film.image.suffix!r} is not one of {', '.join(IMAGE_EXTENSIONS)}")
    if not film.levels:
        reasons.append("no annotated vertebra")
    for level, quad in zip(film.levels, film.corners, strict=True):
        reason = quadrilateral_problem(quad, size)
        if reason:
            reasons.append(f"{level}: {reason}")
    return size, reasons


def _write_film(film: LandmarkFilm, size: tuple[int, int], view_dir: Path) -> None:
    view_dir.mkdir(parents=True, exist_ok=True)
    # The film is copied byte for byte: re-encoding a JPEG would change the pixels the masks were drawn on.
    shutil.copyfile(film.image, view_dir / f"{film.view}{film.image.suffix.lower()}")
    write_mask(view_dir / f"{STRUCTURES[film.view][0]}.png", vertebra_mask(film.corners, size))


def import_landmarks(
    films: Sequence[LandmarkFilm],
    out: str | os.PathLike,
    *,
    class_name: str = "Normal",
    source: str = "",
    fmt: str = "",
    problems: Sequence[Problem] = (),
    workers: int | None = None,
) -> dict:
    """Check every film and write the good ones in the ELL888 layout, with the ``landmarks.json`` sidecar.

    Patients are numbered ``ID (1)``, ``ID (2)``, ... in the films' order; the sidecar maps each back to its
    source film. Nothing is written for a film that has a problem.

    Args:
        films: what a reader returned.
        out: the new dataset root; it must not already hold an import or other files.
        class_name: the class folder the films go to; the layout needs one, and landmark sets rarely say.
        source: where the films came from, for the sidecar.
        fmt: the source format, for the sidecar.
        problems: problems the reader already found; they are reported with the rest.
        workers: threads for checking and writing; default the CPU count.

    Returns:
        the sidecar document, whose ``problems`` lists every film left out with its reason.

    Raises:
        ValueError: for an unknown class or a film of an unknown view.
        FileExistsError: when ``out`` is not empty.
    """
    if class_name not in CLASSES:
        raise ValueError(f"class must be one of {', '.join(CLASSES)}, got {class_name!r}")
    unknown = sorted({f.view for f in films} - set(VIEWS))
    if unknown:
        raise ValueError(f"unknown views {unknown}; expected {', '.join(VIEWS)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; import into a new folder")
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        checked = list(pool.map(_check_film, films))
    all_problems = list(problems)
    good = []
    for film, (size, reasons) in zip(films, checked, strict=True):
        if reasons:
            all_problems.append(Problem(film.source, "; ".join(reasons)))
        else:
            good.append((film, size))
    cases = {}
    jobs = []
    for n, (film, size) in enumerate(good, start=1):
        patient = f"{class_name}/ID ({n})"
        jobs.append((film, size, out / class_name / f"ID ({n})" / film.view))
        record: dict = {
            "vertebrae": [
                {"level": lv, "corners": np.round(q, 2).tolist()}
                for lv, q in zip(film.levels, film.corners, strict=True)
            ]
        }
        if film.angles:
            record["cobb_angles"] = {k: round(v, 4) for k, v in film.angles.items()}
        if film.anterior_side:
            record["anterior_side"] = film.anterior_side
        cases[patient] = {
            "class": class_name,
            "source": film.source,
            "size": list(size),
            "levels": list(film.levels),
            film.view: record,
        }
    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        list(pool.map(lambda job: _write_film(*job), jobs))
    document = {
        "importer": "spine_monai.data.landmarks",
        "format": fmt,
        "source": source,
        "class_note": f"every film was placed under {class_name}/: the source does not label Normal or Damaged",
        "coordinates": "pixels [x, y], x right, y down; corners superior-left, superior-right, inferior-right, "
        "inferior-left",
        "cases": cases,
        "problems": [p.to_dict() for p in all_problems],
    }
    tmp = out / f".{SIDECAR}.tmp"
    tmp.write_text(json.dumps(document, indent=1))
    os.replace(tmp, out / SIDECAR)
    return document
