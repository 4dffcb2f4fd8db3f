"""engine.train.optim and engine.train.ema: parameter groups, schedules, warmup, EMA."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from engine.train.ema import ModelEMA
from engine.train.optim import (
    BIAS_GROUP,
    accumulation_steps,
    apply_warmup,
    build_optimizer,
    lr_lambda,
    scaled_weight_decay,
    split_parameters,
    warmup_iterations,
)
from utils.config import Hyp


class Implicit(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.implicit = nn.Parameter(torch.zeros(1, c, 1, 1))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.imp = Implicit(4)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)) + self.imp.implicit)


def test_three_groups():
    m = Tiny()
    decay, no_decay, bias = split_parameters(m)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay) == {id(m.conv.weight), id(m.head.weight)}
    assert ids(no_decay) == {id(m.bn.weight), id(m.imp.implicit)}
    assert ids(bias) == {id(m.bn.bias), id(m.head.bias)}
    opt = build_optimizer(m, "SGD", Hyp(), weight_decay=1e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-3, 0.0, 0.0]
    assert opt.param_groups[0]["nesterov"]
    assert isinstance(build_optimizer(m, "AdamW", Hyp(), 0.0), torch.optim.AdamW)
    with pytest.raises(ValueError, match="RMSprop"):
        build_optimizer(m, "RMSprop", Hyp(), 0.0)


def test_schedules_hit_endpoints():
    for linear in (False, True):
        lf = lr_lambda(100, 0.01, linear)
        assert lf(0) == pytest.approx(1.0) and lf(100) == pytest.approx(0.01)
    assert lr_lambda(100, 0.01)(50) == pytest.approx((1 + 0.01) / 2)
    assert lr_lambda(100, 0.1, linear=True)(50) == pytest.approx(0.55)


def test_batch_scaling():
    assert accumulation_steps(16) == 4 and accumulation_steps(64) == 1 and accumulation_steps(128) == 1
    assert scaled_weight_decay(5e-4, 16) == pytest.approx(5e-4)
    assert scaled_weight_decay(5e-4, 128) == pytest.approx(1e-3)
    assert scaled_weight_decay(5e-4, 24) == pytest.approx(5e-4 * 24 * 3 / 64)
    # hyp.nbs moves the nominal batch: at nbs 16 a batch of 16 steps every batch, same decay
    assert accumulation_steps(16, 16) == 1 and accumulation_steps(8, 16) == 2
    assert scaled_weight_decay(5e-4, 16, 16) == pytest.approx(5e-4)


def test_warmup_ramps():
    hyp = Hyp(lr0=0.01, warmup_epochs=3, warmup_bias_lr=0.1, warmup_momentum=0.8, momentum=0.937)
    assert warmup_iterations(hyp, 10) == 100  # floor of 100 iterations
    assert warmup_iterations(hyp, 1000) == 3000
    assert warmup_iterations(Hyp(warmup_epochs=0), 1000) == 0
    opt = build_optimizer(Tiny(), "SGD", hyp, 0.0)
    for g in opt.param_groups:
        g["initial_lr"] = hyp.lr0
    acc = apply_warmup(opt, 0, 100, 1.0, hyp, batch_size=16)
    assert acc == 1
    assert opt.param_groups[BIAS_GROUP]["lr"] == pytest.approx(0.1)
    assert opt.param_groups[0]["lr"] == 0.0 and opt.param_groups[0]["momentum"] == pytest.approx(0.8)
    acc = apply_warmup(opt, 50, 100, 0.5, hyp, batch_size=16)
    assert acc == 2  # halfway from 1 to 64/16
    assert opt.param_groups[BIAS_GROUP]["lr"] == pytest.approx((0.1 + 0.005) / 2)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0025)
    apply_warmup(opt, 100, 100, 0.5, hyp, batch_size=16)
    assert all(g["lr"] == pytest.approx(0.005) for g in opt.param_groups)
    assert opt.param_groups[1]["momentum"] == pytest.approx(0.937)
    # with hyp.nbs at the batch size there is nothing to ramp: one step per batch throughout
    assert apply_warmup(opt, 50, 100, 0.5, dataclasses.replace(hyp, nbs=16), batch_size=16) == 1


def test_ema_matches_formula():
    torch.manual_seed(0)
    model = Tiny()
    ema = ModelEMA(model, decay=0.9, tau=1.0)
    w0 = model.conv.weight.detach().clone()
    with torch.no_grad():
        model.conv.weight.add_(1.0)
    model(torch.rand(2, 3, 8, 8))  # changes BN running stats and num_batches_tracked
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1))
    assert torch.allclose(ema.module.conv.weight, d * w0 + (1 - d) * model.conv.weight)
    assert torch.allclose(ema.module.bn.running_mean, (1 - d) * model.bn.running_mean)
    assert ema.module.bn.num_batches_tracked.item() == 1
    assert not ema.module.conv.weight.requires_grad and ema.updates == 1
    other = ModelEMA(Tiny())
    other.load_state_dict(ema.state_dict(), ema.module.state_dict())
    assert other.updates == 1 and torch.equal(other.module.conv.weight, ema.module.conv.weight)
