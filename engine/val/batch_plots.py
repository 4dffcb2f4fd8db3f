"""Per-batch output of an evaluation: the first batches drawn (test_batch<i>_labels.jpg / _pred.jpg)
and YOLO label files. One hook, used by val.py and by the trainer's final validation."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from data import Batch
from engine.val.evaluator import BatchHook
from engine.val.report import write_label_files
from utils.plots import plot_images

# Batches drawn as test_batch{i}_labels.jpg / _pred.jpg.
PLOTTED_BATCHES = 3


def batch_hook(
    save_dir: Path, names: list[str], *, plots: bool = True, save_txt: bool = False, save_conf: bool = False
) -> BatchHook:
    """An ``evaluate`` ``on_batch`` hook that draws the first PLOTTED_BATCHES batches (``plots``)
    and writes label files (``save_txt``, with scores if ``save_conf``) under ``save_dir``.

    The hook gets the batch and its detections [N, 6] (xyxy, score, class) in input pixels and in
    original-image pixels.
    """
    state = {"batch": 0}

    def hook(batch: Batch, dets_input: list[Tensor], dets_original: list[Tensor]) -> None:
        i = state["batch"]
        state["batch"] += 1
        if save_txt:
            write_label_files(dets_original, batch.paths, batch.shapes, save_dir / "labels", save_conf)
        if plots and i < PLOTTED_BATCHES:
            plot_images(batch.images, batch.targets, batch.paths, names, save_dir / f"test_batch{i}_labels.jpg")
            rows = [torch.cat([torch.full((len(d), 1), j, dtype=d.dtype, device=d.device), d[:, 5:6],
                               (d[:, :2] + d[:, 2:4]) / 2, d[:, 2:4] - d[:, :2], d[:, 4:5]], 1)
                    for j, d in enumerate(dets_input)]
            preds = torch.cat(rows).cpu() if rows else torch.zeros(0, 7)
            plot_images(batch.images, preds, batch.paths, names, save_dir / f"test_batch{i}_pred.jpg")

    return hook
