"""Shared by tests/test_detect*.py and tests/test_export*.py: a small yolov7-tiny checkpoint
written with the checkpoint contract, and test images / videos written with OpenCV."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.yolo import Model
from utils.checkpoint import CHECKPOINT_VERSION, save_checkpoint
from utils.config import read_yaml

REPO = Path(__file__).resolve().parents[1]
NAMES = ["red", "green", "blue"]
IMG_SIZE = 128


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions on a shared 2-core machine run up to ~100x slower with 2 threads (the
    threads wait on each other while the other core is busy); one thread keeps tests fast."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_model(seed: int = 0, nc: int = len(NAMES)) -> Model:
    """yolov7-tiny at a quarter width, ``nc`` classes; objectness biased up so an untrained model
    still gives a few dozen boxes above conf 0.25 (something to compare)."""
    torch.manual_seed(seed)
    cfg = copy.deepcopy(read_yaml(REPO / "cfg" / "yolov7-tiny.yaml"))
    cfg["width_multiple"] = 0.25
    model = Model(cfg, nc=nc)
    with torch.no_grad():
        for conv in model.head.m:
            conv.bias.view(model.head.na, -1)[:, 4] += 5.0
            conv.bias.view(model.head.na, -1)[:, 5:] += 2.0
        for m in model.modules():  # non-trivial BN statistics, so fusing them is tested
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.15, 0.25)
    model.names = list(NAMES) if nc == len(NAMES) else [f"class{i}" for i in range(nc)]
    return model.eval()


def write_checkpoint(path: Path, model: Model | None = None) -> Path:
    """A stripped-style checkpoint (fp32 weights, epoch -1) following docs/design.md."""
    model = model or small_model()
    ckpt = {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "model_cfg": model.yaml,
        "names": list(model.names),
        "nc": model.nc,
        "hyp": {},
        "opt": {"img_size": [IMG_SIZE, IMG_SIZE]},
        "epoch": -1,
        "best_fitness": 0.0,
        "metrics": [],
        "version": CHECKPOINT_VERSION,
    }
    return save_checkpoint(ckpt, path)


def make_image(seed: int, h: int, w: int) -> np.ndarray:
    """A BGR uint8 [h, w, 3] picture: smooth background and a few filled shapes."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (3, 4, 3)).astype(np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(4):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(8, max(9, min(h, w) // 4)))
        cv2.circle(img, (x, y), r, tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
    return img


def write_images(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    """JPEGs img0.jpg, img1.jpg, ... of the given (h, w) sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = folder / f"img{i}.jpg"
        cv2.imwrite(str(path), make_image(i, h, w))
        paths.append(path)
    return paths


def write_video(path: Path, frames: int = 4, size: tuple[int, int] = (96, 160)) -> Path:
    """An MJPG .avi of ``frames`` frames of (h, w) ``size``."""
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for i in range(frames):
        writer.write(make_image(100 + i, h, w))
    writer.release()
    return path


def run_script(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a command script of the repository in a fresh interpreter; text output captured."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=300)
