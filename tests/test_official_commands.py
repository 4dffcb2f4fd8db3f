"""An official YOLOv7 checkpoint, converted or as it is, in val.py, detect.py, export.py and
``train.py --weights`` (tiny network, 64 px, a handful of images)."""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path

import pytest
import torch
from official_fixtures import randomize, train_checkpoint, write_official
from train_helpers import TINY_MODEL, tiny_data

import detect
import export
import train
import val
from data.shapes import CLASSES
from models.convert import main as convert_main
from models.yolo import Model

FLAGS = ["--img", "64", "--device", "cpu"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("official_commands")
    data = tiny_data(root, n_train=8, n_val=4)
    cfg = copy.deepcopy(TINY_MODEL)
    ema = randomize(Model(cfg))
    ema.names = list(CLASSES)
    official = root / "best.pt"
    write_official(root, {official: train_checkpoint(ema, randomize(Model(cfg), 1), cfg, "IDetect")})
    assert convert_main([str(official)]) == 0
    return {"root": root, "data": data, "official": official, "converted": root / "best-elan.pt", "ema": ema}


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_val_gives_the_same_numbers_for_the_official_and_the_converted_file(files, capsys, caplog):
    results = {}
    for kind in ("official", "converted"):
        with caplog.at_level(logging.WARNING, logger="models.checkpoint_io"):
            assert val.main(["--weights", str(files[kind]), "--data", str(files["data"]), *FLAGS,
                             "--batch-size", "4", "--project", str(files["root"] / "val"), "--json"]) == 0
        results[kind] = _last_json(capsys)
    assert results["official"]["mAP_0.5:0.95"] == results["converted"]["mAP_0.5:0.95"]
    assert results["official"]["images"] == 4
    said = [r.getMessage() for r in caplog.records if "converted in memory" in r.getMessage()]
    assert len(said) == 1 and str(files["official"]) in said[0]  # the official file only, one line


def test_detect_on_the_official_and_the_converted_file(files, capsys):
    images = files["root"] / "shapes_tiny" / "images" / "val"
    found = {}
    for kind in ("official", "converted"):
        assert detect.main(["--weights", str(files[kind]), "--source", str(images), *FLAGS, "--conf-thres", "0.001",
                            "--nosave", "--project", str(files["root"] / "detect"), "--json"]) == 0
        found[kind] = _last_json(capsys)
    same = [{k: v for k, v in found[kind].items() if k not in ("save_dir", "ms_per_image")} for kind in found]
    assert same[0] == same[1] and found["official"]["detections"] > 0


def test_export_of_an_official_file(files, capsys):
    assert export.main(["--weights", str(files["official"]), "--include", "torchscript", *FLAGS, "--json"]) == 0
    summary = _last_json(capsys)
    scripted = Path(str(files["official"]).replace(".pt", ".torchscript"))
    assert scripted.is_file() and json.dumps(summary)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.x marks torch.jit deprecated
        module = torch.jit.load(str(scripted))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(module(x), files["ema"].eval()(x)[0], atol=1e-4)


@pytest.mark.parametrize("kind", ["converted", "official"])
def test_train_fine_tunes_from_it_and_says_how_many_tensors_it_took(files, kind, caplog):
    caplog.set_level(logging.INFO)
    assert train.main(["--weights", str(files[kind]), "--data", str(files["data"]), "--epochs", "1",
                       "--batch-size", "4", "--img-size", "64", "64", "--workers", "0", "--device", "cpu",
                       "--noautoanchor", "--project", str(files["root"] / "train"), "--name", kind,
                       "warmup_epochs=0", "mosaic=0", "mixup=0", "loss_ota=false"]) == 0
    total = len(files["ema"].state_dict())
    assert any(f"transferred {total}/{total} tensors" in r.getMessage() for r in caplog.records)
