"""Training precision: the words of ``--precision`` and the autocast they stand for.

``auto`` resolves per device: bf16 on a CPU that does bf16 in hardware (AVX-512 BF16 or AMX on
x86, the BF16 extension on Arm), bf16 on a CUDA GPU that supports it, else fp16 on CUDA, and
fp32 everywhere else. Autocast covers the model's forward only: the loss, the OTA cost and the
optimizer step stay fp32 (the trainer casts the raw outputs to float before the loss), and
validation and export stay fp32. fp16 is the one precision that needs loss scaling.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# /proc/cpuinfo flags of hardware bf16 arithmetic (x86 "flags", Arm "Features")
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU does bf16 dot products in hardware and oneDNN can use them.

    Read from /proc/cpuinfo (Linux); elsewhere False, so ``auto`` stays fp32 (an explicit
    ``--precision bf16`` still runs, emulated). oneDNN's own check alone is not enough: it
    also answers True on plain AVX-512, where bf16 is emulated and slower than fp32.
    """
    if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return bool(NATIVE_BF16_FLAGS & set(value.split()))
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """The concrete precision ('fp32', 'bf16' or 'fp16') that ``precision`` means on ``device``.

    Raises ValueError for a word outside PRECISIONS or a precision the device cannot run
    (bf16 on a CUDA GPU without bf16, fp16/bf16 on MPS).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    kind = device.type
    if precision == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        # CPU: bf16 where it is done in hardware (about twice as fast a training step as fp32); the
        # shapes default run trained at least as well in bf16 (docs/benchmarks.md)
        return "bf16" if kind == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision == "fp32":
        return precision
    if kind == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--precision bf16: {torch.cuda.get_device_name(device)} does not support bf16 (use fp16)")
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"--precision {precision}: mixed precision needs a CPU or CUDA device, not {kind}")
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None: fp32, no autocast)."""
    return DTYPES[precision]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for a resolved ``precision`` on ``device``; a no-op for fp32."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def precision_reason(precision: str, device: torch.device) -> str:
    """Why ``auto`` chose ``precision`` on ``device``, for the start-up log."""
    if device.type == "cuda":
        return "the GPU supports bf16" if precision == "bf16" else "the GPU has no bf16"
    if device.type != "cpu":
        return f"no mixed precision on {device.type}"
    return "this CPU does bf16 in hardware" if precision == "bf16" else "this CPU has no native bf16"
