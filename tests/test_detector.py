"""The Python object (engine.detector.Detector) against the commands, and the torch.hub entries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detect_fixtures import (
    IMG_SIZE,
    NAMES,
    REPO,
    one_thread,  # noqa: F401 (autouse fixture)
    run_script,
    small_model,
    write_checkpoint,
    write_images,
    write_video,
)
from train_helpers import tiny_data, tiny_options

import export
import val
from data.shapes import CLASSES
from elan_yolo import Detector
from utils.config import ConfigError
from utils.errors import UserError

SIZES = [(96, 160), (200, 120)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("detector")
    write_checkpoint(root / "weights.pt")
    write_images(root / "images", SIZES)
    return root


def test_predict_gives_detect_py_boxes_and_results_draw_and_serialise(workdir: Path) -> None:
    run = run_script("detect.py", "--weights", str(workdir / "weights.pt"), "--source", str(workdir / "images"),
                     "--save-txt", "--save-conf", "--project", str(workdir / "runs"), "--json")
    assert run.returncode == 0, run.stderr
    labels = Path(json.loads(run.stdout.strip().splitlines()[-1])["save_dir"]) / "labels"

    results = Detector(workdir / "weights.pt").predict(workdir / "images")
    assert [Path(r.path).name for r in results] == ["img0.jpg", "img1.jpg"]
    for det in results:
        assert len(det) > 0 and det.names == NAMES and det.frame is None
        assert det.label_lines(save_conf=True) == (labels / f"{Path(det.path).stem}.txt").read_text().splitlines()
        drawn = det.plot()
        assert drawn.shape == det.image.shape and drawn.dtype == np.uint8 and (drawn != det.image).any()
        row = json.loads(det.to_json())["detections"][0]
        assert row["name"] == NAMES[row["class"]] and row["box"] == [round(float(v), 2) for v in det.boxes[0]]
        saved = det.save_txt(workdir / "saved.txt")
        assert saved.read_text().splitlines() == det.label_lines()

    image = cv2.imread(str(workdir / "images" / "img0.jpg"))
    from_array = Detector(workdir / "weights.pt")(image)[0]  # an array: the same boxes as its file alone
    from_file = Detector(workdir / "weights.pt")(workdir / "images" / "img0.jpg")[0]
    np.testing.assert_array_equal(from_array.boxes, from_file.boxes)


def test_predict_options_stream_and_video(workdir: Path) -> None:
    detector = Detector(workdir / "weights.pt")
    everything = detector.predict(workdir / "images", conf_thres=0.25)
    kept = detector.predict(workdir / "images", conf_thres=0.25, classes=[1])
    assert all(set(d.classes.tolist()) <= {1} for d in kept)
    assert sum(map(len, kept)) < sum(map(len, everything))

    video = write_video(workdir / "clip.avi", frames=3)
    frames = detector.predict(video, stream=True)
    assert not isinstance(frames, list)
    assert [d.frame for d in frames] == [0, 1, 2]


def test_val_equals_val_py(tmp_path: Path, capsys) -> None:
    data = tiny_data(tmp_path)
    weights = write_checkpoint(tmp_path / "five.pt", small_model(nc=len(CLASSES)))
    ours = Detector(weights).val(data=str(data), img_size=IMG_SIZE, project=str(tmp_path / "val"), device="cpu")
    capsys.readouterr()
    assert val.main(["--weights", str(weights), "--data", str(data), "--img", str(IMG_SIZE),
                     "--project", str(tmp_path / "val"), "--device", "cpu", "--json"]) == 0
    command = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert Path(command["save_dir"]).name == "exp2"  # the same project: the next folder, as for a second val.py
    for key in ("mAP_0.5", "mAP_0.5:0.95", "precision", "recall", "AP", "AR100"):
        assert ours[key] == command[key]


def test_train_with_callbacks_then_holds_its_weights(tmp_path: Path) -> None:
    tiny_data(tmp_path)
    options = {k: v for k, v in vars(tiny_options(tmp_path, epochs=2)).items() if k not in ("cfg", "weights")}
    detector = Detector(tmp_path / "tiny_model.yaml")
    events: list = []
    detector.add_callback("on_train_start", lambda opt: events.append(("start", opt.epochs)))
    detector.add_callback("on_epoch_end", lambda epoch, row: events.append(("epoch", epoch)) or epoch == 0)
    detector.add_callback("on_train_end", lambda summary: events.append(("end", summary["epochs"])))
    summary = detector.train(**options)
    assert events == [("start", 2), ("epoch", 0), ("end", 1)]  # True from on_epoch_end stopped the run
    assert detector.weights == summary["weights"] and Path(summary["weights"]).is_file()
    trained = torch.load(summary["weights"], weights_only=True)["model"]
    first = next(iter(trained))
    assert torch.equal(detector.model.state_dict()[first], trained[first].float())  # the trained weights
    assert detector.model is detector.model
    assert len(detector.predict(np.zeros((64, 64, 3), np.uint8), conf_thres=0.9)) == 1


def test_mistakes_are_config_and_user_errors(workdir: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option 'conf'"):
        Detector(workdir / "weights.pt").predict(workdir / "images", conf=0.5)
    with pytest.raises(ConfigError, match="conf.thres must be <= 1"):
        Detector(workdir / "weights.pt").predict(workdir / "images", conf_thres=2.0)
    with pytest.raises(ConfigError, match="'weights' is the Detector's own"):
        Detector(workdir / "weights.pt").val(weights="other.pt")
    with pytest.raises(UserError, match="untrained config has no weights"):
        Detector("yolov7-tiny.yaml").predict(workdir / "images")
    assert Detector("yolov7-tiny.pt").weights == "yolov7-tiny.pt"  # a released name: downloaded when used
    with pytest.raises(UserError, match="no such weights file"):
        Detector(workdir / "missing.pt")
    with pytest.raises(ConfigError, match="unknown event"):
        Detector("yolov7-tiny.yaml").add_callback("on_batch", print)


def test_torch_hub_local_entries(workdir: Path) -> None:
    configs = [p.stem for p in (REPO / "cfg").glob("*.yaml")] + ["yolor-csp-x"]
    for name in configs:  # one entry per model config, untrained
        assert torch.hub.load(str(REPO), name.replace("-", "_"), source="local").cfg == f"{name}.yaml"

    custom = torch.hub.load(str(REPO), "custom", str(workdir / "weights.pt"), source="local")
    np.testing.assert_array_equal(custom(workdir / "images" / "img0.jpg")[0].boxes,
                                  Detector(workdir / "weights.pt")(workdir / "images" / "img0.jpg")[0].boxes)

    tiny = torch.hub.load(str(REPO), "yolov7_tiny", source="local")
    assert sum(p.numel() for p in tiny.model.parameters()) == 6_228_762  # the published yolov7-tiny size
    assert torch.hub.load(str(REPO), "yolov7_tiny", weights=str(workdir / "weights.pt"),
                          source="local").weights == str(workdir / "weights.pt")


def test_export_equals_export_py_and_the_file_predicts(workdir: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    ours, theirs = (shutil.copy(workdir / "weights.pt", tmp_path / folder / "best.pt") for folder in "ab")
    summary = Detector(ours).export(include=["torchscript"], img_size=[IMG_SIZE])
    capsys.readouterr()
    assert export.main(["--weights", str(theirs), "--include", "torchscript", "--img-size", str(IMG_SIZE),
                        "--json"]) == 0
    command = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the same formats, checks and sizes (the traced file's debug records differ in a few KB)
    assert [(e["format"], e["check"]) for e in summary["exports"]] == [(e["format"], e["check"])
                                                                         for e in command["exports"]]
    assert summary["exports"][0]["size_mb"] == pytest.approx(command["exports"][0]["size_mb"], rel=0.02)
    assert summary["img_size"] == command["img_size"]
    files = [e["file"] for e in summary["exports"] + command["exports"]]
    image = workdir / "images" / "img0.jpg"
    boxes = [Detector(f).predict(image)[0].boxes for f in [*files, ours]]
    for other in boxes[1:]:
        np.testing.assert_allclose(other, boxes[0], atol=0.05)
    assert Detector("yolov7-tiny.yaml").model.nc == 80  # a config: an untrained model
