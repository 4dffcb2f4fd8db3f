"""The trainer's use of data/: data-set config, train / val loaders, mosaic switch, autoanchor."""

from __future__ import annotations

import logging
from typing import Any

import torch

from data import DataConfig, DetectionLoader, build_dataloader, load_data_config
from engine.train_options import TrainOptions
from models.yolo import Model
from utils.config import Hyp
from utils.torch_utils import DistInfo, barrier

LOG = logging.getLogger(__name__)
VAL_BATCH_FACTOR = 2  # validation needs no gradients, so twice the training batch fits


def load_data(opt: TrainOptions, info: DistInfo) -> DataConfig:
    """The data-set config; rank 0 first, so a built-in set is generated once, not per process."""
    if not info.is_main:
        barrier()
    cfg = load_data_config(opt.data)
    if info.is_main:
        barrier()
    return cfg


def build_train_loader(
    opt: TrainOptions, hyp: Hyp, data: DataConfig, info: DistInfo, batch_size: int, stride: int
) -> DetectionLoader:
    """Shuffled, augmented loader of the train split (``batch_size`` per process)."""
    loader, _ = build_dataloader(
        data.split("train"), data.nc, img_size=opt.img_size[0], batch_size=batch_size, stride=stride, hyp=hyp,
        augment=True, rect=opt.rect, cache=opt.cache_images or None, workers=opt.workers, shuffle=True,
        seed=opt.seed, rank=info.rank if info.distributed else -1, single_cls=opt.single_cls,
    )
    return loader


def build_val_loader(opt: TrainOptions, data: DataConfig, batch_size: int, stride: int) -> DetectionLoader:
    """Letterboxed, rectangular-batch loader of the val split (rank 0 only)."""
    loader, _ = build_dataloader(
        data.split("val"), data.nc, img_size=opt.img_size[-1], batch_size=batch_size * VAL_BATCH_FACTOR,
        stride=stride, rect=True, cache=opt.cache_images or None, workers=opt.workers, single_cls=opt.single_cls,
    )
    return loader


def set_dataset_mosaic(loader: DetectionLoader, epoch: int, epochs: int, close_mosaic: int) -> None:
    """Mosaic off from epoch ``epochs - close_mosaic`` on (also right away when resuming past it)."""
    if close_mosaic > 0 and epoch >= epochs - close_mosaic and loader.dataset.mosaic:
        LOG.info("epoch %d: mosaic off for the last %d epochs", epoch, close_mosaic)
        loader.close_mosaic()


def check_anchors(model: Model, loader: DetectionLoader, hyp: Hyp, img_size: int) -> None:
    """Autoanchor: refit the model's anchors to the labels when they cover them badly."""
    from models.autoanchor import check_anchors as autoanchor

    autoanchor(loader.dataset, model, thr=hyp.anchor_t, img_size=img_size)


def evaluate_for_training(run: Any, plots: bool) -> tuple[dict[str, float], Any]:
    """Validate ``run.ema.module`` with val.py's evaluation: (metrics, val losses [3])."""
    # Stand-in until engine/evaluator.py lands: zero metrics and losses, so fitness never improves.
    return {"precision": 0.0, "recall": 0.0, "mAP_0.5": 0.0, "mAP_0.5:0.95": 0.0}, torch.zeros(3)
