"""Checkpoint files: atomic save, safe load, and the end-of-training strip.

A checkpoint is a plain dict of tensors and builtins (schema in docs/design.md, "Checkpoint
contract"), so it loads with ``torch.load(weights_only=True)`` and never runs code. Saves go to a
temporary file in the same directory followed by ``os.replace``: a crash or ``kill -9`` during a
save leaves the previous file intact, never a truncated one; the temporary files such a kill
leaves behind are removed by the next save into that folder. A save refuses weights holding NaN
or inf (checked on what is written, after any fp16 cast) and reports a full or read-only disk as
one line naming the path, keeping the previous file.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.errors import UserError, os_error_message

LOG = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
# The keys every checkpoint has; the training-only keys (optimizer, train_model, ...) are optional.
REQUIRED_KEYS = ("model", "model_cfg", "names", "nc", "epoch", "version")
TRAINING_ONLY_KEYS = ("optimizer", "scaler", "ema", "rng", "train_model")
WEIGHT_KEYS = ("model", "train_model")  # the state dicts that must be finite


class CheckpointError(UserError, ValueError):
    """A file is not a readable checkpoint of this project; the message names the file."""


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    """Write ``ckpt`` to ``path`` atomically (temporary file, fsync, rename); return the path.

    Raises CheckpointError (nothing written, the previous file kept) when a weight tensor holds
    NaN/inf or the disk is full or read-only.
    """
    path = Path(path)
    for key in WEIGHT_KEYS:
        bad = non_finite_tensors(ckpt.get(key) or {})
        if bad:
            raise CheckpointError(f"{path}: not saved: {len(bad)} tensors of {key!r} hold NaN/inf values "
                                  f"(first: {bad[0]}); training diverged")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        cause = _os_error(e)
        if cause is None:
            raise
        cause.filename = cause.filename if cause.filename and cause.filename != str(tmp) else str(path.parent)
        kept = " (the previous file is kept)" if path.is_file() else ""
        raise CheckpointError(f"{path}: not saved: {os_error_message(cause)}{kept}") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind ``e``: itself, or the one torch.save's writer hit (torch reports a failed
    write, a full disk included, as RuntimeError 'unexpected pos' with the OSError as context)."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the ``.<name>.<pid>.tmp`` files of saves to ``path`` whose process is gone (a save
    killed mid-write); returns them. Temporaries of a live process (another save) are left."""
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-len(".tmp")]
        if not pid.isdigit() or (int(pid) != os.getpid() and _process_alive(int(pid))):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            continue
    if removed:
        LOG.info("removed %d temporary files of interrupted saves in %s", len(removed), path.parent)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 (weights_only runs no code: any failure means "not a checkpoint";
        # on arbitrary bytes its unpickler raises IndexError, KeyError, ValueError, ... as well)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: not a checkpoint of this project (it does not load with weights_only=True: {first})"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint of this project (missing key {missing[0]!r})")
    _check_schema(ckpt, path)
    if ckpt["version"] > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt['version']} is newer than {CHECKPOINT_VERSION}")
    for key in WEIGHT_KEYS:
        bad = non_finite_tensors(ckpt.get(key) or {})
        if bad:
            raise CheckpointError(f"{path}: {len(bad)} tensors of {key!r} hold NaN/inf values (first: {bad[0]}); "
                                  "the training that wrote it diverged")
    return ckpt


def _check_schema(ckpt: dict[str, Any], path: Path) -> None:
    """Types of the required keys (a hand-edited or foreign dict fails here, naming the key)."""
    def is_state_dict(v: Any) -> bool:
        return isinstance(v, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items())

    checks = {
        "model": (is_state_dict, "a state dict (names -> tensors)"),
        "model_cfg": (lambda v: isinstance(v, dict), "a model config mapping"),
        "names": (lambda v: isinstance(v, (list, tuple)) and all(isinstance(n, str) for n in v), "a list of names"),
        "nc": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a class count >= 1"),
        "epoch": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
        "version": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    }
    for key, (ok, what) in checks.items():
        value = ckpt[key]
        if not ok(value):
            shown = repr(value) if isinstance(value, (int, float, str, type(None))) else type(value).__name__
            raise CheckpointError(f"{path}: key {key!r} must be {what}, got {shown}")
    if "train_model" in ckpt and not is_state_dict(ckpt["train_model"]):
        raise CheckpointError(f"{path}: key 'train_model' must be a state dict (names -> tensors)")
    if len(ckpt["names"]) != ckpt["nc"]:
        raise CheckpointError(f"{path}: key 'nc' is {ckpt['nc']} but 'names' has {len(ckpt['names'])} entries")


def strip_checkpoint(path: str | Path) -> Path:
    """Rewrite ``path`` for inference: drop training-only state, fp16 weights, epoch -1.

    A tensor whose values do not fit fp16 (|x| > 65504: they would become inf) stays float32,
    with a warning: such weights usually mean the training diverged.
    """
    ckpt = load_checkpoint(path)
    for key in TRAINING_ONLY_KEYS:
        ckpt.pop(key, None)
    ckpt["model"], kept = half_state_dict(ckpt["model"])
    if kept:
        LOG.warning("%s: %d tensors exceed the float16 range and stay float32 (first: %s); the training "
                    "probably diverged", path, len(kept), kept[0])
    ckpt["epoch"] = -1
    return save_checkpoint(ckpt, path)


def half_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(``state_dict`` with float tensors cast to fp16 where that stays finite, names kept float32)."""
    out, kept = {}, []
    for k, v in state_dict.items():
        if v.is_floating_point() and v.dtype != torch.float16:
            half = v.half()
            if torch.isfinite(half).all() or not torch.isfinite(v).all():
                v = half
            else:
                kept.append(k)
        out[k] = v
    return out, kept


def non_finite_tensors(state_dict: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` that hold NaN or inf."""
    return [k for k, v in state_dict.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()]


def state_dict_is_finite(state_dict: dict[str, torch.Tensor]) -> bool:
    """True when every floating-point tensor of ``state_dict`` is free of NaN and inf."""
    return not non_finite_tensors(state_dict)


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
