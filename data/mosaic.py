"""Mosaic augmentation: 4 (or 9) training images tiled on one canvas, boxes moved with them.

``place4`` and ``place9`` are the pure geometry (where each image goes); ``mosaic_labels`` shifts
and cuts the labels; ``mosaic`` pastes the images onto a 2s x 2s canvas, which the caller warps
down to s x s with ``random_perspective`` (scale and translate jitter, drop boxes cut too small).
Without rotation, shear, perspective or copy-paste, ``warp_tiles`` gives that warped image at
once, straight from the images as decoded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from data.polygons import Polygons, clip_rows, to_pixels
from data.transforms import PAD_VALUE, normalized_to_pixels

# (canvas y1, y2, x1, x2), (image y1, y2, x1, x2): the pasted window in each coordinate frame
Placement = tuple[tuple[int, int, int, int], tuple[int, int, int, int]]


def place4(centre: tuple[int, int], sizes: Sequence[tuple[int, int]], canvas: int) -> list[Placement]:
    """Windows of 4 images of ``sizes`` (h, w) around ``centre`` (xc, yc) on a square canvas.

    Image 0 ends at the centre from the top-left, 1 from the top-right, 2 from the bottom-left,
    3 from the bottom-right; each is cropped where it would leave the canvas (YOLOv5/v7 layout).
    """
    xc, yc = centre
    out = []
    for i, (h, w) in enumerate(sizes):
        x1, x2 = (max(xc - w, 0), xc) if i in (0, 2) else (xc, min(xc + w, canvas))
        y1, y2 = (max(yc - h, 0), yc) if i in (0, 1) else (yc, min(yc + h, canvas))
        # take the image corner that touches the centre
        ix1 = w - (x2 - x1) if i in (0, 2) else 0
        iy1 = h - (y2 - y1) if i in (0, 1) else 0
        out.append(((y1, y2, x1, x2), (iy1, iy1 + y2 - y1, ix1, ix1 + x2 - x1)))
    return out


def place9(offset: tuple[int, int], sizes: Sequence[tuple[int, int]], cell: int) -> list[Placement]:
    """Windows of 9 images (each at most ``cell`` px) centred in a 3 x 3 grid of ``cell`` cells,
    then seen through a 2 cell x 2 cell window whose top-left is ``offset`` (x, y) in 0..cell."""
    ox, oy = offset
    out = []
    for i, (h, w) in enumerate(sizes):
        row, col = divmod(i, 3)
        gx1, gy1 = col * cell + (cell - w) // 2, row * cell + (cell - h) // 2  # on the 3x3 grid
        x1, y1 = max(gx1 - ox, 0), max(gy1 - oy, 0)
        x2, y2 = min(gx1 + w - ox, 2 * cell), min(gy1 + h - oy, 2 * cell)
        if x2 <= x1 or y2 <= y1:
            out.append(((0, 0, 0, 0), (0, 0, 0, 0)))  # entirely outside the window
            continue
        ix1, iy1 = x1 - (gx1 - ox), y1 - (gy1 - oy)
        out.append(((y1, y2, x1, x2), (iy1, iy1 + y2 - y1, ix1, ix1 + x2 - x1)))
    return out


def mosaic_labels(sizes: Sequence[tuple[int, int]], labels: Sequence[np.ndarray], placements: Sequence[Placement],
                  segments: Sequence[Sequence[np.ndarray]] | None = None) -> tuple[np.ndarray, Polygons]:
    """The labels of a mosaic of images of ``sizes`` (h, w) at ``placements``: each image's labels
    ([n, 5] cls, cx, cy, w, h normalised to it) and segments (per row [k, 2] normalised, [0, 2] for
    a box row; default none) in canvas pixels, cut to the image's window; rows left with no area
    are dropped. Returns (labels [m, 5] cls, x1, y1, x2, y2, their polygons (None for box rows))."""
    out, polygons, windows = [], [], []
    for k, ((h, w), lab, ((y1, y2, x1, x2), (iy1, _, ix1, _))) in enumerate(zip(sizes, labels, placements, strict=True)):
        if y2 <= y1 or x2 <= x1:
            continue
        pix = normalized_to_pixels(lab, w, h, x1 - ix1, y1 - iy1)
        # clip each image's boxes (and below its polygons) to its own window: the rest of the image is not on the canvas
        pix[:, [1, 3]] = pix[:, [1, 3]].clip(x1, x2)
        pix[:, [2, 4]] = pix[:, [2, 4]].clip(y1, y2)
        out.append(pix)
        polygons += [None] * len(pix) if segments is None else to_pixels(segments[k], w, h, x1 - ix1, y1 - iy1)
        windows += [(x1, y1, x2, y2)] * len(pix)
    boxes = np.concatenate(out, 0) if out else np.zeros((0, 5), np.float32)
    clip_rows(boxes, polygons, np.array(windows, np.float32).reshape(-1, 4))
    keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 4] > boxes[:, 2])
    return boxes[keep], [p for p, k in zip(polygons, keep, strict=True) if k]


def mosaic(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], placements: Sequence[Placement],
           canvas: int, segments: Sequence[Sequence[np.ndarray]] | None = None
           ) -> tuple[np.ndarray, np.ndarray, Polygons]:
    """Paste ``images`` (RGB [h, w, 3]) onto a grey ``canvas`` x ``canvas`` image at ``placements``;
    returns it with ``mosaic_labels`` (labels [m, 5] cls, xyxy canvas pixels; their polygons)."""
    img = np.full((canvas, canvas, 3), PAD_VALUE, np.uint8)
    for image, ((y1, y2, x1, x2), (iy1, iy2, ix1, ix2)) in zip(images, placements, strict=True):
        if y2 > y1 and x2 > x1:
            img[y1:y2, x1:x2] = image[iy1:iy2, ix1:ix2]
    return (img, *mosaic_labels([im.shape[:2] for im in images], labels, placements, segments))


def _output_span(lo: int, hi: int, gain: float, shift: float, size: int) -> tuple[int, int]:
    """Output pixels [a, b) that ``p = gain * c + shift`` maps into canvas pixels lo..hi - 1 (pixel
    c covers [c - 0.5, c + 0.5)), within 0..size."""
    a, b = (math.ceil(gain * (c - 0.5) + shift) for c in (lo, hi))
    return max(a, 0), min(b, size)


def warp_tiles(images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], placements: Sequence[Placement],
               matrix: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """The mosaic of ``images`` resized to ``sizes`` (h, w) at ``placements``, seen through
    ``matrix`` (canvas -> output pixels; scale and translation only) in an image of ``out_size``
    (h, w): what ``warp_image(mosaic(...), matrix, out_size)`` shows, sampled straight from each
    image, one bilinear interpolation instead of a resize, a 2s x 2s canvas and a warp. Each output
    pixel comes from the image whose window holds its canvas position, grey where none does."""
    if matrix[0, 1] or matrix[1, 0] or matrix[0, 0] != matrix[1, 1] or not np.array_equal(matrix[2], [0, 0, 1]):
        raise ValueError("warp_tiles takes a scale-and-translate matrix; warp the pasted canvas otherwise")
    out_h, out_w = out_size
    out = np.full((out_h, out_w, 3), PAD_VALUE, np.uint8)
    gain, tx, ty = matrix[0, 0], matrix[0, 2], matrix[1, 2]
    for image, (h, w), ((y1, y2, x1, x2), (iy1, _, ix1, _)) in zip(images, sizes, placements, strict=True):
        (ox1, ox2), (oy1, oy2) = _output_span(x1, x2, gain, tx, out_w), _output_span(y1, y2, gain, ty, out_h)
        if ox2 <= ox1 or oy2 <= oy1:
            continue
        # image pixel u -> resized x = f u + (f - 1) / 2 (cv2.resize's pixel centres) -> canvas -> output
        fx, fy = w / image.shape[1], h / image.shape[0]
        to_out = np.array([[gain * fx, 0, gain * ((fx - 1) / 2 + x1 - ix1) + tx - ox1],
                           [0, gain * fy, gain * ((fy - 1) / 2 + y1 - iy1) + ty - oy1]])
        cv2.warpAffine(image, to_out, (ox2 - ox1, oy2 - oy1), dst=out[oy1:oy2, ox1:ox2], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    return out
