"""Pictures a training run writes: results.png, train_batch*.jpg, labels.jpg (rank 0 only)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

RESULT_PANELS = (
    "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
    "val/box_loss", "val/obj_loss", "val/cls_loss", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",
)


def plot_results(csv_path: Path) -> Path | None:
    """results.png next to ``csv_path``: one panel per loss / metric over the epochs."""
    if not csv_path.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    epochs = [int(float(r["epoch"])) for r in rows]
    fig, axes = plt.subplots(2, 5, figsize=(15, 6), tight_layout=True)
    for ax, key in zip(axes.ravel(), RESULT_PANELS, strict=True):
        ax.plot(epochs, [float(r[key]) for r in rows], marker=".", linewidth=1.5)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    out = csv_path.with_name("results.png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_train_batch(run: Any, batch: Any, index: int) -> None:
    """train_batch<index>.jpg (images with their target boxes) and the same image in TensorBoard."""
    from utils.plots import plot_images

    path = run.save_dir / f"train_batch{index}.jpg"
    image = plot_images(batch.images, batch.targets, paths=batch.paths, names=run.names, fname=path)
    if run.tb is not None and index == 0:
        run.tb.image("train_batch", image, 0)


def plot_labels(loader: Any, names: list[str], save_dir: Path) -> None:
    """labels.jpg: class counts and box statistics of the training labels."""
    from utils.plots import plot_labels as draw

    draw(loader.dataset.labels, names, save_dir / "labels.jpg")


def read_rgb(path: Path) -> Any:
    """An image file as RGB uint8 [H, W, 3] (for TensorBoard)."""
    import cv2

    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
