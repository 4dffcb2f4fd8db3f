"""Mosaic augmentation: 4 (or 9) training images tiled on one canvas, boxes moved with them.

``place4`` and ``place9`` are the pure geometry (where each image goes); ``mosaic`` pastes the
images and shifts their labels. The caller then warps the 2s x 2s canvas down to s x s with
``random_perspective`` (scale and translate jitter, drop boxes cut too small).
"""

from __future__ import annotations

from collections.abc import Sequence

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


def mosaic(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], placements: Sequence[Placement],
           canvas: int, segments: Sequence[Sequence[np.ndarray]] | None = None
           ) -> tuple[np.ndarray, np.ndarray, Polygons]:
    """Paste ``images`` (RGB [h, w, 3]) with their labels ([n, 5] cls, cx, cy, w, h normalised
    to each image) and segments (per image, per row [k, 2] normalised, [0, 2] for a box row;
    default none) onto a grey ``canvas`` x ``canvas`` image at ``placements``.

    Returns (canvas image, labels [m, 5] cls, x1, y1, x2, y2 in canvas pixels, their polygons
    in canvas pixels (None for box rows)); each image's boxes and polygons are cut to its own
    window, and rows left with no area are dropped.
    """
    img = np.full((canvas, canvas, 3), PAD_VALUE, np.uint8)
    out, polygons, windows = [], [], []
    for k, (image, lab, ((y1, y2, x1, x2), (iy1, iy2, ix1, ix2))) in enumerate(zip(images, labels, placements, strict=True)):
        if y2 <= y1 or x2 <= x1:
            continue
        img[y1:y2, x1:x2] = image[iy1:iy2, ix1:ix2]
        h, w = image.shape[:2]
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
    return img, boxes[keep], [p for p, k in zip(polygons, keep, strict=True) if k]
