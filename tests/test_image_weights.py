"""--image-weights: class / image weights by hand, weighted sampling, determinism, resume, rejections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import tiny_data, tiny_options

import engine.train.loaders
import engine.train.loop
import train as train_cli
from data import build_dataloader
from data.image_weights import class_counts, class_weights, image_weights
from data.samplers import WeightedIndexSampler
from data.shapes import CLASSES
from engine.train.loop import train
from engine.train.options import TrainOptions
from engine.train.setup import setup
from utils.checkpoint import load_checkpoint
from utils.config import ConfigError, Hyp
from utils.distributed import DistInfo

# image 0: classes 0, 0, 1; image 1: class 1; image 2: no labels; image 3: class 2. Class 3 never occurs.
LABELS = [np.array([[0, .5, .5, .1, .1], [0, .2, .2, .1, .1], [1, .3, .3, .1, .1]], np.float32),
          np.array([[1, .5, .5, .2, .2]], np.float32), np.zeros((0, 5), np.float32),
          np.array([[2, .5, .5, .3, .3]], np.float32)]


NC = len(CLASSES)


class Crash(Exception):
    pass


def test_weights_by_hand():
    counts = class_counts(LABELS, 4)
    assert counts.tolist() == [[2, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]
    # frequencies 2, 2, 1, 0 (counted as 1): inverse 1/2, 1/2, 1, 1, normalised by their sum 3
    np.testing.assert_allclose(class_weights(counts, [0, 0, 0, 0]), [1 / 6, 1 / 6, 1 / 3, 1 / 3])
    np.testing.assert_allclose(image_weights(LABELS, 4, [0, 0, 0, 0]), [2 / 6 + 1 / 6, 1 / 6, 0, 1 / 3])
    # (1 - mAP)^2: class 0 at mAP .5 -> x 1/4; class 2 at mAP 1 -> never drawn for it
    np.testing.assert_allclose(image_weights(LABELS, 4, [0.5, 0, 1, 0]), [2 / 24 + 1 / 6, 1 / 6, 0, 0])
    with pytest.raises(ValueError, match="4 values"):
        image_weights(LABELS, 4, [0, 0])


def test_sampling_frequencies_follow_the_weights():
    pattern = np.array([1.0, 2.0, 3.0, 0.0, 4.0])
    sampler = WeightedIndexSampler(np.tile(pattern, 4000), seed=1)  # 20000 draws per epoch
    drawn = np.array(list(sampler)) % 5
    assert len(drawn) == 20000
    frequency = np.bincount(drawn, minlength=5) / len(drawn)
    # binomial standard deviation <= 0.0035; uniform sampling would give 0.2 each
    np.testing.assert_allclose(frequency, pattern / pattern.sum(), atol=0.012)
    assert frequency[3] == 0
    sampler.set_weights(np.tile([0.0, 0.0, 0.0, 0.0, 1.0], 4000))  # reaches the next pass
    assert set(np.array(list(sampler)) % 5) == {4}
    sampler.set_weights(np.zeros(20000))  # nothing left to weight: uniform
    assert np.bincount(np.array(list(sampler)) % 5, minlength=5).min() > 3600
    with pytest.raises(ValueError, match=">= 0"):
        sampler.set_weights(np.full(20000, -1.0))


def test_order_is_a_function_of_seed_and_epoch():
    weights = np.arange(50, dtype=np.float64)

    def order(seed: int, epoch: int) -> list[int]:
        sampler = WeightedIndexSampler(weights, seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 3) == order(0, 3)
    assert order(0, 3) != order(0, 4) and order(0, 3) != order(1, 3)
    sampler = WeightedIndexSampler(weights, 0)
    first, _ = list(sampler), list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("image_weights")
    tiny_data(root)
    return root


def test_loader_with_workers_draws_the_sampler_order(data_root):
    images = data_root / "shapes_tiny" / "images" / "train"

    def indices(workers: int) -> list[list[int]]:
        loader, _ = build_dataloader(images, NC, img_size=64, batch_size=8, hyp=Hyp(), augment=True, shuffle=True,
                                     seed=5, workers=workers, image_weights=True)
        return [[i for b in loader for i in b.indices.tolist()] for _ in range(2)]  # two epochs

    loader, dataset = build_dataloader(images, NC, img_size=64, batch_size=8, seed=5, image_weights=True)
    assert isinstance(loader.sampler, WeightedIndexSampler)
    sampler = WeightedIndexSampler(image_weights(dataset.labels, NC, [0.0] * NC), seed=5)
    expected = [list(sampler)]
    sampler.set_epoch(1)
    expected.append(list(sampler))
    assert indices(0) == indices(2) == expected
    with pytest.raises(ValueError, match="rect"):
        build_dataloader(images, NC, img_size=64, rect=True, image_weights=True)


def test_rejected_with_rect_and_ddp(data_root):
    assert train_cli.parse_options(["--image-weights"]).image_weights
    with pytest.raises(ConfigError, match="--image-weights cannot be combined with --rect"):
        TrainOptions(image_weights=True, rect=True).check()
    with pytest.raises(ConfigError, match="--image-weights is not supported with DDP"):
        setup(tiny_options(data_root, image_weights=True), DistInfo(world_size=2), torch.device("cpu"))


@pytest.mark.slow
def test_cli_trains_one_epoch_with_image_weights(data_root):
    run = data_root / "runs" / "cli"
    assert train_cli.main([
        "--image-weights", "--data", str(data_root / "tiny.yaml"), "--cfg", str(data_root / "tiny_model.yaml"),
        "--epochs", "1", "--batch-size", "8", "--img-size", "64", "--workers", "1", "--device", "cpu",
        "--project", str(data_root / "runs"), "--name", "cli", "--noautoanchor", "warmup_epochs=0", "loss_ota=false",
    ]) == 0
    ckpt = load_checkpoint(run / "weights" / "last.pt")
    assert ckpt["opt"]["image_weights"] and len(ckpt["class_maps"]) == NC
    assert all(0.0 <= m <= 1.0 for m in ckpt["class_maps"])


@pytest.mark.slow
def test_training_and_exact_resume_use_the_last_validation(data_root, monkeypatch):
    """Epoch 1 samples by the per-class mAPs of epoch 0's validation, also after --resume."""
    real_validate = engine.train.loop.validate
    fake_maps = [0.9, 0.0, 0.5, 0.2, 1.0]  # a freshly trained tiny model scores ~0; make the mAPs matter
    monkeypatch.setattr(engine.train.loop, "validate", lambda run, plots: real_validate(run, plots)._replace(class_maps=fake_maps))
    drawn: dict[str, list[int]] = {}
    real_step = engine.train.loop.train_step

    def record(name):
        def step(run, batch, step):
            drawn.setdefault(name, []).extend(batch.indices.tolist())
            return real_step(run, batch, step)
        return step

    options = dict(epochs=2, image_weights=True, seed=3)
    monkeypatch.setattr(engine.train.loop, "train_step", record("straight"))
    straight = Path(train(tiny_options(data_root, name="straight", **options))["save_dir"])

    real_save = engine.train.loop.save_epoch

    def save_then_crash(run, epoch, improved):
        real_save(run, epoch, improved)
        raise Crash

    monkeypatch.setattr(engine.train.loop, "save_epoch", save_then_crash)
    monkeypatch.setattr(engine.train.loop, "train_step", record("first"))
    with pytest.raises(Crash):
        train(tiny_options(data_root, name="resumed", **options))
    monkeypatch.setattr(engine.train.loop, "save_epoch", real_save)
    last = data_root / "runs" / "resumed" / "weights" / "last.pt"
    assert load_checkpoint(last)["class_maps"] == fake_maps
    monkeypatch.setattr(engine.train.loop, "train_step", record("resumed"))
    train(TrainOptions(resume=str(last), device="cpu"))

    _, dataset = build_dataloader(data_root / "shapes_tiny" / "images" / "train", NC, img_size=64)
    sampler = WeightedIndexSampler(image_weights(dataset.labels, NC, [0.0] * NC), seed=3)
    epoch0 = list(sampler)
    sampler.set_weights(image_weights(dataset.labels, NC, fake_maps))
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert drawn["straight"] == epoch0 + epoch1
    assert drawn["first"] == epoch0 and drawn["resumed"] == epoch1
    a = load_checkpoint(straight / "weights" / "last.pt")["model"]
    b = load_checkpoint(last)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
