"""train.py's command line, TrainOptions, hyper-parameter files and run folders (no training)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import train
from engine.train.options import DEFAULT_HYP, TrainOptions, find_resume_checkpoint, load_hyp
from utils.config import ConfigError, Hyp, load
from utils.paths import REPO, increment_path

SHARED_HYP = Path(__file__).resolve().parents[2] / "shared" / "reference" / "yolov7" / "data"


def parse(*argv: str) -> TrainOptions:
    return train.parse_options(list(argv))


def test_defaults_are_train_options():
    assert parse() == TrainOptions()
    hyp = load_hyp(TrainOptions(hyp=DEFAULT_HYP))  # the shapes recipe's file ships with the project
    assert hyp.warmup_epochs == 1.0 and hyp.cls == 2.0 and hyp.lrf == 0.1


def test_yolov7_flags():
    opt = parse("--img", "320", "256", "--resume", "--cache-images", "--adam", "--freeze", "3", "--batch-size", "32",
                "--sync-bn", "--multi-scale", "lr0=0.02", "mosaic=0.5")
    assert opt.img_size == [320, 256] and opt.resume == "last" and opt.cache_images == "ram"
    assert opt.optimizer == "Adam" and opt.freeze == [3] and opt.batch_size == 32 and opt.sync_bn and opt.multi_scale
    assert opt.overrides == ["lr0=0.02", "mosaic=0.5"]
    assert parse("--resume", "runs/train/exp/weights/last.pt").resume == "runs/train/exp/weights/last.pt"
    # overrides after a multi-value flag are not taken as its values
    assert parse("--img-size", "320", "256", "lr0=0.02", "--name", "a=b").img_size == [320, 256]
    assert parse("--img-size", "320", "lr0=0.02", "--name", "a=b").overrides == ["lr0=0.02"]
    assert parse("--img-size", "320", "lr0=0.02", "--name", "a=b").name == "a=b"


def test_hyp_overrides_and_errors(tmp_path):
    hyp = load_hyp(TrainOptions(hyp=DEFAULT_HYP, overrides=["lr0=0.02", "loss_ota=false"], label_smoothing=0.1))
    assert hyp.lr0 == 0.02 and hyp.loss_ota is False and hyp.label_smoothing == 0.1
    with pytest.raises(ConfigError, match="'lr_0'"):
        load_hyp(TrainOptions(hyp=DEFAULT_HYP, overrides=["lr_0=0.02"]))
    bad = tmp_path / "hyp.yaml"
    bad.write_text("lr0: 0.01\nmomentun: 0.9\n")
    with pytest.raises(ConfigError, match=r"hyp.yaml: unknown key 'momentun'"):
        load_hyp(TrainOptions(hyp=str(bad)))


def test_option_checks():
    for opt, flag in ((TrainOptions(epochs=0), "--epochs"), (TrainOptions(optimizer="RMSprop"), "--optimizer"),
                      (TrainOptions(img_size=[16]), "--img-size"), (TrainOptions(cache_images="gpu"), "--cache")):
        with pytest.raises(ConfigError, match=flag):
            opt.check()


def test_cli_reports_config_errors(capsys):
    assert train.main(["--epochs", "1", "--device", "cpu", "not_a_key=1"]) == 2
    assert "not_a_key" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["tiny", "p5", "p6"])
def test_our_hyp_files_have_yolov7_values(name):
    ours = load(Hyp, REPO / "cfg" / "hyp" / f"hyp.scratch.{name}.yaml")
    if not SHARED_HYP.is_dir():
        pytest.skip("reference files in ../shared are absent")
    assert load(Hyp, SHARED_HYP / f"hyp.scratch.{name}.yaml") == ours  # the official files load unchanged


def test_run_folders(tmp_path):
    assert increment_path(tmp_path / "exp") == tmp_path / "exp"
    (tmp_path / "exp").mkdir()
    assert increment_path(tmp_path / "exp") == tmp_path / "exp2"
    (tmp_path / "exp7").mkdir()
    (tmp_path / "expert").mkdir()
    assert increment_path(tmp_path / "exp") == tmp_path / "exp8"
    assert increment_path(tmp_path / "exp", exist_ok=True) == tmp_path / "exp"


def test_resume_finds_newest_last(tmp_path):
    with pytest.raises(ConfigError, match="no weights/last.pt"):
        find_resume_checkpoint(TrainOptions(resume="last", project=str(tmp_path)))
    for i, name in enumerate(("exp", "exp2")):
        path = tmp_path / name / "weights" / "last.pt"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (time.time() + i, time.time() + i))
    assert find_resume_checkpoint(TrainOptions(resume="last", project=str(tmp_path))) == path
    with pytest.raises(ConfigError, match="no such checkpoint"):
        find_resume_checkpoint(TrainOptions(resume=str(tmp_path / "missing.pt")))


def test_compile_without_a_cpp_compiler_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import shutil

    from train_helpers import tiny_data

    tiny_data(tmp_path)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert parse("--compile").compile and not parse().compile
    argv = ["--compile", "--data", str(tmp_path / "tiny.yaml"), "--cfg", str(tmp_path / "tiny_model.yaml"),
            "--img", "64", "--epochs", "1", "--device", "cpu", "--noautoanchor", "--project", str(tmp_path / "runs")]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("train.py: error:") and "--compile: no C++ compiler" in err[-1]
    assert not (tmp_path / "runs").exists()
