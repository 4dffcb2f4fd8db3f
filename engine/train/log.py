"""What a training run writes besides checkpoints: results.csv, TensorBoard, the progress line."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from engine.train.speed import SPEED_TAGS
from engine.val.evaluator import TRAIN_METRICS, TrainMetrics
from models.loss import LossItems


def loss_name(term: str) -> str:
    """The logged name of a LossItems field: ``box`` -> ``box_loss``."""
    return f"{term}_loss"


# results.csv columns, TensorBoard tags and results.png panels all derive from the loss terms
# (models/loss.py LossItems) and the evaluation's TrainMetrics (TRAIN_METRICS, their names).
LOSS_NAMES = tuple(loss_name(term) for term in LossItems._fields)


def fitness(map50: float, map50_95: float) -> float:
    """YOLOv7's model-selection score: 0.1 mAP@.5 + 0.9 mAP@.5:.95."""
    return 0.1 * map50 + 0.9 * map50_95


def loss_columns(split: str, losses: LossItems) -> dict[str, float]:
    """``{"<split>/<term>_loss": value}`` of each loss term (LOSS_NAMES)."""
    return {f"{split}/{loss_name(term)}": float(value) for term, value in losses._asdict().items()}


def epoch_row(
    epoch: int, train_losses: LossItems, metrics: TrainMetrics, val_losses: LossItems, lrs: list[float]
) -> dict[str, float]:
    """One results.csv row.

    ``train_losses`` / ``val_losses``: the epoch's mean loss terms per batch; ``metrics``: its
    validation; ``lrs``: the learning rate of each parameter group.
    """
    row: dict[str, float] = {"epoch": epoch}
    row.update(loss_columns("train", train_losses))
    row.update({f"metrics/{name}": float(value) for name, value in metrics.by_name().items()})
    row.update(loss_columns("val", val_losses))
    row.update({f"x/lr{i}": lr for i, lr in enumerate(lrs)})
    row["fitness"] = fitness(metrics.map50, metrics.map50_95)
    return row


def result_panels() -> tuple[str, ...]:
    """The results.csv columns results.png plots: train losses, metrics, val losses."""
    return (tuple(f"train/{n}" for n in LOSS_NAMES) + tuple(f"metrics/{n}" for n in TRAIN_METRICS)
            + tuple(f"val/{n}" for n in LOSS_NAMES))


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

    def speed(self, timing: dict[str, Any]) -> None:
        """An epoch's timing row as ``speed/*`` scalars (img/s, achieved GFLOP/s, data wait %)."""
        for name in SPEED_TAGS:
            self.writer.add_scalar(f"speed/{name}", timing[name], int(timing["epoch"]))

    def image(self, tag: str, image_hwc: Any, step: int) -> None:
        """An RGB uint8 [H, W, 3] numpy image."""
        self.writer.add_image(tag, image_hwc, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


def progress_header() -> str:
    """Column titles of the per-epoch progress bar."""
    titles = ("Epoch", "mem", *LossItems._fields, "total", "labels", "img_size", "img/s")
    return ("%10s" * len(titles)) % titles


def progress_line(epoch: int, epochs: int, memory: str, mean_losses: LossItems, n_targets: int, img_size: int,
                  img_per_s: float) -> str:
    """One progress-bar description: epoch, memory, running mean loss terms and their total,
    targets, size, and the training images per second of the epoch so far."""
    losses = (*(float(v) for v in mean_losses), float(sum(mean_losses)))  # floats: no device sync here
    return ("%10s" * 2 + "%10.4g" * (len(losses) + 2) + "%10.1f") % (f"{epoch}/{epochs - 1}", memory, *losses, n_targets,
                                                                    img_size, img_per_s)
