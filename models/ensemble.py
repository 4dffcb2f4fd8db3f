"""Several detectors run as one (val.py / detect.py ``--weights a.pt b.pt``), as YOLOv7 ensembles.

Each model's decoded predictions are concatenated along the box axis and NMS (run afterwards by
the caller) picks among all of them. That needs models of the same classes (class index i means
the same thing in each) and the same strides (inputs are letterboxed to one stride multiple).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from utils.errors import UserError


class EnsembleError(UserError, ValueError):
    """Models that cannot be ensembled; the message names the files."""


class Ensemble(nn.ModuleList):
    """Models in eval mode whose decoded outputs are concatenated: forward(x [B, 3, H, W]) ->
    (pred [B, N_1 + ... + N_k, 5 + nc], None): (cx, cy, w, h) input pixels, obj, class probs.

    ``sources`` names the models in errors (their files). Raises EnsembleError when the
    models' class names or strides differ.
    """

    def __init__(self, models: Sequence[nn.Module], sources: Sequence[str] | None = None) -> None:
        super().__init__(models)
        sources = list(sources or [f"model {i}" for i in range(len(models))])
        first = models[0]
        for model, source in zip(models[1:], sources[1:], strict=True):
            if list(model.names) != list(first.names):
                raise EnsembleError(f"{source} has {len(model.names)} classes ({', '.join(model.names[:5])}"
                                    f"{', ...' if len(model.names) > 5 else ''}) but {sources[0]} has "
                                    f"{len(first.names)} ({', '.join(first.names[:5])}"
                                    f"{', ...' if len(first.names) > 5 else ''}): an ensemble needs the same classes")
            if model.stride.tolist() != first.stride.tolist():
                raise EnsembleError(f"{source} has strides {model.stride.int().tolist()} but {sources[0]} has "
                                    f"{first.stride.int().tolist()}: an ensemble needs the same strides")
        self.names = list(first.names)
        self.nc = first.nc

    @property
    def stride(self) -> torch.Tensor:
        """[nl] the strides all members share."""
        return self[0].stride

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.cat([model(x)[0] for model in self], 1), None
