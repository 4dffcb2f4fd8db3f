"""Checkpoint files: atomic save, safe load, and the end-of-training strip.

A checkpoint is a plain dict of tensors and builtins (schema in docs/design.md, "Checkpoint
contract"), so it loads with ``torch.load(weights_only=True)`` and never runs code. Saves go to a
temporary file in the same directory followed by ``os.replace``: a crash or ``kill -9`` during a
save leaves the previous file intact, never a truncated one.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.errors import UserError

CHECKPOINT_VERSION = 1
# The keys every checkpoint has; the training-only keys (optimizer, train_model, ...) are optional.
REQUIRED_KEYS = ("model", "model_cfg", "names", "nc", "epoch", "version")
TRAINING_ONLY_KEYS = ("optimizer", "scaler", "ema", "rng", "train_model")


class CheckpointError(UserError, ValueError):
    """A file is not a readable checkpoint of this project; the message names the file."""


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    """Write ``ckpt`` to ``path`` atomically (temporary file, fsync, rename); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    """Persist a rename on file systems that need the directory synced (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; raise CheckpointError for anything else.

    Errors name the file: missing file, a pickle that needs code to load (e.g. an official
    YOLOv7 ``.pt``, which pickles whole modules), a truncated file, or a dict without our keys.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: not a checkpoint of this project (it does not load with weights_only=True: {first})"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint of this project (missing key {missing[0]!r})")
    if ckpt["version"] > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt['version']} is newer than {CHECKPOINT_VERSION}")
    return ckpt


def strip_checkpoint(path: str | Path) -> Path:
    """Rewrite ``path`` for inference: drop training-only state, fp16 weights, epoch -1."""
    ckpt = load_checkpoint(path)
    for key in TRAINING_ONLY_KEYS:
        ckpt.pop(key, None)
    ckpt["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    ckpt["epoch"] = -1
    return save_checkpoint(ckpt, path)


def state_dict_is_finite(state_dict: dict[str, torch.Tensor]) -> bool:
    """True when every floating-point tensor of ``state_dict`` is free of NaN and inf."""
    return all(torch.isfinite(v).all() for v in state_dict.values() if v.is_floating_point())


def rng_state() -> dict[str, Any]:
    """The torch / CUDA / numpy / python RNG states as tensors and builtins (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states captured by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
