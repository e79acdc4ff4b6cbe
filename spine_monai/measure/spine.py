"""Whole-spine measurements from one vertebra mask: Cobb angle (AP), lumbar lordosis and listhesis (LAT).

:func:`measure_spine` chains the steps: body instances along the spine, level names, a quadrilateral per
body, then the per-body ratios and Genant grades and the whole-spine angles. Masks with nothing measurable
(empty, all-ones, fewer than two bodies) raise :class:`~spine_monai.errors.DataError` naming the mask and the
reason, so a batch can collect them with :class:`~spine_monai.errors.ProblemCollector`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from spine_monai.errors import DataError
from spine_monai.measure.cobb import RegionalCobb, regional_cobb_angles
from spine_monai.measure.geometry import (
    VertebraGeometry,
    genant_grade,
    height_loss,
    neighbour_ratio,
    vertebra_geometry,
)
from spine_monai.measure.instances import separate_instances
from spine_monai.measure.levels import LEVELS, assign_levels

__all__ = [
    "SpineMeasurement",
    "VertebraMeasurement",
    "cobb_angle",
    "listhesis_offsets",
    "lordosis_angle",
    "measure_spine",
]


@dataclass(frozen=True)
class VertebraMeasurement:
    """One body's measurements.

    Args:
        instance: its label in :attr:`SpineMeasurement.labels` (1 is the top body).
        level: its level name, or None beyond the named range.
        missing_before: levels inferred missing between this body and the one above.
        area: pixels.
        centroid: ``[x, y]``.
        geometry: corners, endplate angles and heights.
        ratio_anterior_posterior: anterior / posterior height (LAT; NaN on AP).
        ratio_middle_posterior: middle / posterior height (LAT; NaN on AP).
        ratio_neighbours: middle height / mean middle height of the adjacent bodies.
        height_loss: Genant height loss fraction (LAT; NaN on AP).
        genant_grade: 0-3 (LAT; None on AP).
        listhesis_pct: slip of this body over the one below, % of the lower endplate's width, positive forward
            (anterolisthesis); NaN for the lowest body, across a missing level, and on AP.
    """

    instance: int
    level: str | None
    missing_before: int
    area: int
    centroid: np.ndarray
    geometry: VertebraGeometry
    ratio_anterior_posterior: float
    ratio_middle_posterior: float
    ratio_neighbours: float
    height_loss: float
    genant_grade: int | None
    listhesis_pct: float


@dataclass(frozen=True)
class SpineMeasurement:
    """Everything measured on one view.

    Args:
        view: ``"AP"`` or ``"LAT"``.
        vertebrae: per body, top to bottom.
        labels: int32 (H, W) instance image, 0 background, values as :attr:`VertebraMeasurement.instance`.
        curve: ``(m, 2)`` samples of the fitted spine curve.
        missing_levels: level names inferred missing.
        cobb_angle: degrees (AP; NaN on LAT or with fewer than two bodies).
        cobb_levels: (upper, lower) end vertebra levels of the Cobb angle.
        cobb_instances: (upper, lower) instance labels of the end vertebrae.
        regional_cobb: the AASCE 2019 proximal thoracic, main thoracic and thoracolumbar/lumbar angles (AP; None
            on LAT).
        lordosis_angle: degrees, S1 superior endplate angle minus L1 superior endplate angle (LAT).
        lordosis_reference: ``"S1"``, or ``"<level> inferior"`` when S1 is absent; empty if not measured.
        notes: why a measure is missing, in words.
    """

    view: str
    vertebrae: list[VertebraMeasurement]
    labels: np.ndarray
    curve: np.ndarray
    missing_levels: list[str]
    cobb_angle: float = math.nan
    cobb_levels: tuple[str | None, str | None] = (None, None)
    cobb_instances: tuple[int, int] | None = None
    regional_cobb: RegionalCobb | None = None
    lordosis_angle: float = math.nan
    lordosis_reference: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def max_genant_grade(self) -> int | None:
        grades = [v.genant_grade for v in self.vertebrae if v.genant_grade is not None]
        return max(grades) if grades else None

    @property
    def max_listhesis(self) -> tuple[float, str | None]:
        """(largest slip by magnitude in %, signed; its level), or (NaN, None)."""
        values = [(v.listhesis_pct, v.level) for v in self.vertebrae if np.isfinite(v.listhesis_pct)]
        if not values:
            return math.nan, None
        return max(values, key=lambda t: abs(t[0]))


def cobb_angle(superior: Sequence[float], inferior: Sequence[float]) -> tuple[float, int, int]:
    """Largest angle between the superior endplate of an upper body and the inferior endplate of a lower one.

    Args:
        superior: superior endplate angles in degrees, bodies top to bottom.
        inferior: inferior endplate angles in degrees, same bodies.

    Returns:
        ``(angle, upper, lower)``: the angle in degrees (>= 0) and the indices of the two end vertebrae.

    Raises:
        ValueError: with fewer than two bodies.
    """
    sup = np.asarray(superior, dtype=float)
    inf = np.asarray(inferior, dtype=float)
    n = len(sup)
    if n < 2 or len(inf) != n:
        raise ValueError("a Cobb angle needs at least two bodies with both endplate angles")
    diff = np.abs(sup[:, None] - inf[None, :])
    diff[np.tril_indices(n)] = -1.0  # only upper i above lower j
    i, j = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return float(diff[i, j]), int(i), int(j)


def lordosis_angle(
    levels: Sequence[str | None],
    superior: Sequence[float],
    inferior: Sequence[float],
    anterior_side: str = "left",
) -> tuple[float, str]:
    """Lumbar lordosis: the S1 superior endplate angle minus the L1 superior endplate angle.

    When S1 is not among the bodies the lowest visible endplate stands in, the inferior endplate of the lowest
    named body, and the reference says so.

    Args:
        levels: the bodies' level names, top to bottom.
        superior: superior endplate angles in degrees.
        inferior: inferior endplate angles in degrees.
        anterior_side: the side of the image the patient faces; mirroring the film negates the angle.

    Returns:
        ``(angle, reference)`` with reference ``"S1"`` or ``"<level> inferior"``.

    Raises:
        ValueError: when L1 is not among the levels, or no body below it is named.
    """
    levels = list(levels)
    if "L1" not in levels:
        raise ValueError("L1 not found: lordosis needs the L1 superior endplate")
    sign = 1.0 if anterior_side == "left" else -1.0
    top = superior[levels.index("L1")]
    if "S1" in levels:
        return sign * (superior[levels.index("S1")] - top), "S1"
    named = [i for i, lv in enumerate(levels) if lv is not None]
    low = named[-1]
    if low <= levels.index("L1"):
        raise ValueError("no body below L1: lordosis needs a lower endplate")
    return sign * (inferior[low] - top), f"{levels[low]} inferior"


def listhesis_offsets(
    corners: np.ndarray, missing_before: Sequence[int] | None = None, anterior_side: str = "left"
) -> np.ndarray:
    """Slip of each body over the one below, in % of the lower body's superior endplate width.

    The offset is the displacement of the upper body's posterior-inferior corner from the lower body's
    posterior-superior corner, projected on the lower superior endplate; positive when the upper body slid
    forward (anterolisthesis), negative backward (retrolisthesis).

    Args:
        corners: ``(n, 4, 2)`` corners of the bodies, top to bottom (superior-left, superior-right,
            inferior-right, inferior-left).
        missing_before: per body, levels missing above it; a pair across a missing level is not measured.
        anterior_side: the side of the image the patient faces (``"left"`` or ``"right"``).

    Returns:
        ``(n,)`` percentages; NaN for the lowest body and across gaps.
    """
    c = np.asarray(corners, dtype=float)
    n = len(c)
    out = np.full(n, np.nan)
    # Corner indices of the posterior-inferior corner of the upper body and the posterior-superior corner of
    # the lower one, and which way along the endplate is forward.
    post_inf, post_sup, forward = (2, 1, -1.0) if anterior_side == "left" else (3, 0, 1.0)
    for i in range(n - 1):
        if missing_before is not None and missing_before[i + 1]:
            continue
        lower = c[i + 1]
        endplate = lower[1] - lower[0]
        width = float(np.linalg.norm(endplate))
        if width == 0:
            continue
        shift = float(np.dot(c[i][post_inf] - lower[post_sup], endplate / width))
        out[i] = 100.0 * forward * shift / width
    return out


def measure_spine(
    mask: np.ndarray,
    view: str,
    *,
    name: str = "mask",
    anchor: str = "S1",
    anchor_end: str = "bottom",
    levels: Sequence[str] = LEVELS,
    gap_ratio: float = 1.6,
    anterior_side: str = "left",
    h_fraction: float = 0.3,
    min_area_fraction: float = 0.2,
) -> SpineMeasurement:
    """Measure one vertebra mask: bodies, levels, per-body geometry and the whole-spine angles.

    Genant grades, anterior/posterior ratios, listhesis and lordosis are measured on LAT only; the Cobb angle and
    the three regional Cobb angles on AP only. Everything else is measured on both.

    Args:
        mask: (H, W) binary vertebra mask (``Ap_Vertebra`` or ``Lat_Vertebra``).
        view: ``"AP"`` or ``"LAT"``.
        name: the file or case named in error messages.
        anchor: see :func:`~spine_monai.measure.levels.assign_levels`.
        anchor_end: see :func:`~spine_monai.measure.levels.assign_levels`.
        levels: see :func:`~spine_monai.measure.levels.assign_levels`.
        gap_ratio: see :func:`~spine_monai.measure.levels.assign_levels`.
        anterior_side: on LAT, the side of the image the patient faces.
        h_fraction: see :func:`~spine_monai.measure.instances.separate_instances`.
        min_area_fraction: see :func:`~spine_monai.measure.instances.separate_instances`.

    Returns:
        the measurements.

    Raises:
        DataError: when the mask is empty, degenerate, or holds fewer than two bodies.
        ValueError: for an unknown view or anterior side, or a bad level anchor.
    """
    view = view.upper()
    if view not in ("AP", "LAT"):
        raise ValueError(f"view must be 'AP' or 'LAT', got {view!r}")
    if anterior_side not in ("left", "right"):
        raise ValueError(f"anterior_side must be 'left' or 'right', got {anterior_side!r}")
    found = separate_instances(mask, h_fraction=h_fraction, min_area_fraction=min_area_fraction, name=name)
    if len(found.instances) < 2:
        raise DataError(name, "found only 1 vertebral body; a spine measurement needs at least 2")
    named = assign_levels(
        [i.position for i in found.instances], anchor=anchor, anchor_end=anchor_end, levels=levels, gap_ratio=gap_ratio
    )
    geometries = []
    for inst in found.instances:
        r0, c0, r1, c1 = inst.bbox
        region = found.labels[r0:r1, c0:c1] == inst.label
        try:
            g = vertebra_geometry(region, axis=inst.tangent)
        except ValueError as e:
            raise DataError(name, f"body {inst.label} of {len(found.instances)}: {e}") from e
        geometries.append(replace(g, corners=g.corners + np.array([c0, r0], dtype=float)))
    heights = np.array([g.heights for g in geometries])
    ratio_nb = neighbour_ratio(heights)
    n = len(geometries)
    nan = np.full(n, np.nan)
    ratio_ap = ratio_mp = loss = listhesis = nan
    grades: list[int | None] = [None] * n
    if view == "LAT":
        ant, post = (heights[:, 0], heights[:, 2]) if anterior_side == "left" else (heights[:, 2], heights[:, 0])
        # A body whose posterior height is 0 (a degenerate quadrilateral) has no ratio, not an infinite one.
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio_ap = np.where(post > 0, ant / post, np.nan)
            ratio_mp = np.where(post > 0, heights[:, 1] / post, np.nan)
        loss, _ = height_loss(heights, named.indices)
        grades = [genant_grade(x) for x in loss]
        listhesis = listhesis_offsets(np.array([g.corners for g in geometries]), named.missing_before, anterior_side)
    vertebrae = [
        VertebraMeasurement(
            instance=inst.label,
            level=named.names[k],
            missing_before=named.missing_before[k],
            area=inst.area,
            centroid=inst.centroid,
            geometry=geometries[k],
            ratio_anterior_posterior=float(ratio_ap[k]),
            ratio_middle_posterior=float(ratio_mp[k]),
            ratio_neighbours=float(ratio_nb[k]),
            height_loss=float(loss[k]),
            genant_grade=grades[k],
            listhesis_pct=float(listhesis[k]),
        )
        for k, inst in enumerate(found.instances)
    ]
    sup = [g.superior_angle for g in geometries]
    inf = [g.inferior_angle for g in geometries]
    extra: dict = {}
    notes: list[str] = []
    if view == "AP":
        angle, i, j = cobb_angle(sup, inf)
        extra = {
            "cobb_angle": angle,
            "cobb_levels": (named.names[i], named.names[j]),
            "cobb_instances": (i + 1, j + 1),
            "regional_cobb": regional_cobb_angles(np.array([g.corners for g in geometries]), found.labels.shape[0]),
        }
    else:
        try:
            angle, reference = lordosis_angle(named.names, sup, inf, anterior_side)
            extra = {"lordosis_angle": angle, "lordosis_reference": reference}
        except ValueError as e:
            notes.append(f"lordosis not measured: {e}")
    if named.missing:
        notes.append(f"levels inferred missing: {', '.join(named.missing)}")
    for count, what in (
        (found.rejected, "blobs away from the spine rejected"),
        (found.merged, "fragments merged into a neighbouring body"),
        (found.split, "bodies cut out of blobs spanning several"),
    ):
        if count:
            notes.append(f"{count} {what}")
    unnamed = named.names.count(None)
    if unnamed:
        notes.append(f"{unnamed} bodies beyond the level range {levels[0]}-{levels[-1]} left unnamed")
    return SpineMeasurement(
        view=view,
        vertebrae=vertebrae,
        labels=found.labels,
        curve=found.curve,
        missing_levels=named.missing,
        notes=notes,
        **extra,
    )
