"""The mAP of exported files beside their checkpoint's: the same validation images, letterboxed
square at the export size and run at its batch size, through the one evaluation val.py runs
(engine.val.evaluator.evaluate). export.py prints it after an INT8 export with --data."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from data import build_dataloader, load_data_config
from engine.backends import load_backend
from engine.val.evaluator import evaluate
from utils.errors import UserError

METRIC = "mAP_0.5:0.95"


def accuracy_table(model: nn.Module, files: dict[str, Path], data: str, img_size: int, batch: int,
                   device: torch.device, split: str = "val") -> list[dict]:
    """Rows {name, file, mAP_0.5, mAP_0.5:0.95} for the checkpoint's fused ``model`` (name
    'checkpoint') and each exported file of ``files`` (name -> path), evaluated on ``data``'s
    ``split`` at ``img_size`` square, batches of ``batch`` (val.py's thresholds)."""
    config = load_data_config(data)
    if config.nc != len(model.names):
        raise UserError(f"the model has {len(model.names)} classes, the data set {config.nc}", what=f"--data {data}")
    loader, _ = build_dataloader(config.split(split), config.nc, img_size=img_size, batch_size=batch,
                                 stride=int(model.stride.max()), rect=False)
    rows = []
    for name, runner in [("checkpoint", model)] + [(n, f) for n, f in files.items()]:
        result = evaluate(runner if name == "checkpoint" else load_backend(runner, device), loader)
        rows.append({"name": name, "file": "" if name == "checkpoint" else str(runner),
                     "mAP_0.5": round(result.metrics["mAP_0.5"], 5), METRIC: round(result.metrics[METRIC], 5)})
    return rows


def format_accuracy(rows: list[dict]) -> str:
    """'mAP@.5:.95 checkpoint 0.5050 | onnx-int8 0.4990 (-0.0060) | ...' on one line."""
    ref = rows[0][METRIC]
    parts = [f"{rows[0]['name']} {ref:.4f}"]
    parts += [f"{r['name']} {r[METRIC]:.4f} ({r[METRIC] - ref:+.4f})" for r in rows[1:]]
    return "mAP@.5:.95 on the val split: " + " | ".join(parts)
