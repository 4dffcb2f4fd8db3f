"""Training speed where users look: images/s in the progress bar, and per epoch img/s, achieved
GFLOP/s and the share of time spent waiting for data, in TensorBoard (``speed/*``) and in
timing.csv beside results.csv.

timing.csv is kept apart from results.csv on purpose: results.csv is a pure function of the
training (an exact resume rewrites it byte for byte), while timings vary from run to run.
Achieved GFLOP/s = 3 x forward GFLOPs per image x img/s (the backward pass costs about twice
the forward), the same formula as benchmarks/bench_train.py.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
TIMING_NAMES = ("epoch", "seconds", "images", "img_per_s", "gflops", "data_wait_pct", "precision", "threads",
                "workers")
SPEED_TAGS = ("img_per_s", "gflops", "data_wait_pct")  # TensorBoard speed/<name>


class EpochTimer:
    """Wall time, images and data wait of one training epoch (started when created)."""

    def __init__(self, forward_gflops: float) -> None:
        self.forward_gflops = forward_gflops  # per image at the training size
        self.start, self.images, self.wait_s = time.perf_counter(), 0, 0.0

    def batches(self, iterable: Iterable[T]) -> Iterator[T]:
        """``iterable``'s items, timing how long each one takes to arrive (the data wait)."""
        it = iter(iterable)
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            self.wait_s += time.perf_counter() - t
            yield item

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def img_per_s(self) -> float:
        """Images per second so far this epoch."""
        return self.images / max(self.seconds(), 1e-9)

    def row(self, epoch: int, precision: str, *, threads: int, workers: int,
            processes: int = 1) -> dict[str, float | int | str]:
        """The epoch's timing.csv row (keys: TIMING_NAMES); ``processes`` DDP processes each saw
        as many images as this one."""
        seconds = self.seconds()
        images = self.images * processes
        rate = images / max(seconds, 1e-9)
        values = (epoch, round(seconds, 2), images, round(rate, 2), round(3 * self.forward_gflops * rate, 1),
                  round(100 * self.wait_s / max(seconds, 1e-9), 1), precision, threads, workers)
        return dict(zip(TIMING_NAMES, values, strict=True))


def append_timing_csv(row: dict[str, float | int | str], path: Path) -> None:
    """Add one row to timing.csv (header first when the file is new); rewritten atomically."""
    old = path.read_text() if path.is_file() else ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TIMING_NAMES, lineterminator="\n")
    if not old:
        writer.writeheader()
    writer.writerow(row)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(old + buffer.getvalue())
    os.replace(tmp, path)
