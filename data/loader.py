"""Batches for training and evaluation: ``build_dataloader`` -> (``DetectionLoader``, ``DetectionDataset``).

Batch contract (docs/design.md): the loader yields ``Batch(images, targets, paths, shapes,
indices)``:

- ``images`` uint8 [B, 3, H, W] RGB (divide by 255 on the device);
- ``targets`` float [N, 6] = (image index in batch, cls, cx, cy, w, h) normalised to the image;
- ``paths`` list[str]; ``shapes`` list of ((h0, w0), ((w_gain, h_gain), (pad_w, pad_h))) for
  letterboxed samples (validation), None for augmented ones;
- ``indices`` long [B], dataset indices (``dataset.labels[i]``, ``crowd[i]``, ``image_ids[i]``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from data.dataset import DetectionDataset, Shapes
from data.image_weights import image_weights as weights_from_labels
from data.samplers import SeededSampler, WeightedIndexSampler
from data.scan import load_or_scan
from data.sources import default_cache_path
from utils.config import Hyp


class Batch(NamedTuple):
    """One batch; see the module docstring for shapes and formats."""

    images: torch.Tensor
    targets: torch.Tensor
    paths: list[str]
    shapes: list[Shapes]
    indices: torch.Tensor


def collate(samples: list[tuple]) -> Batch:
    """Stack dataset samples into a Batch, writing each target's image index into column 0."""
    images, targets, paths, shapes, indices = zip(*samples, strict=False)
    for i, t in enumerate(targets):
        t[:, 0] = i
    return Batch(torch.stack(images), torch.cat(targets, 0), list(paths), list(shapes),
                 torch.tensor(indices, dtype=torch.long))


def _worker_init(worker_id: int) -> None:
    """Seed global generators for third-party code (our pipeline uses per-sample generators) and
    keep OpenCV single-threaded so workers do not oversubscribe the cores."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    cv2.setNumThreads(0)


class DetectionLoader:
    """Iterable of ``Batch``; each pass is one epoch.

    The epoch lives in the sampler (``loader.sampler.epoch``): ``set_epoch(e)`` (or
    ``loader.sampler.set_epoch(e)``, as with a DistributedSampler) selects the next pass's shuffle
    and augmentation stream, and each pass advances it by one, so a loop that never calls it still
    sees new augmentations every epoch. ``close_mosaic()`` turns mosaic (and so mixup) off for the
    remaining passes. Workers are not persistent, so both changes reach them.
    """

    def __init__(self, loader: DataLoader, dataset: DetectionDataset) -> None:
        self.loader, self.dataset = loader, dataset

    @property
    def batch_size(self) -> int:
        return self.loader.batch_size

    @property
    def sampler(self) -> Sampler:
        return self.loader.sampler

    def set_epoch(self, epoch: int) -> None:
        self.loader.sampler.set_epoch(epoch)

    def close_mosaic(self) -> None:
        self.dataset.mosaic = False

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        sampler = self.loader.sampler
        epoch = sampler.epoch
        self.dataset.set_epoch(epoch)
        try:
            yield from self.loader
        finally:  # also when the consumer stops early
            sampler.set_epoch(epoch + 1)


def build_dataloader(
    sources: str | Path | list[str | Path],
    nc: int,
    *,
    img_size: int = 640,
    batch_size: int = 16,
    stride: int = 32,
    hyp: Hyp | None = None,
    augment: bool = False,
    rect: bool = False,
    cache: str | None = None,
    workers: int = 0,
    shuffle: bool = False,
    seed: int = 0,
    rank: int = -1,
    pad: float = 0.5,
    single_cls: bool = False,
    cache_path: Path | None = None,
    image_weights: bool = False,
    pin_memory: bool = False,
) -> tuple[DetectionLoader, DetectionDataset]:
    """Scan ``sources`` (image folders, .txt lists, COCO jsons; labels checked against ``nc``)
    and build the loader and its dataset.

    Training: ``augment=True, shuffle=True`` (``hyp`` gives the augmentation). Validation:
    ``rect=True`` (images sorted by aspect ratio, each batch letterboxed to its own stride
    multiple; forces shuffle off). ``cache``: None, 'ram' or 'disk' (decoded images as .npy
    beside the files). ``rank`` >= 0 uses a DistributedSampler (torch.distributed initialised).
    ``cache_path``: the label-cache json, default beside the labels (see data.sources).
    ``image_weights``: draw each epoch's images with replacement, weighted by their classes
    (a ``WeightedIndexSampler``; the trainer updates ``loader.sampler.set_weights`` each epoch);
    single process and square batches only. ``pin_memory``: page-locked batches, for a CUDA consumer.
    """
    if image_weights and (rect or rank >= 0):
        raise ValueError("image_weights needs a single process and rect=False")
    items = sources if isinstance(sources, list) else [sources]
    paths = [Path(s) for s in items]
    scan, _ = load_or_scan(paths, nc, cache_path or default_cache_path(paths))
    dataset = DetectionDataset(scan, img_size=img_size, batch_size=batch_size, stride=stride, hyp=hyp, augment=augment,
                               rect=rect, pad=pad, cache=cache, single_cls=single_cls, seed=seed)
    shuffle = shuffle and not rect
    if image_weights:
        sampler: Sampler = WeightedIndexSampler(weights_from_labels(dataset.labels, nc, [0.0] * nc), seed)
    elif rank >= 0:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed)
    else:
        sampler = SeededSampler(len(dataset), shuffle, seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=collate,
        worker_init_fn=_worker_init if workers > 0 else None,
        drop_last=False,
    )
    return DetectionLoader(loader, dataset), dataset
