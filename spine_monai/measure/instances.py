"""Vertebral body instances from a binary vertebra mask, ordered along the spine.

Touching bodies (a predicted mask that bridges a thin disc, or overlapping corners) are separated with a
watershed of the distance transform, seeded by its h-maxima: a body's interior is a ridge of the distance
transform, a bridge between two bodies is a saddle, and ``h`` (a fraction of the typical body half-height)
decides how deep a saddle must be to split. Instances are then ordered by their arc length along a smooth
curve fitted through the centroids, so that a strongly bent spine (LAT lordosis, AP scoliosis) keeps its
anatomical order even where sorting by image row would not.

A predicted mask needs three more steps, each counted in :class:`Instances` so that a measurement can say what
was done:

* blobs away from the spine (on ribs, the pelvis or bowel gas) are rejected: the spine is the chain of bodies that
  lie within reach of one another, and a body of that chain must lie near a curve fitted through it;
* fragments of one body (a mask broken across a body) are merged with their neighbour when they lie much closer
  along the curve than the spine's spacing;
* a blob spanning two or more bodies (a mask that bridges a disc with no narrowing for the watershed to find) is
  cut across the curve at its narrowest sections, into as many bodies as the spine's spacing says it holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse.csgraph import connected_components
from scipy.stats import theilslopes
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
        rejected: blobs left out as lying away from the spine.
        merged: fragments merged into a neighbouring body.
        split: extra bodies cut out of blobs that spanned several.
    """

    labels: np.ndarray
    instances: list[VertebraInstance]
    curve: np.ndarray
    rejected: int = 0
    merged: int = 0
    split: int = 0


def separate_instances(
    mask: np.ndarray,
    *,
    h_fraction: float = 0.3,
    min_area_fraction: float = 0.2,
    min_area_px: int = 16,
    max_fill_fraction: float = 0.5,
    curve_degree: int = 3,
    link: float = 1.5,
    off_curve: float = 1.5,
    merge_below: float = 0.5,
    split_above: float = 0.6,
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
        link: bodies whose bounding boxes are within this many body sizes (the square root of the median area)
            of each other are one chain; only the chain with the most area is the spine. ``inf`` keeps every blob.
        off_curve: a body of the chain whose centre lies further than this many body sizes from the curve fitted
            through the chain is rejected. ``inf`` keeps them.
        merge_below: neighbours closer along the curve than this fraction of the median spacing, and together no
            longer than a body, are fragments of one body and are merged; 0 never merges.
        split_above: a region longer along the curve than one body (a robust line through the regions' lengths
            along the spine) by more than this fraction of the spacing holds several bodies and is cut; ``inf``
            never cuts.
        name: the file or case named in error messages.

    Returns:
        the label image, the ordered instances, the fitted curve, and how many blobs were rejected, merged or cut.

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
    keep, rejected = _spine_chain(keep, link, off_curve, curve_degree)
    lut = np.zeros(int(labels.max()) + 1, dtype=np.int32)
    for k, p in enumerate(keep, start=1):
        lut[p.label] = k
    # The spine's bodies lie inside their joint bounding box, a fraction of the film: the clean-up below labels,
    # merges and measures regions many times over, so it works on that box with regionprops' offset, which keeps
    # every coordinate in the film's frame.
    top, left = min(p.bbox[0] for p in keep), min(p.bbox[1] for p in keep)
    bottom, right = max(p.bbox[2] for p in keep), max(p.bbox[3] for p in keep)
    box = (slice(top, bottom), slice(left, right))
    offset = np.array([top, left])
    spine = lut[labels[box]]
    spine, merged = _merge_fragments(spine, merge_below, curve_degree, offset)
    spine, split = _split_bridged(spine, split_above, curve_degree, offset)
    keep, curve, positions, tangents = _along_curve(spine, curve_degree, offset)
    centroids = np.array([[p.centroid[1], p.centroid[0]] for p in keep])
    lut = np.zeros(int(spine.max()) + 1, dtype=np.int32)
    instances = []
    for rank, (p, position, tangent) in enumerate(zip(keep, positions, tangents, strict=True), start=1):
        lut[p.label] = rank
        instances.append(
            VertebraInstance(
                label=rank,
                area=int(p.area),
                centroid=centroids[rank - 1],
                bbox=tuple(int(v) for v in (*(p.bbox[:2] + offset), *(p.bbox[2:] + offset))),
                position=float(position),
                tangent=tangent,
            )
        )
    labels = np.zeros(mask.shape, dtype=np.int32)
    labels[box] = lut[spine]
    return Instances(labels=labels, instances=instances, curve=curve, rejected=rejected, merged=merged, split=split)


def _along_curve(
    labels: np.ndarray, degree: int, offset: np.ndarray
) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """The regions of ``labels`` (a crop whose first pixel is at ``offset`` of the film) ordered along a curve through
    their centroids, with the curve, arc positions and tangents in that order; coordinates are the film's."""
    props = regionprops(labels, offset=offset)
    centroids = np.array([[p.centroid[1], p.centroid[0]] for p in props])
    curve, positions, tangents = fit_spine_curve(centroids, degree=degree)
    order = np.argsort(positions, kind="stable")
    return [props[k] for k in order], curve, positions[order], tangents[order]


def _distance_to(points: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """Each point's distance to the polyline ``curve``."""
    a, b = curve[:-1], curve[1:]
    ab = b - a
    t = np.einsum("pkj,kj->pk", points[:, None, :] - a[None], ab) / np.maximum((ab**2).sum(1), 1e-12)
    nearest = a[None] + np.clip(t, 0.0, 1.0)[..., None] * ab[None]
    return np.sqrt(((points[:, None, :] - nearest) ** 2).sum(-1)).min(axis=1)


def _spine_chain(props: list, link: float, off_curve: float, degree: int) -> tuple[list, int]:
    """The regions that make up the spine, and how many others were rejected."""
    if len(props) < 3:
        return props, 0
    centroids = np.array([[p.centroid[1], p.centroid[0]] for p in props])
    areas = np.array([p.area for p in props], dtype=float)
    size = float(np.sqrt(np.median(areas)))
    # Regions are near when their boxes are: a body that bridges several stays linked to its neighbours, which
    # its centre, far from theirs, would not be.
    boxes = np.array([p.bbox for p in props], dtype=float)
    gap_rows = np.maximum(boxes[:, None, 0] - boxes[None, :, 2], boxes[None, :, 0] - boxes[:, None, 2]).clip(0)
    gap_cols = np.maximum(boxes[:, None, 1] - boxes[None, :, 3], boxes[None, :, 1] - boxes[:, None, 3]).clip(0)
    _, chain = connected_components(np.hypot(gap_rows, gap_cols) <= link * size, directed=False)
    best = max(set(chain.tolist()), key=lambda c: areas[chain == c].sum())
    inside = chain == best
    keep = inside.copy()
    for _ in range(5):
        if keep.sum() < 3:
            break
        curve, _, _ = fit_spine_curve(centroids[keep], degree=degree, weights=np.sqrt(areas[keep]))
        near = inside & (_distance_to(centroids, curve) <= off_curve * size)
        if (near == keep).all() or near.sum() < 2:
            break
        keep = near
    return [p for p, k in zip(props, keep, strict=True) if k], int((~keep).sum())


def _lengths(props: list) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each region's length along the spine, and its pixels' coordinates along it (about its centre).

    The spine's direction at a region is the chord between its neighbours' centres rather than the curve's
    tangent, which a polynomial bends at the ends of the spine.
    """
    centres = np.array([[p.centroid[1], p.centroid[0]] for p in props])
    along = []
    for k, p in enumerate(props):
        chord = centres[min(k + 1, len(props) - 1)] - centres[max(k - 1, 0)]
        direction = chord / max(float(np.linalg.norm(chord)), 1e-9)
        xy = np.column_stack([p.coords[:, 1], p.coords[:, 0]]).astype(float)
        along.append((xy - xy.mean(0)) @ direction)
    return np.array([a.max() - a.min() + 1.0 for a in along]), along


def _body_length(positions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The length one body has at each position: a robust (Theil-Sen) line through the regions' lengths, since
    bodies grow steadily down the spine and regions that bridge several are the outliers above it."""
    if len(lengths) < 3:
        return np.full(len(lengths), float(np.median(lengths)))
    slope, intercept, _, _ = theilslopes(lengths, positions)
    return np.maximum(intercept + slope * positions, 1.0)


def _merge_fragments(labels: np.ndarray, below: float, degree: int, offset: np.ndarray) -> tuple[np.ndarray, int]:
    """Merge neighbours that lie much closer along the curve than the spacing, when together they are no longer
    than one body."""
    merged = 0
    while below > 0 and labels.max() >= 4:
        props, _, positions, _ = _along_curve(labels, degree, offset)
        steps = np.diff(positions)
        lengths, along = _lengths(props)
        body = _body_length(positions, lengths)
        spacing = float(np.median(steps))
        candidates = []
        for k, step in enumerate(steps):
            # The pair's extent along the upper one's tangent: from the top of one to the bottom of the other.
            extent = max(along[k].max(), step + along[k + 1].max()) - min(along[k].min(), step + along[k + 1].min())
            if step < below * spacing and extent <= 1.25 * max(body[k], body[k + 1]):
                candidates.append((step, k))
        if not candidates:
            break
        _, k = min(candidates)
        labels = np.where(labels == props[k + 1].label, props[k].label, labels)
        merged += 1
    return labels, merged


def _split_bridged(labels: np.ndarray, above: float, degree: int, offset: np.ndarray) -> tuple[np.ndarray, int]:
    """Cut regions that are longer along the curve than one body by a good part of the spacing."""
    if not np.isfinite(above) or labels.max() < 4:
        return labels, 0
    props, _, positions, _ = _along_curve(labels, degree, offset)
    lengths, along = _lengths(props)
    body = _body_length(positions, lengths)
    # Spacing from the bodies that are one body long: a disc is about a quarter of the spacing.
    single = lengths <= 1.3 * body
    steps = np.diff(positions)
    pairs = single[:-1] & single[1:]
    ratio = float(np.median(steps[pairs] / body[:-1][pairs])) if pairs.any() else 1.3
    out = labels.copy()
    next_label = int(labels.max()) + 1
    split = 0
    for k, (p, t) in enumerate(zip(props, along, strict=True)):
        spacing = ratio * body[k]
        if lengths[k] <= body[k] + above * spacing:
            continue
        pieces = 1 + int(round((lengths[k] - body[k]) / spacing))
        # The narrowest section near each expected cut: a disc the mask bridged is thinner than a body.
        lo = t.min()
        bins = np.bincount(np.floor(t - lo).astype(int))
        cuts = []
        for j in range(1, pieces):
            centre = lengths[k] * j / pieces
            a, b = int(max(1, centre - 0.3 * spacing)), int(min(len(bins) - 1, centre + 0.3 * spacing))
            cuts.append(lo + (a + int(np.argmin(bins[a : b + 1])) if b >= a else centre))
        piece = np.searchsorted(np.array(cuts), t)
        rows, cols = (p.coords - offset).T
        for j in range(1, pieces):
            out[rows[piece == j], cols[piece == j]] = next_label
            next_label += 1
            split += 1
    return out, split


def fit_spine_curve(
    points: np.ndarray, degree: int = 3, samples: int = 400, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit a smooth curve through body centroids and project each centroid onto it.

    The curve is a polynomial of the offset across the centroids' principal axis as a function of the position
    along it, so it follows S-shaped and strongly bent spines as long as they do not fold back on themselves.

    Args:
        points: ``(n, 2)`` centroids ``[x, y]``.
        degree: polynomial degree; at most ``n - 1`` is used.
        samples: points sampled along the curve.
        weights: per point, how much its offset from the curve counts in the fit (for instance the square root
            of its area, so that a large body outweighs a speck); equal by default.

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
    poly = np.polynomial.Polynomial.fit(t, r, deg=min(degree, n - 1), w=weights)
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
