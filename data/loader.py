"""Batches for training and evaluation: ``build_dataloader`` -> (``DetectionLoader``, ``DetectionDataset``).

Batch contract (docs/design.md): the loader yields ``Batch(images, targets, paths, shapes,
indices)``:

- ``images`` uint8 [B, 3, H, W] RGB, channels-last in memory (``unit_images`` divides by 255 on the
  device);
- ``targets`` float [N, 6] = (image index in batch, cls, cx, cy, w, h) normalised to the image;
- ``paths`` list[str]; ``shapes`` list of ((h0, w0), ((w_gain, h_gain), (pad_w, pad_h))) for
  letterboxed samples (validation), None for augmented ones;
- ``indices`` long [B], dataset indices (``dataset.labels[i]``, ``crowd[i]``, ``image_ids[i]``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from data.config import datasets_root
from data.dataset import DetectionDataset, Shapes
from data.image_weights import image_weights as weights_from_labels
from data.samplers import SeededSampler, WeightedIndexSampler
from data.scan import drop_too_thin, load_or_scan
from data.sources import default_cache_path
from data.voc import is_voc_source, voc_root
from utils.config import ConfigError, Hyp


class Batch(NamedTuple):
    """One batch; see the module docstring for shapes and formats."""

    images: torch.Tensor
    targets: torch.Tensor
    paths: list[str]
    shapes: list[Shapes]
    indices: torch.Tensor


def collate(samples: list[tuple]) -> Batch:
    """Stack dataset samples into a Batch, writing each target's image index into column 0."""
    images, targets, paths, shapes, indices = zip(*samples, strict=True)
    for i, t in enumerate(targets):
        t[:, 0] = i
    # stacked as [B, H, W, 3] and viewed as [B, 3, H, W]: a channels-last batch, so the trainer's
    # conversion to the model's memory format is free (it was a strided copy of every batch)
    stacked = torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)
    return Batch(stacked, torch.cat(targets, 0), list(paths), list(shapes), torch.tensor(indices, dtype=torch.long))


@functools.cache
def _unit_table(dtype: torch.dtype) -> np.ndarray:
    """The 256 values ``k / 255`` (computed in fp32, then rounded to ``dtype``) as raw bits for cv2.LUT."""
    table = (torch.arange(256, dtype=torch.float32) / 255).to(dtype)
    return table.view({2: torch.int16, 4: torch.int32, 8: torch.float64}[dtype.itemsize]).numpy()


def unit_images(images: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``images`` (a batch's, 0..255) on ``device`` as ``dtype`` in 0..1, in their memory format.

    Equal to ``images.float() / 255`` rounded to ``dtype`` (what autocast feeds the first layer).
    On the CPU one pass through a 256-entry table (cv2.LUT) instead of float(), divide and cast,
    3-4x less time for a 320-px batch of 16 in the training loop's main process.
    """
    channels_last = images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last)
    if device.type != "cpu" or images.dtype != torch.uint8 or not (channels_last or images.is_contiguous()):
        return images.to(device, non_blocking=True).float().div_(255).to(dtype)
    memory_order = images.permute(0, 2, 3, 1) if channels_last else images  # a contiguous view
    table = _unit_table(dtype)
    flat = cv2.LUT(memory_order.numpy().reshape(-1, memory_order.shape[-1]), table)
    out = torch.from_numpy(flat).view(dtype).view(memory_order.shape)
    return out.permute(0, 3, 1, 2) if channels_last else out


# Linux's idle scheduling class: such a process runs only on a core no other process wants
IDLE_PRIORITY = hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE")


def _run_at_idle_priority() -> None:
    """Put the calling process in the idle scheduling class (SCHED_IDLE) where the system has one
    and allows it; elsewhere it keeps its priority."""
    if IDLE_PRIORITY:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass


def consumer_options(device: torch.device) -> dict[str, bool]:
    """``build_dataloader``'s options for a model on ``device``: page-locked batches for CUDA;
    idle-priority workers for a CPU, whose cores the model's threads use."""
    return {"pin_memory": device.type == "cuda", "idle_workers": device.type == "cpu"}


def _worker_init(worker_id: int, idle: bool = False) -> None:
    """Seed global generators for third-party code (our pipeline uses per-sample generators) and
    keep OpenCV single-threaded so workers do not oversubscribe the cores; ``idle``: run at idle
    priority (see ``build_dataloader``)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    cv2.setNumThreads(0)
    if idle:
        _run_at_idle_priority()


class _PassSampler(Sampler[tuple[int, bool, int]]):
    """The indices of ``sampler``, each tagged with the pass state of ``dataset`` when the pass
    starts: (epoch, mosaic, index). Workers are persistent (not restarted each epoch), so their
    copies of the dataset learn the epoch and the mosaic switch from the index they receive."""

    def __init__(self, sampler: Sampler[int], dataset: DetectionDataset) -> None:
        self.sampler, self.dataset = sampler, dataset

    def __iter__(self) -> Iterator[tuple[int, bool, int]]:
        epoch, mosaic = self.dataset.epoch, self.dataset.mosaic
        return ((epoch, mosaic, i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class _PassDataset(Dataset):
    """``dataset`` indexed by ``_PassSampler``'s (epoch, mosaic, index)."""

    def __init__(self, dataset: DetectionDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, bool, int]) -> tuple:
        epoch, mosaic, index = key
        self.dataset.set_epoch(epoch)
        self.dataset.mosaic = mosaic
        return self.dataset[index]


class DetectionLoader:
    """Iterable of ``Batch``; each pass is one epoch.

    The epoch lives in the sampler (``loader.sampler.epoch``): ``set_epoch(e)`` (or
    ``loader.sampler.set_epoch(e)``, as with a DistributedSampler) selects the next pass's shuffle
    and augmentation stream, and each pass advances it by one, so a loop that never calls it still
    sees new augmentations every epoch. ``close_mosaic()`` turns mosaic (and so mixup) off for the
    remaining passes. Workers persist across passes; both changes reach them with the indices.
    """

    def __init__(self, loader: DataLoader, dataset: DetectionDataset, sampler: Sampler[int]) -> None:
        self.loader, self.dataset, self._sampler = loader, dataset, sampler

    @property
    def batch_size(self) -> int:
        return self.loader.batch_size

    @property
    def sampler(self) -> Sampler[int]:
        return self._sampler

    def set_epoch(self, epoch: int) -> None:
        self._sampler.set_epoch(epoch)

    def close_mosaic(self) -> None:
        self.dataset.mosaic = False

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        sampler = self._sampler
        epoch = sampler.epoch
        self.dataset.set_epoch(epoch)
        try:
            yield from self.loader
        finally:  # also when the consumer stops early
            sampler.set_epoch(epoch + 1)


def _cache_path(sources: list[Path]) -> Path:
    """The label cache's default place: beside the labels (data.sources), except for VOC sets,
    which are often shared read-only folders (the raccoon set): under the data-set root's
    ``label-cache/``, named by the VOC root, the split and a hash of the source path."""
    first = sources[0]
    if not is_voc_source(first):
        return default_cache_path(sources)
    digest = hashlib.sha256(str(first.resolve()).encode()).hexdigest()[:10]
    return datasets_root() / "label-cache" / f"{voc_root(first).name}-{first.stem}-{digest}.cache.npz"


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
    idle_workers: bool = False,
    names: list[str] | None = None,
) -> tuple[DetectionLoader, DetectionDataset]:
    """Scan ``sources`` (image folders, .txt lists, COCO jsons, VOC roots or ImageSets lists;
    labels checked against ``nc``) and build the loader and its dataset.

    Training: ``augment=True, shuffle=True`` (``hyp`` gives the augmentation). Validation:
    ``rect=True`` (images sorted by aspect ratio, each batch letterboxed to its own stride
    multiple; forces shuffle off). ``cache``: None, 'ram', 'disk' (decoded images as .npy
    beside the files) or 'auto' ('ram' when they take little of the free memory, DetectionDataset).
    ``rank`` >= 0 uses a DistributedSampler (torch.distributed initialised).
    ``cache_path``: the label cache (.npz), default beside the labels (see data.sources; VOC: ``_cache_path``).
    ``image_weights``: draw each epoch's images with replacement, weighted by their classes
    (a ``WeightedIndexSampler``; the trainer updates ``loader.sampler.set_weights`` each epoch);
    single process and square batches only. ``pin_memory``: page-locked batches, for a CUDA consumer.
    ``idle_workers``: workers run at idle priority (Linux; elsewhere a no-op), for a consumer that
    computes on the same CPU cores: a worker then works while the model waits for its batch or
    leaves a core idle, and never preempts one of the model's threads, which would stall all of them
    at their next barrier (measured: docs/benchmarks.md, "Data pipeline").
    ``names``: the class names (``DataConfig.names``), needed by VOC sources.
    """
    if image_weights and (rect or rank >= 0):
        raise ValueError("image_weights needs a single process and rect=False")
    items = sources if isinstance(sources, list) else [sources]
    paths = [Path(s) for s in items]
    scan, _ = load_or_scan(paths, nc, cache_path or _cache_path(paths), names)
    scan = drop_too_thin(scan, img_size)
    if not scan.files:
        raise ConfigError(f"{', '.join(map(str, paths))}: no usable images ("
                          + ", ".join(f"{v} {k}" for k, v in scan.counts.items())
                          + (f"; first problem: {scan.messages[0]}" if scan.messages else "") + ")")
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
        _PassDataset(dataset),
        batch_size=batch_size,
        sampler=_PassSampler(sampler, dataset),
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=collate,
        worker_init_fn=functools.partial(_worker_init, idle=idle_workers) if workers > 0 else None,
        persistent_workers=workers > 0,  # no start-up (fork, imports, first batches) every epoch
        drop_last=False,
    )
    return DetectionLoader(loader, dataset, sampler), dataset
