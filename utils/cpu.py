"""CPU cores for training: how many this process may use, how many are free, and the split
between the model's threads and the data-loader workers.

On a few cores the split matters more than anything else: a loader worker or a neighbour's
process that takes a core from one of the model's OpenMP threads stalls all of them at the
next barrier, so fewer threads on free cores beat more threads on busy ones (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BUSY_SAMPLE_S = 0.25  # how long /proc/stat is watched to count the busy cores
# Iterations an OpenMP thread of libgomp (PyTorch's OpenMP on Linux) spins, waiting for the next parallel
# region, before it sleeps; libgomp's default is 100 times as many (300,000). A spinning thread holds its
# core, so the idle-priority loader workers (data.loader) never get the model's gaps and the loop waits for
# batches instead. At 3,000 the data wait falls and the model step alone is as fast (docs/benchmarks.md,
# "OpenMP spin count").
OPENMP_SPIN_COUNT = 3000


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity; all cores where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def shorten_openmp_spin() -> None:
    """Let OpenMP threads sleep after ``OPENMP_SPIN_COUNT`` spins (GOMP_SPINCOUNT) unless the user
    set a spin count or a wait policy. Read once, when torch loads libgomp: a command script calls
    this before its first import of torch; afterwards it does nothing."""
    if "torch" in sys.modules or "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ["GOMP_SPINCOUNT"] = str(OPENMP_SPIN_COUNT)


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores from /proc/stat, or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_cores(sample_s: float = BUSY_SAMPLE_S) -> float:
    """Cores other processes keep busy: the lower of the busy cores in /proc/stat over
    ``sample_s`` seconds (this process idles meanwhile) and the 1-minute load average. A core
    counts only when both see it busy: a short command beside us is no reason to give up a
    core for a whole training, nor is the load a finished job leaves in the average."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    first = _cpu_times()
    if first is None:
        return load
    time.sleep(sample_s)
    second = _cpu_times()
    total = second[1] - first[1]
    now = (os.cpu_count() or 1) * (second[0] - first[0]) / total if total > 0 else 0.0
    return min(now, load)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class CoreSplit:
    """The model's intra-op threads and the loader workers, and why."""

    threads: int
    workers: int
    usable: int
    busy: float

    def describe(self) -> str:
        return (f"{_count(self.threads, 'thread')} for the model, {_count(self.workers, 'loader worker')} "
                f"({self.usable} usable cores, {self.busy:.1f} busy with other work)")


def split_cores(threads: int = 0, workers: int = -1, processes: int = 1, busy: float | None = None) -> CoreSplit:
    """Model threads (``threads`` 0: choose) and loader workers (``workers`` < 0: choose).

    Chosen threads: the usable cores that other processes leave free (a core counts as taken
    when more than half busy), shared by ``processes`` training processes (DDP on one machine);
    at least one. Chosen workers: one per model thread, at most 8; a worker sleeps while its
    queue is full, so it costs only the data work itself.
    ``busy``: cores taken by other work (default: measured now, see ``busy_cores``).
    """
    usable = usable_cores()
    if threads <= 0 or workers < 0:
        busy = busy_cores() if busy is None else busy
    else:
        busy = 0.0 if busy is None else busy
    if threads <= 0:
        threads = max(1, (usable - int(busy + 0.5)) // max(processes, 1))
    if workers < 0:
        workers = min(8, threads)
    return CoreSplit(threads, workers, usable, busy)
