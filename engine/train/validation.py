"""The trainer's validation: val.py's evaluation of the EMA model, plus what training keeps of it."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from data import DetectionLoader
from engine.train.log import TensorBoardLog
from engine.train.plots import read_rgb
from engine.val import TRAIN_METRICS, batch_hook, evaluate
from engine.val.report import save_plots
from models.loss import YoloLoss
from utils.config import Hyp


def validation_loss(model: nn.Module, hyp: Hyp, train_size: int) -> YoloLoss:
    """The validation loss of ``model`` (the EMA model): the plain (non-OTA) assignment, as val.py."""
    return YoloLoss(model.head, hyp, ota=False, train_size=train_size)


def evaluate_for_training(
    model: nn.Module,
    loader: DetectionLoader,
    loss_fn: YoloLoss | None,
    *,
    single_cls: bool,
    names: list[str],
    save_dir: Path,
    tb: TensorBoardLog | None,
    step: int,
    plots: bool,
) -> tuple[dict[str, float], torch.Tensor, list[float]]:
    """Validate ``model`` (the EMA model) with val.py's evaluation: (metrics of TRAIN_METRICS, val
    losses [3], per-class mAP@.5:.95 [nc], a class without val labels taking the overall one as in
    YOLOv7).

    ``loss_fn`` gives the validation loss (the plain, non-OTA assignment, as val.py uses). With
    ``plots`` (final epoch) val.py's pictures go to ``save_dir`` and the first predictions to
    TensorBoard at ``step``.
    """
    hook = batch_hook(save_dir, names, plots=True) if plots else None
    result = evaluate(model, loader, loss_fn=loss_fn, single_cls=single_cls, on_batch=hook)
    if plots:
        save_plots(result, names, save_dir)
        picture = save_dir / "test_batch0_pred.jpg"
        if tb is not None and picture.is_file():
            tb.image("val_predictions", read_rgb(picture), step)
    # YOLOv7 weighs images by per-class mAP@.5:.95 (classes without val labels: the overall one)
    _, ap = result.coco.per_class_ap()
    class_maps = torch.where(ap < 0, result.metrics["mAP_0.5:0.95"], ap).tolist()
    return {k: result.metrics[k] for k in TRAIN_METRICS}, result.losses, class_maps
