"""The three regional Cobb angles of an AP film as the AASCE 2019 challenge scores them, and the challenge's SMAPE.

Each body contributes one direction: the line from the middle of its left side to the middle of its right side.
The largest angle between two bodies' directions is the major curve, between two end vertebrae. The other two
angles depend on the curve's shape, read from the endplate centres:

* a C-shaped spine (every endplate centre on one side of the chord from the first to the last): the angle between
  the top body and the upper end vertebra, and between the bottom body and the lower end vertebra;
* an S-shaped spine whose major curve lies in the upper half of the film: the largest angle between the upper end
  vertebra and any body above it, and between the lower end vertebra and any body below it;
* an S-shaped spine whose major curve lies in the lower half: the largest angle between the upper end vertebra
  and any body above it, and between that body and any body above it in turn.

The challenge reports these as proximal thoracic (the major angle), main thoracic and thoracolumbar/lumbar, in
that order, and so does :func:`regional_cobb_angles`. Angles are unsigned, in degrees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["REGIONAL_COBB", "RegionalCobb", "cobb_smape", "regional_cobb_angles"]

REGIONAL_COBB: tuple[str, ...] = ("proximal_thoracic", "main_thoracic", "thoracolumbar_lumbar")


@dataclass(frozen=True)
class RegionalCobb:
    """The three regional angles and the bodies that bound them.

    Args:
        angles: degrees, in :data:`REGIONAL_COBB` order.
        ends: per angle, the ``(upper, lower)`` indices of the two bodies it was measured between (0 is the top
            body).
        s_shaped: whether the endplate centres lie on both sides of the spine's chord.
    """

    angles: tuple[float, float, float]
    ends: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    s_shaped: bool

    def as_dict(self) -> dict[str, float]:
        return dict(zip(REGIONAL_COBB, self.angles, strict=True))


def _angle_matrix(directions: np.ndarray) -> np.ndarray:
    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    return np.degrees(np.arccos(np.clip(unit @ unit.T, -1.0, 1.0)))


def _largest(angles: np.ndarray, fixed: int, candidates: range) -> tuple[float, int]:
    idx = list(candidates)
    k = int(np.argmax(angles[fixed, idx]))
    return float(angles[fixed, idx[k]]), idx[k]


def _s_shaped(centres: np.ndarray) -> bool:
    """Whether the points lie on both sides of the line from the first to the last (its ends excluded)."""
    first, last = centres[0], centres[-1]
    d = last - first
    side = d[0] * (centres[1:-1, 1] - first[1]) - d[1] * (centres[1:-1, 0] - first[0])
    return bool((side > 0).any() and (side < 0).any())


def regional_cobb_angles(corners: np.ndarray, image_height: float) -> RegionalCobb:
    """Proximal thoracic, main thoracic and thoracolumbar/lumbar Cobb angles from the bodies' corners.

    Args:
        corners: ``(n, 4, 2)`` corners ``[x, y]`` of the bodies from top to bottom, superior-left, superior-right,
            inferior-right, inferior-left (the AASCE set has n = 17, T1 to L5).
        image_height: the film's height in pixels; it decides whether an S-shaped spine's major curve is upper or
            lower.

    Returns:
        the angles and their end bodies.

    Raises:
        ValueError: with fewer than two bodies, or corners that are not ``(n, 4, 2)``.
    """
    c = np.asarray(corners, dtype=float)
    if c.ndim != 3 or c.shape[1:] != (4, 2):
        raise ValueError(f"corners must be (n, 4, 2), got {c.shape}")
    n = len(c)
    if n < 2:
        raise ValueError("regional Cobb angles need at least two bodies")
    directions = 0.5 * (c[:, 1] + c[:, 2]) - 0.5 * (c[:, 0] + c[:, 3])
    angles = _angle_matrix(directions)
    upper, lower = np.unravel_index(int(np.argmax(np.triu(angles, 1))), angles.shape)
    upper, lower = int(upper), int(lower)
    major = float(angles[upper, lower])
    endplate_centres = np.stack([0.5 * (c[:, 0] + c[:, 1]), 0.5 * (c[:, 3] + c[:, 2])], axis=1).reshape(-1, 2)
    s_shaped = _s_shaped(endplate_centres)
    if not s_shaped:
        second, third = float(angles[0, upper]), float(angles[n - 1, lower])
        ends = ((upper, lower), (0, upper), (lower, n - 1))
    else:
        second, above = _largest(angles, upper, range(0, upper + 1))
        # The inferior endplate centres of the two end bodies, as the challenge's reference code reads them.
        lower_half = c[upper, 2:, 1].mean() + c[lower, 2:, 1].mean() >= image_height
        if not lower_half:
            third, below = _largest(angles, lower, range(lower, n))
            ends = ((upper, lower), (above, upper), (lower, below))
        else:
            third, top = _largest(angles, above, range(0, above + 1))
            ends = ((upper, lower), (above, upper), (top, above))
    return RegionalCobb(angles=(major, second, third), ends=ends, s_shaped=s_shaped)


def cobb_smape(predicted: Sequence[Sequence[float]], truth: Sequence[Sequence[float]]) -> float:
    """The AASCE 2019 score: per film, the summed absolute error of its angles over their summed values, averaged.

    Args:
        predicted: ``(films, angles)`` in degrees.
        truth: the same shape.

    Returns:
        the symmetric mean absolute percentage error, in percent; a film whose angles are all 0 in both counts as
        0 %.

    Raises:
        ValueError: when the shapes differ or there are no films.
    """
    p = np.asarray(predicted, dtype=float)
    t = np.asarray(truth, dtype=float)
    if p.shape != t.shape or p.ndim != 2 or len(p) == 0:
        raise ValueError(f"predicted and truth must be the same (films, angles) shape, got {p.shape} and {t.shape}")
    num = np.abs(p - t).sum(axis=1)
    den = (p + t).sum(axis=1)
    per_film = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(100.0 * per_film.mean())
