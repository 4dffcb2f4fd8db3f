"""Test-time augmentation (val.py and detect.py --augment): the image at three scales, one of
them flipped, as YOLOv7 does."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Padding value of the rescaled images: the ImageNet mean grey, as YOLOv7 pads.
_PAD_VALUE = 0.447


def augmented_forward(forward: Callable[[Tensor], Tensor], x: Tensor, stride: int,
                      scales: tuple[float, ...] = (1.0, 0.83, 0.67), flips: tuple[bool, ...] = (False, True, False)
                      ) -> Tensor:
    """Run ``forward`` (a batch -> decoded [B, N, no], cx, cy, w, h in its pixels) at several
    scales (one left-right flipped) and concatenate the predictions mapped back to the pixels of
    ``x`` [B, 3, H, W] -> [B, N', no]. Scaled images are padded right/bottom to ``stride``
    multiples, so boxes only need the (per-axis) gains of the rounded sizes."""
    h, w = x.shape[2:]
    preds = []
    for scale, flip in zip(scales, flips, strict=True):
        xi = x.flip(3) if flip else x
        sh, sw = int(h * scale), int(w * scale)
        if scale != 1.0:
            xi = F.interpolate(xi, size=(sh, sw), mode="bilinear", align_corners=False)
            ph, pw = -sh % stride, -sw % stride
            xi = F.pad(xi, (0, pw, 0, ph), value=_PAD_VALUE)
        y = forward(xi).clone()
        y[..., 0:4:2] /= sw / w  # the exact gains of the rounded size, per axis
        y[..., 1:4:2] /= sh / h
        if flip:
            y[..., 0] = w - y[..., 0]
        preds.append(y)
    return torch.cat(preds, 1)


def tta_forward(model: nn.Module, images: Tensor) -> Tensor:
    """Eval-mode ``pred`` [B, N', 5 + nc] of ``model`` merged over the TTA passes, boxes
    (cx, cy, w, h) in the pixels of ``images`` [B, 3, H, W]."""
    return augmented_forward(lambda t: model(t)[0], images, int(model.stride.max()))
