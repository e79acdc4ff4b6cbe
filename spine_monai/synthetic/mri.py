"""Synthetic sagittal lumbar MRI (T1w and T2w) with 12-class MIDAS labels, in the case-folder layout.

Each case is a phantom built from one random anatomy, evaluated at the world position of every voxel, so the
labels and both contrasts agree exactly and any voxel order or (slightly oblique) slice prescription gives
the same patient. The anatomy runs along a lordotic spine curve: vertebral bodies T11-L5 with discs between
them, the sacrum, the spinal canal (thecal sac within epidural fat), posterior elements, nerve roots in the
foramina of parasagittal slices, paraspinal muscle with fatty streaks, subcutaneous and retroperitoneal fat,
psoas, the aorta, and unlabelled abdominal contents (background).

Geometry: ``shape`` is given in acquisition terms, (sagittal slices, superior-inferior rows,
anterior-posterior columns), over a fixed field of view of 48 x 240 x 240 mm (:data:`FOV_MM`): the default
(12, 224, 224) gives 4 mm slices and 1.07 mm pixels. The array is stored in the voxel order named by
``orientation`` (nibabel axis codes), ``"PIR"`` by default, the order of a sagittal DICOM series (columns
towards posterior, rows towards inferior, slices towards the right), with a small random obliquity, so a
consumer has to find the sagittal axis from the affine (see :func:`spine_monai.data.mri.sagittal_axis`).

Intensities are 16-bit-like (up to about 4000) with a smooth bias field, Rician noise and a random gain per
volume, stored as int16, so a learner must normalise each volume.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, map_coordinates
from scipy.spatial import cKDTree

from spine_monai.data.io import write_png_atomic
from spine_monai.data.mri import DEFAULT_CHANNELS, LABEL_NAME, MIDAS_LABELS, sagittal_axis

__all__ = [
    "DEFAULT_ORIENTATION",
    "DEFAULT_SHAPE",
    "FOV_MM",
    "SyntheticMRICase",
    "generate_mri_case",
    "sagittal_affine",
    "write_dicom_series",
    "write_mri_dataset",
]

GENERATOR_VERSION = 1
FOV_MM = (48.0, 240.0, 240.0)  # left-right slab, superior-inferior, anterior-posterior
DEFAULT_SHAPE = (12, 224, 224)  # sagittal slices, superior-inferior rows, anterior-posterior columns
DEFAULT_ORIENTATION = "PIR"
LEVELS = ("T11", "T12", "L1", "L2", "L3", "L4", "L5")

_L = MIDAS_LABELS
# Tissue codes beyond the label ids, for intensities only: unlabelled abdominal contents and cortical bone.
_VISCERA, _CORTEX = 12, 13
# Mean (T1w, T2w) signal per tissue code. T1w: fat bright, marrow intermediate-bright, disc intermediate-dark,
# muscle dark grey, CSF dark. T2w: CSF and disc nucleus bright, fat intermediate-high, bone intermediate, muscle
# dark. Flowing blood is a flow void on both.
_SIGNAL = {
    0: (0.0, 0.0),
    _L["vertebrae"]: (2000.0, 1250.0),
    _L["sacrum"]: (2100.0, 1300.0),
    _L["intervertebral_discs"]: (900.0, 1250.0),
    _L["spinal_cavity"]: (420.0, 2900.0),
    _L["subcutaneous_fat"]: (2800.0, 2250.0),
    _L["epidural_fat"]: (2550.0, 2050.0),
    _L["intramuscular_fat"]: (2400.0, 1900.0),
    _L["retroperitoneal_fat"]: (2650.0, 2150.0),
    _L["nerve_root"]: (1150.0, 950.0),
    _L["blood_vessels"]: (300.0, 220.0),
    _L["muscle"]: (1050.0, 620.0),
    _VISCERA: (1450.0, 1650.0),
    _CORTEX: (380.0, 300.0),
}
_NUCLEUS_T2 = 2800.0
_LETTERS = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


@dataclass
class SyntheticMRICase:
    """One generated case, in the voxel order of its affine.

    Attributes:
        images: channel name -> int16 array.
        label: uint8 array of MIDAS class ids.
        affine: 4x4 voxel-to-RAS+ affine in mm, shared by the images and the label.
    """

    images: dict[str, np.ndarray]
    label: np.ndarray
    affine: np.ndarray


# --------------------------------------------------------------------------------------------------
# geometry


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    rot = np.eye(3)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    return rot


def sagittal_affine(
    shape: Sequence[int] = DEFAULT_SHAPE,
    orientation: str = DEFAULT_ORIENTATION,
    tilt: float = 0.0,
    yaw: float = 0.0,
    centre: Sequence[float] = (0.0, 0.0, 0.0),
) -> tuple[tuple[int, int, int], np.ndarray]:
    """The array shape and affine of a sagittal acquisition over :data:`FOV_MM`.

    Args:
        shape: (sagittal slices, superior-inferior rows, anterior-posterior columns).
        orientation: nibabel axis codes of the array axes, one letter of each pair L/R, A/P, S/I (e.g. ``"PIR"``).
        tilt: obliquity in degrees about the left-right axis (the slices stay sagittal).
        yaw: obliquity in degrees about the superior-inferior axis.
        centre: world RAS+ position (mm) of the centre of the field of view.

    Returns:
        (array shape, 4x4 voxel-to-RAS+ affine).

    Raises:
        ValueError: for a malformed ``orientation`` or ``shape``.
    """
    orientation = orientation.upper()
    if len(orientation) != 3 or any(c not in _LETTERS for c in orientation):
        raise ValueError(f"orientation must be 3 axis codes such as 'PIR' or 'RAS', got {orientation!r}")
    if sorted(_LETTERS[c][0] for c in orientation) != [0, 1, 2]:
        raise ValueError(f"orientation {orientation!r} must name each of L/R, A/P and S/I once")
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (slices, rows, columns) of positive sizes, got {tuple(shape)}")
    counts = (int(shape[0]), int(shape[2]), int(shape[1]))  # along x (L-R), y (A-P), z (S-I)
    spacing = [FOV_MM[0] / counts[0], FOV_MM[2] / counts[1], FOV_MM[1] / counts[2]]
    directions = np.zeros((3, 3))
    array_shape = []
    for i, letter in enumerate(orientation):
        axis, sign = _LETTERS[letter]
        directions[axis, i] = sign * spacing[axis]
        array_shape.append(counts[axis])
    affine = np.eye(4)
    affine[:3, :3] = _rotation(2, yaw) @ _rotation(0, tilt) @ directions
    affine[:3, 3] = np.asarray(centre, dtype=float) - affine[:3, :3] @ ((np.array(array_shape) - 1) / 2.0)
    return (array_shape[0], array_shape[1], array_shape[2]), affine


@dataclass
class _Anatomy:
    """One patient, in mm relative to the centre of the field of view (x right, y anterior, z superior)."""

    x_mid: float
    curve: np.ndarray  # (n, 2) points (y, z) of the spine axis at arc lengths ``arc``
    tangent: np.ndarray
    normal: np.ndarray  # towards posterior
    arc: np.ndarray
    tops: np.ndarray  # arc length of each level's superior endplate
    heights: np.ndarray
    discs: np.ndarray  # height of the disc below each level (the last is L5/S1)
    depths: np.ndarray
    widths: np.ndarray  # half-widths left-right
    marrow: np.ndarray  # per-level marrow signal factor
    sacrum_top: float
    sacrum_length: float
    canal_half_depth: float
    canal_half_width: float
    epidural: float
    spinous_length: float
    muscle_extra: float
    fat_back: float
    retro: float
    wall_front: float
    wall_fat: float
    wall_muscle: float
    aorta_x: float
    aorta_r: float
    streak_period: float
    phases: np.ndarray
    degenerate_disc: int


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
    n = len(LEVELS)
    size = rng.uniform(0.93, 1.07)
    heights = np.array([22.0, 23.5, 25.0, 26.0, 27.0, 27.5, 27.0]) * size * rng.uniform(0.97, 1.03, n)
    discs = np.array([6.0, 7.0, 8.0, 9.0, 10.0, 10.5, 9.5]) * rng.uniform(0.88, 1.12, n)
    depths = np.array([29.0, 30.0, 31.0, 32.5, 34.0, 35.0, 35.5]) * size * rng.uniform(0.97, 1.03, n)
    widths = np.array([20.0, 21.0, 22.0, 23.0, 24.0, 25.0, 25.5]) * size * rng.uniform(0.97, 1.03, n)
    i_l1 = LEVELS.index("L1")
    tops = np.zeros(n)
    for i in range(i_l1 - 1, -1, -1):
        tops[i] = tops[i + 1] - discs[i] - heights[i]
    for i in range(i_l1 + 1, n):
        tops[i] = tops[i - 1] + heights[i - 1] + discs[i - 1]
    sacrum_top = tops[-1] + heights[-1] + discs[-1]
    sacrum_length = rng.uniform(95.0, 115.0)

    # Tangent angle from the downward vertical, positive towards posterior: lordosis bends the lumbar spine from
    # leaning forward at L1 to the sacral slope at S1; the sacrum then curves forward again.
    sacral_slope = math.radians(rng.uniform(32.0, 45.0))
    lordosis = math.radians(rng.uniform(40.0, 60.0))
    kyphosis = math.radians(rng.uniform(15.0, 30.0))
    arc = np.arange(tops[0] - 120.0, sacrum_top + sacrum_length + 150.0, 0.5)
    theta = np.where(
        arc < 0,
        sacral_slope - lordosis,
        np.where(
            arc <= sacrum_top,
            sacral_slope - lordosis + lordosis * arc / sacrum_top,
            sacral_slope - kyphosis * np.clip((arc - sacrum_top) / sacrum_length, 0, 1),
        ),
    )
    tangent = np.stack([-np.sin(theta), -np.cos(theta)], axis=1)
    normal = np.stack([-np.cos(theta), np.sin(theta)], axis=1)
    step = arc[1] - arc[0]
    curve = np.vstack([[0.0, 0.0], np.cumsum(0.5 * (tangent[1:] + tangent[:-1]) * step, axis=0)])
    l1 = int(np.argmin(np.abs(arc)))
    curve -= curve[l1]
    curve[:, 1] += rng.uniform(85.0, 102.0)  # L1's superior endplate sits near the top of the field of view

    anatomy = _Anatomy(
        x_mid=rng.uniform(-2.0, 2.0),
        curve=curve,
        tangent=tangent,
        normal=normal,
        arc=arc,
        tops=tops,
        heights=heights,
        discs=discs,
        depths=depths,
        widths=widths,
        marrow=rng.uniform(0.9, 1.1, n),
        sacrum_top=sacrum_top,
        sacrum_length=sacrum_length,
        canal_half_depth=rng.uniform(7.5, 9.0),
        canal_half_width=rng.uniform(10.5, 12.0),
        epidural=rng.uniform(1.3, 2.0),
        spinous_length=rng.uniform(26.0, 32.0),
        muscle_extra=rng.uniform(6.0, 16.0),
        fat_back=rng.uniform(9.0, 22.0),
        retro=rng.uniform(20.0, 28.0),
        wall_front=0.0,
        wall_fat=rng.uniform(10.0, 22.0),
        wall_muscle=rng.uniform(7.0, 11.0),
        aorta_x=-rng.uniform(14.0, 18.0),
        aorta_r=rng.uniform(5.0, 6.2),
        streak_period=rng.uniform(9.0, 13.0),
        phases=rng.uniform(0, 2 * math.pi, 8),
        degenerate_disc=int(rng.choice([-1, -1, n - 2, n - 1])),
    )
    # Place the back so that the skin lies inside the field of view, then the belly in front of the spine.
    z_in = (anatomy.curve[:, 1] > -125) & (anatomy.curve[:, 1] < 125)
    skin = anatomy.curve + (_skin_depth(anatomy, anatomy.arc, 24.0) + 2.0)[:, None] * anatomy.normal
    shift = -120.0 + rng.uniform(4.0, 14.0) - skin[z_in, 0].min()
    anatomy.curve[:, 0] += shift
    anatomy.wall_front = 120.0 - rng.uniform(4.0, 16.0)
    return anatomy


def _interp_levels(anatomy: _Anatomy, s: np.ndarray, values: np.ndarray, sacrum_value: float) -> np.ndarray:
    centres = np.append(anatomy.tops + anatomy.heights / 2, anatomy.sacrum_top + 20.0)
    return np.interp(s, centres, np.append(values, sacrum_value))


def _sacrum_t(anatomy: _Anatomy, s: np.ndarray) -> np.ndarray:
    return np.clip((s - anatomy.sacrum_top) / anatomy.sacrum_length, 0.0, 1.0)


def _posterior_wall(anatomy: _Anatomy, s: np.ndarray) -> np.ndarray:
    """Distance from the spine axis to the back of the bodies (or of the sacrum)."""
    t = _sacrum_t(anatomy, s)
    lumbar = _interp_levels(anatomy, s, anatomy.depths / 2, anatomy.depths[-1] / 2)
    return np.where(s > anatomy.sacrum_top, anatomy.depths[-1] / 2 * (1 - 0.6 * t), lumbar)


def _canal_half_depth(anatomy: _Anatomy, s: np.ndarray) -> np.ndarray:
    return anatomy.canal_half_depth * (1 - 0.6 * _sacrum_t(anatomy, s))


def _muscle_depth(anatomy: _Anatomy, s: np.ndarray, ax: np.ndarray | float) -> np.ndarray:
    """Distance from the spine axis to the back of the paraspinal muscles, which thin out over the sacrum."""
    t = _sacrum_t(anatomy, s)
    canal_back = _posterior_wall(anatomy, s) + 2 * _canal_half_depth(anatomy, s)
    return canal_back + (anatomy.spinous_length + 4.0 + anatomy.muscle_extra * np.minimum(ax, 25.0) / 25.0) * (
        1 - 0.55 * t
    )


def _skin_depth(anatomy: _Anatomy, s: np.ndarray, ax: np.ndarray | float) -> np.ndarray:
    """Distance from the spine axis to the skin of the back."""
    fat = anatomy.fat_back * (1 + 0.2 * np.sin(s / 45.0 + anatomy.phases[0])) + 12.0 * _sacrum_t(anatomy, s)
    return _muscle_depth(anatomy, s, ax) + fat


def _rounded_box(ds: np.ndarray, dd: np.ndarray, half_s, half_d, radius: float) -> np.ndarray:
    r = np.minimum(radius, np.minimum(half_s, half_d))
    out_s = np.maximum(np.abs(ds) - (half_s - r), 0.0)
    out_d = np.maximum(np.abs(dd) - (half_d - r), 0.0)
    return (out_s**2 + out_d**2 <= r**2) & (half_d > 0)


def _waves(u: np.ndarray, rng: np.random.Generator, count: int, wavelengths: tuple[float, float]) -> np.ndarray:
    """A smooth random field of unit-order amplitude: a sum of plane waves in random directions."""
    field = np.zeros(len(u), dtype=np.float32)
    for _ in range(count):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        k = 2 * math.pi / rng.uniform(*wavelengths)
        field += np.sin((u @ (k * direction)).astype(np.float32) + rng.uniform(0, 2 * math.pi))
    return field / math.sqrt(count / 2)


def _axis_coordinates(anatomy: _Anatomy, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Arc length along the spine axis and signed distance from it (positive posterior) of points (y, z).

    The nearest axis point is found on a 1 mm grid and interpolated: both coordinates are smooth near the spine.
    """
    tree = cKDTree(anatomy.curve)
    lo = np.floor([y.min(), z.min()]) - 2
    hi = np.ceil([y.max(), z.max()]) + 2
    gy, gz = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    grid = np.stack([gy.ravel(), gz.ravel()], axis=1)
    _, nearest = tree.query(grid)
    offset = grid - anatomy.curve[nearest]
    s_grid = anatomy.arc[nearest] + np.einsum("ij,ij->i", offset, anatomy.tangent[nearest])
    d_grid = np.einsum("ij,ij->i", offset, anatomy.normal[nearest])
    coords = np.stack([y - lo[0], z - lo[1]])
    s = map_coordinates(s_grid.reshape(gy.shape), coords, order=1)
    d = map_coordinates(d_grid.reshape(gy.shape), coords, order=1)
    return s, d


def _paint(anatomy: _Anatomy, u: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Label and tissue of each point ``u`` (N, 3), plus the per-point factors the contrasts need."""
    x = u[:, 0] - anatomy.x_mid
    ax = np.abs(x)
    y, z = u[:, 1], u[:, 2]
    s, d = _axis_coordinates(anatomy, y, z)
    n = len(LEVELS)
    level = np.clip(np.searchsorted(anatomy.tops, s, side="right") - 1, 0, n - 1)
    top, height, disc = anatomy.tops[level], anatomy.heights[level], anatomy.discs[level]
    depth, width = anatomy.depths[level], anatomy.widths[level]
    sl = s - top  # position below the level's superior endplate
    lumbar = (s >= anatomy.tops[0]) & (s < anatomy.sacrum_top)
    t = _sacrum_t(anatomy, s)
    wall = _posterior_wall(anatomy, s)
    cb = _canal_half_depth(anatomy, s)
    cw = anatomy.canal_half_width * (1 - 0.3 * t)
    canal_back = wall + 2 * cb

    tissue = np.zeros(len(u), dtype=np.uint8)
    nucleus = np.zeros(len(u), dtype=np.float32)
    marrow = np.ones(len(u), dtype=np.float32)

    # Soft tissue of the trunk: muscle then fat behind the spine, retroperitoneal fat in front of it, then the
    # abdomen and its wall.
    belly = anatomy.wall_front + 6.0 * np.cos(z / 90.0)
    inside = (d <= _skin_depth(anatomy, s, ax)) & (y <= belly)
    tissue[inside] = _VISCERA
    muscle_back = _muscle_depth(anatomy, s, ax)
    behind = inside & (d > wall - 1.0)
    tissue[behind & (d > muscle_back)] = _L["subcutaneous_fat"]
    muscle = behind & (d <= muscle_back)
    tissue[muscle] = _L["muscle"]
    # Fatty streaks run along the muscle fibres, i.e. along the spine.
    wobble = 0.25 * np.sin(s / 37.0 + anatomy.phases[1]) + 0.15 * np.sin(x / 11.0 + anatomy.phases[2])
    streaks = np.sin(2 * math.pi * (d / anatomy.streak_period + wobble)) + 0.35 * _waves(u, rng, 4, (20.0, 45.0))
    tissue[muscle & (streaks > 1.05)] = _L["intramuscular_fat"]
    retro = anatomy.retro * (1 + 0.15 * np.sin(s / 50.0 + anatomy.phases[3])) + 15.0 * t
    tissue[inside & (d <= wall - 1.0) & (d >= -wall - retro)] = _L["retroperitoneal_fat"]
    tissue[inside & (y > belly - anatomy.wall_fat - anatomy.wall_muscle)] = _L["muscle"]
    tissue[inside & (y > belly - anatomy.wall_fat)] = _L["subcutaneous_fat"]

    # Psoas grows from L1 down to the pelvis, lateral to the bodies.
    grow = np.clip(s / anatomy.sacrum_top, 0, 1) ** 0.7 * np.clip(1 - (s - anatomy.sacrum_top) / 40.0, 0, 1)
    psoas_x = (ax - (width + 2.0 + 4.0 * grow)) / (5.0 + 11.0 * grow)
    psoas = psoas_x**2 + ((d + 0.3 * wall) / (5.0 + 12.0 * grow)) ** 2
    tissue[inside & (grow > 0.05) & (psoas <= 1)] = _L["muscle"]
    # The aorta runs in front of the bodies, left of the midline, and divides at L4.
    split = anatomy.tops[LEVELS.index("L4")] + 0.4 * anatomy.heights[LEVELS.index("L4")]
    r = anatomy.aorta_r
    aorta = ((x - anatomy.aorta_x) / r) ** 2 + ((d + wall + r + 1.5) / r) ** 2 + (np.maximum(s - split, 0) / r) ** 2
    tissue[inside & (aorta <= 1)] = _L["blood_vessels"]

    # Spinal canal: the thecal sac (CSF and cauda equina) ends at S2; epidural fat around it fills the rest.
    canal_centre = wall + cb
    in_canal = (x / cw) ** 2 + ((d - canal_centre) / cb) ** 2 <= 1
    in_canal &= s < anatomy.sacrum_top + 0.85 * anatomy.sacrum_length
    sac_end = anatomy.sacrum_top + 0.3 * anatomy.sacrum_length
    sac_scale = np.sqrt(np.clip((sac_end - s) / 12.0, 0, 1))
    e = anatomy.epidural
    sac_w, sac_d = (cw - 2.5) * sac_scale, (cb - e) * sac_scale
    in_sac = (x / np.maximum(sac_w, 1e-3)) ** 2 + ((d - canal_centre + e) / np.maximum(sac_d, 1e-3)) ** 2 <= 1
    tissue[in_canal] = _L["epidural_fat"]
    tissue[in_canal & in_sac & (sac_scale > 0)] = _L["spinal_cavity"]

    # Posterior elements of each level (pedicles, foramen, articular pillars, laminae, spinous process).
    post = lumbar & (sl >= 0) & (sl < height + disc)
    lateral = (ax >= cw - 1.5) & (ax <= cw + 9.0) & ~in_canal
    pedicle = post & lateral & (d >= wall - 2) & (d <= canal_back + 1) & (sl >= 0.1 * height) & (sl <= 0.5 * height)
    foramen = post & lateral & (d >= wall - 1) & (d <= canal_back) & (sl > 0.5 * height)
    tissue[foramen] = _L["epidural_fat"]
    root = ((sl - 0.5 * height - 4.5) / 3.2) ** 2 + ((d - wall - 0.9 * cb) / 2.6) ** 2 <= 1
    tissue[foramen & root & (ax >= cw) & (ax <= cw + 10.0)] = _L["nerve_root"]
    facet_gap = np.abs(sl - height - 0.5 * disc) < 0.9
    pillar = post & (ax >= cw - 2) & (ax <= cw + 13) & (d >= canal_back - 1) & (d <= canal_back + 13) & ~facet_gap
    lamina = post & (ax >= 3) & (ax <= cw + 1) & (d >= canal_back - 1) & (d <= canal_back + 7)
    lamina &= (sl >= 0.3 * height) & (sl <= height + 0.3 * disc)
    slant = sl - 0.3 * height - 0.25 * (d - canal_back)
    spinous = post & (ax <= 3.5) & (d >= canal_back - 1) & (d <= canal_back + anatomy.spinous_length)
    spinous &= (slant >= 0) & (slant <= 0.55 * height)
    tissue[pedicle | pillar | lamina | spinous] = _L["vertebrae"]
    sacral = (s >= anatomy.sacrum_top) & (s <= anatomy.sacrum_top + anatomy.sacrum_length) & inside
    crest = sacral & (d >= canal_back - 1) & (((ax <= 4) & (d <= canal_back + 7)) | (d <= canal_back + 3.5))
    crest |= sacral & (ax > cw) & (d >= wall - 1) & (d <= canal_back + 3.5) & (ax <= 45)
    tissue[crest] = _L["sacrum"]

    # Discs bulge a little beyond the bodies, which are painted over them.
    nxt = np.minimum(level + 1, n - 1)
    disc_depth = np.where(level == n - 1, depth, (depth + anatomy.depths[nxt]) / 2) + 2.0
    disc_width = np.where(level == n - 1, width, (width + anatomy.widths[nxt]) / 2) + 1.0
    extent = disc_depth * np.sqrt(np.clip(1 - (ax / disc_width) ** 4, 0, 1))
    disc_centre_d = wall + 1.0 - extent / 2
    disc_centre_s = height + disc / 2
    in_disc = lumbar & _rounded_box(sl - disc_centre_s, d - disc_centre_d, disc / 2 + 2.5, extent / 2, 1.5)
    in_disc &= tissue != _L["nerve_root"]
    tissue[in_disc] = _L["intervertebral_discs"]
    q = ((sl - disc_centre_s) / (disc / 2)) ** 2 + ((d - disc_centre_d) / np.maximum(extent / 2, 1e-3)) ** 2
    q += (ax / disc_width) ** 2
    degenerate = np.where(level == anatomy.degenerate_disc, 0.35, 1.0)
    nucleus[in_disc] = (np.clip(1.4 - 1.6 * q, 0, 1) * degenerate)[in_disc]

    extent = depth * np.sqrt(np.clip(1 - (ax / width) ** 4, 0, 1))
    centre_d = depth / 2 - extent / 2
    in_body = lumbar & _rounded_box(sl - height / 2, d - centre_d, height / 2, extent / 2, 2.5)
    inner = np.minimum(height / 2 - np.abs(sl - height / 2), extent / 2 - np.abs(d - centre_d))
    tissue[in_body] = _L["vertebrae"]
    marrow[in_body] = anatomy.marrow[level][in_body]
    rim = in_body & (inner < 1.2)

    sacrum_depth = anatomy.depths[-1] * (1 - 0.6 * t)
    extent = sacrum_depth * np.sqrt(np.clip(1 - (ax / 48.0) ** 4, 0, 1))
    centre_s = anatomy.sacrum_top + anatomy.sacrum_length / 2
    in_sacrum = _rounded_box(s - centre_s, d - (sacrum_depth - extent) / 2, anatomy.sacrum_length / 2, extent / 2, 3.0)
    tissue[in_sacrum] = _L["sacrum"]
    rim |= in_sacrum & (np.abs(np.abs(d - (sacrum_depth - extent) / 2) - extent / 2) < 1.2)

    label = tissue.copy()
    label[label == _VISCERA] = 0
    tissue[rim] = _CORTEX
    return label, {"tissue": tissue, "nucleus": nucleus, "marrow": marrow}


# --------------------------------------------------------------------------------------------------
# cases


def generate_mri_case(
    seed: int,
    index: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    orientation: str = DEFAULT_ORIENTATION,
    channels: Sequence[str] = DEFAULT_CHANNELS,
) -> SyntheticMRICase:
    """Generate one case, deterministically from ``(seed, index)``.

    Args:
        seed: the dataset seed.
        index: the case's index; each case has its own random stream.
        shape: (sagittal slices, superior-inferior rows, anterior-posterior columns).
        orientation: nibabel axis codes of the stored voxel order.
        channels: contrasts to render, each ``"T1w"`` or ``"T2w"``.

    Returns:
        the images, label and affine.

    Raises:
        ValueError: for a channel other than T1w and T2w, or a malformed shape or orientation.
    """
    unknown = [c for c in channels if c not in ("T1w", "T2w")]
    if unknown:
        raise ValueError(f"the synthetic generator renders only T1w and T2w, not {unknown}")
    rng = np.random.default_rng([seed, index])
    centre = (rng.uniform(-5, 5), rng.uniform(-60, -25), rng.uniform(-40, 40))
    array_shape, affine = sagittal_affine(shape, orientation, rng.uniform(-5, 5), rng.uniform(-2.5, 2.5), centre)
    anatomy = _sample_anatomy(rng)
    idx = np.indices(array_shape, dtype=np.float64).reshape(3, -1)
    u = (affine[:3, :3] @ idx).T + (affine[:3, 3] - np.asarray(centre))
    label, extra = _paint(anatomy, u, rng)
    # The point spread blurs within the slice only.
    in_plane = [0.5] * 3
    in_plane[sagittal_axis(affine)] = 0.0
    texture = 1 + 0.05 * _waves(u, rng, 6, (12.0, 45.0))
    bowel = 1 + 0.18 * _waves(u, rng, 6, (10.0, 30.0))
    # Receive coils lie behind the patient: the signal fades anteriorly, with a gentle superior-inferior ramp.
    yn, zn = u[:, 1] / 120.0, u[:, 2] / 120.0
    bias = np.exp(-rng.uniform(0.2, 0.45) * yn + rng.uniform(-0.12, 0.12) * zn + rng.uniform(0, 0.1) * zn**2)
    tissue = extra["tissue"]
    # Both contrasts draw their random numbers whichever are kept, so a case does not depend on the channels asked for.
    images = {}
    for c, name in enumerate(("T1w", "T2w")):
        table = np.array([_SIGNAL[k][c] for k in range(len(_SIGNAL))]) * rng.uniform(0.92, 1.08, len(_SIGNAL))
        signal = table[tissue].astype(np.float32) * texture
        signal = np.where(tissue == _VISCERA, signal * bowel, signal)
        signal = np.where(tissue == _L["vertebrae"], signal * extra["marrow"], signal)
        if name == "T2w":
            signal = signal + (_NUCLEUS_T2 - table[_L["intervertebral_discs"]]) * extra["nucleus"]
        volume = gaussian_filter(signal.reshape(array_shape), in_plane) * bias.reshape(array_shape)
        sigma = rng.uniform(0.012, 0.025) * 2500.0
        noisy = np.hypot(volume + rng.normal(0, sigma, array_shape), rng.normal(0, sigma, array_shape))
        if name in channels:
            images[name] = np.clip(np.round(noisy * rng.uniform(0.7, 1.3)), 0, 32767).astype(np.int16)
    return SyntheticMRICase({c: images[c] for c in channels}, label.reshape(array_shape), affine)


# --------------------------------------------------------------------------------------------------
# writers


def _write_bytes(path: Path, data: bytes) -> None:
    """Write through a temporary file and a rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    # gzip with mtime 0 and no file name, so the same data gives the same bytes.
    _write_bytes(path, gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))


def _ds(value: float):
    from pydicom.valuerep import DSfloat

    # Decimal strings hold at most 16 characters.
    return DSfloat(float(value), auto_format=True)


def write_dicom_series(
    array: np.ndarray, affine: np.ndarray, folder: str | os.PathLike, series_seed: int | str, **tags
) -> list[Path]:
    """Write a 3D array as an MR DICOM series, one file per slice along the last axis.

    The inverse of :func:`spine_monai.data.mri.read_volume` on a DICOM folder: axis 0 runs along the columns,
    axis 1 down the rows. Reading the folder back gives the same array and affine when the last axis of
    ``affine`` points along the slice normal (row direction x column direction), as it does for ``"PIR"``;
    otherwise the reader returns the slices in the opposite order with the matching affine.

    Args:
        array: 3D array (columns, rows, slices), any real dtype; stored as 16-bit with a rescale slope and
            intercept that reproduce integer data exactly.
        affine: 4x4 voxel-to-RAS+ affine in mm.
        folder: destination folder, created if needed; files are named ``0001.dcm``, ``0002.dcm``, ...
        series_seed: makes the UIDs deterministic; series written with different seeds differ.
        **tags: DICOM keywords set on every file after the defaults (e.g. ``SeriesDescription="T1w"``).

    Returns:
        the written files.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 3:
        raise ValueError(f"a DICOM series needs a 3D array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("the array holds NaN or inf values")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    col_spacing, row_spacing = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    row_cos, col_cos = lps[:3, 0] / col_spacing, lps[:3, 1] / row_spacing
    normal = np.cross(row_cos, col_cos)
    thickness = abs(float(np.dot(lps[:3, 2], normal)))
    lo, hi = float(array.min()), float(array.max())
    if np.array_equal(array, np.round(array)) and hi - min(lo, 0.0) <= 65535:
        slope, intercept = 1.0, min(math.floor(lo), 0.0)
    else:
        slope, intercept = max((hi - lo) / 65535.0, 1e-12), lo
    stored = np.clip(np.round((array - intercept) / slope), 0, 65535).astype("<u2")

    def uid(*parts: object) -> str:
        return _uid(series_seed, *parts)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = uid("series")
    written = []
    for k in range(array.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = uid("instance", k)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{k + 1:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "MR"
        ds.PatientName = "synthetic"
        ds.PatientID = "synthetic"
        # The patient and study modules' type 2 attributes, present (if empty) in any PACS export.
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "", "", "", "", ""
        ds.StudyInstanceUID = uid("study")
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = uid("frame")
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.MRAcquisitionType = "2D"
        position = lps[:3, :3] @ np.array([0.0, 0.0, float(k)]) + lps[:3, 3]
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_cos, *col_cos)]
        ds.PixelSpacing = [_ds(row_spacing), _ds(col_spacing)]
        ds.SliceThickness = _ds(thickness)
        ds.SpacingBetweenSlices = _ds(thickness)
        ds.SliceLocation = _ds(np.dot(position, normal))
        ds.Rows, ds.Columns = int(array.shape[1]), int(array.shape[0])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = _ds(slope)
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleType = "US"
        for key, value in tags.items():
            setattr(ds, key, value)
        # pixel data are (Rows, Columns): the transpose of the (column, row) slice.
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        path = folder / f"{k + 1:04d}.dcm"
        _write_bytes(path, buffer.getvalue())
        written.append(path)
    return written


def _reorient(array: np.ndarray, affine: np.ndarray, axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    from nibabel import orientations as ornt

    transform = ornt.ornt_transform(ornt.io_orientation(affine), ornt.axcodes2ornt(tuple(axcodes)))
    out = np.ascontiguousarray(ornt.apply_orientation(array, transform))
    return out, affine @ ornt.inv_ornt_aff(transform, array.shape)


def _write_case(args: tuple) -> str:
    out, seed, index, shape, orientation, channels, as_dicom, slice_format = args
    case_id = f"case_{index:03d}"
    case = generate_mri_case(seed, index, shape, orientation, channels)
    folder = out / case_id
    if slice_format == "png":
        label, _ = _reorient(case.label, case.affine, "PIR")
        images = {c: _reorient(a, case.affine, "PIR")[0] for c, a in case.images.items()}
        for k in range(label.shape[2]):
            # On screen: rows run superior to inferior, columns anterior to posterior.
            slice_dir = folder / f"slice_{k:02d}"
            for c, volume in images.items():
                write_png_atomic(slice_dir / f"{c}.png", Image.fromarray(volume[:, :, k].T.astype(np.uint16)))
            write_png_atomic(slice_dir / f"{LABEL_NAME}.png", Image.fromarray(label[:, :, k].T.astype(np.uint8)))
        return case_id
    for number, (c, volume) in enumerate(case.images.items(), start=1):
        if as_dicom:
            # A sagittal series: one file per sagittal slice, whatever the NIfTI voxel order.
            array, affine = _reorient(volume, case.affine, "PIR")
            write_dicom_series(
                array,
                affine,
                folder / c,
                f"{seed}:{index}:{c}",
                SeriesDescription=c,
                SeriesNumber=number,
                PatientID=case_id,
                StudyInstanceUID=_uid(seed, index, "study"),
                FrameOfReferenceUID=_uid(seed, index, "frame"),
            )
        else:
            _write_nifti(folder / f"{c}.nii.gz", volume, case.affine)
    _write_nifti(folder / f"{LABEL_NAME}.nii.gz", case.label, case.affine)
    return case_id


def _uid(*parts: object) -> str:
    """A DICOM UID that depends only on ``parts``."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def write_mri_dataset(
    out: str | os.PathLike,
    cases: int,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    dicom_cases: int = 0,
    slice_format: str | None = None,
    workers: int | None = None,
    orientation: str = DEFAULT_ORIENTATION,
    channels: Sequence[str] = DEFAULT_CHANNELS,
) -> dict:
    """Write a synthetic MRI dataset in the case-folder layout of :mod:`spine_monai.data.mri`.

    Each case ``case_<nnn>/`` holds ``T1w.nii.gz``, ``T2w.nii.gz`` and ``label.nii.gz`` (uint8 class ids),
    sharing one affine.

    Args:
        out: destination folder; it must be new or empty.
        cases: number of cases (one patient each).
        seed: dataset seed; the same seed gives byte-identical files.
        shape: (sagittal slices, superior-inferior rows, anterior-posterior columns) over :data:`FOV_MM`.
        dicom_cases: the first this many cases store each channel as a DICOM MR series folder ``<channel>/``
            (one file per sagittal slice, voxel order ``PIR``) instead of NIfTI; the label stays NIfTI.
        slice_format: ``"png"`` to write every sagittal slice as its own case ``case_<nnn>/slice_<kk>/`` with
            16-bit ``<channel>.png`` and an 8-bit ``label.png``, shown superior up and anterior left.
        workers: processes to use; defaults to the CPU count (at most 8).
        orientation: nibabel axis codes of the NIfTI voxel order (``"PIR"``, ``"RAS"``, ``"LPS"``, ...).
        channels: contrasts to write, from ``("T1w", "T2w")``.

    Returns:
        a description of what was written: generator, seed, shape, orientation, spacing, label map, case ids.

    Raises:
        FileExistsError: when ``out`` exists and is not empty.
        ValueError: for invalid arguments.
    """
    if cases < 1:
        raise ValueError(f"cases must be at least 1, got {cases}")
    if not 0 <= dicom_cases <= cases:
        raise ValueError(f"dicom_cases must be between 0 and the number of cases ({cases}), got {dicom_cases}")
    if slice_format not in (None, "png"):
        raise ValueError(f"slice_format must be None or 'png', got {slice_format!r}")
    if slice_format and dicom_cases:
        raise ValueError("choose either DICOM cases or PNG slices, not both")
    channels = tuple(channels)
    sagittal_affine(shape, orientation)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; choose a new or empty folder")
    jobs = [
        (out, seed, i, tuple(shape), orientation.upper(), channels, i < dicom_cases, slice_format) for i in range(cases)
    ]
    workers = workers or min(os.cpu_count() or 1, 8)
    if workers > 1 and cases > 1:
        with ProcessPoolExecutor(max_workers=min(workers, cases)) as pool:
            ids = list(pool.map(_write_case, jobs))
    else:
        ids = [_write_case(job) for job in jobs]
    spacing = [FOV_MM[i] / shape[i] for i in range(3)]
    return {
        "generator": "spine_monai.synthetic.mri",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "shape": list(shape),
        "shape_axes": "sagittal slices, superior-inferior, anterior-posterior",
        "spacing_mm": spacing,
        "orientation": orientation.upper(),
        "channels": list(channels),
        "label_map": dict(MIDAS_LABELS),
        "dicom_cases": ids[:dicom_cases],
        "slice_format": slice_format,
        "cases": ids,
    }
