"""Exponential moving average of the model weights (YOLOv7's ramped decay)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """Keep ``ema = d * ema + (1 - d) * model`` over all floating-point weights and buffers.

    The decay ramps up as ``d = decay * (1 - exp(-updates / tau))``, so the first updates
    follow the model closely (its early weights are far from the final ones) and later updates
    average over about ``1 / (1 - decay)`` steps. Integer buffers (BN's ``num_batches_tracked``)
    are copied. The EMA copy is what is validated and saved.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates

    def current_decay(self) -> float:
        """The decay the next update will use."""
        return self.decay * (1 - math.exp(-(self.updates + 1) / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend ``model``'s current state into the average (``model`` must share the architecture)."""
        d = self.current_decay()
        self.updates += 1
        ema_float, model_float = [], []
        model_state = model.state_dict()
        for name, e in self.module.state_dict().items():
            m = model_state[name].detach()
            if e.is_floating_point():
                ema_float.append(e)
                model_float.append(m.to(e.dtype))
            else:
                e.copy_(m)
        # One fused kernel per dtype/device instead of hundreds of small ones (matters on GPU).
        torch._foreach_lerp_(ema_float, model_float, 1.0 - d)

    def state_dict(self) -> dict:
        """``{"updates": n}``; the averaged weights themselves are saved as the checkpoint's ``model``."""
        return {"updates": self.updates}

    def load_state_dict(self, state: dict, weights: dict[str, torch.Tensor]) -> None:
        """Restore the update count from ``state`` and the averaged ``weights`` (a model state dict)."""
        self.updates = int(state["updates"])
        self.module.load_state_dict(weights)
