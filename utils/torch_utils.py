"""Device selection, seeding and torchrun / DDP process-group helpers."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from utils.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a torchrun job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on the process that logs, evaluates and saves."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_info_from_env() -> DistInfo:
    """Read RANK / LOCAL_RANK / WORLD_SIZE as set by torchrun."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
    )


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


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def init_process_group(info: DistInfo, device: torch.device) -> None:
    """Join the torchrun job: NCCL on CUDA, gloo otherwise. No-op for a single process."""
    if not info.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def destroy_process_group() -> None:
    """Leave the job (safe to call when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every process (e.g. rank 0 decided to stop early)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def any_flag(flag: bool, device: torch.device) -> bool:
    """True on every process when ``flag`` is true on any one of them."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside a DistributedDataParallel / DataParallel wrapper."""
    return model.module if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)) else model


def memory_string(device: torch.device) -> str:
    """Memory for the progress bar: reserved CUDA memory, else this process's peak RSS, e.g. '3.1G'."""
    if device.type == "cuda":
        return f"{torch.cuda.memory_reserved(device) / 1e9:.3g}G"
    try:
        import resource  # Unix only
    except ImportError:
        return "-"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.3g}G"  # ru_maxrss is in KiB on Linux
