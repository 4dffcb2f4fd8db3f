"""Evaluation plots: precision-recall curve, metric-vs-confidence curves, confusion matrix.

Matplotlib's object API (Figure + Agg canvas): no pyplot global state, no display needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Per-class legends are drawn only up to this many classes; beyond it they hide the plot.
_LEGEND_CLASSES = 20


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=200)
    return path


def plot_pr_curve(
    recall: np.ndarray, precision: np.ndarray, ap50: np.ndarray, names: Sequence[str], path: str | Path
) -> Path:
    """PR curve at IoU 0.5: ``recall`` [R] thresholds, ``precision`` [K, R] (COCO interpolated;
    rows of classes without ground truth, marked by ap50 < 0, are left out), ``ap50`` [K]."""
    fig = Figure(figsize=(9, 6), tight_layout=True)
    ax = fig.add_subplot()
    valid = ap50 >= 0
    legend = valid.sum() <= _LEGEND_CLASSES
    for k in np.flatnonzero(valid):
        label = f"{names[k]} {ap50[k]:.3f}" if legend else None
        ax.plot(recall, precision[k], linewidth=1, label=label, color=None if legend else "grey")
    if valid.any():
        mean = precision[valid].mean(0)
        ax.plot(recall, mean, linewidth=3, color="blue", label=f"all classes {ap50[valid].mean():.3f} mAP@0.5")
        ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")  # no ground truth at all: no lines, no legend
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1))
    return _save(fig, path)


def plot_confidence_curve(
    conf: np.ndarray, values: np.ndarray, has_gt: np.ndarray, names: Sequence[str], ylabel: str, path: str | Path
) -> Path:
    """A metric against the confidence threshold: ``conf`` [C], ``values`` [K, C]; classes with
    ``has_gt`` [K] False are left out; the thick line is their mean, labelled with its peak."""
    fig = Figure(figsize=(9, 6), tight_layout=True)
    ax = fig.add_subplot()
    legend = has_gt.sum() <= _LEGEND_CLASSES
    for k in np.flatnonzero(has_gt):
        ax.plot(conf, values[k], linewidth=1, label=names[k] if legend else None, color=None if legend else "grey")
    if has_gt.any():
        mean = values[has_gt].mean(0)
        i = int(mean.argmax())
        ax.plot(conf, mean, linewidth=3, color="blue", label=f"all classes {mean[i]:.2f} at {conf[i]:.3f}")
        ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    ax.set(xlabel="Confidence", ylabel=ylabel, xlim=(0, 1), ylim=(0, 1))
    return _save(fig, path)


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], path: str | Path) -> Path:
    """Confusion matrix [K + 1, K + 1] (rows predicted, columns true, last = background),
    each column normalised to sum 1 (the share of each true class that went where)."""
    share = matrix / np.maximum(matrix.sum(0, keepdims=True), 1)
    k1 = matrix.shape[0]
    labels = list(names)[: k1 - 1] + ["background"]
    fig = Figure(figsize=(12, 9), tight_layout=True)
    ax = fig.add_subplot()
    image = ax.imshow(np.where(share < 0.005, np.nan, share), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax)
    if k1 <= 31:
        ticks = np.arange(k1)
        ax.set_xticks(ticks, labels, rotation=90, fontsize=8)
        ax.set_yticks(ticks, labels, fontsize=8)
        for r, c in zip(*np.nonzero(share >= 0.005), strict=True):
            ax.text(c, r, f"{share[r, c]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if share[r, c] > 0.5 else "black")
    ax.set(xlabel="True", ylabel="Predicted")
    return _save(fig, path)
