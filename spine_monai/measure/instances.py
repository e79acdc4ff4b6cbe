"""Vertebral body instances from a binary vertebra mask, ordered along the spine.

Touching bodies (a predicted mask that bridges a thin disc, or overlapping corners) are separated with a
watershed of the distance transform, seeded by its h-maxima: a body's interior is a ridge of the distance
transform, a bridge between two bodies is a saddle, and ``h`` (a fraction of the typical body half-height)
decides how deep a saddle must be to split. Instances are then ordered by their arc length along a smooth
curve fitted through the centroids, so that a strongly bent spine (LAT lordosis, AP scoliosis) keeps its
anatomical order even where sorting by image row would not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import regionprops
from skimage.morphology import local_maxima, reconstruction
from skimage.segmentation import watershed

from spine_monai.errors import DataError

__all__ = ["Instances", "VertebraInstance", "fit_spine_curve", "separate_instances"]


@dataclass(frozen=True)
class VertebraInstance:
    """One vertebral body found in a mask.

    Args:
        label: its value in :attr:`Instances.labels` (1 for the top body, counting down the spine).
        area: pixels.
        centroid: ``[x, y]`` in image pixels.
        bbox: ``(row_min, col_min, row_max, col_max)``, max exclusive, as in ``skimage.measure.regionprops``.
        position: arc length along the spine curve from its top end, in pixels.
        tangent: unit ``[dx, dy]`` of the curve at the body, pointing down the spine.
    """

    label: int
    area: int
    centroid: np.ndarray
    bbox: tuple[int, int, int, int]
    position: float
    tangent: np.ndarray


@dataclass(frozen=True)
class Instances:
    """Result of :func:`separate_instances`.

    Args:
        labels: int32 (H, W) image, 0 for background and ``1..n`` for the bodies in spine order, top to bottom.
        instances: one record per body, in the same order.
        curve: ``(m, 2)`` samples ``[x, y]`` of the fitted spine curve, top to bottom.
    """

    labels: np.ndarray
    instances: list[VertebraInstance]
    curve: np.ndarray


def separate_instances(
    mask: np.ndarray,
    *,
    h_fraction: float = 0.3,
    min_area_fraction: float = 0.2,
    min_area_px: int = 16,
    max_fill_fraction: float = 0.5,
    curve_degree: int = 3,
    name: str = "mask",
) -> Instances:
    """Split a binary vertebra mask into ordered body instances.

    Args:
        mask: (H, W) array; non-zero is vertebra.
        h_fraction: watershed seeds are the extended maxima of the distance transform (peaks at least ``h``
            above the saddle to any higher peak), with ``h`` this fraction of the median half-height of the
            connected components. Two bodies joined by a bridge narrower than about ``(1 - h_fraction)`` times
            the smaller one's height are split; pixel ripples along one body's ridge are not.
        min_area_fraction: instances smaller than this fraction of the median instance area are specks and
            are dropped.
        min_area_px: instances smaller than this many pixels are always dropped.
        max_fill_fraction: a mask covering more than this fraction of the image is not a vertebra mask
            (an inverted or all-ones prediction).
        curve_degree: degree of the polynomial spine curve fitted through the centroids (lowered when there
            are few bodies).
        name: the file or case named in error messages.

    Returns:
        the label image, the ordered instances and the fitted curve.

    Raises:
        DataError: when the mask is not 2D, is empty, covers most of the image, or holds no body larger
            than ``min_area_px``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DataError(name, f"a vertebra mask must be 2D (H, W), got shape {mask.shape}")
    mask = mask != 0
    fill = float(mask.mean()) if mask.size else 0.0
    if fill == 0.0:
        raise DataError(name, "mask is empty: no vertebra pixels")
    if fill > max_fill_fraction:
        raise DataError(
            name, f"mask covers {100 * fill:.0f}% of the image: not a vertebra segmentation (inverted or all-ones?)"
        )
    eight = np.ones((3, 3), bool)
    components, _ = ndi.label(mask, structure=eight)
    # Each component is split in its own padded crop: the spine is a thin column of a large film, and the
    # grey reconstruction below sorts every pixel it is given.
    crops = []
    for k, box in enumerate(ndi.find_objects(components), start=1):
        piece = np.pad(components[box] == k, 1)
        if piece.sum() >= min_area_px:
            crops.append((box, piece, ndi.distance_transform_edt(piece)))
    if not crops:
        raise DataError(name, f"no vertebral body found: every component is smaller than {min_area_px} px")
    h = max(h_fraction * float(np.median([d.max() for _, _, d in crops])), 0.5)
    labels = np.zeros(mask.shape, dtype=np.int32)
    offset = 0
    for box, piece, distance in crops:
        # Seeds are the regional maxima of the h-dome-flattened distance map (the extended maxima). Unlike
        # skimage's h_maxima, which keeps every pixel tied at a body's peak value, this gives one connected
        # seed per body even when a tilted body's ridge peaks at several pixels far apart.
        flattened = reconstruction(np.clip(distance - h, 0.0, None), distance, method="dilation")
        markers, _ = ndi.label(local_maxima(flattened, connectivity=2) & piece, structure=eight)
        split = watershed(-distance, markers, mask=piece)[1:-1, 1:-1]
        inside = split > 0
        labels[box][inside] = split[inside] + offset
        offset += int(split.max())

    props = regionprops(labels)
    median_area = float(np.median([p.area for p in props])) if props else 0.0
    keep = [p for p in props if p.area >= max(min_area_px, min_area_fraction * median_area)]
    if not keep:
        raise DataError(name, f"no vertebral body found: every component is smaller than {min_area_px} px")
    centroids = np.array([[p.centroid[1], p.centroid[0]] for p in keep])
    curve, positions, tangents = fit_spine_curve(centroids, degree=curve_degree)
    order = np.argsort(positions, kind="stable")

    lut = np.zeros(int(labels.max()) + 1, dtype=np.int32)
    instances = []
    for rank, k in enumerate(order, start=1):
        p = keep[k]
        lut[p.label] = rank
        instances.append(
            VertebraInstance(
                label=rank,
                area=int(p.area),
                centroid=centroids[k],
                bbox=tuple(int(v) for v in p.bbox),
                position=float(positions[k]),
                tangent=tangents[k],
            )
        )
    return Instances(labels=lut[labels], instances=instances, curve=curve)


def fit_spine_curve(
    points: np.ndarray, degree: int = 3, samples: int = 400
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit a smooth curve through body centroids and project each centroid onto it.

    The curve is a polynomial of the offset across the centroids' principal axis as a function of the position
    along it, so it follows S-shaped and strongly bent spines as long as they do not fold back on themselves.

    Args:
        points: ``(n, 2)`` centroids ``[x, y]``.
        degree: polynomial degree; at most ``n - 1`` is used.
        samples: points sampled along the curve.

    Returns:
        ``(curve, positions, tangents)``: the sampled curve ``(samples, 2)`` from top to bottom, each point's
        arc length along it, and each point's unit tangent ``[dx, dy]`` pointing down the spine.
    """
    points = np.asarray(points, dtype=float)
    n = len(points)
    if n == 1:
        return points.copy(), np.zeros(1), np.array([[0.0, 1.0]])
    mean = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - mean, full_matrices=False)
    axis = vt[0] if vt[0][1] >= 0 else -vt[0]  # the spine runs down the film
    normal = np.array([-axis[1], axis[0]])
    t = (points - mean) @ axis
    r = (points - mean) @ normal
    poly = np.polynomial.Polynomial.fit(t, r, deg=min(degree, n - 1))
    margin = 0.02 * (t.max() - t.min())
    ts = np.linspace(t.min() - margin, t.max() + margin, samples)
    curve = mean + ts[:, None] * axis + poly(ts)[:, None] * normal
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    slope = poly.deriv()(ts)
    tangent = axis[None, :] + slope[:, None] * normal[None, :]
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    nearest = np.argmin(((points[:, None, :] - curve[None, :, :]) ** 2).sum(axis=2), axis=1)
    # Refine within the nearest sample's segment so that positions do not snap to the sampling step.
    along = np.einsum("ij,ij->i", points - curve[nearest], tangent[nearest])
    positions = arc[nearest] + along
    return curve, positions, tangent[nearest]
