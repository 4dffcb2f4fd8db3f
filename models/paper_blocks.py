"""Blocks for the gradient-path analysis of the paper (docs/gradpath.md, cfg/gradpath/).

They build the small networks the paper reasons about: stacks of residual blocks (with the
stop-gradient option of its Table 3), of VoVNet OSA blocks, of whole CSP stages, and ELAN blocks
with k computational modules. Each keeps its channel count (c1 == c2) so that a config row's
``number`` can repeat it (or, for ``ELANk``, set k). Feature maps are
[B, C, H, W]; the spatial size never changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.blocks import ActSpec, Block, Conv, RowContext
from models.csp import BottleneckCSP
from models.elan import ELAN

STOP_GRAD = (None, "identity", "computational")


class StopGradient(torch.autograd.Function):
    """Identity in the forward pass, zero gradient in the backward pass."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(grad)


def stop_gradient(x: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged, but no gradient flows back through it. Unlike ``detach()`` the edge stays
    in the autograd graph, so ``models.gradpath`` still counts it for depth and aggregation.
    Without autograd (inference, export) it is skipped: there is no gradient to stop."""
    return StopGradient.apply(x) if torch.is_grad_enabled() else x


class ResBlock(Block):
    """Residual block x + F(x), F = 1x1 conv to ``c * e`` channels then 3x3 conv back to ``c``.

    ``stop_grad`` cuts one branch in the backward pass only (the forward value is unchanged):
    ``"identity"`` stops the identity, so the layers before the block get their gradient only
    through F (the long way); ``"computational"`` stops F's input, so they get it only through
    the identity (F's own weights still learn from the loss).
    """

    def __init__(self, c: int, e: float = 0.5, stop_grad: str | None = None, act: ActSpec = True) -> None:
        super().__init__()
        if stop_grad not in STOP_GRAD:
            raise ValueError(f"ResBlock stop_grad must be one of {STOP_GRAD}, got {stop_grad!r}")
        c_ = max(int(c * e), 1)
        self.cv1 = Conv(c, c_, 1, 1, act=act)
        self.cv2 = Conv(c_, c, 3, 1, act=act)
        self.stop_grad = stop_grad
        self.out_channels = c

    @classmethod
    def from_yaml(cls, ctx: RowContext, e: float = 0.5, stop_grad: str | None = None,
                  act: ActSpec = None) -> ResBlock:
        return cls(ctx.c1, e, stop_grad, ctx.act if act is None else act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(stop_gradient(x) if self.stop_grad == "computational" else x))
        return (stop_gradient(x) if self.stop_grad == "identity" else x) + y


class OSA(Block):
    """VoVNet one-shot aggregation: ``n`` chained 3x3 convs of ``c_mid`` channels; the input and
    every conv output are concatenated once and a 1x1 transition maps them back to c1 channels.
    """

    def __init__(self, c: int, c_mid: int, n: int = 5, act: ActSpec = True) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"OSA needs n >= 1 convs, got {n}")
        self.convs = nn.ModuleList(Conv(c if i == 0 else c_mid, c_mid, 3, 1, act=act) for i in range(n))
        self.transition = Conv(c + n * c_mid, c, 1, 1, act=act)
        self.out_channels = c

    @classmethod
    def from_yaml(cls, ctx: RowContext, c_mid: int, n: int = 5, act: ActSpec = None) -> OSA:
        return cls(ctx.c1, ctx.width(c_mid), n, ctx.act if act is None else act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x]
        for conv in self.convs:
            outs.append(conv(outs[-1]))
        return self.transition(torch.cat(outs, 1))


class CSPStage(BottleneckCSP):
    """A whole CSP stage (``BottleneckCSP``) with its bottleneck count ``n`` as an argument, so
    that a row's ``number`` repeats stages instead of bottlenecks. Keeps c1 channels."""

    takes_depth = False

    @classmethod
    def from_yaml(cls, ctx: RowContext, n: int = 1, fusion: str = "both",
                  act: ActSpec = None) -> CSPStage:
        return cls(ctx.c1, ctx.c1, n, True, 1, 0.5, fusion, ctx.act if act is None else act)


class ELANk(ELAN):
    """ELAN block (with its 1x1 transition back to c1 channels) whose number of computational
    modules k is the row's ``number``, so that depth scaling stacks modules inside one block."""

    takes_depth = True

    @classmethod
    def from_yaml(cls, ctx: RowContext, c_branch: int, c_block: int, m: int = 2,
                  act: ActSpec = None) -> ELANk:
        return cls(ctx.c1, ctx.c1, ctx.width(c_branch), ctx.width(c_block), ctx.n, m, "modules",
                   ctx.act if act is None else act)
