"""Deployment files: the OpenVINO IR gives the checkpoint's boxes, INT8 ONNX / OpenVINO files
(export.py --int8) run in val.py and detect.py, val.py scores an fp32 ONNX file as it scores the
checkpoint, and every command tells a weights file's kind from its contents."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from detect_fixtures import (  # noqa: F401 (one_thread: autouse fixture)
    IMG_SIZE,
    make_image,
    one_thread,
    run_script,
    small_model,
    write_checkpoint,
)
from train_helpers import tiny_data

import detect
import val
from data.shapes import CLASSES
from data.sources import label_path, list_images
from engine.backends import BackendError, compile_backend, load_backend, weights_kind
from engine.detect.predictor import Predictor
from engine.export.exporter import export_model

RTOL = 1e-4  # as tests/test_export.py: the parity tolerance of ONNX files
BATCH = 2  # the exports' fixed batch: 3 images run as 2 + 1 padded
METRIC = "mAP_0.5:0.95"


def _self_labelled(root: Path, weights: Path) -> Path:
    """A tiny shapes set whose val labels are the checkpoint's own detections, jittered by a few
    pixels: the checkpoint scores high there but not 1, and any error in a file's boxes moves
    its mAP@.5:.95 (an untrained model on the true labels scores ~0, which proves nothing)."""
    data = tiny_data(root, n_train=4, n_val=6)
    images = list_images(root / "shapes_tiny" / "images" / "val")
    rng = np.random.default_rng(0)
    for path, det in zip(images, Predictor(weights, "cpu", conf_thres=0.4)(images), strict=True):
        h, w = det.shape
        xywh = np.concatenate([(det.boxes[:, :2] + det.boxes[:, 2:]) / 2, det.boxes[:, 2:] - det.boxes[:, :2]], 1)
        xywh += rng.normal(0, 2.0, xywh.shape)  # pixels
        xywh = np.clip(xywh, 1, [w - 1, h - 1, w - 1, h - 1])
        xywh[:, 2:] = np.minimum(xywh[:, 2:], 2 * np.minimum(xywh[:, :2], [w, h] - xywh[:, :2]))  # inside
        rows = [f"{c} {x / w:.6f} {y / h:.6f} {bw / w:.6f} {bh / h:.6f}"
                for c, (x, y, bw, bh) in zip(det.classes, xywh, strict=True)]
        label_path(path).write_text("\n".join(rows) + "\n")
    return data


@pytest.fixture(scope="module")
def deploy(tmp_path_factory) -> dict:
    """export.py --include onnx openvino --int8 at 128 px, batch 2, on a small yolov7-tiny."""
    root = tmp_path_factory.mktemp("deploy")
    model = small_model(nc=len(CLASSES))
    model.names = list(CLASSES)
    weights = write_checkpoint(root / "best.pt", model)
    data = _self_labelled(root, weights)
    result = run_script("export.py", "--weights", str(weights), "--include", "onnx", "openvino", "--int8",
                        "--data", str(data), "--calib", "4", "--batch-size", str(BATCH), "--json")
    assert result.returncode == 0, result.stderr
    files = {"onnx": root / "best.onnx", "openvino": root / "best_openvino_model" / "best.xml",
             "onnx-int8": root / "best_int8.onnx", "openvino-int8": root / "best_int8_openvino_model" / "best.xml"}
    return {"root": root, "weights": weights, "data": data, "model": model.fuse().eval(), "files": files,
            "stdout": result.stdout, "summary": json.loads(result.stdout.strip().splitlines()[-1])}


def _summary(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_export_writes_every_file_with_its_metadata(deploy) -> None:
    assert {e["format"]: Path(e["file"]) for e in deploy["summary"]["exports"]} == deploy["files"]
    for name, path in deploy["files"].items():
        meta = load_backend(path, torch.device("cpu")).meta
        assert meta.precision == ("int8" if name.endswith("int8") else "fp32")
        assert (meta.names, meta.img_size, meta.batch) == (list(CLASSES), (IMG_SIZE, IMG_SIZE), BATCH)
    fp32_bytes = 4 * sum(p.numel() for p in deploy["model"].parameters())
    assert deploy["files"]["openvino"].with_suffix(".bin").stat().st_size >= fp32_bytes  # not fp16-compressed
    assert deploy["files"]["onnx-int8"].stat().st_size < 0.6 * fp32_bytes  # int8 weights (+ scales, graph)


def test_export_prints_the_map_of_every_file_beside_the_checkpoints(deploy) -> None:
    rows = {r["name"]: r[METRIC] for r in deploy["summary"]["accuracy"]}
    assert set(rows) == {"checkpoint", *deploy["files"]}
    line = next(x for x in deploy["stdout"].splitlines() if x.startswith("mAP@.5:.95"))
    assert f"checkpoint {rows['checkpoint']:.4f}" in line and f"onnx-int8 {rows['onnx-int8']:.4f}" in line
    assert rows["onnx"] == pytest.approx(rows["checkpoint"], abs=1e-3)


def test_openvino_gives_the_checkpoints_boxes(deploy) -> None:
    images = [make_image(i, IMG_SIZE, IMG_SIZE) for i in range(3)]  # square: the checkpoint's input is the same
    ref = Predictor(deploy["weights"], "cpu").predict(images)
    assert sum(map(len, ref)) > 0
    for weights, backend in ((deploy["files"]["openvino"], "auto"), (deploy["files"]["onnx"], "openvino")):
        got = Predictor(weights, "cpu", backend=backend).predict(images)
        assert [len(d) for d in got] == [len(d) for d in ref]
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_allclose(a.as_array(), b.as_array(), rtol=RTOL, atol=1e-3)


def test_openvino_nms_takes_the_callers_thresholds(deploy, tmp_path: Path) -> None:
    xml = export_model(deploy["model"], tmp_path / "nms", ["openvino"], (IMG_SIZE, IMG_SIZE), nms=True,
                       exporter="torchscript")[0].file  # the export checks its detections against utils.nms
    images = [make_image(i, IMG_SIZE, IMG_SIZE) for i in range(2)]
    counts = {}
    for conf in (0.25, 0.4):
        ref = Predictor(deploy["weights"], "cpu", conf_thres=conf).predict(images)
        got = Predictor(xml, "cpu", conf_thres=conf).predict(images)
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_allclose(a.as_array(), b.as_array(), rtol=RTOL, atol=1e-3)
        counts[conf] = sum(map(len, got))
    assert counts[0.25] > counts[0.4] > 0


def _val(weights: Path, deploy: dict, capsys, *extra: str) -> dict:
    code = val.main(["--weights", str(weights), "--data", str(deploy["data"]), "--img", str(IMG_SIZE),
                     "--batch-size", str(BATCH), "--project", str(deploy["root"] / "val"), "--json", *extra])
    assert code == 0
    return _summary(capsys)


def test_val_scores_an_fp32_onnx_file_as_the_checkpoint(deploy, capsys) -> None:
    ref = _val(deploy["weights"], deploy, capsys, "--square")[METRIC]
    assert ref > 0.3  # the self-labelled set: a number that moves with the boxes
    for name in ("onnx", "openvino"):
        assert _val(deploy["files"][name], deploy, capsys)[METRIC] == pytest.approx(ref, abs=1e-3), name


def test_int8_files_run_in_val_and_detect(deploy, capsys, tmp_path: Path) -> None:
    printed = {r["name"]: r[METRIC] for r in deploy["summary"]["accuracy"]}
    for name in ("onnx-int8", "openvino-int8"):  # val.py's number is the one export.py printed
        assert _val(deploy["files"][name], deploy, capsys)[METRIC] == pytest.approx(printed[name], abs=1e-5), name
    images = deploy["root"] / "shapes_tiny" / "images" / "val"
    for weights in (deploy["files"]["onnx-int8"], deploy["files"]["openvino-int8"].parent):  # the IR's folder too
        code = detect.main(["--weights", str(weights), "--source", str(images), "--nosave", "--project",
                            str(tmp_path), "--json"])
        assert code == 0
        summary = _summary(capsys)
        assert summary["images"] == 6 and summary["detections"] > 0


def test_weights_kind_reads_the_contents(deploy, tmp_path: Path) -> None:
    renamed = tmp_path / "model.weights"
    shutil.copy(deploy["files"]["onnx"], renamed)  # the name says nothing
    assert weights_kind(renamed) == "onnx"
    assert weights_kind(deploy["weights"]) == "checkpoint"
    assert weights_kind(deploy["files"]["openvino"]) == "openvino"
    assert weights_kind(deploy["files"]["openvino"].parent) == "openvino"
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(BackendError, match="junk.pt"):
        load_backend(junk, torch.device("cpu"))
    with pytest.raises(BackendError, match="does not run on --backend openvino"):
        load_backend(deploy["weights"], torch.device("cpu"), backend="openvino")


def test_compile_refuses_an_exported_file() -> None:
    with pytest.raises(BackendError, match="best.onnx: --compile needs a PyTorch checkpoint"):
        compile_backend(object(), "best.onnx")  # any backend but a checkpoint's
