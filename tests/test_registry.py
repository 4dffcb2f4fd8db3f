"""Every block of models/registry.py's REGISTRY: built from one config row, forward and backward,
fused, the same eval-mode output after fusing.

A new registry entry needs a row in ROWS below (the test fails until it has one), so each block
is built, trained a step and fused at least once.
"""

from __future__ import annotations

import copy

import pytest
import torch
from test_models import randomize, rel_err
from torch import nn

from models.head import Detect
from models.registry import REGISTRY, lookup
from models.reparam import ImplicitA, ImplicitM
from models.yolo import Model

STEM = [-1, 1, "Conv", [16, 3, 2]]  # 64 px -> 16 channels at 32 x 32, stride 2
# name -> (from, number, args) of its one row after STEM; a head's row is the model's last row
ROWS: dict[str, tuple[int | list[int], int, list]] = {
    "Conv": (-1, 1, [16, 3, 1]),
    "RepConv": (-1, 1, [16, 3, 1]),
    "Concat": ([-1, 0], 1, [1]),
    "Shortcut": ([-1, 0], 1, []),
    "MP": (-1, 1, []),
    "SP": (-1, 1, [5, 1]),
    "ReOrg": (-1, 1, []),
    "Upsample": (-1, 1, [None, 2, "nearest"]),
    "DownC": (-1, 1, [32]),
    "SPPCSPC": (-1, 1, [16]),
    "ELAN": (-1, 1, [32, 16, 8]),
    "EELAN": (-1, 1, [32, 16, 8]),
    "MPConv": (-1, 1, [32]),
    "Bottleneck": (-1, 1, [16]),
    "BottleneckCSPA": (-1, 2, [16]),
    "BottleneckCSPB": (-1, 2, [16]),
    "BottleneckCSPC": (-1, 2, [16]),
    "CSPFusionFirst": (-1, 2, [16]),
    "CSPFusionLast": (-1, 2, [16]),
    "ResBlock": (-1, 1, [0.5]),
    "OSA": (-1, 1, [8, 3]),
    "CSPStage": (-1, 1, [2]),  # its depth is an argument
    "ELANk": (-1, 2, [16, 8]),
    "Detect": (-1, 1, ["nc", "anchors"]),
    "IDetect": (-1, 1, ["nc", "anchors"]),
    "IAuxDetect": ([-1, 0], 1, ["nc", "anchors"]),  # lead and auxiliary input: both the stem
}


def one_row_config(name: str) -> dict:
    """STEM, the block's row, a Detect head (unless the row is the head itself)."""
    row = [ROWS[name][0], ROWS[name][1], name, ROWS[name][2]]
    is_head = issubclass(lookup(name)[0], Detect)
    return {"nc": 2, "anchors": [[10, 13, 16, 30]],
            "backbone": [STEM] if is_head else [STEM, row],
            "head": [row] if is_head else [[-1, 1, "Detect", ["nc", "anchors"]]]}


def test_every_registered_block_has_a_one_row_spec():
    assert set(ROWS) == set(REGISTRY), f"ROWS lacks {set(REGISTRY) - set(ROWS)}, has extra {set(ROWS) - set(REGISTRY)}"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_block_builds_trains_and_fuses(name):
    torch.manual_seed(0)
    model = randomize(Model(one_row_config(name)))
    block = model.model[1]
    assert type(block) is lookup(name)[0]
    x = torch.rand(2, 3, 64, 64)

    outputs = model.train()(x)
    sum(o.square().mean() for o in outputs).backward()
    grads = [p.grad for p in block.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), "a parameter got no (finite) gradient"
    assert not grads or sum(g.abs().sum() for g in grads) > 0

    model.eval()
    fused = copy.deepcopy(model).fuse()
    assert not any(isinstance(m, (nn.BatchNorm2d, ImplicitA, ImplicitM)) for m in fused.modules()), "not fused"
    with torch.no_grad():
        before, after = model(x)[0], fused(x)[0]
    assert before.shape == after.shape and torch.isfinite(before).all()
    assert rel_err(before, after) < 1e-5
