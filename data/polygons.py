"""Polygon (segment) geometry for the training pipeline: clipping, extents, warps, masks.

A polygon is float32 [k, 2] (x, y) vertices in pixels of the current image (normalised in the
dataset). Inside the pipeline every label row carries ``list[np.ndarray | None]`` beside it:
the polygon of a segment row, None for a box row (box rows keep the box-corner path, so a
box-only data set runs exactly as before). Boxes of polygon rows are always the polygon's
extent after clipping to the visible window: exact (the clipped polygon's vertices are where a
polygon's extremes are), so no resampling to many points is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Polygons = list  # list[np.ndarray | None], one entry per label row


def pack(polygons: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Polygons [k_i, 2] -> (all their vertices [sum k_i, 2], the counts k_i int64 [n]): the many
    few-point polygons of a sample are clipped, measured and warped in one numpy pass each."""
    lengths = np.array([len(p) for p in polygons], np.int64)
    points = np.concatenate(polygons) if len(polygons) else np.zeros((0, 2), np.float32)
    return points, lengths


def unpack(points: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """The inverse of ``pack``: one [k_i, 2] array (a view of ``points``) per polygon."""
    return np.split(points, np.cumsum(lengths)[:-1]) if len(lengths) else []


def _neighbours(lengths: np.ndarray, step: int) -> np.ndarray:
    """Index of each packed vertex's previous (``step`` -1) or next (+1) vertex in its own polygon."""
    ends = np.cumsum(lengths)
    starts = ends - lengths
    index = np.arange(ends[-1] if len(ends) else 0) + step
    full = lengths > 0
    if step < 0:
        index[starts[full]] = ends[full] - 1
    else:
        index[ends[full] - 1] = starts[full]
    return index


def _clip_half_plane(points: np.ndarray, lengths: np.ndarray, axis: int, bound: np.ndarray,
                     keep_above: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sutherland-Hodgman step on packed polygons: the part of each with x[axis] >= bound
    (``keep_above``) or <= bound (float32, one per vertex). Exact for any simple polygon (concave
    ones may keep zero-width bridges along the bound, which change neither the extent nor the mask)."""
    d = points[:, axis] - bound if keep_above else bound - points[:, axis]
    inside = d >= 0
    if inside.all():
        return points, lengths
    prev = _neighbours(lengths, -1)
    p_prev, d_prev = points[prev], d[prev]
    crossing = inside != inside[prev]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(crossing, d_prev / (d_prev - d), 0)
    cut = p_prev + (points - p_prev) * t[:, None]
    cut[:, axis] = np.where(crossing, bound, cut[:, axis])  # exactly on the bound, no rounding drift
    keep = np.stack([crossing, inside], 1)  # edge prev -> p emits its crossing first, then p if inside
    owner = np.repeat(np.arange(len(lengths)), lengths)
    counts = np.bincount(owner, weights=keep.sum(1), minlength=len(lengths)).astype(np.int64)
    return np.stack([cut, points], 1)[keep].astype(np.float32), counts


Window = tuple[float, float, float, float] | np.ndarray  # xyxy, or float [n, 4]: one per polygon (row)


def clip_packed(points: np.ndarray, lengths: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Packed polygons (``pack``) cut to the xyxy ``window`` (or each to its own); a polygon with
    nothing left has 0 vertices."""
    windows = np.broadcast_to(np.asarray(window, np.float32), (len(lengths), 4))
    for axis, column, above in ((0, 0, True), (0, 2, False), (1, 1, True), (1, 3, False)):
        points, lengths = _clip_half_plane(points, lengths, axis, np.repeat(windows[:, column], lengths), above)
    return points, lengths


def clip_polygon(p: np.ndarray, window: Window) -> np.ndarray:
    """Polygon ``p`` [k, 2] cut to the xyxy ``window``; [0, 2] when nothing is left."""
    return clip_packed(p, np.array([len(p)]), window)[0]


def extents(points: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """xyxy float32 [n, 4] boxes around packed polygons (zeros for an empty one)."""
    out = np.zeros((len(lengths), 4), np.float32)
    full = lengths > 0
    if full.any():
        starts = (np.cumsum(lengths) - lengths)[full]  # empty polygons own no vertices: segments stay exact
        out[full] = np.concatenate([np.minimum.reduceat(points, starts), np.maximum.reduceat(points, starts)], 1)
    return out


def extent(p: np.ndarray) -> np.ndarray:
    """xyxy float32 [4] box around polygon ``p`` [k, 2] (zeros for an empty polygon)."""
    return extents(p, np.array([len(p)]))[0]


def areas(points: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """float64 [n] areas enclosed by packed polygons (shoelace formula; 0 under 3 points)."""
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    following = _neighbours(lengths, 1)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    twice = np.bincount(owner, weights=x * y[following] - y * x[following], minlength=len(lengths))
    return np.where(lengths >= 3, 0.5 * np.abs(twice), 0.0)


def clip_rows(labels: np.ndarray, polygons: Polygons, window: Window) -> np.ndarray:
    """Cut each polygon row to ``window`` (xyxy, or float [n, 4] one per row) in place and write its
    extent into ``labels`` [n, 5] (cls, xyxy); box rows are left to the caller. Returns ``labels``."""
    rows = [i for i, p in enumerate(polygons) if p is not None]
    if rows:
        windows = np.asarray(window, np.float32)
        points, lengths = clip_packed(*pack([polygons[i] for i in rows]), windows[rows] if windows.ndim == 2 else windows)
        labels[rows, 1:5] = extents(points, lengths)
        for i, p in zip(rows, unpack(points, lengths), strict=True):
            polygons[i] = p
    return labels


def to_pixels(segments: Sequence[np.ndarray], w: float, h: float, pad_w: float = 0, pad_h: float = 0) -> Polygons:
    """Normalised segments (each [k, 2], [0, 2] for a box row) -> pixel polygons (None for box rows)."""
    scale, shift = np.array([w, h], np.float32), np.array([pad_w, pad_h], np.float32)
    return [s * scale + shift if len(s) else None for s in segments]


def warp_points(p: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Points [k, 2] through a 3x3 affine / perspective ``matrix``."""
    homogeneous = np.concatenate([p, np.ones((len(p), 1), p.dtype)], 1) @ matrix.T
    return (homogeneous[:, :2] / homogeneous[:, 2:3]).astype(np.float32)


def flip(polygons: Polygons, size: float, axis: int) -> Polygons:
    """Mirror polygons across the image (``axis`` 0: left-right, x -> size - x; 1: up-down)."""
    out = []
    for p in polygons:
        if p is not None:
            p = p.copy()
            p[:, axis] = size - p[:, axis]
        out.append(p)
    return out


def fill_mask(shape: tuple[int, int], polygons: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 [h, w] mask, 1 inside ``polygons`` (pixel vertices, sub-pixel precise), 0 elsewhere.

    OpenCV also fills the pixels its edges pass through, so the mask reaches up to 1 px past
    the outline (its extent is the polygon's extent within 1 px)."""
    mask = np.zeros(shape, np.uint8)
    shift = 4  # cv2 fixed point: vertices to 1/16 px
    pts = [np.round((p - 0.5) * (1 << shift)).astype(np.int32) for p in polygons if len(p) >= 3]
    if pts:  # -0.5: pixel (i, j) covers [i, i + 1); its centre is what fillPoly tests
        cv2.fillPoly(mask, pts, 1, cv2.LINE_8, shift)
    return mask


def merge_parts(parts: Sequence[np.ndarray]) -> np.ndarray:
    """One polygon from a multi-part outline (COCO's occluded objects): each further part is
    joined at its point nearest to the outline so far by a there-and-back bridge, which adds no
    area and keeps the extent (``fill_mask`` draws it as a 1 px line)."""
    merged = parts[0]
    for part in parts[1:]:
        d = ((merged[:, None] - part[None]) ** 2).sum(-1)
        i, j = np.unravel_index(int(d.argmin()), d.shape)
        part = np.roll(part, -j, 0)
        merged = np.concatenate([merged[:i + 1], part, part[:1], merged[i:]], 0)
    return merged
