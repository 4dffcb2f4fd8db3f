"""detect.py and the Python inference API (engine.detect.predictor): outputs on a folder and a video,
boxes in original pixels, --classes, and clear messages for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detect_fixtures import (  # noqa: F401 (one_thread: autouse fixture)
    IMG_SIZE,
    NAMES,
    one_thread,
    run_script,
    small_model,
    write_checkpoint,
    write_images,
    write_video,
)

import detect
from data import letterbox, load_data_config
from engine.detect.predictor import Detections, Predictor, batch_shape
from engine.detect.run import DetectOptions, draw
from engine.detect.sources import Source, SourceError
from engine.tta import augmented_forward
from utils.nms import non_max_suppression

SIZES = [(96, 160), (200, 120), (128, 128)]  # (h, w): landscape, portrait, square


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("detect")
    write_checkpoint(root / "weights.pt")
    write_images(root / "images", SIZES)
    (root / "images" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return root


@pytest.fixture(scope="module")
def folder_run(workdir: Path) -> Path:
    """detect.py on the folder with every output switched on; returns the run folder."""
    result = run_script("detect.py", "--weights", str(workdir / "weights.pt"), "--source", str(workdir / "images"),
                        "--save-txt", "--save-conf", "--save-json", "--project", str(workdir / "runs"), "--json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "broken.jpg: cannot read image" in result.stderr  # skipped with a message, the rest processed
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["images"] == len(SIZES) and len(summary["skipped"]) == 1
    for i in range(len(SIZES)):
        assert f"img{i}.jpg: " in result.stdout  # one line per image
    return Path(summary["save_dir"])


def test_batch_shape_hand_values() -> None:
    # 96x160 at 128: 77x128 -> padded to 96x128; with a 200x120 image (128x77) the batch needs 128x128
    assert batch_shape([(96, 160)], 128, 32) == (96, 128)
    assert batch_shape([(96, 160), (200, 120)], 128, 32) == (128, 128)
    assert batch_shape([(640, 480)], 640, 32) == (640, 480)


def test_predictor_boxes_are_original_pixels(workdir: Path) -> None:
    """The API equals a by-hand pipeline: letterbox, fused model, NMS, undo gains and padding."""
    predictor = Predictor(workdir / "weights.pt", device="cpu")
    assert predictor.img_size == IMG_SIZE and predictor.names == NAMES  # from the checkpoint
    model = small_model().fuse()
    for i, (h, w) in enumerate(SIZES):
        path = workdir / "images" / f"img{i}.jpg"
        image = cv2.imread(str(path))
        boxed, (gw, gh), (pw, ph) = letterbox(image, IMG_SIZE, 32)  # minimal padding, as for one image
        x = torch.from_numpy(np.ascontiguousarray(boxed[..., ::-1].transpose(2, 0, 1)))[None].float() / 255
        with torch.no_grad():
            det = non_max_suppression(model(x)[0], 0.25, 0.45)[0].numpy()
        expected = det[:, :4].copy()
        expected[:, [0, 2]] = ((expected[:, [0, 2]] - pw) / gw).clip(0, w)
        expected[:, [1, 3]] = ((expected[:, [1, 3]] - ph) / gh).clip(0, h)
        got = predictor(str(path))[0]
        assert len(got) == len(det) > 0 and got.shape == (h, w)
        np.testing.assert_allclose(got.boxes, expected, atol=1e-3)
        np.testing.assert_allclose(got.scores, det[:, 4], atol=1e-5)
        np.testing.assert_array_equal(got.classes, det[:, 5].astype(np.int64))
    augmented = Predictor(workdir / "weights.pt", device="cpu", augment=True)(str(path))[0]  # last image
    assert len(augmented) > 0 and (augmented.boxes >= 0).all()
    assert (augmented.boxes[:, [0, 2]] <= w).all() and (augmented.boxes[:, [1, 3]] <= h).all()


def test_folder_outputs(workdir: Path, folder_run: Path) -> None:
    entries = json.loads((folder_run / "detections.json").read_text())
    assert [Path(e["path"]).name for e in entries] == [f"img{i}.jpg" for i in range(len(SIZES))]
    predictor = Predictor(workdir / "weights.pt", device="cpu")
    for i, ((h, w), entry) in enumerate(zip(SIZES, entries, strict=False)):
        drawn = cv2.imread(str(folder_run / f"img{i}.jpg"))
        assert drawn is not None and drawn.shape[:2] == (h, w)
        assert (entry["height"], entry["width"]) == (h, w)
        boxes = np.array([d["box"] for d in entry["detections"]], np.float32)
        assert len(boxes) > 0
        assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= w).all()
        assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= h).all()
        if (h, w) == (IMG_SIZE, IMG_SIZE):  # same network input in the batch as alone: same boxes
            single = predictor(str(workdir / "images" / f"img{i}.jpg"))[0]
            np.testing.assert_allclose(boxes, single.boxes, atol=0.01)
        rows = np.loadtxt(folder_run / "labels" / f"img{i}.txt", ndmin=2)
        assert rows.shape == (len(boxes), 6)  # cls cx cy w h score
        expected = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 / w, (boxes[:, 1] + boxes[:, 3]) / 2 / h,
                             (boxes[:, 2] - boxes[:, 0]) / w, (boxes[:, 3] - boxes[:, 1]) / h], 1)
        np.testing.assert_allclose(rows[:, 1:5], expected, atol=1e-3)
        assert rows[:, 0].tolist() == [d["class"] for d in entry["detections"]]


def test_classes_filter(workdir: Path, folder_run: Path, capsys) -> None:
    code = detect.main(["--weights", str(workdir / "weights.pt"), "--source", str(workdir / "images"),
                        "--classes", "0", "--save-json", "--nosave", "--project", str(workdir / "runs"), "--json"])
    assert code == 0
    save_dir = Path(json.loads(capsys.readouterr().out.splitlines()[-1])["save_dir"])
    filtered = json.loads((save_dir / "detections.json").read_text())
    full = json.loads((folder_run / "detections.json").read_text())
    kept = [[d for d in e["detections"] if d["class"] == 0] for e in full]
    assert sum(map(len, kept)) > 0 and sum(len(e["detections"]) for e in full) > sum(map(len, kept))
    # class-aware NMS: filtering before NMS keeps exactly the class-0 boxes of the full run
    assert [e["detections"] for e in filtered] == kept


def test_video(workdir: Path) -> None:
    video = write_video(workdir / "clip.avi", frames=4, size=(96, 160))
    result = run_script("detect.py", "--weights", str(workdir / "weights.pt"), "--source", str(video),
                        "--save-txt", "--project", str(workdir / "runs"), "--name", "video")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("video (frame ") == 4
    out = workdir / "runs" / "video"
    drawn, source = _read_frames(out / "clip.mp4"), _read_frames(video)
    assert len(drawn) == len(source) == 4 and drawn[0].shape[:2] == (96, 160)
    assert sorted(p.name for p in (out / "labels").iterdir()) == [f"clip_{i}.txt" for i in range(4)]
    predictor = Predictor(workdir / "weights.pt", device="cpu")
    for i, frame in enumerate(source):  # labels are the API's boxes on the decoded frame, normalised
        det = predictor.predict([frame])[0]
        rows = np.loadtxt(out / "labels" / f"clip_{i}.txt", ndmin=2)
        assert len(rows) == len(det) > 0
        centres = (det.boxes[:, :2] + det.boxes[:, 2:]) / 2 / np.array([160, 96])
        np.testing.assert_allclose(rows[:, 1:3], centres, atol=1e-4)


def _read_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (ok := capture.read())[0]:
        frames.append(ok[1])
    capture.release()
    return frames


def test_sources_list_glob_and_batches(workdir: Path) -> None:
    listing = workdir / "list.txt"
    listing.write_text("images/img0.jpg\n# a comment\nimages/img2.jpg\n")
    assert [len(b) for b in Source(str(listing), batch_size=8)] == [2]
    messages: list[str] = []
    batches = list(Source(str(workdir / "images" / "*.jpg"), batch_size=2, on_skip=messages.append))
    assert [len(b) for b in batches] == [2, 1] and len(messages) == 1 and "broken.jpg" in messages[0]
    with pytest.raises(SourceError, match="no such file"):
        Source(str(workdir / "nothing_here"))


def test_bad_input_in_a_subprocess_fails_cleanly(workdir: Path) -> None:
    result = run_script("detect.py", "--weights", str(workdir / "weights.pt"), "--source", str(workdir / "missing.jpg"))
    assert result.returncode == 2
    assert "missing.jpg: no such file or folder" in result.stderr and "Traceback" not in result.stderr


def _fails_cleanly(argv: list[str], capsys, code: int, message: str) -> None:
    """detect.main returns ``code`` (no exception escapes) and says ``message`` on stderr."""
    assert detect.main(argv) == code
    assert message in capsys.readouterr().err


def test_bad_inputs(workdir: Path, capsys) -> None:
    weights = str(workdir / "weights.pt")
    broken_video = workdir / "broken.mp4"
    broken_video.write_bytes(b"\x00" * 64)
    _fails_cleanly(["--weights", weights, "--source", str(broken_video), "--project", str(workdir / "runs")],
                   capsys, 2, "broken.mp4: cannot open video")
    foreign = workdir / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    _fails_cleanly(["--weights", str(foreign), "--source", str(workdir / "images")], capsys, 2,
                   "not a checkpoint of this project")
    _fails_cleanly(["--weights", str(workdir / "missing.pt")], capsys, 2, "no such weights file")
    only_broken = workdir / "only_broken"
    only_broken.mkdir()
    (only_broken / "x.png").write_bytes(b"\x89PNG broken")
    _fails_cleanly(["--weights", weights, "--source", str(only_broken), "--project", str(workdir / "runs")],
                   capsys, 1, "no image could be read")


@pytest.mark.skipif(Path("/dev/video0").exists(), reason="a real webcam would be opened")
def test_webcam_that_is_not_there(workdir: Path, capsys) -> None:
    _fails_cleanly(["--weights", str(workdir / "weights.pt"), "--source", "0", "--project", str(workdir / "runs")],
                   capsys, 2, "0: cannot open video or stream")


def test_no_arguments_without_training_says_what_to_do(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # no runs/train here
    _fails_cleanly([], capsys, 2, "Train one first")


def _bright_centroid_box(t: torch.Tensor) -> torch.Tensor:
    """A stand-in model: one 'box' centred on the centroid of the brightness of each
    image above the grey 0.447 of background and padding, in pixel-centre coordinates; [B, 1, 6]."""
    b, _, h, w = t.shape
    weight = (t[:, 0] - 0.447).clamp(min=0)
    total = weight.sum((1, 2))
    cx = (weight.sum(1) * (torch.arange(w) + 0.5)).sum(1) / total
    cy = (weight.sum(2) * (torch.arange(h) + 0.5)).sum(1) / total
    return torch.stack([cx, cy, torch.full_like(cx, 10.0), torch.full_like(cx, 10.0),
                        torch.ones_like(cx), torch.ones_like(cx)], 1)[:, None]


def test_augmented_forward_maps_scaled_and_flipped_passes_back() -> None:
    x = torch.full((1, 3, 96, 128), 0.447)  # background = padding grey: only the square weighs
    x[:, :, 40:44, 20:24] = 1.0  # a 4x4 bright square centred at (22, 42)
    out = augmented_forward(_bright_centroid_box, x, stride=32)
    assert out.shape == (1, 3, 6)  # one row per pass: scale 1, 0.83 flipped, 0.67
    np.testing.assert_allclose(out[0, :, 0].numpy(), 22.0, atol=0.3)  # the flip is undone
    np.testing.assert_allclose(out[0, :, 1].numpy(), 42.0, atol=0.3)
    np.testing.assert_allclose(out[0, 1:, 2].numpy(), [10 * 128 / 106, 10 * 128 / 85], rtol=1e-5)  # widths de-scaled


def test_no_weights_or_source_uses_newest_checkpoint_on_shapes_val(workdir: Path, tmp_path: Path, monkeypatch,
                                                                   capsys) -> None:
    older = write_checkpoint(tmp_path / "runs" / "train" / "exp" / "weights" / "best.pt")
    newer = tmp_path / "runs" / "train" / "exp2" / "weights" / "best.pt"
    newer.parent.mkdir(parents=True)
    newer.write_bytes(older.read_bytes())
    monkeypatch.chdir(tmp_path)
    assert detect.main(["--nosave", "--json"]) == 0
    out = capsys.readouterr().out
    assert f"using weights {Path('runs/train/exp2/weights/best.pt')}" in out
    summary = json.loads(out.splitlines()[-1])
    val_images = list(load_data_config("shapes").split("val")[0].glob("*.jpg"))
    assert summary["images"] == len(val_images) > 0


def test_drawing_options() -> None:
    """--hide-conf draws a shorter label, --hide-labels none, --line-thickness wider lines."""
    det = Detections(np.array([[20.0, 30.0, 80.0, 90.0]], np.float32), np.array([0.87], np.float32),
                     np.array([1]), (120, 160))
    image = np.zeros((120, 160, 3), np.uint8)

    def painted(**flags) -> int:
        opt = DetectOptions(weights="", source="", **flags)
        return int(draw(image, det, NAMES, opt).astype(np.int64).sum())  # ink

    full, no_conf, no_label = painted(), painted(hide_conf=True), painted(hide_labels=True)
    assert full > no_conf > no_label > 0
    assert painted(hide_labels=True, line_thickness=4) > no_label
