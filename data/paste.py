"""Copy-paste and paste-in: objects cut out by their polygon masks and pasted as new labelled objects.

- ``copy_paste`` (YOLOv5/v7's; ``hyp.copy_paste`` is the fraction of the polygon objects tried,
  ``round(fraction * m)`` of m, not a probability): each chosen object is mirrored left-right and pasted at its mirrored place, kept only
  where it hides under 30 % of every existing box (intersection over that box's area).
- ``paste_in`` (YOLOv7's, with probability ``hyp.paste_in`` per sample): up to 20 random windows
  (sizes from 3/4 down to 1/16 of the image, as YOLOv7) that hide under 30 % of every box get an
  object from an ``ObjectPool``, scaled to fit and pasted through its mask.

Both need real outlines: box rows (polygon None) are never cut out. A pasted object's box is the
extent of its pasted polygon, and its pixels are exactly that polygon's mask (``fill_mask``).
Every random choice comes from the sample's generator, so samples stay deterministic in
(seed, epoch, index).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from data.polygons import Polygons, extent, fill_mask, to_pixels
from data.transforms import normalized_to_pixels
from utils.boxes import box_ioa

MAX_OCCLUSION = 0.30  # a paste may hide at most this fraction of any existing box (YOLOv5/v7)
PASTE_IN_SCALES = (0.75,) * 2 + (0.5,) * 4 + (0.25,) * 4 + (0.125,) * 4 + (0.0625,) * 6  # YOLOv7's windows
PASTE_IN_SKIP = 0.2  # each window is skipped with this probability (YOLOv7)
MIN_WINDOW = 20  # px: smaller windows are not tried
MIN_OBJECT = 10  # px: a scaled object must be wider and taller than this
MIN_MASK_PIXELS = 60  # a pasted object covers more pixels than this (YOLOv7)
POOL_IMAGES = 64  # images cut into the paste-in pool of one epoch
POOL_MAX_OBJECTS = 256


@dataclasses.dataclass(frozen=True)
class PoolObject:
    """One cut-out object: class, RGB crop [h, w, 3] of its box, polygon [k, 2] in crop pixels."""

    cls: float
    crop: np.ndarray
    polygon: np.ndarray


def _not_occluding(box: np.ndarray, labels: np.ndarray) -> bool:
    return len(labels) == 0 or bool((box_ioa(box, labels[:, 1:5]) < MAX_OCCLUSION).all())


def copy_paste(img: np.ndarray, labels: np.ndarray, polygons: Polygons, p: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Polygons]:
    """Mirror-and-paste ``round(p * m)`` of the m polygon rows of ``img`` (RGB [h, w, 3]).

    ``labels`` [n, 5] (cls, xyxy pixels) with ``polygons`` (pixels, None for box rows). Returns
    the new image, labels and polygons (pasted rows appended); the inputs are not modified.
    """
    real = [i for i, poly in enumerate(polygons) if poly is not None and len(poly) >= 3]
    k = round(p * len(real))
    if k == 0:
        return img, labels, polygons
    w = img.shape[1]
    labels, polygons, pasted = labels.copy(), list(polygons), []
    for j in rng.choice(real, k, replace=False):
        mirrored = polygons[j].copy()
        mirrored[:, 0] = w - mirrored[:, 0]
        box = extent(mirrored)
        if _not_occluding(box, labels):
            labels = np.concatenate([labels, [[labels[j, 0], *box]]], 0).astype(np.float32)
            polygons.append(mirrored)
            pasted.append(mirrored)
    if pasted:
        mask = fill_mask(img.shape[:2], pasted).astype(bool)
        img = img.copy()
        img[mask] = img[:, ::-1][mask]
    return img, labels, polygons


def cut_objects(img: np.ndarray, labels: np.ndarray, polygons: Polygons) -> list[PoolObject]:
    """The polygon objects of one image (RGB [h, w, 3], labels [n, 5] cls xyxy pixels), each cut
    to its box; objects under ``MIN_OBJECT`` px are left out."""
    h, w = img.shape[:2]
    out = []
    for row, poly in zip(labels, polygons, strict=True):
        if poly is None or len(poly) < 3:
            continue
        x1, y1 = (int(v) for v in np.floor(row[1:3]).clip(0, [w, h]))
        x2, y2 = (int(v) for v in np.ceil(row[3:5]).clip(0, [w, h]))
        if x2 - x1 > MIN_OBJECT and y2 - y1 > MIN_OBJECT:
            out.append(PoolObject(float(row[0]), img[y1:y2, x1:x2].copy(), poly - np.float32([x1, y1])))
    return out


def build_pool(load: Callable[[int], tuple[np.ndarray, np.ndarray, Sequence[np.ndarray]]], n: int,
               rng: np.random.Generator) -> list[PoolObject]:
    """The paste-in pool: objects of ``POOL_IMAGES`` images drawn from the ``n`` of the set.

    ``load(i)`` returns image i (RGB [h, w, 3]), its labels [m, 5] (cls, cx, cy, w, h
    normalised) and segments ([k, 2] normalised, [0, 2] for box rows). At most
    ``POOL_MAX_OBJECTS`` objects are kept.
    """
    pool: list[PoolObject] = []
    for i in rng.choice(n, min(n, POOL_IMAGES), replace=False).tolist():
        img, labels, segments = load(i)
        h, w = img.shape[:2]
        pool += cut_objects(img, normalized_to_pixels(labels, w, h), to_pixels(segments, w, h))
        if len(pool) >= POOL_MAX_OBJECTS:
            break
    return pool[:POOL_MAX_OBJECTS]


def _paste_object(img: np.ndarray, obj: PoolObject, window: tuple[int, int, int, int]
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """Scale ``obj`` to fit ``window`` (x1, y1, x2, y2), paste it in place at the window's top-left;
    returns (box [4], polygon) in image pixels, or None when it comes out too small."""
    x1, y1, x2, y2 = window
    hs, ws = obj.crop.shape[:2]
    r = min((y2 - y1) / hs, (x2 - x1) / ws)
    rw, rh = int(ws * r), int(hs * r)
    if rw <= MIN_OBJECT or rh <= MIN_OBJECT:
        return None
    polygon = obj.polygon * np.float32([rw / ws, rh / hs])
    # one pixel more than the scaled crop: the mask may reach 1 px past the outline (fill_mask),
    # and it must be the very mask fill_mask gives for the pasted polygon in the whole image
    h, w = img.shape[:2]
    ph, pw = min(rh + 1, h - y1), min(rw + 1, w - x1)
    mask = fill_mask((ph, pw), [polygon]).astype(bool)
    if mask.sum() <= MIN_MASK_PIXELS:
        return None
    patch = cv2.resize(obj.crop, (rw, rh), interpolation=cv2.INTER_LINEAR)
    patch = cv2.copyMakeBorder(patch, 0, 1, 0, 1, cv2.BORDER_REPLICATE)[:ph, :pw]
    img[y1:y1 + ph, x1:x1 + pw][mask] = patch[mask]
    polygon = polygon + np.float32([x1, y1])
    return extent(polygon), polygon


def paste_in(img: np.ndarray, labels: np.ndarray, polygons: Polygons, pool: Sequence[PoolObject],
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Polygons]:
    """Paste objects of ``pool`` into free windows of ``img`` (RGB [h, w, 3]).

    ``labels`` [n, 5] (cls, xyxy pixels) with their ``polygons``; returns the new image, labels
    and polygons (pasted rows appended, later windows also avoid earlier pastes).
    """
    if not pool:
        return img, labels, polygons
    h, w = img.shape[:2]
    img, labels, polygons = img.copy(), labels.copy(), list(polygons)
    for s in PASTE_IN_SCALES:
        if rng.random() < PASTE_IN_SKIP or int(h * s) < 1 or int(w * s) < 1:
            continue
        mh, mw = int(rng.integers(1, int(h * s), endpoint=True)), int(rng.integers(1, int(w * s), endpoint=True))
        x1 = max(0, int(rng.integers(0, w, endpoint=True)) - mw // 2)
        y1 = max(0, int(rng.integers(0, h, endpoint=True)) - mh // 2)
        x2, y2 = min(w, x1 + mw), min(h, y1 + mh)
        window = np.array([x1, y1, x2, y2], np.float32)
        if x2 - x1 <= MIN_WINDOW or y2 - y1 <= MIN_WINDOW or not _not_occluding(window, labels):
            continue
        obj = pool[int(rng.integers(len(pool)))]
        pasted = _paste_object(img, obj, (x1, y1, x2, y2))
        if pasted is not None:
            box, polygon = pasted
            labels = np.concatenate([labels, [[obj.cls, *box]]], 0).astype(np.float32)
            polygons.append(polygon)
    return img, labels, polygons
