"""Level names for ordered vertebral bodies, counted from an anchor, with missing bodies inferred from gaps.

On the ELL888 films the lowest segmented body is S1, so the default counts upward from it: S1, L5, L4, ... T1.
Where the sacrum is not segmented the anchor is the lowest lumbar body (``anchor="L5"``); where only the top
of the film is reliable, a top anchor counts downward (``anchor="T12", anchor_end="top"``). A body missing
from the mask leaves a gap along the spine about twice the local spacing between centroids; such a gap skips
one level name (two for a gap about three times the spacing, and so on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["LEVELS", "LevelAssignment", "assign_levels"]

LEVELS: tuple[str, ...] = tuple(f"T{i}" for i in range(1, 13)) + tuple(f"L{i}" for i in range(1, 6)) + ("S1",)


@dataclass(frozen=True)
class LevelAssignment:
    """Result of :func:`assign_levels`, one entry per body in spine order (top to bottom).

    Args:
        names: the level name, or None for a body beyond the ends of ``levels``.
        indices: the body's index into ``levels`` (may fall outside it, then its name is None).
        missing_before: how many levels were inferred missing between this body and the one above it.
        missing: the names of all skipped levels, top to bottom.
        spacing: median distance between consecutive bodies along the spine, in pixels.
    """

    names: list[str | None]
    indices: list[int]
    missing_before: list[int]
    missing: list[str]
    spacing: float

    @property
    def gaps(self) -> list[bool]:
        """Per body: True when at least one level is missing just above it."""
        return [m > 0 for m in self.missing_before]


def assign_levels(
    positions: Sequence[float],
    *,
    anchor: str = "S1",
    anchor_end: str = "bottom",
    levels: Sequence[str] = LEVELS,
    gap_ratio: float = 1.6,
    window: int = 3,
) -> LevelAssignment:
    """Name ordered bodies by counting from an anchor, skipping a level at each abnormally long gap.

    Each spacing is compared with the median of the other spacings within ``window`` places of it, rather
    than the spine's overall median, because bodies and discs grow from T1 to S1 (a missing T2 is a short
    gap by lumbar standards).

    Args:
        positions: each body's arc length along the spine, sorted from top to bottom.
        anchor: the level of the body at ``anchor_end``.
        anchor_end: ``"bottom"`` (the lowest body is ``anchor``, counting upward) or ``"top"``.
        levels: level names from top to bottom; ``anchor`` must be one of them.
        gap_ratio: a spacing more than this multiple of the local spacing holds missing levels, as many as
            ``round(spacing / local) - 1`` (at least one).
        window: how many neighbouring spacings on each side define the local spacing.

    Returns:
        the names, indices, gaps and missing level names.

    Raises:
        ValueError: when ``anchor`` is not in ``levels``, ``anchor_end`` is unknown, or positions are not
            sorted.
    """
    levels = list(levels)
    if anchor not in levels:
        raise ValueError(f"anchor {anchor!r} is not one of the levels {', '.join(levels)}")
    if anchor_end not in ("bottom", "top"):
        raise ValueError(f"anchor_end must be 'bottom' or 'top', got {anchor_end!r}")
    pos = np.asarray(positions, dtype=float)
    if pos.size == 0:
        return LevelAssignment([], [], [], [], float("nan"))
    steps = np.diff(pos)
    if (steps < 0).any():
        raise ValueError("positions must be sorted from the top of the spine to the bottom")
    missing_before = [0] * len(pos)
    for k, step in enumerate(steps):
        others = np.delete(steps[max(0, k - window) : k + window + 1], min(k, window))
        local = float(np.median(others)) if others.size else float(step)
        if local > 0 and step > gap_ratio * local:
            missing_before[k + 1] = max(1, int(round(step / local)) - 1)
    offsets = np.cumsum(np.array(missing_before) + np.r_[0, np.ones(len(pos) - 1, dtype=int)])
    start = levels.index(anchor)
    if anchor_end == "bottom":
        indices = (start - (offsets[-1] - offsets)).tolist()
    else:
        indices = (start + offsets).tolist()
    names = [levels[i] if 0 <= i < len(levels) else None for i in indices]
    missing = [
        levels[j] for i, m in zip(indices, missing_before, strict=True) for j in range(i - m, i) if 0 <= j < len(levels)
    ]
    spacing = float(np.median(steps)) if steps.size else float("nan")
    return LevelAssignment(names, [int(i) for i in indices], missing_before, missing, spacing)
