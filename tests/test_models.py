"""Blocks, head decode, fuse and the compact <-> unrolled key map, on small models."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from models.__main__ import main as summary_main
from models.blocks import make_act
from models.head import Detect
from models.reparam import RepConv
from models.yolo import Model, unrolled_key_map

ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-trivial statistics and affine terms so that fusing is really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


def test_make_act_parses_strings_without_eval():
    act = make_act("nn.LeakyReLU(0.1)")
    assert isinstance(act, nn.LeakyReLU) and act.negative_slope == pytest.approx(0.1)
    assert isinstance(make_act("ReLU"), nn.ReLU)
    assert isinstance(make_act(True), nn.SiLU)
    assert isinstance(make_act(False), nn.Identity)
    for bad in ("__import__('os').system('true')", "nn.Conv2d(3, 3, 1)", "LeakyReLU(x)"):
        with pytest.raises(ValueError):
            make_act(bad)


def test_head_decodes_a_hand_made_prediction():
    """One anchor (10 x 20 px) at stride 8 on a 3 x 4 grid; cell (gx=2, gy=1) has t_xy with
    sigmoid 0.75 and t_wh with sigmoid 0.25: xy = (2*0.75 - 0.5 + g) * 8, wh = (2*0.25)^2 * anchor."""
    head = Detect(nc=2, anchors=[[10, 20]], ch=[4]).eval()
    head.stride.fill_(8)
    raw = torch.zeros(1, 1, 3, 4, 7)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    raw[0, 0, 1, 2, :4] = torch.tensor([logit(0.75), logit(0.75), logit(0.25), logit(0.25)])
    raw[0, 0, 1, 2, 4:] = torch.tensor([logit(0.9), logit(0.2), logit(0.6)])
    pred = head.decode(raw, 0)
    assert pred.shape == (1, 12, 7)
    cell = pred[0, 1 * 4 + 2]
    assert cell.tolist() == pytest.approx([24.0, 16.0, 2.5, 5.0, 0.9, 0.2, 0.6], abs=1e-5)
    # a zero prediction at cell (0, 0) sits at the cell centre with exactly the anchor size
    assert pred[0, 0, :4].tolist() == pytest.approx([4.0, 4.0, 10.0, 20.0], abs=1e-5)


def test_head_forward_shapes_train_and_eval():
    head = Detect(nc=3, anchors=ANCHORS[:2], ch=[8, 16, 4, 4], implicit=True, aux=True)
    head.stride.copy_(torch.tensor([8.0, 16.0]))
    xs = [torch.rand(2, 8, 8, 6), torch.rand(2, 16, 4, 3), torch.rand(2, 4, 8, 6), torch.rand(2, 4, 4, 3)]
    out = head.train()(xs)
    assert [tuple(o.shape) for o in out] == [(2, 3, 8, 6, 8), (2, 3, 4, 3, 8)] * 2
    pred, raw = head.eval()(xs)
    assert pred.shape == (2, 3 * (48 + 12), 8) and len(raw) == 2


def test_bias_init_follows_yolo_rule():
    head = Detect(nc=4, anchors=ANCHORS, ch=[8, 8, 8])
    head.stride.copy_(torch.tensor([8.0, 16.0, 32.0]))
    for conv in head.m:
        nn.init.zeros_(conv.bias)
    head.initialize_biases()
    b = head.m[1].bias.view(3, -1)
    assert b[:, 4].tolist() == pytest.approx([math.log(8 / (640 / 16) ** 2)] * 3)
    assert b[:, 5:].flatten().tolist() == pytest.approx([math.log(0.6 / (4 - 0.99))] * 12)
    assert b[:, :4].abs().max() == 0


def test_repconv_fuse_with_identity_and_groups():
    for c1, c2, s, g in [(8, 8, 1, 1), (8, 8, 1, 2), (8, 16, 2, 1)]:
        block = randomize(RepConv(c1, c2, 3, s, g=g), seed=c2 + g).eval()
        x = torch.randn(2, c1, 10, 10)
        y = block(x)
        block.fuse()
        assert block.rbr_dense is None and block.rbr_reparam is not None
        assert rel_err(y, block(x)) < 1e-5


def test_model_contract_and_bn_settings():
    model = Model("yolov7-tiny.yaml", nc=3)
    assert model.nc == 3 and model.names == ["0", "1", "2"] and model.yaml["nc"] == 3
    assert model.stride.tolist() == [8, 16, 32]
    assert model.head.anchors.shape == (3, 3, 2) and model.head.anchors[0, 0].tolist() == [10, 13]
    assert "head.anchors" not in model.state_dict() and "model.37.anchors" in model.state_dict()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)


def test_anchors_reordered_to_match_strides():
    cfg = Model("yolov7-tiny.yaml").yaml
    cfg["anchors"] = ANCHORS[::-1]  # largest anchors first: must be flipped to P3-first
    model = Model(cfg)
    assert model.head.anchors[0, 0].tolist() == [10, 13]


def test_fuse_keeps_outputs_tiny_and_yolov7():
    for name, size in [("yolov7-tiny.yaml", (128, 96)), ("yolov7.yaml", (64, 96))]:
        model = randomize(Model(name)).eval()
        for p in model.modules():  # non-trivial implicit knowledge too
            if hasattr(p, "implicit"):
                p.implicit.data.normal_(1.0 if type(p).__name__ == "ImplicitM" else 0.0, 0.2)
        x = torch.rand(1, 3, *size)
        with torch.no_grad():
            before = model(x)[0]
            n_params = sum(p.numel() for p in model.parameters())
            model.fuse()
            after = model(x)[0]
        assert sum(p.numel() for p in model.parameters()) < n_params
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        assert model.head.ia is None and model.head.im is None
        assert rel_err(before, after) < 1e-4, name


# A small network written twice: compact rows and the same network unrolled row by row.
_COMPACT = {
    "nc": 2, "anchors": [[10, 13, 16, 30], [30, 61, 62, 45]],
    "backbone": [
        [-1, 1, "ReOrg", []],
        [-1, 1, "DownC", [16]],
        [-1, 1, "ELAN", [32, 8, 8, 2, 2]],
        [-1, 1, "MPConv", [32]],
        [-1, 1, "EELAN", [32, 8, 8, 2, 1]],
    ],
    "head": [
        [2, 1, "Conv", [16, 1, 1]],
        [[-1, 4], 1, "MPConv", [16]],
        [-1, 1, "ELAN", [None, 8, 4, 3, 1]],
        [[4, 7], 1, "IDetect", ["nc", "anchors"]],
    ],
}
_UNROLLED = {
    "nc": 2, "anchors": [[10, 13, 16, 30], [30, 61, 62, 45]],
    "backbone": [
        [-1, 1, "ReOrg", []], [-1, 1, "DownC", [16]],                      # 0, 1
        [-1, 1, "Conv", [8, 1, 1]], [-2, 1, "Conv", [8, 1, 1]],            # 2 short, 3 main
        [-1, 1, "Conv", [8, 3, 1]], [-1, 1, "Conv", [8, 3, 1]],
        [-1, 1, "Conv", [8, 3, 1]], [-1, 1, "Conv", [8, 3, 1]],
        [[-1, -3, -5, -6], 1, "Concat", [1]], [-1, 1, "Conv", [32, 1, 1]],  # 8, 9
        [-1, 1, "MP", []], [-1, 1, "Conv", [16, 1, 1]], [-3, 1, "Conv", [16, 1, 1]],
        [-1, 1, "Conv", [16, 3, 2]], [[-1, -3], 1, "Concat", [1]],         # 13, 14
        [-1, 1, "Conv", [8, 1, 1]], [-2, 1, "Conv", [8, 1, 1]],            # E-ELAN group 1
        [-1, 1, "Conv", [8, 3, 1]], [-1, 1, "Conv", [8, 3, 1]],
        [[-1, -2, -3, -4], 1, "Concat", [1]], [-1, 1, "Conv", [32, 1, 1]],  # 20
        [-7, 1, "Conv", [8, 1, 1]], [-8, 1, "Conv", [8, 1, 1]],            # group 2
        [-1, 1, "Conv", [8, 3, 1]], [-1, 1, "Conv", [8, 3, 1]],
        [[-1, -2, -3, -4], 1, "Concat", [1]], [-1, 1, "Conv", [32, 1, 1]],  # 26
        [[-1, -7], 1, "Shortcut", [1]],                                    # 27
    ],
    "head": [
        [9, 1, "Conv", [16, 1, 1]],                                        # 28
        [-1, 1, "MP", []], [-1, 1, "Conv", [8, 1, 1]], [-3, 1, "Conv", [8, 1, 1]],
        [-1, 1, "Conv", [8, 3, 2]], [[-1, -3, 27], 1, "Concat", [1]],      # 32, 33
        [-1, 1, "Conv", [8, 1, 1]], [-2, 1, "Conv", [8, 1, 1]],
        [-1, 1, "Conv", [4, 3, 1]], [-1, 1, "Conv", [4, 3, 1]], [-1, 1, "Conv", [4, 3, 1]],
        [[-1, -2, -3, -4, -5], 1, "Concat", [1]],                          # 39
        [[27, 39], 1, "IDetect", ["nc", "anchors"]],
    ],
}


def test_compact_and_unrolled_give_identical_outputs_with_copied_weights():
    compact, unrolled = randomize(Model(_COMPACT)), Model(_UNROLLED)
    key_map = unrolled_key_map(compact)
    src, dst = compact.state_dict(), unrolled.state_dict()
    assert sorted(key_map.values()) == sorted(dst)  # one to one
    assert [key_map[k] for k in src] == list(dst)  # and in the same order
    unrolled.load_state_dict({key_map[k]: v for k, v in src.items()})
    assert sum(p.numel() for p in compact.parameters()) == sum(p.numel() for p in unrolled.parameters())
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        for train in (True, False):
            a, b = compact.train(train)(x), unrolled.train(train)(x)
            a, b = (a, b) if train else (a[0], b[0])
            for ya, yb in zip(a, b, strict=False):
                assert torch.equal(ya, yb)


def test_summary_command_prints_json(capsys):
    assert summary_main(["--cfg", "yolov7-tiny.yaml", "--img", "320", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["params"] == 6228762 and out["fused_params"] == 6219709
    assert out["fused_gflops"] == pytest.approx(13.70 / 4, abs=0.01)  # FLOPs scale with area
    assert {"layers", "gflops", "fused_gflops"} <= set(out)


def test_fused_copy_leaves_original_untouched():
    model = Model("yolov7-tiny.yaml")
    fused = copy.deepcopy(model).fuse()
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
