"""The real trainer on CPU: a short run (loss falls, files written, checkpoints load), exact
resume after a crash, non-finite losses."""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import cv2
import pytest
import torch
from train_helpers import TINY_MODEL, tiny_data, tiny_options

import engine.train.loop
import engine.train.setup
import train as train_cli
from data.shapes import CLASSES
from engine.detect.predictor import Predictor
from engine.train.loop import NonFiniteLossError, train
from engine.train.options import TrainOptions
from engine.train.validation import EpochValidation
from engine.val.run import ValOptions, run_val
from models.checkpoint_io import load_model
from models.loss import LossItems, YoloLoss
from models.yolo import Model
from utils.checkpoint import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from utils.precision import resolve_precision

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

# No augmentation: the same images every epoch, so the training loss must fall.
FIXED_IMAGES = ["warmup_epochs=0", "lr0=0.05", "mosaic=0", "mixup=0", "paste_in=0", "loss_ota=false", "hsv_h=0",
                "hsv_s=0", "hsv_v=0", "fliplr=0", "scale=0", "translate=0"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    tiny_data(root)
    return root


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_short_training(data_root):
    # nominal batch 8 instead of 64: a seconds-long run on 24 images then makes 3 steps per epoch
    opt = tiny_options(data_root, name="short", epochs=4, overrides=[*FIXED_IMAGES, "nbs=8"], noautoanchor=False)
    summary = train(opt)
    run = Path(summary["save_dir"])
    rows = read_rows(run / "results.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    first, last = (sum(float(r[f"train/{k}_loss"]) for k in ("box", "obj", "cls")) for r in (rows[0], rows[-1]))
    assert last < 0.97 * first, (first, last)
    assert all(float(r["val/box_loss"]) > 0 and 0 <= float(r["metrics/mAP_0.5"]) <= 1 for r in rows)
    for name in ("hyp.yaml", "opt.yaml", "results.png", "labels.jpg", "train_batch0.jpg", "test_batch0_pred.jpg",
                 "confusion_matrix.png", "PR_curve.png"):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))
    ckpt = load_checkpoint(run / "weights" / "last.pt")
    assert ckpt["epoch"] == -1 and "optimizer" not in ckpt and ckpt["model"]["model.0.conv.weight"].dtype == torch.float16
    # the checkpoint stores the options as run: --precision auto resolved for this machine
    resolved = dataclasses.replace(opt, precision=resolve_precision(opt.precision, torch.device("cpu")))
    assert TrainOptions.from_dict(ckpt["opt"]) == resolved
    model = load_model(run / "weights" / "last.pt", "cpu")
    pred, _ = model(torch.rand(1, 3, 64, 64))
    assert pred.shape == (1, 3 * (8 * 8 + 4 * 4), 10) and torch.isfinite(pred).all()
    assert model.names == ckpt["names"] and len(model.names) == 5
    # the checkpoint works in val.py and detect.py
    val = run_val(ValOptions(weights=str(run / "weights" / "last.pt"), data=opt.data, img_size=64, device="cpu",
                             project=str(data_root / "val"), plots=False))
    assert 0 <= val["mAP_0.5"] <= 1
    image = next((data_root / "shapes_tiny" / "images" / "val").glob("*.jpg"))
    detections = Predictor(run / "weights" / "last.pt", device="cpu", conf_thres=0.0)(image)
    assert len(detections) == 1 and detections[0].shape == cv2.imread(str(image)).shape[:2]


class Crash(Exception):
    """Stands for a kill right after a checkpoint was written."""


def test_resume_is_exact(data_root, monkeypatch):
    changes = dict(epochs=3, save_period=1,
                   overrides=["warmup_epochs=0.5", "mixup=0", "paste_in=0", "loss_ota=false", "nbs=8"])
    straight = Path(train(tiny_options(data_root, name="straight", **changes))["save_dir"])

    real_save = engine.train.loop.save_epoch

    def save_then_crash(run, epoch, improved):
        real_save(run, epoch, improved)
        if epoch == 0:
            raise Crash

    monkeypatch.setattr(engine.train.loop, "save_epoch", save_then_crash)
    with pytest.raises(Crash):
        train(tiny_options(data_root, name="resumed", **changes))
    monkeypatch.setattr(engine.train.loop, "save_epoch", real_save)
    resumed_dir = data_root / "runs" / "resumed"
    assert load_checkpoint(resumed_dir / "weights" / "last.pt")["epoch"] == 0
    # --resume takes every option from the checkpoint (the device may change)
    summary = train(TrainOptions(resume=str(resumed_dir / "weights" / "last.pt"), device="cpu"))
    assert Path(summary["save_dir"]) == resumed_dir

    a = load_checkpoint(straight / "weights" / "epoch_002.pt")
    b = load_checkpoint(resumed_dir / "weights" / "epoch_002.pt")
    for key in ("model", "train_model"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert a["ema"] == b["ema"]
    state_a, state_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(state_a[i]["momentum_buffer"], state_b[i]["momentum_buffer"]) for i in state_a)
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert (straight / "results.csv").read_text() == (resumed_dir / "results.csv").read_text()


class NaNLoss(YoloLoss):
    """YoloLoss whose result is NaN on the calls listed in ``bad`` (all calls when None)."""

    bad: set[int] | None = set()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def __call__(self, raw, targets, img_size):
        loss, items = super().__call__(raw, targets, img_size)
        self.calls += 1
        if self.bad is None or self.calls in self.bad:
            return loss * float("nan"), LossItems(*(term * float("nan") for term in items))
        return loss, items


def test_nonfinite_loss_skips_step(data_root, monkeypatch):
    monkeypatch.setattr(NaNLoss, "bad", {2, 3})
    monkeypatch.setattr(engine.train.setup, "YoloLoss", NaNLoss)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(tiny_options(data_root, name="nan_some", epochs=1))
    assert sum("non-finite loss" in str(w.message) for w in caught) == 2
    ckpt = load_checkpoint(Path(summary["save_dir"]) / "weights" / "last.pt")
    assert all(torch.isfinite(v.float()).all() for v in ckpt["model"].values())
    rows = read_rows(Path(summary["save_dir"]) / "results.csv")
    assert all(torch.isfinite(torch.tensor(float(rows[0][f"train/{k}_loss"]))) for k in ("box", "obj", "cls"))


def test_nonfinite_loss_stops_run(data_root, monkeypatch):
    monkeypatch.setattr(NaNLoss, "bad", None)
    monkeypatch.setattr(engine.train.setup, "YoloLoss", NaNLoss)
    monkeypatch.setattr(engine.train.loop, "MAX_BAD_STEPS", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NonFiniteLossError, match="2 batches in a row"):
            train(tiny_options(data_root, name="nan_all", epochs=1))
    assert not (data_root / "runs" / "nan_all" / "weights" / "last.pt").exists()


def test_nonfinite_loss_counter_spans_epochs(data_root, monkeypatch):
    """3 batches an epoch, all NaN: the 5 in a row are reached in epoch 1 (the counter restarted
    each epoch, so such a run trained to the end without a single step)."""
    monkeypatch.setattr(NaNLoss, "bad", None)
    monkeypatch.setattr(engine.train.setup, "YoloLoss", NaNLoss)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NonFiniteLossError, match=r"5 batches in a row \(epoch 1, batch 1\)"):
            train(tiny_options(data_root, name="nan_epochs", epochs=3, notest=True))


def test_finetune_transfers_and_freezes(data_root, tmp_path, caplog):
    """--weights copies the tensors that fit (not the head of another class count); --freeze keeps layers."""
    source = Model(TINY_MODEL)
    path = save_checkpoint({"model": source.state_dict(), "model_cfg": source.yaml, "names": list(CLASSES), "nc": 5,
                            "epoch": -1, "version": CHECKPOINT_VERSION}, tmp_path / "source.pt")
    caplog.set_level(logging.INFO)
    summary = train(tiny_options(data_root, name="finetune", cfg="", weights=str(path), single_cls=True, epochs=1,
                                 freeze=[4]))
    target = Model(TINY_MODEL, nc=1).state_dict()
    fitting = sum(v.shape == target[k].shape for k, v in source.state_dict().items())
    assert fitting == len(target) - 6  # the head's 1x1 convs and ImplicitM vectors depend on nc
    assert any(f"transferred {fitting}/{len(target)} tensors" in r.message for r in caplog.records)
    tuned = load_checkpoint(Path(summary["save_dir"]) / "weights" / "last.pt")
    assert tuned["nc"] == 1 and tuned["names"] == ["item"]
    for i in range(4):
        key = f"model.{i}.conv.weight"
        assert torch.equal(tuned["model"][key].float(), source.state_dict()[key].half().float()), key
    assert tuned["model"]["model.4.m.0.weight"].shape[0] == 3 * (5 + 1)


def test_resume_after_kill(data_root):
    """SIGKILL a train.py process right after its first last.pt appears; --resume ends like a straight run."""
    changes = dict(epochs=3, save_period=1, overrides=["mixup=0", "loss_ota=false"])
    straight = Path(train(tiny_options(data_root, name="kill_straight", **changes))["save_dir"])
    opt = tiny_options(data_root, name="killed", **changes)
    cmd = [sys.executable, "train.py", "--data", opt.data, "--cfg", opt.cfg, "--epochs", "3", "--batch-size", "8",
           "--img-size", "64", "64", "--workers", "0", "--threads", "1", "--device", "cpu", "--noautoanchor", "--save-period", "1",
           "--project", opt.project, "--name", opt.name, "--hyp", opt.hyp, "--optimizer", "SGD",
           "--close-mosaic", "0", *opt.overrides]
    assert train_cli.parse_options(cmd[2:]) == opt
    last = Path(opt.project) / opt.name / "weights" / "last.pt"
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not last.exists() and proc.poll() is None:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    train(TrainOptions(resume=str(last), device="cpu"))
    a = load_checkpoint(straight / "weights" / "epoch_002.pt")
    b = load_checkpoint(last.parent / "epoch_002.pt")
    assert all(torch.equal(a["train_model"][k], b["train_model"][k]) for k in a["train_model"])
    assert (straight / "results.csv").read_text() == (last.parent.parent / "results.csv").read_text()


def test_patience_counts_validated_epochs_only():
    """--notest epochs log fitness 0 (not validated): they must not trigger --patience, or a
    300-epoch --notest run would stop at epoch 100 without ever validating."""
    rows = [{"epoch": e, "fitness": 0.0} for e in range(3)]
    assert not engine.train.loop.patience_exhausted(rows, 2, patience=2, notest=True)
    assert engine.train.loop.patience_exhausted(rows, 2, patience=2, notest=False)


def test_img_size_not_a_stride_multiple_is_rounded_up(data_root, caplog):
    """--img-size 72 with stride 16 trains at 80 (YOLOv7's check_img_size) instead of stopping in the loss."""
    with caplog.at_level(logging.WARNING):
        summary = train(tiny_options(data_root, name="img72", epochs=1, img_size=[72, 72]))
    assert "not a multiple" in caplog.text
    ckpt = load_checkpoint(Path(summary["save_dir"]) / "weights" / "last.pt")
    assert ckpt["opt"]["img_size"] == [80, 80]


def test_early_stop_with_nosave_still_saves_the_last_epoch(data_root, monkeypatch):
    """--nosave saves only the final epoch; a run stopped by --patience must count as final there."""
    monkeypatch.setattr(engine.train.loop, "validate", lambda run, plots: EpochValidation.skipped(run.class_maps))
    summary = train(tiny_options(data_root, name="stop_nosave", epochs=6, nosave=True, patience=1))
    rows = (Path(summary["save_dir"]) / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2  # header, epochs 0 and 1: stopped one epoch after the (flat) best
    assert load_checkpoint(Path(summary["save_dir"]) / "weights" / "last.pt")["model"]


def test_compiled_training_matches_eager(data_root):
    from utils.device import compile_unavailable

    if compile_unavailable(torch.device("cpu")):
        pytest.skip(compile_unavailable(torch.device("cpu")))
    runs = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        summary = train(tiny_options(data_root, name=name, epochs=1, precision="fp32", compile=compiled))
        runs[name] = (read_rows(Path(summary["save_dir"]) / "results.csv")[0], load_checkpoint(summary["weights"]))
    (eager, eager_ckpt), (compiled, compiled_ckpt) = runs["eager"], runs["compiled"]
    for key in ("train/box_loss", "train/obj_loss", "train/cls_loss"):  # three steps: Inductor only reorders sums
        assert float(compiled[key]) == pytest.approx(float(eager[key]), rel=1e-3), key
    assert list(compiled_ckpt["model"]) == list(eager_ckpt["model"])  # no _orig_mod. prefix
    assert compiled_ckpt["opt"]["compile"] and not eager_ckpt["opt"]["compile"]
