"""The trainer's use of data/: data-set config, train / val loaders, mosaic switch, autoanchor."""

from __future__ import annotations

import logging

import torch

from data import DataConfig, DetectionLoader, build_dataloader, load_data_config
from data.image_weights import image_weights
from data.loader import consumer_options
from engine.train.options import TrainOptions
from models.yolo import Model
from utils.config import ConfigError, Hyp
from utils.distributed import DistInfo, barrier

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
    opt: TrainOptions, hyp: Hyp, data: DataConfig, info: DistInfo, batch_size: int, stride: int, device: torch.device
) -> DetectionLoader:
    """Shuffled, augmented loader of the train split (``batch_size`` per process) for a model on ``device``."""
    loader, _ = build_dataloader(
        data.split("train"), data.nc, img_size=opt.img_size[0], batch_size=batch_size, stride=stride, hyp=hyp,
        augment=True, rect=opt.rect, cache=opt.image_cache, workers=opt.workers, shuffle=True,
        seed=opt.seed, rank=info.rank if info.distributed else -1, single_cls=opt.single_cls,
        image_weights=opt.image_weights, names=data.names, **consumer_options(device),
    )
    if not any(len(labels) for labels in loader.dataset.labels):  # it would train to the end, learning nothing
        raise ConfigError(f"{data.source}: the train split has no labels at all ({len(loader.dataset)} images, not one "
                          "box): YOLO labels go in a labels/ folder beside images/, one .txt per image")
    return loader


def set_image_weights(loader: DetectionLoader, nc: int, class_maps: list[float]) -> None:
    """--image-weights: the next pass samples images by ``class_maps`` [nc] (per-class mAP@.5:.95 of the
    last validation, zeros before any) and the training labels' class frequencies."""
    loader.sampler.set_weights(image_weights(loader.dataset.labels, nc, class_maps))


def build_val_loader(
    opt: TrainOptions, data: DataConfig, batch_size: int, stride: int, device: torch.device
) -> DetectionLoader:
    """Letterboxed, rectangular-batch loader of the val split (rank 0 only)."""
    loader, _ = build_dataloader(
        data.split("val"), data.nc, img_size=opt.img_size[-1], batch_size=batch_size * VAL_BATCH_FACTOR,
        stride=stride, rect=True, cache=opt.image_cache, workers=opt.workers, single_cls=opt.single_cls,
        names=data.names, **consumer_options(device),
    )
    return loader


def set_dataset_mosaic(loader: DetectionLoader, epoch: int, epochs: int, close_mosaic: int) -> None:
    """Mosaic off from epoch ``epochs - close_mosaic`` on (also right away when resuming past it)."""
    if close_mosaic > 0 and epoch >= epochs - close_mosaic and loader.dataset.mosaic:
        LOG.info("epoch %d: mosaic off for the last %d epochs", epoch, close_mosaic)
        loader.close_mosaic()


def autoanchor_for_training(model: Model, loader: DetectionLoader, hyp: Hyp, img_size: int, seed: int = 0) -> None:
    """Autoanchor: refit the model's anchors to the labels when they cover them badly (BPR < 0.98)."""
    from models.autoanchor import check_anchors, label_sizes

    wh = label_sizes(loader.dataset.labels, loader.dataset.shapes, img_size, seed=seed)
    result = check_anchors(model.head, wh, anchor_t=hyp.anchor_t, seed=seed)
    if result.replaced:
        LOG.info("autoanchor: best possible recall %.4f -> %.4f with new anchors", result.bpr, result.new_bpr)
    else:
        LOG.info("autoanchor: best possible recall %.4f, %.2f anchors per label: anchors kept",
                 result.bpr, result.anchors_per_label)
