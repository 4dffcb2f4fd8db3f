"""export.py and engine.export.exporter: ONNX (static, dynamic, NMS inside) and TorchScript equal the
PyTorch model; detect.py gives the same detections from the .onnx file as from the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from detect_fixtures import (  # noqa: F401 (one_thread: autouse fixture)
    IMG_SIZE,
    make_image,
    one_thread,
    run_script,
    small_model,
    write_checkpoint,
    write_images,
)

import detect
from engine.backends import load_backend
from engine.detect.predictor import Predictor
from engine.export.exporter import (
    ExportError,
    check_detections,
    check_threshold,
    compare,
    export_model,
    export_onnx,
    sorted_detections,
)
from engine.formats import EXPORT_FORMATS, FORMATS, format_named, resolve
from utils.nms import non_max_suppression

RTOL = 1e-4


def _rand(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _assert_close(out: np.ndarray, ref: torch.Tensor) -> None:
    np.testing.assert_allclose(out, ref.numpy(), rtol=RTOL, atol=1e-5)


@pytest.fixture(scope="module")
def model():
    return small_model().fuse()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """export.py run once on a checkpoint: static ONNX and TorchScript at the checkpoint's size."""
    root = tmp_path_factory.mktemp("export")
    weights = write_checkpoint(root / "best.pt")
    result = run_script("export.py", "--weights", str(weights), "--json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return {"root": root, "weights": weights, "stdout": result.stdout,
            "summary": json.loads(result.stdout.strip().splitlines()[-1])}


@pytest.fixture(scope="module")
def dynamic_onnx(model, tmp_path_factory) -> dict[str, Path]:
    """Dynamic-shape ONNX files written through the library: plain (by the older TorchScript-based
    exporter, so both exporters are covered) and with NMS in the graph (dynamo)."""
    root = tmp_path_factory.mktemp("dynamic")
    plain = export_model(model, root / "plain", ["onnx"], (IMG_SIZE, IMG_SIZE), dynamic=True,
                         exporter="torchscript")[0].file
    nms = export_model(model, root / "nms", ["onnx"], (IMG_SIZE, IMG_SIZE), dynamic=True, nms=True)[0].file
    return {"plain": plain, "nms": nms}


def test_cli_prints_files_sizes_and_checks(exported: dict) -> None:
    exports = {e["format"]: e for e in exported["summary"]["exports"]}
    assert set(exports) == {"onnx", "torchscript"} and exported["summary"]["img_size"] == [IMG_SIZE, IMG_SIZE]
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".torchscript")):
        path = Path(exports[fmt]["file"])
        assert path == exported["weights"].with_suffix(suffix) and path.is_file()
        assert exports[fmt]["size_mb"] == pytest.approx(path.stat().st_size / 1e6, abs=1e-3)
        assert f"{fmt}: {path}" in exported["stdout"] and "check passed" in exported["stdout"]
        assert exports[fmt]["max_abs_diff"] < 1e-2


def test_static_onnx_equals_pytorch(exported: dict, model) -> None:
    session = ort.InferenceSession(str(exported["weights"].with_suffix(".onnx")))
    assert session.get_inputs()[0].shape == [1, 3, IMG_SIZE, IMG_SIZE]
    x = _rand(1, 3, IMG_SIZE, IMG_SIZE)
    with torch.no_grad():
        ref = model(x)[0]
    _assert_close(session.run(None, {"images": x.numpy()})[0], ref)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_equals_pytorch_at_other_shapes(exported: dict, model) -> None:
    module = torch.jit.load(str(exported["weights"].with_suffix(".torchscript")))
    for shape in ((1, 3, IMG_SIZE, IMG_SIZE), (2, 3, 96, 160)):
        x = _rand(*shape)
        with torch.no_grad():
            _assert_close(module(x).numpy(), model(x)[0])


def test_dynamic_onnx_equals_pytorch(dynamic_onnx: dict, model) -> None:
    session = ort.InferenceSession(str(dynamic_onnx["plain"]))
    for shape in ((2, 3, 96, 160), (1, 3, 192, 64)):
        x = _rand(*shape)
        with torch.no_grad():
            _assert_close(session.run(None, {"images": x.numpy()})[0], model(x)[0])


def test_onnx_nms_gives_the_same_detections(dynamic_onnx: dict, model) -> None:
    session = ort.InferenceSession(str(dynamic_onnx["nms"]))
    x = _rand(2, 3, 96, 160)
    with torch.no_grad():
        pred = model(x)[0]
    for conf, iou in ((0.25, 0.45), (0.5, 0.3)):  # graph defaults, then overridden thresholds
        feeds = {"images": x.numpy()}
        if conf != 0.25:
            feeds |= {"conf_thres": np.array([conf], np.float32), "iou_thres": np.array([iou], np.float32)}
        out = torch.from_numpy(session.run(None, feeds)[0])
        assert out.shape[1] == 7
        refs = non_max_suppression(pred, conf, iou)
        assert sum(map(len, refs)) > 0
        dets = [out[out[:, 0] == i, 1:] for i in range(len(x))]
        for det, ref in zip(dets, refs, strict=False):
            assert len(det) == len(ref)
            det, ref = sorted_detections(det), sorted_detections(ref)
            assert torch.equal(det[:, 5], ref[:, 5])
            _assert_close(det[:, :5].numpy(), ref[:, :5])


def test_onnx_nms_one_class_scores_by_objectness(tmp_path: Path) -> None:
    """utils.nms scores a one-class model by obj alone (its class output is untrained); so must the graph."""
    model = small_model(nc=1).fuse()
    path = export_onnx(model, tmp_path / "one.onnx", (64, 64), nms=True, exporter="torchscript")
    x = _rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = non_max_suppression(model(x)[0], 0.25, 0.45)[0]
    out = torch.from_numpy(ort.InferenceSession(str(path)).run(None, {"images": x.numpy()})[0])
    assert len(ref) > 0 and len(out) == len(ref) and (out[:, 6] == 0).all()
    _assert_close(sorted_detections(out[:, 1:])[:, :5].numpy(), sorted_detections(ref)[:, :5])


def test_check_threshold_lets_boxes_through() -> None:
    pred = torch.zeros(1, 200, 7)
    pred[0, :, 4] = torch.linspace(1e-4, 2e-4, 200)  # obj of an untrained model
    pred[0, :, 5] = 0.1  # class scores: best is 0.1
    conf = check_threshold(pred, count=50)
    assert ((pred[0, :, 4] * 0.1) > conf).sum() == 50
    assert check_threshold(torch.ones(1, 10, 7)) == 0.001  # confident outputs keep the usual 0.001


def test_static_batch_export_splits_and_pads_batches(exported: dict, model, tmp_path: Path) -> None:
    """A batch-2 static file serves a batch of 3 (split 2 + 1, the last padded) like the checkpoint."""
    path = export_onnx(model, tmp_path / "b2.onnx", (IMG_SIZE, IMG_SIZE), batch=2, exporter="torchscript")
    images = [make_image(i, IMG_SIZE, IMG_SIZE) for i in range(3)]  # square: same input as the checkpoint's
    ref = Predictor(exported["weights"], device="cpu").predict(images)
    got = Predictor(path, device="cpu").predict(images)
    assert [len(d) for d in got] == [len(d) for d in ref] and sum(map(len, ref)) > 0
    for a, b in zip(got, ref, strict=False):
        np.testing.assert_allclose(a.as_array(), b.as_array(), rtol=RTOL, atol=1e-3)


def test_parity_checks_can_fail(model, tmp_path: Path) -> None:
    ref = torch.tensor([[100.0, 0.5]])
    compare("same", ref + torch.tensor([[0.005, 0.0]]), ref)  # within rtol on a 100 px coordinate
    with pytest.raises(ExportError, match="differs"):
        compare("off", ref + torch.tensor([[0.0, 0.001]]), ref)
    det = torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.9, 1.0]])
    with pytest.raises(ExportError, match="1 detections, PyTorch NMS gives 0"):
        check_detections("count", [det], [det[:0]])
    with pytest.raises(ExportError, match="opset"):
        export_onnx(model, tmp_path / "old.onnx", (IMG_SIZE, IMG_SIZE), opset=12)


@pytest.mark.parametrize("kind", ["plain", "nms"])
def test_detect_with_onnx_equals_checkpoint(kind: str, exported: dict, dynamic_onnx: dict, capsys) -> None:
    root = exported["root"]
    images = root / "images"
    if not images.exists():
        write_images(images, [(96, 160), (200, 120), (128, 128)])
    results = {}
    for name, weights in (("pt", exported["weights"]), (kind, dynamic_onnx[kind])):
        code = detect.main(["--weights", str(weights), "--source", str(images), "--save-json", "--nosave",
                            "--project", str(root / "runs"), "--name", f"{kind}_{name}", "--json"])
        assert code == 0
        save_dir = Path(json.loads(capsys.readouterr().out.splitlines()[-1])["save_dir"])
        results[name] = json.loads((save_dir / "detections.json").read_text())
    assert sum(len(e["detections"]) for e in results["pt"]) > 0
    for a, b in zip(results["pt"], results[kind], strict=False):
        assert [d["class"] for d in a["detections"]] == [d["class"] for d in b["detections"]]
        for da, db in zip(a["detections"], b["detections"], strict=False):
            np.testing.assert_allclose(da["box"], db["box"], atol=0.02)
            assert da["score"] == pytest.approx(db["score"], abs=1e-4)


def test_the_format_table_names_real_writers_readers_and_quantisers() -> None:
    for fmt in FORMATS:
        assert callable(resolve(fmt.reader)) and set(fmt.backends) <= {f.backend for f in FORMATS}
    for fmt in EXPORT_FORMATS:
        assert callable(resolve(fmt.writer)) and (fmt.quantizer is None or callable(resolve(fmt.quantizer)))
        assert fmt.source is None or format_named(fmt.source) in EXPORT_FORMATS
        stem = Path("runs/best")
        assert fmt.path(stem).is_relative_to("runs") and fmt.path(stem).name.startswith("best")
        assert fmt.quantizer is None or fmt.path(stem, int8=True) != fmt.path(stem)


def test_options_apply_only_to_formats_that_support_them(model, tmp_path: Path) -> None:
    """--nms and --dynamic with TorchScript (no NMS inside, always shape-free): written without NMS
    and checked on raw outputs; --int8 with no format that has an INT8 copy is an ExportError."""
    result = export_model(model, tmp_path / "m", ["torchscript"], (IMG_SIZE, IMG_SIZE), nms=True)[0]
    meta = load_backend(result.file, torch.device("cpu")).meta
    assert not meta.nms and meta.batch is None and result.dynamic and "raw outputs" in result.check
    with pytest.raises(ExportError, match="INT8 copy"):
        export_model(model, tmp_path / "q", ["torchscript"], (IMG_SIZE, IMG_SIZE), int8=True, calib_sources=[tmp_path])
