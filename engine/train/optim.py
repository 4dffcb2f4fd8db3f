"""Optimizer construction, learning-rate schedules and warmup (YOLOv7's recipe).

Three parameter groups: convolution / linear weights with weight decay; everything else
(BN weights, implicit-knowledge vectors, ...) without; biases without decay and with their own
warmup (they start at ``warmup_bias_lr`` and fall, while the others rise from 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from utils.config import Hyp

NOMINAL_BATCH = 64  # YOLOv7's nominal batch size (the default of hyp.nbs)
MIN_WARMUP_ITERS = 100
# Group order is part of the schedule: index BIAS_GROUP gets the bias warmup.
DECAY_GROUP, NO_DECAY_GROUP, BIAS_GROUP = 0, 1, 2


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """Return (decayed weights, non-decayed weights, biases) of the trainable parameters.

    Decayed: the ``weight`` of convolutions and linear layers. Biases: every parameter named
    ``bias``. The rest (BN / GroupNorm weights, ImplicitA / ImplicitM vectors) are not decayed:
    shrinking a scale or a learned offset towards 0 is not regularisation.
    """
    decay, no_decay, bias = [], [], []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if name == "bias":
                bias.append(p)
            elif name == "weight" and isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
                decay.append(p)
            else:
                no_decay.append(p)
    return decay, no_decay, bias


def build_optimizer(model: nn.Module, name: str, hyp: Hyp, weight_decay: float) -> torch.optim.Optimizer:
    """SGD (Nesterov), Adam or AdamW over the three groups of :func:`split_parameters`.

    ``weight_decay`` is the decay already scaled to the effective batch size.
    """
    decay, no_decay, bias = split_parameters(model)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
        {"params": bias, "weight_decay": 0.0},
    ]
    if name == "SGD":
        return torch.optim.SGD(groups, lr=hyp.lr0, momentum=hyp.momentum, nesterov=True)
    if name == "Adam":
        return torch.optim.Adam(groups, lr=hyp.lr0, betas=(hyp.momentum, 0.999))
    if name == "AdamW":
        return torch.optim.AdamW(groups, lr=hyp.lr0, betas=(hyp.momentum, 0.999))
    raise ValueError(f"unknown optimizer {name!r} (choose SGD, Adam or AdamW)")


def lr_lambda(epochs: int, lrf: float, linear: bool = False) -> Callable[[int], float]:
    """Learning-rate multiplier per epoch: 1 at epoch 0 down to ``lrf`` at ``epochs``.

    Cosine (default) or linear, as YOLOv7's ``one_cycle`` / ``--linear-lr``.
    """
    if linear:
        return lambda e: (1 - e / epochs) * (1.0 - lrf) + lrf
    return lambda e: ((1 - math.cos(e * math.pi / epochs)) / 2) * (lrf - 1) + 1


def warmup_iterations(hyp: Hyp, batches_per_epoch: int) -> int:
    """Number of warmup iterations: ``warmup_epochs`` epochs but at least 100; 0 disables it.

    YOLOv7 uses a floor of 1000, which on a 200-image set at batch 16 means 77 epochs of
    warmup; 100 keeps warmup short on small sets and changes nothing on large ones.
    """
    if hyp.warmup_epochs <= 0:
        return 0
    return max(round(hyp.warmup_epochs * batches_per_epoch), MIN_WARMUP_ITERS)


def accumulation_steps(batch_size: int, nominal: int = NOMINAL_BATCH) -> int:
    """Optimizer steps happen every this many batches, so the effective batch is ~``nominal``."""
    return max(round(nominal / batch_size), 1)


def scaled_weight_decay(weight_decay: float, batch_size: int, nominal: int = NOMINAL_BATCH) -> float:
    """Weight decay for the effective batch ``batch_size * accumulation`` (defined at ``nominal``)."""
    return weight_decay * batch_size * accumulation_steps(batch_size, nominal) / nominal


def apply_warmup(
    optimizer: torch.optim.Optimizer, iteration: int, n_warmup: int, epoch_lr_factor: float, hyp: Hyp, batch_size: int
) -> int:
    """Set lr and momentum of every group for ``iteration`` (batches since the start of training)
    of the warmup; return the accumulation.

    Linear ramps over ``[0, n_warmup]``: bias lr from ``warmup_bias_lr``, other lrs from 0, to
    ``initial_lr * epoch_lr_factor``; momentum (or Adam beta1) from ``warmup_momentum`` to
    ``hyp.momentum``; the accumulation from 1 to its nominal value.
    """
    ramp = [0, n_warmup]
    accumulate = max(1, int(np.interp(iteration, ramp, [1, hyp.nbs / batch_size]).round()))
    for j, group in enumerate(optimizer.param_groups):
        start = hyp.warmup_bias_lr if j == BIAS_GROUP else 0.0
        group["lr"] = float(np.interp(iteration, ramp, [start, group["initial_lr"] * epoch_lr_factor]))
        momentum = float(np.interp(iteration, ramp, [hyp.warmup_momentum, hyp.momentum]))
        if "momentum" in group:
            group["momentum"] = momentum
        elif "betas" in group:
            group["betas"] = (momentum, group["betas"][1])
    return accumulate
