"""Test-time augmentation (val.py --augment): the image at three scales, one of them flipped."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (scale, left-right flip) passes; YOLOv7's choice: full size, 0.83 flipped, 0.67.
TTA_PASSES = ((1.0, False), (0.83, True), (0.67, False))
# Padding value of the rescaled image: the ImageNet mean grey, as YOLOv7 pads.
_PAD_VALUE = 0.447


def scale_image(images: Tensor, ratio: float, stride: int) -> Tensor:
    """Resize [B, 3, H, W] by ``ratio`` (bilinear), then pad right/bottom to a multiple of
    ``stride``; content keeps its top-left origin so boxes scale by ``ratio`` alone."""
    if ratio == 1.0:
        return images
    h, w = images.shape[2:]
    size = (int(h * ratio), int(w * ratio))
    out = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    ph, pw = (math.ceil(s / stride) * stride - s for s in size)
    return F.pad(out, [0, pw, 0, ph], value=_PAD_VALUE)


def tta_forward(model: nn.Module, images: Tensor) -> Tensor:
    """Eval-mode ``pred`` [B, N', 5 + nc] merged over TTA_PASSES, boxes (cx, cy, w, h) in the
    pixels of ``images`` [B, 3, H, W]."""
    stride = int(model.stride.max())
    width = images.shape[3]
    preds = []
    for ratio, flip in TTA_PASSES:
        x = scale_image(images.flip(3) if flip else images, ratio, stride)
        pred = model(x)[0].clone()
        pred[..., :4] /= ratio
        if flip:
            pred[..., 0] = width - pred[..., 0]
        preds.append(pred)
    return torch.cat(preds, 1)
