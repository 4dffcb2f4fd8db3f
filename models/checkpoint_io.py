"""Rebuild a ``Model`` from a checkpoint file (see docs/design.md, "Checkpoint contract")."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from models.official import is_official, pickle_globals
from models.released import resolve_weights
from models.yolo import Model
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.config import ConfigError

LOG = logging.getLogger(__name__)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Checkpoint ``path`` as our dict (docs/design.md schema): one of ours, loaded with
    ``weights_only=True``, or an official YOLOv7 file converted in memory (``models.official``,
    never unpickled the unsafe way), which is said in one log line.

    A released YOLOv7 name that is not a file (``yolov7-tiny.pt``) is downloaded first
    (``models.released``). Raises ``utils.checkpoint.CheckpointError`` naming the file for
    anything else.
    """
    path = resolve_weights(path)
    if path.is_file() and is_official(pickle_globals(path)):
        from models.official_convert import convert_official  # local: only official files need it

        conv = convert_official(path)
        LOG.warning("%s: official YOLOv7 checkpoint converted in memory (%s, %s weights); "
                    "'python -m models.convert %s' writes it once", path, conv.cfg, conv.weights_from, path)
        return conv.checkpoint
    return load_checkpoint(path)


def model_from_checkpoint(ckpt: dict[str, Any], weights_key: str = "model", source: str = "checkpoint") -> Model:
    """A float32 ``Model`` built from ``ckpt["model_cfg"]`` with the weights ``ckpt[weights_key]``.

    ``weights_key`` is ``"model"`` (the EMA weights, for inference) or ``"train_model"`` (the raw
    training weights, for resuming). Raises CheckpointError naming ``source`` (the file) when
    the config does not build or the weights do not fit it (another model's tensors).
    """
    if weights_key not in ckpt:
        raise CheckpointError(f"{source}: no {weights_key!r} weights in the checkpoint")
    try:
        model = Model(ckpt["model_cfg"], nc=ckpt["nc"])
    except ConfigError as e:
        raise CheckpointError(f"{source}: its model config does not build: {e}") from None
    if ckpt.get("fused"):  # a converted official deploy file holds fused weights
        model.fuse()
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt[weights_key].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # missing / unexpected keys, shape mismatches
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise CheckpointError(f"{source}: the {weights_key!r} weights do not fit its model config "
                              f"({lines[1] if len(lines) > 1 else lines[0]})") from None
    model.names = list(ckpt["names"])
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu", fuse: bool = False) -> Model:
    """Load checkpoint ``path`` (ours, or an official YOLOv7 one: ``read_checkpoint``) into a
    ``Model`` in eval mode on ``device``.

    ``fuse`` folds BN / RepConv / implicit layers for inference. Raises
    ``utils.checkpoint.CheckpointError`` naming the file if it is neither.
    """
    model = model_from_checkpoint(read_checkpoint(path), source=str(path))
    if fuse:
        model.fuse()
    return model.to(device).eval()


@dataclasses.dataclass
class Transfer:
    """What ``transfer_weights`` did to the model's tensors (state-dict keys): ``copied`` whole;
    ``rows_only``: head tensors of another class count, whose box and objectness rows were
    copied and whose class rows keep their fresh initialisation; ``fresh``: left as initialised."""

    copied: list[str]
    rows_only: list[str]
    fresh: list[str]
    total: int

    def summary(self, source: str) -> str:
        """One log line: how many tensors came from ``source``, and which were re-initialised."""
        line = f"transferred {len(self.copied)}/{self.total} tensors from {source}"
        if self.rows_only:
            line += (f"; re-initialised for the new class count, box and objectness rows transferred: "
                     f"{', '.join(self.rows_only)}")
        if self.fresh:
            more = f", ... ({len(self.fresh)} in all)" if len(self.fresh) > 8 else ""
            line += f"; not in the source or of another shape, kept as initialised: {', '.join(self.fresh[:8])}{more}"
        return line


def transfer_weights(model: Model, state_dict: dict[str, torch.Tensor]) -> Transfer:
    """Copy the tensors of ``state_dict`` (a checkpoint's weights) into ``model`` (fine-tuning).

    Tensors whose names and shapes match are copied. The head's class-dependent tensors (its
    1x1 output convs and ImplicitM vectors, [na * (5 + nc), ...]) of a source trained on
    another class count get the source's box and objectness rows (x, y, w, h, obj of each
    anchor: they do not depend on the classes) while their class rows keep the fresh
    initialisation (with its class prior). Everything else keeps its initialisation.
    """
    own = model.state_dict()
    head = f"model.{len(model.model) - 1}."
    anchors = state_dict.get(f"{head}anchors")
    same_anchors = anchors is not None and anchors.shape == own[f"{head}anchors"].shape
    copied, rows_only, fresh, load = [], [], [], {}
    for key, mine in own.items():
        theirs = state_dict.get(key)
        if theirs is not None and theirs.shape == mine.shape:
            load[key] = theirs.to(mine.dtype)
            copied.append(key)
            continue
        merged = _box_rows(mine, theirs, model.head.na) if theirs is not None and same_anchors and key.startswith(
            head) else None
        if merged is None:
            fresh.append(key)
        else:
            load[key] = merged
            rows_only.append(key)
    model.load_state_dict(load, strict=False)
    return Transfer(copied, rows_only, fresh, len(own))


def _box_rows(mine: torch.Tensor, theirs: torch.Tensor, na: int) -> torch.Tensor | None:
    """``mine`` with the box and objectness rows of ``theirs`` along the one dimension where
    their shapes differ (na blocks of 5 + nc outputs each); None when they differ otherwise."""
    differ = [d for d in range(mine.dim()) if mine.dim() == theirs.dim() and mine.shape[d] != theirs.shape[d]]
    if len(differ) != 1 or mine.shape[differ[0]] % na or theirs.shape[differ[0]] % na:
        return None
    dim = differ[0]
    no_mine, no_theirs = mine.shape[dim] // na, theirs.shape[dim] // na
    if min(no_mine, no_theirs) <= 5:
        return None
    rows = torch.arange(5)
    to = torch.cat([a * no_mine + rows for a in range(na)])
    src = torch.cat([a * no_theirs + rows for a in range(na)])
    return mine.clone().index_copy_(dim, to, theirs.index_select(dim, src).to(mine.dtype))
