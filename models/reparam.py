"""Re-parameterisable layers: blocks with a training form and a cheaper inference form that
``fuse()`` folds them into, giving the same outputs.

- ``RepConv`` (RepVGG): 3x3 + 1x1 + identity branches with BN, merged into one 3x3 conv.
- ``ImplicitA`` / ``ImplicitM`` (YOLOR implicit knowledge): a learned per-channel shift / scale
  that ``Detect.fuse`` folds into the head convs.

Feature maps are [B, C, H, W].
"""

from __future__ import annotations

import torch
from torch import nn

from models.blocks import (
    ActSpec,
    Block,
    RowContext,
    autopad,
    bn_scale_shift,
    fuse_conv_bn,
    inplace_act,
    make_act,
)


class RepConv(Block):
    """RepVGG block: 3x3 conv+BN, 1x1 conv+BN and (when shapes allow) identity BN, summed, then
    the activation. ``fuse()`` merges the branches into one 3x3 conv with bias.

    Attribute names follow the official YOLOv7 code so its checkpoints map key for key.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, p: int | None = None, g: int = 1,
                 act: ActSpec = True) -> None:
        super().__init__()
        if k != 3 or autopad(k, p) != 1:
            raise ValueError(f"RepConv needs k=3 with padding 1, got k={k}, p={p}")
        self.act = make_act(act)
        self.rbr_identity = nn.BatchNorm2d(c1) if c1 == c2 and s == 1 else None
        self.rbr_dense = nn.Sequential(nn.Conv2d(c1, c2, k, s, 1, groups=g, bias=False), nn.BatchNorm2d(c2))
        self.rbr_1x1 = nn.Sequential(nn.Conv2d(c1, c2, 1, s, 0, groups=g, bias=False), nn.BatchNorm2d(c2))
        self.rbr_reparam: nn.Conv2d | None = None
        self.out_channels = c2

    @classmethod
    def from_yaml(cls, ctx: RowContext, c2: int, k: int = 3, s: int = 1, p: int | None = None,
                  g: int = 1, act: ActSpec = None) -> RepConv:
        return cls(ctx.c1, ctx.width(c2), k, s, p, g, ctx.act if act is None else act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rbr_reparam is not None:
            return self.act(self.rbr_reparam(x))
        y = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            y = y + self.rbr_identity(x)
        return self.act(y)

    @torch.no_grad()
    def fuse(self) -> None:
        """Merge the three branches into ``rbr_reparam`` (a 3x3 conv with bias)."""
        if self.rbr_reparam is not None:
            return
        dense = fuse_conv_bn(self.rbr_dense[0], self.rbr_dense[1])
        one = fuse_conv_bn(self.rbr_1x1[0], self.rbr_1x1[1])
        weight = dense.weight + nn.functional.pad(one.weight, [1, 1, 1, 1])
        bias = dense.bias + one.bias
        if self.rbr_identity is not None:
            # Identity as a 3x3 kernel with a 1 at the centre of each channel's own group slot.
            c2, cin_g = dense.weight.shape[:2]
            eye = torch.zeros_like(dense.weight)
            eye[torch.arange(c2), torch.arange(c2) % cin_g, 1, 1] = 1.0
            scale, shift = bn_scale_shift(self.rbr_identity)
            weight = weight + eye * scale.view(-1, 1, 1, 1)
            bias = bias + shift
        dense.weight.copy_(weight)
        dense.bias.copy_(bias)
        self.rbr_reparam = dense
        self.rbr_dense = self.rbr_1x1 = self.rbr_identity = None
        inplace_act(self.act)


class ImplicitA(nn.Module):
    """YOLOR implicit knowledge added to a feature map: x + a, a [1, C, 1, 1] ~ N(0, 0.02)."""

    def __init__(self, channels: int, std: float = 0.02) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.zeros(1, channels, 1, 1))
        nn.init.normal_(self.implicit, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit + x


class ImplicitM(nn.Module):
    """YOLOR implicit knowledge multiplied with a feature map: x * m, m [1, C, 1, 1] ~ N(1, 0.02)."""

    def __init__(self, channels: int, std: float = 0.02) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.ones(1, channels, 1, 1))
        nn.init.normal_(self.implicit, mean=1.0, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit * x
