"""Model ensembles (models/ensemble.py) in the Predictor, val.py and detect.py: ``--weights a.pt b.pt``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from detect_fixtures import one_thread, write_checkpoint  # noqa: F401 (one_thread: autouse fixture)
from official_fixtures import randomize
from train_helpers import TINY_MODEL, tiny_data

import detect
import val
from data.shapes import CLASSES
from engine.detect import Predictor
from models.ensemble import Ensemble, EnsembleError
from models.yolo import Model

FLAGS = ["--img", "64", "--device", "cpu"]


def _checkpoint(path: Path, seed: int, nc: int = len(CLASSES)) -> Path:
    model = randomize(Model(TINY_MODEL, nc=nc), seed)
    model.names = list(CLASSES) if nc == len(CLASSES) else [f"class{i}" for i in range(nc)]
    return write_checkpoint(path, model)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ensemble")
    data = tiny_data(root, n_train=1, n_val=4)
    return {"root": root, "data": data, "images": root / "shapes_tiny" / "images" / "val",
            "a": _checkpoint(root / "a.pt", 0), "b": _checkpoint(root / "b.pt", 1),
            "one_class": _checkpoint(root / "one_class.pt", 2, nc=1)}


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_an_ensemble_of_one_checkpoint_twice_gives_its_boxes(files):
    images = sorted(files["images"].glob("*"))
    one = Predictor(files["a"], "cpu", 64, conf_thres=0.001)(images)
    twice = Predictor([files["a"], files["a"]], "cpu", 64, conf_thres=0.001)(images)
    assert isinstance(Predictor([files["a"], files["a"]], "cpu", 64).backend.model, Ensemble)
    assert sum(len(d) for d in one) > 0
    for d1, d2 in zip(one, twice, strict=True):  # every box twice, NMS keeps one of each pair
        np.testing.assert_allclose(d2.as_array(), d1.as_array(), atol=1e-5)


def test_the_ensemble_concatenates_the_predictions_along_the_box_axis(files):
    models = [Predictor(files[k], "cpu", 64).backend.model for k in ("a", "b")]
    x = torch.rand(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        pred, _ = Ensemble(models)(x)
        assert torch.equal(pred, torch.cat([models[0](x)[0], models[1](x)[0]], 1))


def test_val_and_detect_run_an_ensemble_of_two_checkpoints(files, capsys):
    results = {}
    for weights in ([files["a"]], [files["a"], files["b"]]):
        assert val.main(["--weights", *map(str, weights), "--data", str(files["data"]), *FLAGS, "--batch-size", "4",
                         "--project", str(files["root"] / "val"), "--json", "--save-json"]) == 0
        results[len(weights)] = _last_json(capsys)
    assert results[2]["images"] == 4 and results[2]["json"].endswith("a_b_predictions.json")
    assert results[1]["json"].endswith("a_predictions.json")
    assert detect.main(["--weights", str(files["a"]), str(files["b"]), "--source", str(files["images"]), *FLAGS,
                        "--conf-thres", "0.001", "--nosave", "--project", str(files["root"] / "detect"), "--json"]) == 0
    found = _last_json(capsys)
    assert found["images"] == 4 and found["detections"] > 0


def test_models_of_other_classes_are_one_line_exit_2(files, capsys):
    for script in (val, detect):
        args = ["--data", str(files["data"])] if script is val else ["--source", str(files["images"])]
        assert script.main(["--weights", str(files["a"]), str(files["one_class"]), *args, *FLAGS]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert f"{files['one_class']} has 1 classes (class0) but {files['a']} has {len(CLASSES)}" in err
        assert "an ensemble needs the same classes" in err


def test_models_of_other_strides_are_refused(files):
    cfg = dict(TINY_MODEL, backbone=[*TINY_MODEL["backbone"], [-1, 1, "Conv", [32, 3, 2]]],
               head=[[[3, 4], 1, "IDetect", ["nc", "anchors"]]])
    deeper = Model(cfg)
    deeper.names = list(CLASSES)
    shallow = Model(TINY_MODEL)
    shallow.names = list(CLASSES)
    with pytest.raises(EnsembleError, match=r"deep.pt has strides \[16, 32\] but shallow.pt has \[8, 16\]"):
        Ensemble([shallow, deeper], ["shallow.pt", "deep.pt"])
