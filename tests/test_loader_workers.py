"""Persistent loader workers follow the main process: epoch, close-mosaic, replay."""

from __future__ import annotations

import multiprocessing
import os

import pytest
import torch

from data import build_dataloader
from data.loader import IDLE_PRIORITY, consumer_options
from data.shapes import ShapesSpec, ensure_shapes
from utils.config import Hyp

SMALL = ShapesSpec(splits=(("train", 8), ("val", 2)), min_side=64, max_side=96, min_object=12, max_object=40)


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    return ensure_shapes(tmp_path_factory.mktemp("workers") / "shapes", SMALL) / "images" / "train"


def _passes(train_dir, workers: int, idle: bool = False) -> list[list[torch.Tensor]]:
    """Images of: epoch 0, epoch 1, epoch 0 again, then epoch 1 with mosaic closed."""
    loader, _ = build_dataloader(train_dir, 5, img_size=64, batch_size=4, hyp=Hyp(), augment=True, shuffle=True,
                                 workers=workers, idle_workers=idle)
    out = [[b.images for b in loader], [b.images for b in loader]]
    loader.set_epoch(0)
    out.append([b.images for b in loader])
    loader.set_epoch(1)
    loader.close_mosaic()
    out.append([b.images for b in loader])
    return out


def test_persistent_workers_see_the_epoch_and_the_mosaic_switch(train_dir):
    plain, workers = _passes(train_dir, 0), _passes(train_dir, 2, idle=True)
    for a, b in zip(plain, workers, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(plain[0][0], plain[1][0])  # a new epoch is a new pass
    assert all(torch.equal(x, y) for x, y in zip(plain[0], plain[2], strict=True))  # set_epoch replays
    assert not torch.equal(plain[1][0], plain[3][0])  # mosaic off changed epoch 1's images


def _scheduler_after(init, queue) -> None:
    init(0)
    queue.put(os.sched_getscheduler(0))


@pytest.mark.skipif(not IDLE_PRIORITY, reason="no idle scheduling class on this system (Linux only)")
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_workers_of_a_cpu_model_run_at_idle_priority(train_dir, device):
    options = consumer_options(torch.device(device))
    assert options["pin_memory"] == (device == "cuda")
    loader, _ = build_dataloader(train_dir, 5, img_size=64, batch_size=4, workers=1, **options)
    ctx = multiprocessing.get_context("fork")  # a worker's start; this process keeps its own class
    queue = ctx.Queue()
    worker = ctx.Process(target=_scheduler_after, args=(loader.loader.worker_init_fn, queue))
    worker.start()
    policy = queue.get(timeout=30)
    worker.join()
    assert policy == (os.SCHED_IDLE if device == "cpu" else os.SCHED_OTHER)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_large_jpegs_decode_at_reduced_size(tmp_path):
    import cv2
    import numpy as np

    from data.dataset import DetectionDataset
    from data.scan import load_or_scan

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    big = cv2.GaussianBlur(rng.integers(0, 255, (420, 560, 3), dtype=np.uint8), (0, 0), 3)
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), big)
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    scan, _ = load_or_scan([tmp_path / "images"], 1, tmp_path / "cache.npz")
    ds = DetectionDataset(scan, img_size=128)
    assert ds._reduction(0) == 4  # 560 / 4 = 140 >= 128
    img, (h0, w0) = ds.load_image(0)
    assert (h0, w0) == (420, 560) and img.shape == (96, 128, 3)
    full = cv2.resize(cv2.cvtColor(cv2.imread(str(tmp_path / "images" / "a.jpg")), cv2.COLOR_BGR2RGB), (128, 96),
                      interpolation=cv2.INTER_AREA)
    assert np.abs(img.astype(int) - full).mean() < 4  # the same picture, within JPEG/rescaling noise
    assert DetectionDataset(scan, img_size=300)._reduction(0) == 1
