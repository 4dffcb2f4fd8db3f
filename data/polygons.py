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


def _previous(a: np.ndarray) -> np.ndarray:
    """``a`` shifted by one along axis 0 (row i holds row i - 1, row 0 the last): np.roll(a, 1, 0)
    without its overhead, which dominated the clipping of the few-point polygons of a batch."""
    return np.concatenate((a[-1:], a[:-1]))


def _clip_half_plane(p: np.ndarray, axis: int, bound: float, keep_above: bool) -> np.ndarray:
    """Sutherland-Hodgman step: the part of polygon ``p`` [k, 2] with p[:, axis] >= bound
    (``keep_above``) or <= bound. Exact for any simple polygon (concave ones may keep zero-width
    bridges along the bound, which change neither the extent nor the filled mask)."""
    d = p[:, axis] - bound if keep_above else bound - p[:, axis]
    inside = d >= 0
    if inside.all() or len(p) == 0:
        return p
    if not inside.any():
        return p[:0]
    prev, d_prev = _previous(p), _previous(d)
    crossing = inside != _previous(inside)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(crossing, d_prev / (d_prev - d), 0)
    cut = prev + (p - prev) * t[:, None]
    cut[:, axis] = np.where(crossing, bound, cut[:, axis])  # exactly on the bound, no rounding drift
    points = np.stack([cut, p], 1)  # edge prev -> p emits its crossing first, then p if inside
    keep = np.stack([crossing, inside], 1)
    return points[keep].astype(np.float32)


def clip_polygon(p: np.ndarray, window: tuple[float, float, float, float]) -> np.ndarray:
    """Polygon ``p`` [k, 2] cut to the xyxy ``window``; [0, 2] when nothing is left."""
    x1, y1, x2, y2 = window
    if len(p):
        (lo_x, lo_y), (hi_x, hi_y) = p.min(0), p.max(0)
        if lo_x >= x1 and lo_y >= y1 and hi_x <= x2 and hi_y <= y2:
            return p
    for axis, bound, above in ((0, x1, True), (0, x2, False), (1, y1, True), (1, y2, False)):
        p = _clip_half_plane(p, axis, bound, above)
    return p


def extent(p: np.ndarray) -> np.ndarray:
    """xyxy float32 [4] box around polygon ``p`` [k, 2] (zeros for an empty polygon)."""
    if len(p) == 0:
        return np.zeros(4, np.float32)
    return np.concatenate([p.min(0), p.max(0)]).astype(np.float32)


def area(p: np.ndarray) -> float:
    """Area enclosed by polygon ``p`` [k, 2] (shoelace formula; 0 under 3 points)."""
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0].astype(np.float64), p[:, 1].astype(np.float64)
    wrap = x[-1] * y[0] - y[-1] * x[0]  # the closing edge, last vertex -> first
    return 0.5 * abs(float(x[:-1] @ y[1:] - y[:-1] @ x[1:] + wrap))


def clip_rows(labels: np.ndarray, polygons: Polygons, window: tuple[float, float, float, float]) -> np.ndarray:
    """Cut each polygon row to ``window`` (xyxy) in place and write its extent into ``labels``
    [n, 5] (cls, xyxy); box rows are left to the caller. Returns ``labels``."""
    for i, p in enumerate(polygons):
        if p is not None:
            polygons[i] = clip_polygon(p, window)
            labels[i, 1:5] = extent(polygons[i])
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
