"""--precision: the words, bf16 autocast on CPU (a step, exact resume, the NaN guard), and where
the precision is recorded (opt.yaml, checkpoint, timing.csv)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import TINY_OVERRIDES, tiny_data, tiny_options

import engine.train.loop
import engine.train.setup
from engine.train.loop import train
from engine.train.options import TrainOptions
from models.loss import YoloLoss
from utils.checkpoint import load_checkpoint
from utils.precision import autocast, cpu_has_native_bf16, resolve_precision

CPU = torch.device("cpu")
# Without hardware bf16 the tiny model still runs in emulated bf16 (slower, same arithmetic).
NATIVE = "native" if cpu_has_native_bf16() else "emulated"


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("precision")
    tiny_data(root, n_train=16, n_val=4)
    return root


def test_precision_words():
    assert resolve_precision("auto", CPU) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert [resolve_precision(p, CPU) for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    with pytest.raises(ValueError, match="one of auto, fp32, bf16, fp16"):
        resolve_precision("half", CPU)
    with pytest.raises(ValueError, match="CPU or CUDA"):
        resolve_precision("bf16", torch.device("meta"))
    assert resolve_precision("auto", torch.device("meta")) == "fp32"
    conv = torch.nn.Conv2d(3, 4, 3)
    with autocast(CPU, "bf16"):
        assert conv(torch.rand(1, 3, 8, 8)).dtype == torch.bfloat16
    with autocast(CPU, "fp32"):
        assert conv(torch.rand(1, 3, 8, 8)).dtype == torch.float32


def test_flag_is_declared_once_with_its_choices():
    from train import parse_options

    assert TrainOptions().precision == "auto" and parse_options(["--precision", "bf16"]).precision == "bf16"
    with pytest.raises(SystemExit):
        parse_options(["--precision", "half"])


def test_bf16_training_resumes_exactly_and_records_its_precision(data_root, monkeypatch):
    """A bf16 run killed after epoch 0 and resumed ends with the weights of a straight bf16 run."""
    changes = dict(epochs=2, save_period=1, precision="bf16", overrides=[*TINY_OVERRIDES, "nbs=8"])
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
    resumed = data_root / "runs" / "resumed"
    train(TrainOptions(resume=str(resumed / "weights" / "last.pt"), device="cpu"))

    a, b = (load_checkpoint(d / "weights" / "epoch_001.pt") for d in (straight, resumed))
    for key in ("model", "train_model"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert (straight / "results.csv").read_text() == (resumed / "results.csv").read_text()
    assert a["precision"] == "bf16" and a["opt"]["precision"] == "bf16"
    assert yaml.safe_load((straight / "opt.yaml").read_text())["precision"] == "bf16"
    with open(straight / "timing.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"] and all(r["precision"] == "bf16" for r in rows)
    assert all(float(r["img_per_s"]) > 0 and float(r["gflops"]) > 0 for r in rows)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(straight)).Reload()
    assert [e.step for e in events.Scalars("speed/img_per_s")] == [0, 1]
    assert events.Scalars("speed/gflops")[0].value == pytest.approx(float(rows[0]["gflops"]), abs=0.06)
    # bf16 really ran: the same epoch in fp32 ends with other weights
    fp32 = Path(train(tiny_options(data_root, name="fp32", **{**changes, "precision": "fp32"}))["save_dir"])
    a0, c0 = (load_checkpoint(d / "weights" / "epoch_000.pt") for d in (straight, fp32))
    assert c0["precision"] == "fp32"
    assert not all(torch.equal(a0["train_model"][k], c0["train_model"][k]) for k in a0["train_model"])


class NaNAfterForward(YoloLoss):
    """The loss of the bf16 forward, made NaN on the second call."""

    def __call__(self, raw, targets, img_size):
        assert all(r.dtype == torch.float32 for r in raw)  # the loss and OTA cost run in fp32
        loss, items = super().__call__(raw, targets, img_size)
        self.calls = getattr(self, "calls", 0) + 1
        return (loss * float("nan"), items) if self.calls == 2 else (loss, items)


def test_bf16_loss_is_fp32_and_nan_guard_skips(data_root, monkeypatch):
    monkeypatch.setattr(engine.train.setup, "YoloLoss", NaNAfterForward)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(tiny_options(data_root, name="bf16_nan", epochs=1, precision="bf16"))
    assert sum("non-finite loss" in str(w.message) for w in caught) == 1
    ckpt = load_checkpoint(Path(summary["save_dir"]) / "weights" / "last.pt")
    assert all(torch.isfinite(v.float()).all() for v in ckpt["model"].values())


def test_threads_and_workers_from_the_free_cores(monkeypatch):
    import utils.cpu

    assert 0 <= utils.cpu.busy_cores(0.05) <= (os.cpu_count() or 1) + 0.5
    monkeypatch.setattr(utils.cpu, "usable_cores", lambda: 4)
    assert (utils.cpu.split_cores(busy=1.0).threads, utils.cpu.split_cores(busy=1.0).workers) == (3, 3)
    assert utils.cpu.split_cores(busy=0.4).threads == 4  # a core counts as taken when more than half busy
    assert utils.cpu.split_cores(busy=3.9).threads == 1
    assert utils.cpu.split_cores(processes=2, busy=0.0).threads == 2  # DDP processes share the cores
    monkeypatch.setattr(utils.cpu, "busy_cores", lambda: pytest.fail("given counts need no measurement"))
    split = utils.cpu.split_cores(threads=2, workers=0)
    assert (split.threads, split.workers) == (2, 0) and "2 threads for the model, 0 loader workers" in split.describe()


# Run in a fresh interpreter: the spin count torch's OpenMP would read when the command loads torch.
_SPIN_AT_TORCH_IMPORT = """
import os, runpy, sys
seen = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("GOMP_SPINCOUNT"))
sys.meta_path.insert(0, Watch())
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print("seen", seen)
"""


@pytest.mark.parametrize("script", ["train.py", "val.py", "detect.py"])
def test_commands_shorten_the_openmp_spin_before_torch_loads(script):
    from utils.cpu import OPENMP_SPIN_COUNT

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", _SPIN_AT_TORCH_IMPORT, script], cwd=root, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert f"seen ['{OPENMP_SPIN_COUNT}']" in out


def test_openmp_spin_keeps_the_users_setting(monkeypatch):
    from utils.cpu import OPENMP_SPIN_COUNT, shorten_openmp_spin

    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    shorten_openmp_spin()  # torch is loaded here: too late, so nothing is set
    assert "GOMP_SPINCOUNT" not in os.environ
    monkeypatch.delitem(sys.modules, "torch")  # as in a command before its imports (put back afterwards)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # the user's policy decides the spin
    shorten_openmp_spin()
    assert "GOMP_SPINCOUNT" not in os.environ
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "77")
    shorten_openmp_spin()
    assert os.environ["GOMP_SPINCOUNT"] == "77"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    shorten_openmp_spin()
    assert os.environ["GOMP_SPINCOUNT"] == str(OPENMP_SPIN_COUNT)
