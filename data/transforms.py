"""Image transforms that move boxes: letterbox, random perspective, flips, mixup; plus HSV jitter.

Images are RGB uint8 [H, W, 3] numpy arrays. Inside the pipeline labels are float32 [n, 5] =
(cls, x1, y1, x2, y2) in pixels of the current image; ``normalized_to_pixels`` and
``pixels_to_normalized`` convert from and to the (cls, cx, cy, w, h) normalised label format.
Every random choice draws from an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from data.polygons import Polygons, areas, clip_packed, extents, flip, pack, unpack, warp_points
from utils.boxes import clip_boxes, cxcywh_to_xyxy, xyxy_to_cxcywh

PAD_VALUE = 114  # grey used for letterbox and mosaic borders, as YOLOv5/v7
VISIBLE_AREA = 0.1  # a warped object keeps at least this fraction of its area (box, or outline)


def normalized_to_pixels(labels: np.ndarray, w: float, h: float, pad_w: float = 0, pad_h: float = 0) -> np.ndarray:
    """[n, 5] (cls, cx, cy, w, h) normalised -> [n, 5] (cls, x1, y1, x2, y2) pixels, shifted by the padding."""
    out = np.array(labels, np.float32).reshape(-1, 5).copy()
    out[:, 1:] = cxcywh_to_xyxy(out[:, 1:] * np.array([w, h, w, h], np.float32))
    out[:, [1, 3]] += pad_w
    out[:, [2, 4]] += pad_h
    return out


def pixels_to_normalized(labels: np.ndarray, w: float, h: float) -> np.ndarray:
    """[n, 5] (cls, x1, y1, x2, y2) pixels -> [n, 5] (cls, cx, cy, w, h) normalised to a w x h image."""
    out = np.array(labels, np.float32).reshape(-1, 5).copy()
    out[:, 1:] = xyxy_to_cxcywh(out[:, 1:]) / np.array([w, h, w, h], np.float32)
    return out


def letterbox(
    img: np.ndarray,
    new_shape: int | tuple[int, int] = 640,
    stride: int = 32,
    auto: bool = True,
    scaleup: bool = True,
    color: tuple[int, int, int] = (PAD_VALUE, PAD_VALUE, PAD_VALUE),
) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Resize ``img`` [h, w, C] keeping its aspect ratio to fit ``new_shape`` ((height, width) or
    an int for a square), then pad it.

    ``auto``: pad only up to the next multiple of ``stride`` (minimal rectangle, for inference),
    else pad to exactly ``new_shape``. ``scaleup=False`` never enlarges (validation).
    Returns (image, (w_gain, h_gain), (pad_w, pad_h)): a pixel (x, y) of the input lands at
    (x * w_gain + pad_w, y * h_gain + pad_h); the gains are exact (rounded size / input size).
    """
    shape = img.shape[:2]
    new_h, new_w = (int(new_shape), int(new_shape)) if np.isscalar(new_shape) else (int(v) for v in new_shape)
    r = min(new_h / shape[0], new_w / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    unpad_w, unpad_h = max(round(shape[1] * r), 1), max(round(shape[0] * r), 1)  # a 20000x20 image stays 1 px tall
    dw, dh = new_w - unpad_w, new_h - unpad_h
    if auto:
        dw, dh = dw % stride, dh % stride
    if (unpad_w, unpad_h) != (shape[1], shape[0]):
        img = cv2.resize(img, (unpad_w, unpad_h), interpolation=cv2.INTER_LINEAR)
    left, top = dw // 2, dh // 2
    img = cv2.copyMakeBorder(img, top, dh - top, left, dw - left, cv2.BORDER_CONSTANT, value=color)
    return img, (unpad_w / shape[1], unpad_h / shape[0]), (left, top)


def perspective_matrix(
    rng: np.random.Generator,
    size: tuple[int, int],
    out_size: tuple[int, int],
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: float = 0.0,
    shear: float = 0.0,
    perspective: float = 0.0,
) -> np.ndarray:
    """Random 3x3 matrix mapping an input of ``size`` (h, w) into an output of ``out_size`` (h, w).

    As YOLOv7: centre the input, apply perspective, rotation + scale, shear, then translate so
    the centre lands at the output centre +/- ``translate`` of the output size.
    """
    h, w = size
    out_h, out_w = out_size
    centre = np.eye(3)
    centre[0, 2], centre[1, 2] = -w / 2, -h / 2
    persp = np.eye(3)
    persp[2, 0], persp[2, 1] = rng.uniform(-perspective, perspective, 2)
    rot = np.eye(3)
    rot[:2] = cv2.getRotationMatrix2D((0, 0), rng.uniform(-degrees, degrees), rng.uniform(1 - scale, 1 + scale))
    sh = np.eye(3)
    sh[0, 1], sh[1, 0] = np.tan(np.deg2rad(rng.uniform(-shear, shear, 2)))
    tr = np.eye(3)
    tr[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_w
    tr[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_h
    return tr @ sh @ rot @ persp @ centre


def warp_image(img: np.ndarray, matrix: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Warp ``img`` by 3x3 ``matrix`` into an image of ``out_size`` (h, w), grey outside."""
    dsize = (out_size[1], out_size[0])
    fill = (PAD_VALUE,) * 3
    if np.allclose(matrix[2], [0, 0, 1]):
        return cv2.warpAffine(img, matrix[:2], dsize, borderValue=fill)
    return cv2.warpPerspective(img, matrix, dsize, borderValue=fill)


def warp_boxes(boxes: np.ndarray, matrix: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Transform xyxy pixel boxes [n, 4] by ``matrix``: the box around the 4 warped corners,
    clipped to an image of ``out_size`` (h, w). Returns a new float32 [n, 4]."""
    n = len(boxes)
    if n == 0:
        return np.zeros((0, 4), np.float32)
    corners = np.ones((n * 4, 3))
    corners[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)  # x1y1, x2y2, x1y2, x2y1
    warped = corners @ matrix.T
    warped = (warped[:, :2] / warped[:, 2:3]).reshape(n, 8)
    x, y = warped[:, 0::2], warped[:, 1::2]
    out = np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], 1).astype(np.float32)
    return clip_boxes(out, out_size)


def box_candidates(before: np.ndarray, after: np.ndarray, wh_thr: float = 2, ar_thr: float = 20,
                   area_thr: float = VISIBLE_AREA, eps: float = 1e-16) -> np.ndarray:
    """Boolean [n]: boxes (xyxy [n, 4], before and after a warp scaled by its gain) that stay
    wider and taller than ``wh_thr`` px, keep ``area_thr`` of their area, aspect below ``ar_thr``."""
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (aspect < ar_thr)


def warp_labels(labels: np.ndarray, polygons: Polygons, matrix: np.ndarray,
                out_size: tuple[int, int]) -> tuple[np.ndarray, Polygons]:
    """Labels [n, 5] (cls, xyxy pixels) and their polygons (None for box rows) through ``matrix``
    into an image of ``out_size`` (h, w).

    A box row becomes the box around its 4 warped corners; a polygon row is warped, cut to the
    image and its box is the cut polygon's extent, tight after any rotation or shear (as
    YOLOv7 does when segments exist, exactly rather than through 1000 resampled points).
    Rows that become too small or too thin are dropped (``box_candidates``); a polygon row must
    keep ``VISIBLE_AREA`` of its outline's area (a rotation changes the area of a tight box, not
    of the outline: YOLOv7 instead lowers the box-area threshold to 1 % when segments exist).
    """
    boxes = warp_boxes(labels[:, 1:5], matrix, out_size)
    gain = math.sqrt(abs(np.linalg.det(matrix[:2, :2])))  # area scale, so small-box tests are fair
    keep = box_candidates(labels[:, 1:5] * gain, boxes)
    polygons = list(polygons)
    window = (0, 0, out_size[1], out_size[0])
    rows = [i for i, p in enumerate(polygons) if p is not None]
    if rows:
        points, lengths = pack([polygons[i] for i in rows])
        before = areas(points, lengths)
        points, lengths = clip_packed(warp_points(points, matrix), lengths, window)
        boxes[rows] = extents(points, lengths)
        visible = areas(points, lengths) > VISIBLE_AREA * before * gain**2
        for i, p in zip(rows, unpack(points, lengths), strict=True):
            polygons[i] = p
        keep[rows] = visible & box_candidates(labels[rows, 1:5] * gain, boxes[rows], area_thr=0)
    out = np.concatenate([labels[keep, :1], boxes[keep]], 1).astype(np.float32)
    return out, [p for p, k in zip(polygons, keep, strict=True) if k]


def random_perspective(
    img: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    degrees: float = 0.0,
    translate: float = 0.1,
    scale: float = 0.5,
    shear: float = 0.0,
    perspective: float = 0.0,
    out_size: tuple[int, int] | None = None,
    polygons: Polygons | None = None,
) -> tuple[np.ndarray, np.ndarray, Polygons]:
    """Random affine/perspective warp of ``img``, its labels [n, 5] (cls, xyxy pixels) and their
    ``polygons`` (pixels, None for box rows; default all None), see ``warp_labels``.

    ``out_size`` (h, w) defaults to the input size (a mosaic passes half its canvas). Returns
    (image, labels, polygons) of the rows kept.
    """
    size = img.shape[:2]
    out_size = out_size or size
    matrix = perspective_matrix(rng, size, out_size, degrees, translate, scale, shear, perspective)
    if not np.allclose(matrix, np.eye(3)) or out_size != size:
        img = warp_image(img, matrix, out_size)
    labels, polygons = warp_labels(labels, [None] * len(labels) if polygons is None else polygons, matrix, out_size)
    return img, labels, polygons


def augment_hsv(img: np.ndarray, rng: np.random.Generator, hgain: float, sgain: float, vgain: float) -> np.ndarray:
    """Random hue/saturation/value gains on an RGB uint8 image (returns a new image)."""
    if not (hgain or sgain or vgain):
        return img
    r = rng.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    x = np.arange(256, dtype=np.float32)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)  # OpenCV hue is 0..179
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    cv2.LUT(hsv, np.stack([lut_hue, lut_sat, lut_val], 1)[:, None], dst=hsv)  # a table per channel, in place
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def flip_lr(img: np.ndarray, labels: np.ndarray, polygons: Polygons) -> tuple[np.ndarray, np.ndarray, Polygons]:
    """Mirror left-right; labels [n, 5] (cls, xyxy pixels) and their polygons (pixels, None for box rows)."""
    labels = labels.copy()
    labels[:, [1, 3]] = img.shape[1] - labels[:, [3, 1]]
    return cv2.flip(img, 1), labels, flip(polygons, img.shape[1], 0)


def flip_ud(img: np.ndarray, labels: np.ndarray, polygons: Polygons) -> tuple[np.ndarray, np.ndarray, Polygons]:
    """Mirror up-down; labels [n, 5] (cls, xyxy pixels) and their polygons (pixels, None for box rows)."""
    labels = labels.copy()
    labels[:, [2, 4]] = img.shape[0] - labels[:, [4, 2]]
    return cv2.flip(img, 0), labels, flip(polygons, img.shape[0], 1)


def mixup(img1: np.ndarray, labels1: np.ndarray, img2: np.ndarray, labels2: np.ndarray,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blend two same-size images with a Beta(8, 8) weight and keep both label sets (YOLOv7)."""
    r = rng.beta(8.0, 8.0)
    img = (img1.astype(np.float32) * r + img2.astype(np.float32) * (1 - r)).astype(np.uint8)
    return img, np.concatenate([labels1, labels2], 0)
