"""engine/tta.py: val.py --augment maps every pass back to the input's pixels exactly."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engine.tta import tta_forward


class _CentroidModel(nn.Module):
    """A stand-in eval-mode model: one 'box' of width 10 at the centroid of the brightness above
    the padding grey 0.447, in pixel-centre coordinates; returns (pred [B, 1, 6], raw)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("stride", torch.tensor([8.0, 16.0, 32.0]))

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, list]:
        _, _, h, w = t.shape
        weight = (t[:, 0] - 0.447).clamp(min=0)
        total = weight.sum((1, 2))
        cx = (weight.sum(1) * (torch.arange(w) + 0.5)).sum(1) / total
        cy = (weight.sum(2) * (torch.arange(h) + 0.5)).sum(1) / total
        ten, one = torch.full_like(cx, 10.0), torch.ones_like(cx)
        return torch.stack([cx, cy, ten, ten, one, one], 1)[:, None], []


def test_tta_forward_undoes_the_exact_resize_of_each_pass() -> None:
    x = torch.full((1, 3, 96, 128), 0.447)
    x[:, :, 40:44, 20:24] = 1.0  # a 4x4 square centred at (22, 42)
    out = tta_forward(_CentroidModel(), x)
    assert out.shape == (1, 3, 6)  # scale 1, 0.83 flipped, 0.67
    np.testing.assert_allclose(out[0, :, 0].numpy(), 22.0, atol=0.3)
    np.testing.assert_allclose(out[0, :, 1].numpy(), 42.0, atol=0.3)
    # 128 px become int(128 * 0.83) = 106 and int(128 * 0.67) = 85: the gains of the rounded sizes
    np.testing.assert_allclose(out[0, 1:, 2].numpy(), [10 * 128 / 106, 10 * 128 / 85], rtol=1e-5)
