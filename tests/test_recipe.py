"""The recipe train.py picks when --hyp / --optimizer / --close-mosaic are left open."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import cv2
import numpy as np

from data import DataConfig
from engine.train.options import TrainOptions, load_hyp
from engine.train.recipe import SHAPES_YAML, SHORT_RUN_ITERATIONS, apply_recipe, choose_recipe
from utils.config import Hyp, load
from utils.paths import resolve_path


def _data(tmp_path: Path, images: int, source: str = "set.yaml") -> DataConfig:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    for i in range(images):
        cv2.imwrite(str(folder / f"{i}.jpg"), np.zeros((8, 8, 3), np.uint8))
    return DataConfig(root=tmp_path, nc=1, names=["a"], train=[folder], val=[folder], test=[], source=source)


def test_shapes_default_keeps_exactly_its_recipe(tmp_path):
    """The shapes default run (mAP@.5 0.505) trains with the very values it used before recipes."""
    opt = apply_recipe(TrainOptions(), _data(tmp_path, 0, str(SHAPES_YAML)))
    assert (opt.hyp, opt.optimizer, opt.close_mosaic) == ("cfg/hyp/hyp.shapes.yaml", "SGD", 0)
    before = load(Hyp, resolve_path("cfg/hyp/hyp.shapes.yaml"))
    assert load_hyp(opt) == before and before.warmup_epochs == 1.0 and before.cls == 2.0 and before.lrf == 0.1


def test_short_run_on_a_small_set_gets_the_small_recipe(tmp_path, caplog):
    data = _data(tmp_path, 5)
    with caplog.at_level(logging.INFO):
        opt = apply_recipe(TrainOptions(epochs=30, batch_size=2), data)
    assert (opt.hyp, opt.optimizer, opt.close_mosaic) == ("cfg/hyp/hyp.small.yaml", "AdamW", 10)
    assert "recipe: hyp.small.yaml, AdamW, close-mosaic 10 (a short run: 5 images, 90 iterations <= 10000" in caplog.text
    hyp = load_hyp(opt)
    assert hyp.lr0 == 0.002 and hyp.warmup_bias_lr == 0.0 and hyp.mixup == 0.0 and hyp.paste_in == 0.0
    # a flag given explicitly wins; the rest still comes from the recipe
    opt = apply_recipe(TrainOptions(epochs=30, batch_size=2, optimizer="SGD", close_mosaic=0), data)
    assert (opt.hyp, opt.optimizer, opt.close_mosaic) == ("cfg/hyp/hyp.small.yaml", "SGD", 0)
    explicit = TrainOptions(hyp="cfg/hyp/hyp.scratch.tiny.yaml", optimizer="SGD", close_mosaic=0)
    assert apply_recipe(explicit, dataclasses.replace(data, train=[tmp_path / "missing"])) == explicit  # no counting


def test_long_runs_keep_the_previous_default():
    long = choose_recipe(shapes=False, train_images=118_287, epochs=300, batch_size=64)
    assert (long.hyp, long.optimizer, long.close_mosaic) == ("cfg/hyp/hyp.shapes.yaml", "SGD", 0)
    edge = choose_recipe(shapes=False, train_images=16 * SHORT_RUN_ITERATIONS // 10, epochs=10, batch_size=16)
    assert edge.optimizer == "AdamW"
