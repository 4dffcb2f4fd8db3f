"""Rebuild a ``Model`` from a checkpoint file (see docs/design.md, "Checkpoint contract")."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

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
        from models.official_map import convert_official  # local: only official files need it

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


def transfer_weights(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> tuple[int, int]:
    """Copy the tensors of ``state_dict`` whose names and shapes match ``model``'s (fine-tuning).

    Returns (transferred, total in model). A head trained for another class count does not
    match and keeps its fresh initialisation.
    """
    own = model.state_dict()
    matched = {k: v.to(own[k].dtype) for k, v in state_dict.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(matched, strict=False)
    return len(matched), len(own)
