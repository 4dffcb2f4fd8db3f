"""Device selection (--device), the memory figure of the progress line, and --compile."""

from __future__ import annotations

import os
import shutil

import torch
from torch import nn

from utils.errors import UserError


class DeviceError(UserError, ValueError):
    """A --device that does not exist here; the message names the flag and what there is."""


def select_device(device: str = "", local_rank: int = 0) -> torch.device:
    """Parse a device string: '' (CUDA if available, else CPU), 'cpu', '0', '0,1', 'cuda', 'cuda:1', 'mps'.

    Under torchrun every process uses CUDA device ``local_rank`` (of those listed, if a list is
    given). Raises DeviceError naming the request when the device does not exist.
    """
    device = str(device).strip().lower().replace("cuda:", "")
    if device == "cpu":
        return torch.device("cpu")
    if device == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError("--device mps requested but MPS is not available")
        return torch.device("mps")
    if device in ("", "cuda"):  # '' falls back to the CPU; an explicit 'cuda' must get CUDA
        if torch.cuda.is_available():
            return torch.device(f"cuda:{local_rank}")
        if device == "":
            return torch.device("cpu")
        raise DeviceError("--device 'cuda' requested but CUDA is not available (use --device cpu)")
    try:
        ids = [int(x) for x in device.split(",") if x != ""]
    except ValueError:
        raise DeviceError(f"--device {device!r}: expected 'cpu', 'mps' or CUDA indices like '0' or '0,1'") from None
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {device!r} requested but CUDA is not available (use --device cpu)")
    index = ids[local_rank % len(ids)]
    if index >= torch.cuda.device_count():
        raise DeviceError(f"--device {device!r}: CUDA device {index} does not exist ({torch.cuda.device_count()} found)")
    return torch.device(f"cuda:{index}")


def memory_string(device: torch.device) -> str:
    """Memory for the progress bar: reserved CUDA memory, else this process's peak RSS, e.g. '3.1G'."""
    if device.type == "cuda":
        return f"{torch.cuda.memory_reserved(device) / 1e9:.3g}G"
    try:
        import resource  # Unix only
    except ImportError:
        return "-"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.3g}G"  # ru_maxrss is in KiB on Linux


def compile_unavailable(device: torch.device) -> str:
    """Why ``torch.compile`` (Inductor) cannot run on ``device`` here, or '' when it can.

    Inductor compiles CPU kernels with a C++ compiler and CUDA kernels with Triton; without them
    the first compiled call fails minutes into a run, so --compile checks before anything starts.
    """
    import torch._dynamo  # local: only --compile needs it

    if not torch._dynamo.is_dynamo_supported():
        return f"torch {torch.__version__} has no torch.compile on this Python"
    if device.type == "cpu":
        names = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
        if not any(n and shutil.which(n) for n in names):
            return "no C++ compiler found (install g++ or set CXX), which Inductor needs for CPU kernels"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "Triton is not installed, which Inductor needs for CUDA kernels (pip install triton)"
    return ""


def compile_module(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with its forward compiled in place (``nn.Module.compile``: the class, attributes and
    state_dict keys stay as they are, so checkpoints, EMA and DDP see the same model).

    Raises DeviceError naming --compile when ``compile_unavailable(device)`` says why it cannot.
    Compilation happens on the first calls (and again for each new input shape).
    """
    why = compile_unavailable(device)
    if why:
        raise DeviceError(f"--compile: {why}; run without --compile")
    module.compile()
    return module
