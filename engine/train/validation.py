"""The trainer's validation: val.py's evaluation of the EMA model, plus what training keeps of it."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from data import DetectionLoader
from engine.train.log import TensorBoardLog
from engine.train.plots import read_rgb
from engine.val import TrainMetrics, batch_hook, evaluate
from engine.val.report import save_plots
from models.loss import LossItems, YoloLoss
from utils.config import Hyp

# The validation loss assigns by the plain rule whatever rule the training uses (YOLOv7's train.py
# hands test.py its ComputeLoss, not ComputeLossOTA): cheaper, and comparable across rules.
VALIDATION_ASSIGNER = "yolov5"


class EpochValidation(NamedTuple):
    """What training keeps of one validation of the EMA model."""

    metrics: TrainMetrics
    losses: LossItems  # mean validation loss per batch
    class_maps: list[float]  # per-class mAP@.5:.95 [nc] (--image-weights)

    @classmethod
    def skipped(cls, class_maps: list[float]) -> EpochValidation:
        """An epoch that was not validated (--notest): metrics and losses 0, ``class_maps`` kept."""
        return cls(TrainMetrics.zeros(), LossItems.zeros(), class_maps)


def validation_loss(model: nn.Module, hyp: Hyp, train_size: int) -> YoloLoss:
    """The validation loss of ``model`` (the EMA model), assigning by ``VALIDATION_ASSIGNER``."""
    return YoloLoss(model.head, hyp, train_size=train_size, assigner=VALIDATION_ASSIGNER)


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
) -> EpochValidation:
    """Validate ``model`` (the EMA model) with val.py's evaluation: its metrics, validation losses
    and per-class mAP@.5:.95, a class without val labels taking the overall one as in YOLOv7.

    ``loss_fn`` gives the validation loss (``validation_loss``). With
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
    class_maps = torch.where(ap < 0, result.train_metrics.map50_95, ap).tolist()
    return EpochValidation(result.train_metrics, result.losses, class_maps)
