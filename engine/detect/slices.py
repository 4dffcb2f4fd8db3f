"""Sliced inference for large images with small objects (SAHI's idea): the image is cut into
overlapping tiles, each tile is detected at the network's input size (so a small object keeps its
pixels instead of shrinking with the whole image), boxes are shifted back to image pixels and merged
with the whole image's own detections (large objects that no tile holds) by NMS. A tile's box that
touches one of its cut edges is dropped: it is a fragment of an object that the neighbouring tile
holds whole when the object is smaller than the overlap, or that the whole-image pass finds when it
is larger; NMS alone keeps thin fragments, whose IoU with the whole box is small.

    windows = tile_windows(1280, 1920, tile=640, overlap=0.2)   # int64 [k, 4] xyxy pixels
    dets = sliced_predict(predictor.predict, image, 640, 0.2, iou_thres=0.45)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torchvision.ops import batched_nms

from engine.detect.results import Detections

TILES_PER_FORWARD = 16  # tiles sent through the network together: bounds memory on huge images
CUT_MARGIN = 2.0  # px: a tile's box this close to a cut edge (not the image's edge) is a fragment


def _starts(size: int, tile: int, step: int) -> list[int]:
    """Offsets of tiles of ``tile`` px along an axis of ``size`` px, ``step`` apart; the last tile
    ends at the edge (it overlaps its neighbour more) so no tile hangs over the image."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, step)) + [size - tile]
    return sorted(set(starts))


def tile_windows(height: int, width: int, tile: int, overlap: float) -> np.ndarray:
    """Tiles of at most ``tile`` x ``tile`` px covering a ``height`` x ``width`` image, neighbours
    overlapping by ``overlap`` of a tile (0 <= overlap < 1); int64 [k, 4] xyxy pixels, row by row."""
    if tile < 1 or not 0 <= overlap < 1:
        raise ValueError(f"tile {tile} must be >= 1 and overlap {overlap} in [0, 1)")
    step = max(int(round(tile * (1 - overlap))), 1)
    rows = [(x, y, min(x + tile, width), min(y + tile, height))
            for y in _starts(height, tile, step) for x in _starts(width, tile, step)]
    return np.array(rows, np.int64).reshape(-1, 4)


def whole_in_tile(boxes: np.ndarray, window: np.ndarray, height: int, width: int) -> np.ndarray:
    """bool [n]: which xyxy ``boxes`` (tile pixels) stay clear of the tile's cut edges; a tile edge
    on the image's own edge is no cut."""
    x0, y0, x1, y1 = (int(v) for v in window)
    keep = np.ones(len(boxes), bool)
    if x0 > 0:
        keep &= boxes[:, 0] > CUT_MARGIN
    if y0 > 0:
        keep &= boxes[:, 1] > CUT_MARGIN
    if x1 < width:
        keep &= boxes[:, 2] < x1 - x0 - CUT_MARGIN
    if y1 < height:
        keep &= boxes[:, 3] < y1 - y0 - CUT_MARGIN
    return keep


def merge(parts: Sequence[Detections], shape: tuple[int, int], names: list[str], iou_thres: float,
          agnostic: bool = False, max_det: int = 300) -> Detections:
    """Detections of one image from several passes (boxes already in image pixels) merged by NMS
    (``torchvision.ops.batched_nms``: per class unless ``agnostic``), best ``max_det`` kept."""
    boxes = np.concatenate([p.boxes for p in parts]).reshape(-1, 4).astype(np.float32)
    scores = np.concatenate([p.scores for p in parts]).astype(np.float32)
    classes = np.concatenate([p.classes for p in parts]).astype(np.int64)
    groups = torch.zeros(len(classes), dtype=torch.int64) if agnostic else torch.from_numpy(classes)
    keep = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), groups, iou_thres)[:max_det].numpy()
    return Detections(boxes[keep], scores[keep], classes[keep], tuple(shape), list(names))


def sliced_predict(predict: Callable[[Sequence[np.ndarray]], list[Detections]], image: np.ndarray, tile: int,
                   overlap: float, *, iou_thres: float, agnostic: bool = False, max_det: int = 300) -> Detections:
    """Detections of BGR uint8 [h, w, 3] ``image`` from its tiles and the whole image.

    ``predict``: images -> one Detections each (``Predictor.predict``); boxes xyxy in original pixels.
    An image no larger than one tile is detected whole, once.
    """
    h, w = image.shape[:2]
    whole = predict([image])[0]
    windows = tile_windows(h, w, tile, overlap)
    if len(windows) == 1:
        return whole
    parts = [whole]
    for first in range(0, len(windows), TILES_PER_FORWARD):
        chunk = windows[first:first + TILES_PER_FORWARD]
        crops = [np.ascontiguousarray(image[y0:y1, x0:x1]) for x0, y0, x1, y1 in chunk]
        for window, det in zip(chunk, predict(crops), strict=True):
            keep = whole_in_tile(det.boxes, window, h, w)
            shift = np.array([window[0], window[1], window[0], window[1]], np.float32)
            parts.append(Detections(det.boxes[keep] + shift, det.scores[keep], det.classes[keep], (h, w)))
    return merge(parts, (h, w), whole.names, iou_thres, agnostic, max_det)
