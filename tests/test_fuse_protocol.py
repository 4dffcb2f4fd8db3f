"""The fuse() protocol: Model.fuse runs every Block's fuse(), sub-blocks first."""

from __future__ import annotations

import torch
from test_models import randomize, rel_err
from torch import nn

from models.blocks import Block, Conv, RowContext
from models.registry import REGISTRY
from models.yolo import Model


class TwinConv(Block):
    """A toy re-parameterisable block: act(Conv3x3+BN(x) + conv1x1(x)); fuse() adds the 1x1
    kernel into the 3x3 one, which only works once its Conv child has folded its BN."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.main = Conv(c1, c2, 3, act=False)
        self.side: nn.Conv2d | None = nn.Conv2d(c1, c2, 1, bias=False)
        self.act = nn.SiLU()
        self.out_channels = c2

    @classmethod
    def from_yaml(cls, ctx: RowContext, c2: int) -> TwinConv:
        return cls(ctx.c1, ctx.width(c2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.main(x)
        return self.act(y if self.side is None else y + self.side(x))

    @torch.no_grad()
    def fuse(self) -> None:
        assert isinstance(self.main.bn, nn.Identity), "sub-blocks must be fused first"
        self.main.conv.weight += nn.functional.pad(self.side.weight, [1, 1, 1, 1])
        self.side = None


CFG = {
    "nc": 2, "anchors": [[10, 13, 16, 30]],
    "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "TwinConv", [16]], [-1, 1, "Conv", [16, 3, 2]]],
    "head": [[[-1], 1, "Detect", ["nc", "anchors"]]],
}


def test_model_fuse_runs_the_fuse_of_a_new_block(monkeypatch):
    monkeypatch.setitem(REGISTRY, "TwinConv", TwinConv)
    model = randomize(Model(CFG)).eval()
    twin = model.model[1]
    assert isinstance(twin, TwinConv)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)[0]
        model.fuse()
        after = model(x)[0]
    assert twin.side is None  # its fuse() ran
    assert rel_err(before, after) < 1e-5

