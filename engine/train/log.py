"""What a training run writes besides checkpoints: results.csv, TensorBoard, the progress line."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import torch

from engine.val.evaluator import TRAIN_METRICS

LOSS_NAMES = ("box_loss", "obj_loss", "cls_loss")
# The metrics a training logs are the evaluation's TRAIN_METRICS: results.csv columns,
# TensorBoard tags and results.png panels all derive from these two tuples.


def fitness(map50: float, map50_95: float) -> float:
    """YOLOv7's model-selection score: 0.1 mAP@.5 + 0.9 mAP@.5:.95."""
    return 0.1 * map50 + 0.9 * map50_95


def epoch_row(
    epoch: int, train_losses: torch.Tensor, metrics: dict[str, float], val_losses: torch.Tensor, lrs: list[float]
) -> dict[str, float]:
    """One results.csv row.

    ``train_losses`` / ``val_losses``: [>=3] mean (box, obj, cls, ...) per image of the epoch;
    ``metrics``: keys of TRAIN_METRICS; ``lrs``: the learning rate of each parameter group.
    """
    row: dict[str, float] = {"epoch": epoch}
    row.update({f"train/{n}": float(v) for n, v in zip(LOSS_NAMES, train_losses.tolist(), strict=False)})
    row.update({f"metrics/{n}": float(metrics[n]) for n in TRAIN_METRICS})
    row.update({f"val/{n}": float(v) for n, v in zip(LOSS_NAMES, val_losses.tolist(), strict=False)})
    row.update({f"x/lr{i}": lr for i, lr in enumerate(lrs)})
    row["fitness"] = fitness(metrics["mAP_0.5"], metrics["mAP_0.5:0.95"])
    return row


def result_panels() -> tuple[str, ...]:
    """The results.csv columns results.png plots: train losses, metrics, val losses."""
    return (tuple(f"train/{n}" for n in LOSS_NAMES) + tuple(f"metrics/{n}" for n in TRAIN_METRICS)
            + tuple(f"val/{n}" for n in LOSS_NAMES))


def zero_metrics() -> tuple[dict[str, float], torch.Tensor]:
    """Metrics and val losses [3] of an epoch that was not validated (--notest)."""
    return {n: 0.0 for n in TRAIN_METRICS}, torch.zeros(len(LOSS_NAMES))


def write_results_csv(rows: list[dict[str, float]], path: Path) -> None:
    """(Re)write results.csv from all rows so far, atomically.

    Rewriting from the checkpoint's rows (rather than appending) keeps the file equal to the
    checkpoint after a resume, whatever moment the previous run was killed at.
    """
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, path)


class TensorBoardLog:
    """A SummaryWriter that drops events after ``start_epoch`` (a resumed run rewrites them)."""

    def __init__(self, log_dir: Path, start_epoch: int = 0):
        from torch.utils.tensorboard import SummaryWriter  # local: tensorboard is slow to import

        self.writer = SummaryWriter(str(log_dir), purge_step=start_epoch if start_epoch > 0 else None)

    def epoch(self, row: dict[str, float]) -> None:
        """Scalars of a results row, at step ``row["epoch"]``."""
        step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, step)

    def image(self, tag: str, image_hwc: Any, step: int) -> None:
        """An RGB uint8 [H, W, 3] numpy image."""
        self.writer.add_image(tag, image_hwc, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


def progress_header() -> str:
    """Column titles of the per-epoch progress bar."""
    return ("%10s" * 8) % ("Epoch", "mem", "box", "obj", "cls", "total", "labels", "img_size")


def progress_line(epoch: int, epochs: int, memory: str, mean_losses: torch.Tensor, n_targets: int, img_size: int) -> str:
    """One progress-bar description: epoch, memory, running mean losses [4], targets, size."""
    return ("%10s" * 2 + "%10.4g" * 6) % (f"{epoch}/{epochs - 1}", memory, *mean_losses.tolist(), n_targets, img_size)
