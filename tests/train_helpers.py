"""Shared pieces of the trainer tests: a tiny model config and a tiny shapes data set."""

from __future__ import annotations

from pathlib import Path

import yaml

from data.shapes import CLASSES, ShapesSpec, ensure_shapes
from engine.train.options import DEFAULT_HYP, TrainOptions

# Two levels (strides 8 and 16), ~10k parameters: trains in seconds at 64-96 px.
TINY_MODEL = {
    "nc": len(CLASSES),
    "activation": "LeakyReLU",
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]],
    "backbone": [
        [-1, 1, "Conv", [8, 3, 2]],
        [-1, 1, "Conv", [16, 3, 2]],
        [-1, 1, "Conv", [16, 3, 2]],
        [-1, 1, "Conv", [32, 3, 2]],
    ],
    "head": [[[2, 3], 1, "IDetect", ["nc", "anchors"]]],
}


def tiny_data(root: Path, n_train: int = 24, n_val: int = 8) -> Path:
    """A small shapes set (96-128 px images) under ``root``; returns its data YAML."""
    spec = ShapesSpec(splits=(("train", n_train), ("val", n_val)), min_side=96, max_side=128,
                      min_object=16, max_object=48, max_objects=3)
    data_root = ensure_shapes(root / "shapes_tiny", spec)
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump({"path": str(data_root), "train": "images/train", "val": "images/val",
                                    "names": list(CLASSES)}))
    model = root / "tiny_model.yaml"
    model.write_text(yaml.safe_dump(TINY_MODEL, sort_keys=False))
    return path


TINY_OVERRIDES = ["warmup_epochs=0", "mosaic=0.5", "mixup=0.0", "paste_in=0.0", "loss_ota=false"]


def tiny_options(root: Path, **changes) -> TrainOptions:
    """Options for a seconds-long CPU run on tiny_data(root); one thread, so that runs compared
    bit for bit do not depend on how busy the machine was when each started."""
    base = dict(
        data=str(root / "tiny.yaml"), cfg=str(root / "tiny_model.yaml"), epochs=2, batch_size=8, img_size=[64, 64],
        workers=0, threads=1, device="cpu", project=str(root / "runs"), name="exp", noautoanchor=True,
        hyp=DEFAULT_HYP, optimizer="SGD", close_mosaic=0,  # the trainer's mechanics, not the recipe choice
        overrides=TINY_OVERRIDES,
    )
    base.update(changes)
    return TrainOptions(**base)
