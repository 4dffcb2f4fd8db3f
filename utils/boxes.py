"""Box format conversions and geometry. Formats: xyxy (corners), cxcywh (centre, size);
pixels unless a function says normalised. Shapes: boxes are [..., 4]."""

from __future__ import annotations

import numpy as np
import torch

Array = torch.Tensor | np.ndarray


def _copy(x: Array) -> Array:
    return x.clone() if isinstance(x, torch.Tensor) else np.array(x, dtype=np.float32, copy=True)


def cxcywh_to_xyxy(x: Array) -> Array:
    """[..., 4] centre/size boxes to corner boxes (same units)."""
    y = _copy(x)
    y[..., 0] = x[..., 0] - x[..., 2] / 2
    y[..., 1] = x[..., 1] - x[..., 3] / 2
    y[..., 2] = x[..., 0] + x[..., 2] / 2
    y[..., 3] = x[..., 1] + x[..., 3] / 2
    return y


def xyxy_to_cxcywh(x: Array) -> Array:
    """[..., 4] corner boxes to centre/size boxes (same units)."""
    y = _copy(x)
    y[..., 0] = (x[..., 0] + x[..., 2]) / 2
    y[..., 1] = (x[..., 1] + x[..., 3]) / 2
    y[..., 2] = x[..., 2] - x[..., 0]
    y[..., 3] = x[..., 3] - x[..., 1]
    return y


def clip_boxes(boxes: Array, shape: tuple[int, int]) -> Array:
    """Clip xyxy pixel boxes in place to an image of ``shape`` = (height, width); returns them."""
    h, w = shape
    if isinstance(boxes, torch.Tensor):
        boxes[..., 0::2] = boxes[..., 0::2].clamp(0, w)
        boxes[..., 1::2] = boxes[..., 1::2].clamp(0, h)
    else:
        boxes[..., 0::2] = boxes[..., 0::2].clip(0, w)
        boxes[..., 1::2] = boxes[..., 1::2].clip(0, h)
    return boxes


def letterbox_to_original(
    boxes: Array,
    ratio: tuple[float, float],
    pad: tuple[float, float],
    original_shape: tuple[int, int],
) -> Array:
    """Map xyxy pixel boxes from a letterboxed image back to the original image, clipped.

    ``ratio`` = (w_gain, h_gain) of the resize, ``pad`` = (pad_w, pad_h) added on the left/top,
    ``original_shape`` = (height, width). Returns a new array.
    """
    out = _copy(boxes)
    out[..., 0::2] = (out[..., 0::2] - pad[0]) / ratio[0]
    out[..., 1::2] = (out[..., 1::2] - pad[1]) / ratio[1]
    return clip_boxes(out, original_shape)


def box_ioa(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection of xyxy ``box`` [4] with each of ``boxes`` [n, 4] over that box's area: [n],
    how much of each is covered by ``box`` (the occlusion test of mosaic pastes)."""
    iw = (np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])).clip(0)
    ih = (np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])).clip(0)
    return iw * ih / ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + 1e-9)
