"""The real-photo check: a few epochs of yolov7-tiny on the raccoon set (data/raccoon.yaml),
with the recipe train.py picks on its own; skipped where the raccoon folder is absent."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest

from data import load_data_config
from engine.train import TrainOptions, train
from utils.config import ConfigError


def _raccoon_present() -> bool:
    try:
        return bool(load_data_config("raccoon").train[0].is_file())
    except ConfigError:
        return False


pytestmark = [pytest.mark.slow, pytest.mark.skipif(not _raccoon_present(), reason="no ../shared/datasets/raccoon")]


def test_raccoon_loads_as_voc():
    cfg = load_data_config("raccoon")
    assert cfg.names == ["raccoon"] and cfg.train[0].name == "train.txt" and cfg.val[0].name == "val.txt"


def test_raccoon_training_loss_falls(tmp_path, caplog):
    # warmup off: its 100-iteration floor would span all 30 iterations of this test
    opt = TrainOptions(data="raccoon", cfg="cfg/yolov7-tiny.yaml", epochs=3, batch_size=16, img_size=[64, 64],
                       workers=0, device="cpu", project=str(tmp_path), seed=0, notest=True, noautoanchor=True,
                       cache_images="ram", overrides=["warmup_epochs=0"])
    with caplog.at_level(logging.INFO):
        summary = train(opt)
    assert "recipe: hyp.small.yaml, AdamW, close-mosaic 10 (a short run: 160 images, 30 iterations" in caplog.text
    with open(Path(summary["save_dir"]) / "results.csv") as f:
        rows = list(csv.DictReader(f))
    losses = [sum(float(r[f"train/{k}"]) for k in ("box_loss", "obj_loss", "cls_loss")) for r in rows]
    assert len(losses) == 3 and losses[-1] < 0.9 * losses[0], losses
