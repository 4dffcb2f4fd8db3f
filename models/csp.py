"""CSP blocks of YOLOR-CSP (CSPNet stage level; docs/gradpath.md).

A CSP stage splits its input into two 1x1 projections; only one goes through the ``n``
bottlenecks; the parts are joined by a cross-stage transition. Where that transition sits is
the "fusion" option: ``"both"`` (YOLOR's BottleneckCSPC: a 1x1 transition on the block branch,
concat, a 1x1 transition), ``"first"`` (concat, then the transition; = BottleneckCSPA) and
``"last"`` (a transition on the block branch, then concat; no transition after it).
Feature maps are [B, C, H, W]; the spatial size never changes.
"""

from __future__ import annotations

import torch
from torch import nn

from models.blocks import ActSpec, Block, Conv, RowContext

FUSIONS = ("both", "first", "last")


class Bottleneck(Block):
    """1x1 conv to ``c2 * e`` channels, 3x3 conv to ``c2``, plus the input when ``shortcut`` and c1 == c2."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5,
                 act: ActSpec = True) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1, act=act)
        self.cv2 = Conv(c_, c2, 3, 1, g=g, act=act)
        self.add = shortcut and c1 == c2
        self.out_channels = c2

    @classmethod
    def from_yaml(cls, ctx: RowContext, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5,
                  act: ActSpec = None) -> Bottleneck:
        return cls(ctx.c1, ctx.width(c2), shortcut, g, e, ctx.act if act is None else act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class BottleneckCSP(Block):
    """CSP stage with ``n`` bottlenecks and the transition placement ``fusion`` (module docstring).

    Hidden width c_ = c2 * e. Output channels: c2 ("both", "first"); 2 * c_ ("last", which
    equals c2 for the default e = 0.5). Attribute names follow the official BottleneckCSPC.
    """

    takes_depth = True

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5,
                 fusion: str = "both", act: ActSpec = True) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"CSP fusion must be one of {FUSIONS}, got {fusion!r}")
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1, act=act)
        self.cv2 = Conv(c1, c_, 1, 1, act=act)
        self.cv3 = Conv(c_, c_, 1, 1, act=act) if fusion in ("both", "last") else None
        self.cv4 = Conv(2 * c_, c2, 1, 1, act=act) if fusion in ("both", "first") else None
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0, act=act) for _ in range(n)))
        self.out_channels = c2 if self.cv4 is not None else 2 * c_

    @classmethod
    def from_yaml(cls, ctx: RowContext, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5,
                  fusion: str = "both", act: ActSpec = None) -> BottleneckCSP:
        return cls(ctx.c1, ctx.width(c2), ctx.n, shortcut, g, e, fusion, ctx.act if act is None else act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = self.m(self.cv1(x))
        if self.cv3 is not None:
            y1 = self.cv3(y1)
        y = torch.cat((y1, self.cv2(x)), 1)
        return self.cv4(y) if self.cv4 is not None else y


class BottleneckCSPB(Block):
    """YOLOR-CSP's head stage: x1 = 1x1(x) to c2; concat[bottlenecks(x1), 1x1(x1)]; 1x1 transition.

    The bottlenecks default to no shortcut, as in the official code.
    """

    takes_depth = True

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1,
                 act: ActSpec = True) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c2, 1, 1, act=act)
        self.cv2 = Conv(c2, c2, 1, 1, act=act)
        self.cv3 = Conv(2 * c2, c2, 1, 1, act=act)
        self.m = nn.Sequential(*(Bottleneck(c2, c2, shortcut, g, e=1.0, act=act) for _ in range(n)))
        self.out_channels = c2

    @classmethod
    def from_yaml(cls, ctx: RowContext, c2: int, shortcut: bool = False, g: int = 1, e: float = 0.5,
                  act: ActSpec = None) -> BottleneckCSPB:
        # ``e`` is in the official signature but unused there too.
        return cls(ctx.c1, ctx.width(c2), ctx.n, shortcut, g, ctx.act if act is None else act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv1(x)
        return self.cv3(torch.cat((self.m(x1), self.cv2(x1)), 1))
