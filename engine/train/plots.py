"""Pictures a training run writes: results.png, train_batch*.jpg, labels.jpg (rank 0 only)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from data import Batch, DetectionLoader
from engine.train.log import TensorBoardLog, result_panels


def panel_grid(n: int, max_cols: int = 5) -> tuple[int, int]:
    """(rows, columns) of a grid for ``n`` panels: at most ``max_cols`` wide (10 panels: 2 x 5)."""
    cols = max(1, min(n, max_cols))
    return math.ceil(n / cols), cols


def plot_results(csv_path: Path) -> Path | None:
    """results.png next to ``csv_path``: one panel per loss / metric over the epochs."""
    if not csv_path.is_file():
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # object API: no pyplot backend switched
    from matplotlib.figure import Figure

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    epochs = [int(float(r["epoch"])) for r in rows]
    panels = result_panels()
    n_rows, n_cols = panel_grid(len(panels))
    fig = Figure(figsize=(3 * n_cols, 3 * n_rows), tight_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax, key in zip(axes.ravel()[: len(panels)], panels, strict=True):
        ax.plot(epochs, [float(r[key]) for r in rows], marker=".", linewidth=1.5)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    out = csv_path.with_name("results.png")
    fig.savefig(out, dpi=120)
    return out


def plot_train_batch(batch: Batch, index: int, *, save_dir: Path, names: list[str], tb: TensorBoardLog | None) -> None:
    """train_batch<index>.jpg (images with their target boxes) and, for the first, the same image
    in TensorBoard."""
    from utils.plots import plot_images

    path = save_dir / f"train_batch{index}.jpg"
    image = plot_images(batch.images, batch.targets, paths=batch.paths, names=names, fname=path)
    if tb is not None and index == 0:
        tb.image("train_batch", image, 0)


def plot_labels(loader: DetectionLoader, names: list[str], save_dir: Path) -> None:
    """labels.jpg: class counts and box statistics of the training labels."""
    from utils.plots import plot_labels as draw

    draw(loader.dataset.labels, names, save_dir / "labels.jpg")


def read_rgb(path: Path) -> Any:
    """An image file as RGB uint8 [H, W, 3] (for TensorBoard)."""
    import cv2

    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
