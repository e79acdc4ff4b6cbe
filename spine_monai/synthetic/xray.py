"""Synthetic spine radiographs (AP and LAT) written in exactly the ELL888 layout.

The phantom is built from one spine model per patient and projected into both views, so that the two
views agree (a wedge fracture at L1 shows as anterior height loss on LAT and reduced height on AP). Masks are
rasterised from the same polygons that are painted into the image, and ``ground_truth.json`` records the
geometry those polygons came from, so measurements can be scored against exact values.

Coordinates in the ground truth are pixels of the written image, ``[x, y]`` with x to the right and y
down. Corners are listed as ``[superior-left, superior-right, inferior-right, inferior-left]`` of the
quadrilateral the body was drawn from; on LAT the patient faces left, so that is
``[superior-anterior, superior-posterior, inferior-posterior, inferior-anterior]``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from spine_monai.data.io import write_mask
from spine_monai.data.layout import CLASSES, STRUCTURES
from spine_monai.measure.geometry import genant_grade

__all__ = [
    "LEVELS",
    "Fracture",
    "SpineModel",
    "SyntheticCase",
    "generate_case",
    "parse_size",
    "sample_spine",
    "write_xray_dataset",
]

LEVELS: tuple[str, ...] = tuple(f"T{i}" for i in range(1, 13)) + tuple(f"L{i}" for i in range(1, 6)) + ("S1",)
FRACTURE_LEVELS: tuple[str, ...] = ("T11", "T12", "L1", "L2", "L3", "L4", "L5")
LISTHESIS_LEVELS: tuple[str, ...] = ("L3", "L4", "L5")
GENERATOR_VERSION = 1


@dataclass
class Fracture:
    """One deformity of a Damaged patient.

    Args:
        level: the level it affects; for a listhesis, the level that slipped over the one below.
        type: ``"wedge"`` (anterior height loss), ``"burst"`` (collapse of the whole body) or ``"listhesis"``.
        severity: anterior height loss (wedge), height loss (burst), or slip as a fraction of the endplate
            depth of the level below (listhesis).
    """

    level: str
    type: str
    severity: float

    def to_dict(self) -> dict:
        key = {"wedge": "anterior_height_loss", "burst": "height_loss", "listhesis": "slip_fraction"}[self.type]
        out = {"level": self.level, "type": self.type, key: round(self.severity, 4)}
        if self.type in ("wedge", "burst"):
            out["genant_grade"] = genant_grade(self.severity)
        return out


@dataclass
class SpineModel:
    """Patient anatomy shared by both views (lengths in pixels of the target image)."""

    levels: list[str]
    heights: np.ndarray
    ap_widths: np.ndarray
    lat_depths: np.ndarray
    discs: np.ndarray
    anterior_factor: np.ndarray
    fractures: list[Fracture] = field(default_factory=list)

    def fracture_at(self, level: str, kind: str) -> Fracture | None:
        for f in self.fractures:
            if f.level == level and f.type == kind:
                return f
        return None


@dataclass
class Body:
    """A vertebral body placed in a view: its quadrilateral, axis tilt and local frame."""

    level: str
    corners: np.ndarray  # (4, 2): superior-left, superior-right, inferior-right, inferior-left
    tilt: float  # radians; the body axis leans this far from vertical
    centre: np.ndarray
    width: float
    height_left: float
    height_right: float
    burst: float = 0.0

    @property
    def u(self) -> np.ndarray:
        return np.array([math.cos(self.tilt), -math.sin(self.tilt)])

    @property
    def v(self) -> np.ndarray:
        return np.array([math.sin(self.tilt), math.cos(self.tilt)])

    def to_world(self, u: float, v: float) -> np.ndarray:
        return self.centre + u * self.u + v * self.v


@dataclass
class SyntheticCase:
    """One generated patient: RGB images and masks per view, and the ground truth record."""

    cls: str
    images: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    truth: dict


# --------------------------------------------------------------------------------------------------
# geometry helpers


def _rounded_polygon(points: np.ndarray, radius: float, steps: int = 4) -> list[tuple[float, float]]:
    """Replace each vertex by a quadratic Bezier between points cut back ``radius`` along its two edges."""
    pts = np.asarray(points, dtype=float)
    n = len(pts)
    out: list[tuple[float, float]] = []
    for i in range(n):
        prev_p, p, next_p = pts[i - 1], pts[i], pts[(i + 1) % n]
        a, b = prev_p - p, next_p - p
        la, lb = np.linalg.norm(a), np.linalg.norm(b)
        r = min(radius, 0.45 * la, 0.45 * lb)
        if r <= 0.5:
            out.append((p[0], p[1]))
            continue
        p0, p2 = p + a / la * r, p + b / lb * r
        for t in np.linspace(0.0, 1.0, steps + 1):
            q = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p + t**2 * p2
            out.append((q[0], q[1]))
    return out


def _ellipse(centre: np.ndarray, a: float, b: float, angle: float, n: int = 28) -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    ca, sa = math.cos(angle), math.sin(angle)
    x = a * np.cos(t)
    y = b * np.sin(t)
    return list(zip(centre[0] + ca * x - sa * y, centre[1] + sa * x + ca * y, strict=True))


def _body_outline(body: Body, bulge_side: str | None = None) -> np.ndarray:
    """Outline of a body: its quadrilateral, with endplates pushed in (and the posterior wall out) if burst."""
    tl, tr, br, bl = body.corners
    if body.burst <= 0:
        return body.corners
    h_mid = 0.5 * (body.height_left + body.height_right)
    dip = 0.18 * body.burst * h_mid
    top_mid = 0.5 * (tl + tr) + dip * body.v
    bottom_mid = 0.5 * (bl + br) - dip * body.v
    pts = [tl, top_mid, tr]
    if bulge_side == "right":
        pts.append(0.5 * (tr + br) + 0.10 * body.burst * body.width * body.u)
    pts += [br, bottom_mid, bl]
    return np.array(pts)


def _segment_valid(upper: Body, lower: Body, min_gap: float) -> bool:
    """True when the disc between two bodies keeps a positive height on both sides."""
    axis = 0.5 * (upper.v + lower.v)
    axis /= np.linalg.norm(axis)
    left = float(np.dot(lower.corners[0] - upper.corners[3], axis))
    right = float(np.dot(lower.corners[1] - upper.corners[2], axis))
    return left > min_gap and right > min_gap


# --------------------------------------------------------------------------------------------------
# anatomy


def sample_spine(rng: np.random.Generator, damaged: bool, height: int) -> SpineModel:
    """Draw one patient's anatomy.

    Args:
        rng: the patient's random generator.
        damaged: whether to add at least one deformity (wedge, burst or listhesis).
        height: image height in pixels; lengths scale with it.

    Returns:
        the spine model shared by the AP and LAT views.
    """
    n = int(rng.integers(12, 18))
    levels = list(LEVELS[-n:])
    pos = np.linspace(0.0, 1.0, n)
    rel_h = (0.78 + 0.32 * pos) * rng.uniform(0.95, 1.05, n)
    rel_disc = (0.24 + 0.10 * pos[:-1]) * rng.uniform(0.9, 1.1, n - 1) * rel_h[:-1]
    span = rng.uniform(0.82, 0.88) * height
    scale = span / (rel_h.sum() + rel_disc.sum())
    heights = rel_h * scale
    discs = rel_disc * scale
    ap_widths = heights * (1.25 + 0.35 * pos) * rng.uniform(0.95, 1.05)
    lat_depths = heights * (1.1 + 0.25 * pos) * rng.uniform(0.95, 1.05)
    # Normal vertebrae are slightly wedged; keep it well under Genant grade 1 (20%).
    anterior_factor = 1.0 - rng.uniform(0.0, 0.08, n)
    spine = SpineModel(levels, heights, ap_widths, lat_depths, discs, anterior_factor)
    if damaged:
        spine.fractures = _sample_fractures(rng, levels)
        for f in spine.fractures:
            if f.type in ("wedge", "burst"):
                spine.anterior_factor[levels.index(f.level)] = 1.0
    return spine


def _sample_fractures(rng: np.random.Generator, levels: list[str]) -> list[Fracture]:
    count = 1 if rng.random() < 0.75 else 2
    fractures: list[Fracture] = []
    used: set[str] = set()
    while len(fractures) < count:
        kind = rng.choice(["wedge", "burst", "listhesis"], p=[0.55, 0.2, 0.25])
        candidates = LISTHESIS_LEVELS if kind == "listhesis" else FRACTURE_LEVELS
        choices = [lv for lv in candidates if lv in levels and lv not in used]
        if not choices:
            continue
        level = str(rng.choice(choices))
        severity = {
            "wedge": rng.uniform(0.25, 0.6),
            "burst": rng.uniform(0.3, 0.5),
            "listhesis": rng.uniform(0.15, 0.4),
        }[kind]
        fractures.append(Fracture(level, str(kind), float(severity)))
        used.add(level)
    return fractures


def _walk(
    tilts: np.ndarray,
    widths: np.ndarray,
    h_left: np.ndarray,
    h_right: np.ndarray,
    discs: np.ndarray,
    levels: list[str],
    top: np.ndarray,
) -> list[Body]:
    """Stack bodies down the spine: each sits one disc below the previous along their mean axis."""
    bodies: list[Body] = []
    centre = top + np.array([0.0, 0.25 * (h_left[0] + h_right[0])])
    for i, level in enumerate(levels):
        if i > 0:
            prev = bodies[-1]
            mid = 0.5 * (tilts[i - 1] + tilts[i])
            axis = np.array([math.sin(mid), math.cos(mid)])
            v_i = np.array([math.sin(tilts[i]), math.cos(tilts[i])])
            prev_bottom = prev.centre + 0.25 * (prev.height_left + prev.height_right) * prev.v
            centre = prev_bottom + discs[i - 1] * axis + 0.25 * (h_left[i] + h_right[i]) * v_i
        b = Body(level, np.zeros((4, 2)), float(tilts[i]), centre.copy(), float(widths[i]), h_left[i], h_right[i])
        w = b.width / 2
        b.corners = np.array(
            [
                b.to_world(-w, -h_left[i] / 2),
                b.to_world(w, -h_right[i] / 2),
                b.to_world(w, h_right[i] / 2),
                b.to_world(-w, h_left[i] / 2),
            ]
        )
        bodies.append(b)
    return bodies


def _shift(bodies: Sequence[Body], offset: np.ndarray) -> None:
    for b in bodies:
        b.centre = b.centre + offset
        b.corners = b.corners + offset


def _layout_ap(spine: SpineModel, rng: np.random.Generator, size: tuple[int, int]) -> tuple[list[Body], dict]:
    width, height = size
    n = len(spine.levels)
    heights = spine.heights.copy()
    widths = spine.ap_widths.copy()
    bursts = np.zeros(n)
    for i, level in enumerate(spine.levels):
        wedge = spine.fracture_at(level, "wedge")
        burst = spine.fracture_at(level, "burst")
        if wedge:
            heights[i] *= 1.0 - wedge.severity / 2  # the AP projection sees the mean of anterior and posterior
        if burst:
            heights[i] *= 1.0 - burst.severity
            widths[i] *= 1.0 + 0.3 * burst.severity
            bursts[i] = burst.severity
    for _ in range(50):
        cobb = rng.uniform(0.0, 40.0)
        waves = 1 if rng.random() < 0.6 else 2
        phase = rng.uniform(-0.3, 0.3)
        sign = rng.choice([-1.0, 1.0])
        s = np.linspace(0, 1, n)
        tilts_deg = sign * cobb / 2 * np.cos(math.pi * waves * s + phase) + rng.normal(0, 0.8, n)
        tilts = np.radians(tilts_deg)
        top = np.array([0.0, rng.uniform(0.04, 0.07) * height])
        bodies = _walk(tilts, widths, heights, heights, spine.discs, spine.levels, top)
        mean_x = np.mean([b.centre[0] for b in bodies])
        _shift(bodies, np.array([width * rng.uniform(0.47, 0.53) - mean_x, 0.0]))
        allc = np.concatenate([b.corners for b in bodies])
        inside = allc[:, 0].min() > 0.1 * width and allc[:, 0].max() < 0.9 * width and allc[:, 1].max() < 0.985 * height
        valid = all(_segment_valid(a, b, 0.2 * d) for a, b, d in zip(bodies, bodies[1:], spine.discs, strict=False))
        if inside and valid:
            break
    else:
        raise RuntimeError("could not place an AP spine inside the image; use a larger --size")
    for b, burst in zip(bodies, bursts, strict=True):
        b.burst = float(burst)
    tilt_deg = np.degrees([b.tilt for b in bodies])
    hi, lo = int(np.argmax(tilt_deg)), int(np.argmin(tilt_deg))
    upper, lower = sorted((hi, lo))
    truth = {
        "cobb_angle": round(float(tilt_deg[hi] - tilt_deg[lo]), 3),
        "cobb_levels": [spine.levels[upper], spine.levels[lower]],
        "vertebrae": [_vertebra_truth(b) for b in bodies],
    }
    return bodies, truth


def _layout_lat(spine: SpineModel, rng: np.random.Generator, size: tuple[int, int]) -> tuple[list[Body], dict]:
    width, height = size
    n = len(spine.levels)
    post = spine.heights.copy()
    ant = spine.heights * spine.anterior_factor
    depths = spine.lat_depths.copy()
    bursts = np.zeros(n)
    for i, level in enumerate(spine.levels):
        wedge = spine.fracture_at(level, "wedge")
        burst = spine.fracture_at(level, "burst")
        if wedge:
            ant[i] = spine.heights[i] * (1.0 - wedge.severity)
        if burst:
            ant[i] = post[i] = spine.heights[i] * (1.0 - burst.severity)
            depths[i] *= 1.0 + 0.2 * burst.severity
            bursts[i] = burst.severity
    idx = {lv: i for i, lv in enumerate(spine.levels)}
    i_l1 = idx["L1"]
    for attempt in range(50):
        # Tilt of each body's axis from vertical; positive leans posteriorly (to the right) going down.
        sacral_slope = rng.uniform(30.0, 45.0)
        # Lordosis tracks the sacral slope (LL ~ SS + 10 deg on average), which puts the apex near L3-L4.
        lordosis = float(np.clip(sacral_slope + rng.uniform(-5.0, 20.0), 20.0, 65.0)) * (0.97**attempt)
        kyphosis = rng.uniform(20.0, 45.0)
        tilts_deg = np.zeros(n)
        for i in range(n):
            if i >= i_l1:
                tilts_deg[i] = sacral_slope - lordosis + lordosis * ((i - i_l1) / 5.0) ** 1.5
            else:
                tilts_deg[i] = sacral_slope - lordosis + kyphosis * min(i_l1 - i, 10) / 10.0
        tilts_deg += rng.normal(0, 0.8, n)
        tilts = np.radians(tilts_deg)
        top = np.array([0.0, rng.uniform(0.04, 0.07) * height])
        bodies = _walk(tilts, depths, ant, post, spine.discs, spine.levels, top)
        for f in spine.fractures:
            if f.type == "listhesis":
                k = idx[f.level]
                below = bodies[k + 1]
                _shift(bodies[: k + 1], -f.severity * below.width * below.u)
        mean_x = np.mean([b.centre[0] for b in bodies])
        _shift(bodies, np.array([width * rng.uniform(0.40, 0.46) - mean_x, 0.0]))
        allc = np.concatenate([b.corners for b in bodies])
        tips = np.array([_lat_spinous_centre(b) for b in bodies])
        inside = (
            allc[:, 0].min() > 0.06 * width
            and tips[:, 0].max() + 0.5 * depths.max() < 0.97 * width
            and allc[:, 1].max() < 0.985 * height
        )
        valid = all(_segment_valid(a, b, 0.15 * d) for a, b, d in zip(bodies, bodies[1:], spine.discs, strict=False))
        if inside and valid:
            break
    else:
        raise RuntimeError("could not place a LAT spine inside the image; use a larger --size")
    for b, burst in zip(bodies, bursts, strict=True):
        b.burst = float(burst)
    l1, s1 = bodies[i_l1], bodies[idx["S1"]]
    truth = {
        "lordosis_angle": round(_endplate_angle(s1) - _endplate_angle(l1), 3),
        "lordosis_levels": ["L1", "S1"],
        "vertebrae": [_vertebra_truth(b, lateral=True) for b in bodies],
    }
    return bodies, truth


def _endplate_angle(body: Body) -> float:
    """Angle in degrees of the superior endplate, from anterior to posterior, counter-clockwise on screen."""
    d = body.corners[1] - body.corners[0]
    return math.degrees(math.atan2(-d[1], d[0]))


def _vertebra_truth(body: Body, lateral: bool = False) -> dict:
    out = {"level": body.level, "corners": np.round(body.corners, 2).tolist()}
    if lateral:
        tl, tr, br, bl = body.corners
        out["heights"] = {
            "anterior": round(float(np.linalg.norm(bl - tl)), 3),
            "middle": round(float(np.linalg.norm(0.5 * (bl + br) - 0.5 * (tl + tr))), 3),
            "posterior": round(float(np.linalg.norm(br - tr)), 3),
        }
    return out


def _lat_spinous_centre(body: Body) -> np.ndarray:
    d = body.width
    return body.to_world(0.5 * d + 0.85 * d, 0.30 * body.height_right)


# --------------------------------------------------------------------------------------------------
# rendering


class _Canvas:
    """Float image built from binary layers drawn with PIL, each added with its own intensity."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size
        self.image = np.zeros(size[::-1], dtype=np.float32)

    @staticmethod
    def layer(size: tuple[int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        img = Image.new("L", size, 0)
        return img, ImageDraw.Draw(img)

    def add(self, layer: Image.Image | np.ndarray, intensity: float | np.ndarray) -> np.ndarray:
        arr = (np.asarray(layer) > 0).astype(np.float32) if isinstance(layer, Image.Image) else layer
        self.image += arr * intensity
        return arr


def _torso_profile(width: int, height: int, centre: float, half_width: float, level: float) -> np.ndarray:
    x = (np.arange(width, dtype=np.float32) - centre) / half_width
    profile = level * np.sqrt(np.clip(1.0 - x**2, 0.0, 1.0))
    return np.broadcast_to(profile, (height, width)).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field_ = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field_ / (field_.std() + 1e-6)


def _finish(rng: np.random.Generator, image: np.ndarray, scale: float, texture_mask: np.ndarray) -> np.ndarray:
    """Trabecular texture, blur, uneven exposure, gamma, contrast and film grain; returns RGB uint8."""
    h, w = image.shape
    image = image + 0.035 * _smooth_noise(rng, (h, w), 1.2 * scale) * texture_mask
    image = gaussian_filter(image, rng.uniform(0.6, 1.4) * scale)
    exposure = 1.0 + 0.12 * _smooth_noise(rng, (max(h // 16, 2), max(w // 16, 2)), 1.5)
    image = image * np.asarray(Image.fromarray(exposure).resize((w, h), Image.BILINEAR))
    image = np.clip(image, 0.0, 1.0) ** rng.uniform(0.75, 1.35)
    image = image * rng.uniform(0.8, 1.1) + rng.uniform(-0.04, 0.06)
    grain = rng.uniform(0.012, 0.035)
    image = image + grain * gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 0.5 * scale)
    grey = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _render_ap(
    bodies: list[Body], rng: np.random.Generator, size: tuple[int, int]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    width, height = size
    scale = height / 576.0
    canvas = _Canvas(size)
    spine_x = float(np.mean([b.centre[0] for b in bodies]))
    canvas.image += 0.05 + _torso_profile(width, height, spine_x, 0.47 * width, rng.uniform(0.22, 0.32))

    thoracic = [b for b in bodies if b.level.startswith("T")]
    if thoracic:
        lung, draw = canvas.layer(size)
        y0 = 0.0
        y1 = float(thoracic[-1].corners[2:, 1].max())
        for side in (-1, 1):
            cx = spine_x + side * rng.uniform(0.2, 0.25) * width
            draw.ellipse([cx - 0.17 * width, y0 - 0.1 * height, cx + 0.17 * width, y1], fill=1)
        canvas.add(gaussian_filter(np.asarray(lung, dtype=np.float32), 6 * scale), -rng.uniform(0.08, 0.14))
        ribs, draw = canvas.layer(size)
        for b in thoracic:
            for side in (-1, 1):
                p0 = b.to_world(side * 0.5 * b.width, -0.2 * b.height_left)
                p1 = p0 + np.array([side * 0.22 * width, -0.03 * height])
                p2 = p0 + np.array([side * 0.38 * width, 0.12 * height])
                t = np.linspace(0, 1, 16)[:, None]
                curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
                draw.line([tuple(p) for p in curve], fill=1, width=max(2, int(0.3 * b.height_left)), joint="curve")
        canvas.add(ribs, rng.uniform(0.06, 0.1))

    s1 = bodies[-1]
    pelvis, draw = canvas.layer(size)
    for side in (-1, 1):
        c = s1.centre + np.array([side * 0.27 * width, 0.06 * height])
        draw.ellipse(
            [c[0] - 0.2 * width, c[1] - 0.12 * height, c[0] + 0.2 * width, c[1] + 0.2 * height],
            outline=1,
            width=max(3, int(10 * scale)),
        )
    canvas.add(pelvis, rng.uniform(0.08, 0.13))

    vert, dv = canvas.layer(size)
    rim, dr = canvas.layer(size)
    ped, dp = canvas.layer(size)
    ped_rim, dpr = canvas.layer(size)
    spin, ds = canvas.layer(size)
    trans, dt = canvas.layer(size)
    rim_w = max(1, round(2 * scale))
    for b in bodies:
        outline = _rounded_polygon(_body_outline(b), 0.14 * b.height_left)
        dv.polygon(outline, fill=1)
        dr.line(outline + outline[:1], fill=1, width=rim_w)
        h = b.height_left
        for side in (-1, 1):
            oval = _ellipse(
                b.to_world(side * 0.30 * b.width, -0.12 * h), 0.085 * b.width, 0.17 * h, b.tilt + math.pi / 2
            )
            dp.polygon(oval, fill=1)
            dpr.line(oval + oval[:1], fill=1, width=rim_w)
            if not b.level.startswith("T") and b.level != "S1":
                p_in = b.to_world(side * 0.45 * b.width, -0.05 * h)
                p_out = b.to_world(side * 0.95 * b.width, -0.12 * h)
                dt.line([tuple(p_in), tuple(p_out)], fill=1, width=max(2, int(0.16 * h)))
        sp = _ellipse(
            b.to_world(rng.normal(0, 0.02) * b.width, 0.18 * h), 0.22 * h, 0.065 * b.width, b.tilt + math.pi / 2
        )
        ds.polygon(sp, fill=1)
    canvas.add(trans, 0.08)
    body_mask = canvas.add(vert, rng.uniform(0.22, 0.3))
    canvas.add(rim, 0.1)
    canvas.add(ped, 0.05)
    canvas.add(ped_rim, rng.uniform(0.12, 0.18))
    canvas.add(spin, rng.uniform(0.1, 0.15))
    image = _finish(rng, canvas.image, scale, body_mask)
    masks = {
        "Ap_Vertebra": np.asarray(vert) > 0,
        "Ap_Pedicle": np.asarray(ped) > 0,
        "Ap_Spinous_Process": np.asarray(spin) > 0,
    }
    return image, masks


def _render_lat(
    bodies: list[Body], rng: np.random.Generator, size: tuple[int, int]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    width, height = size
    scale = height / 576.0
    canvas = _Canvas(size)
    canvas.image += 0.05 + _torso_profile(width, height, 0.52 * width, 0.46 * width, rng.uniform(0.2, 0.3))

    lumbar = [b for b in bodies if b.level.startswith("L")]
    gas, draw = canvas.layer(size)
    front = min(float(b.corners[:, 0].min()) for b in lumbar)
    for _ in range(int(rng.integers(5, 12))):
        r = rng.uniform(0.02, 0.06) * width
        cx = rng.uniform(0.1 * width, max(0.12 * width, front - r))
        cy = rng.uniform(lumbar[0].centre[1], lumbar[-1].centre[1])
        draw.ellipse([cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r], fill=1)
    canvas.add(gaussian_filter(np.asarray(gas, dtype=np.float32), 2 * scale), -rng.uniform(0.05, 0.09))

    thoracic = [b for b in bodies if b.level.startswith("T")]
    ribs, draw = canvas.layer(size)
    for b in thoracic[::2]:
        p0 = b.to_world(1.2 * b.width, -0.6 * b.height_right)
        p1 = p0 + np.array([-0.5 * width, 0.08 * height])
        draw.line([tuple(p0), tuple(p1)], fill=1, width=max(2, int(5 * scale)))
    canvas.add(ribs, 0.04)

    sacrum, draw = canvas.layer(size)
    s1 = bodies[-1]
    tri = [
        s1.corners[3],
        s1.corners[2],
        s1.to_world(0.7 * s1.width, 2.2 * s1.height_right),
        s1.to_world(0.1 * s1.width, 1.6 * s1.height_right),
    ]
    draw.polygon([tuple(p) for p in tri], fill=1)
    canvas.add(sacrum, rng.uniform(0.12, 0.18))

    vert, dv = canvas.layer(size)
    rim, dr = canvas.layer(size)
    disc, dd = canvas.layer(size)
    post_el, dpe = canvas.layer(size)
    spin, ds = canvas.layer(size)
    rim_w = max(1, round(2 * scale))
    for b in bodies:
        outline = _rounded_polygon(_body_outline(b, bulge_side="right"), 0.12 * min(b.height_left, b.height_right))
        dv.polygon(outline, fill=1)
        dr.line(outline + outline[:1], fill=1, width=rim_w)
        d, h = b.width, b.height_right
        if b.level != "S1":
            arch = [
                b.to_world(0.45 * d, -0.4 * h),
                b.to_world(0.5 * d, 0.05 * h),
                b.to_world(1.25 * d, 0.35 * h),
                b.to_world(1.3 * d, -0.15 * h),
            ]
            dpe.polygon([tuple(p) for p in arch], fill=1)
            sp = _ellipse(_lat_spinous_centre(b), 0.45 * d, 0.15 * h, b.tilt * 0.5 + math.radians(20))
            ds.polygon(sp, fill=1)
    for upper, lower in itertools.pairwise(bodies):
        quad = [upper.corners[3], upper.corners[2], lower.corners[1], lower.corners[0]]
        dd.polygon([tuple(p) for p in quad], fill=1)
    canvas.add(post_el, rng.uniform(0.07, 0.11))
    canvas.add(disc, 0.03)
    body_mask = canvas.add(vert, rng.uniform(0.2, 0.28))
    canvas.add(rim, 0.1)
    canvas.add(spin, rng.uniform(0.1, 0.15))
    image = _finish(rng, canvas.image, scale, body_mask)

    line_w = int(rng.integers(2, 5))
    lines = {}
    for name, (a, b_) in (("Lat_Anterior_Vertebral_Line", (0, 3)), ("Lat_Posterior_Vertebral_Line", (1, 2))):
        img, draw = canvas.layer(size)
        pts = [tuple(p) for body in bodies for p in (body.corners[a], body.corners[b_])]
        draw.line(pts, fill=1, width=line_w, joint="curve")
        lines[name] = np.asarray(img) > 0
    masks = {
        "Lat_Vertebra": np.asarray(vert) > 0,
        "Lat_Disk_Height": np.asarray(disc) > 0,
        **lines,
        "Lat_Spinous_Process": np.asarray(spin) > 0,
    }
    return image, masks


# --------------------------------------------------------------------------------------------------
# cases and datasets


def generate_case(seed: int, index: int, damaged: bool, size: tuple[int, int] = (384, 576)) -> SyntheticCase:
    """Generate one patient, deterministically from ``(seed, index)``.

    Args:
        seed: the dataset seed.
        index: the case's index in the dataset; each case has its own random stream.
        damaged: whether the patient has at least one deformity.
        size: (width, height) of both views, in pixels.

    Returns:
        the case's RGB images, masks and ground-truth record.
    """
    rng = np.random.default_rng([seed, index])
    spine = sample_spine(rng, damaged, size[1])
    ap_bodies, ap_truth = _layout_ap(spine, rng, size)
    lat_bodies, lat_truth = _layout_lat(spine, rng, size)
    ap_image, ap_masks = _render_ap(ap_bodies, rng, size)
    lat_image, lat_masks = _render_lat(lat_bodies, rng, size)
    cls = CLASSES[1] if damaged else CLASSES[0]
    truth = {
        "class": cls,
        "levels": spine.levels,
        "fractures": [f.to_dict() for f in spine.fractures],
        "AP": ap_truth,
        "LAT": lat_truth,
    }
    return SyntheticCase(cls, {"AP": ap_image, "LAT": lat_image}, {**ap_masks, **lat_masks}, truth)


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"WxH"`` (e.g. ``"384x576"``) into (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise ValueError(f"size must be WxH, e.g. 384x576; got {text!r}") from e
    if w < 128 or h < 192:
        raise ValueError(f"size {w}x{h} is too small for a spine phantom: use at least 128x192")
    if w > h:
        raise ValueError(f"size {w}x{h} is landscape: spine films are portrait (width < height)")
    return w, h


def _write_case(args: tuple[Path, int, int, bool, str, tuple[int, int]]) -> tuple[str, dict]:
    out, seed, index, damaged, patient, size = args
    case = generate_case(seed, index, damaged, size)
    case_dir = out / case.cls / patient
    for view in ("AP", "LAT"):
        view_dir = case_dir / view
        view_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(case.images[view], mode="RGB").save(view_dir / f"{view}.jpg", quality=92)
        for name in STRUCTURES[view]:
            write_mask(view_dir / f"{name}.png", case.masks[name])
    return f"{case.cls}/{patient}", case.truth


def write_xray_dataset(
    out: str | os.PathLike,
    cases: int,
    seed: int = 0,
    size: tuple[int, int] = (384, 576),
    damaged_fraction: float = 0.5,
    workers: int | None = None,
) -> dict:
    """Write a synthetic X-ray dataset in the ELL888 layout plus ``ground_truth.json``.

    Args:
        out: destination folder; it must not already hold a dataset.
        cases: number of patients.
        seed: dataset seed; the same seed gives byte-identical files.
        size: (width, height) of every image.
        damaged_fraction: fraction of patients in ``Damaged``.
        workers: processes to use; defaults to the CPU count (at most 8).

    Returns:
        the ground-truth document that was written.
    """
    if cases < 1:
        raise ValueError(f"--cases must be at least 1, got {cases}")
    if not 0.0 <= damaged_fraction <= 1.0:
        raise ValueError(f"--damaged-fraction must be in [0, 1], got {damaged_fraction}")
    out = Path(out)
    if (out / "ground_truth.json").exists():
        raise FileExistsError(f"{out} already holds a synthetic dataset (ground_truth.json); choose an empty folder")
    n_damaged = int(round(cases * damaged_fraction))
    order = np.random.default_rng(seed).permutation(cases)
    damaged_idx = set(order[:n_damaged].tolist())
    counters = {True: 0, False: 0}
    jobs = []
    for index in range(cases):
        damaged = index in damaged_idx
        counters[damaged] += 1
        jobs.append((out, seed, index, damaged, f"ID ({counters[damaged]})", size))
    workers = workers or min(os.cpu_count() or 1, 8)
    if workers > 1 and cases > 4:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_write_case, jobs, chunksize=max(1, cases // (4 * workers))))
    else:
        results = [_write_case(job) for job in jobs]
    document = {
        "generator": "spine_monai.synthetic.xray",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "size": list(size),
        "coordinates": "pixels [x, y], x right, y down; corners superior-left, superior-right, inferior-right, "
        "inferior-left (LAT faces left: superior-anterior first)",
        "cases": dict(results),
    }
    (out / "ground_truth.json").write_text(json.dumps(document, indent=1, sort_keys=True))
    return document
