"""Tracking (engine.detect.track, detect.py --track): ids stay with their objects across a video.

The wiring is tested with a stand-in detector that finds the bright shapes of a synthetic video by
their pixels (so its boxes carry the video codec's noise, plus a little jitter of its own), then
once end to end with a real checkpoint through detect.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detect_fixtures import one_thread, run_script, write_checkpoint  # noqa: F401 (one_thread: autouse fixture)
from torchvision.ops import box_iou

from engine.detect import Detections, DetectOptions, run_detect
from engine.detect.track import Tracks
from engine.detector import Detector

H, W, FRAMES = 120, 200, 30
# (start x, start y, vx, vy, side, BGR colour): straight lines, two of them passing each other
SHAPES = [(10, 10, 5.0, 0.0, 18, (0, 0, 255)), (170, 40, -5.0, 0.5, 20, (0, 255, 0)),
          (60, 85, 2.0, -0.3, 24, (255, 128, 0))]


def true_boxes(frame: int) -> np.ndarray:
    """float32 [3, 4] xyxy of the shapes in ``frame``."""
    return np.array([[x + vx * frame, y + vy * frame, x + vx * frame + s, y + vy * frame + s]
                     for x, y, vx, vy, s, _ in SHAPES], np.float32)


def write_moving_shapes(path: Path) -> Path:
    """An MJPG .avi of FRAMES frames: SHAPES moving on a dark background."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (W, H))
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for i in range(FRAMES):
        image = np.full((H, W, 3), 20, np.uint8)
        for box, (*_, colour) in zip(true_boxes(i).round().astype(int), SHAPES, strict=True):
            cv2.rectangle(image, tuple(box[:2]), tuple(box[2:]), colour, -1)
        writer.write(image)
    writer.release()
    return path


class PixelDetector:
    """Predictor stand-in: each bright blob is a class-0 box, jittered by up to ~1 px."""

    names = ["shape"]

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def predict(self, images: list[np.ndarray]) -> list[Detections]:
        results = []
        for image in images:
            mask = (image.max(2) > 80).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
            stats = stats[1:][stats[1:, cv2.CC_STAT_AREA] > 30]
            boxes = np.stack([stats[:, 0], stats[:, 1], stats[:, 0] + stats[:, 2], stats[:, 1] + stats[:, 3]], 1)
            boxes = boxes.astype(np.float32) + self.rng.normal(0, 0.5, boxes.shape).astype(np.float32)
            order = self.rng.permutation(len(boxes))  # the detector's order must not matter
            results.append(Detections(boxes[order], np.full(len(boxes), 0.9, np.float32),
                                      np.zeros(len(boxes), np.int64), image.shape[:2], self.names))
        return results


def ids_per_object(frames: list[tuple[int, np.ndarray, np.ndarray]]) -> np.ndarray:
    """int [frames, 3]: the id of the box that best overlaps each true shape (-2: no box overlaps)."""
    table = np.full((len(frames), len(SHAPES)), -2)
    for row, (index, boxes, ids) in enumerate(frames):
        if len(boxes):
            iou = box_iou(torch.from_numpy(true_boxes(index)), torch.as_tensor(boxes, dtype=torch.float32)).numpy()
            best = iou.argmax(1)
            table[row] = np.where(iou.max(1) > 0.5, ids[best], -2)
    return table


def id_switches(table: np.ndarray) -> int:
    """How often an object's id changes from one frame to the next (MOT's IDSW, per object)."""
    return int((table[1:] != table[:-1]).sum())


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_moving_shapes(tmp_path_factory.mktemp("track") / "shapes.avi")


def test_ids_stay_with_their_objects_through_detect(video: Path, tmp_path: Path) -> None:
    opt = DetectOptions(weights="unused", source=str(video), track=True, save_txt=True, save_json=True,
                        project=str(tmp_path), name="run")
    summary = run_detect(opt, predictor=PixelDetector())
    assert summary["images"] == FRAMES
    save_dir = Path(summary["save_dir"])
    frames = []
    for i in range(FRAMES):  # the label rows: class cx cy w h id (normalised)
        rows = np.loadtxt(save_dir / "labels" / f"shapes_{i}.txt", ndmin=2)
        assert rows.shape == (3, 6)
        cxcy, wh = rows[:, 1:3] * [W, H], rows[:, 3:5] * [W, H]
        frames.append((i, np.concatenate([cxcy - wh / 2, cxcy + wh / 2], 1), rows[:, 5].astype(int)))
    table = ids_per_object(frames)
    assert (table[0] == -1).all(), table  # a new track takes its id when it is matched again
    assert (table[1:] >= 0).all(), table  # then every shape has an id in every frame
    assert id_switches(table[1:]) == 0, table
    assert len(set(table[1])) == 3  # three objects, three ids
    entries = json.loads((save_dir / "detections.json").read_text())
    assert [sorted(d["id"] for d in e["detections"]) for e in entries[1:]] == [sorted(table[1])] * (FRAMES - 1)


def test_detector_predict_track(video: Path, tmp_path: Path, monkeypatch) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    detector = Detector(weights)
    monkeypatch.setattr(Detector, "predictor", lambda self, opt: PixelDetector())
    results = detector.predict(str(video), track=True)
    table = ids_per_object([(i, det.boxes, det.ids) for i, det in enumerate(results)])
    assert (table[1:] >= 0).all() and id_switches(table[1:]) == 0
    assert all(det.ids is None for det in detector.predict(str(video)))  # off unless asked


def test_a_new_video_starts_new_ids() -> None:
    tracks, detector = Tracks(), PixelDetector()
    image = np.full((H, W, 3), 20, np.uint8)
    cv2.rectangle(image, (10, 10), (40, 40), (255, 255, 255), -1)
    first = [tracks.update(detector.predict([image])[0], "a.mp4").ids for _ in range(3)]
    second = tracks.update(detector.predict([image])[0], "b.mp4").ids
    assert [list(ids) for ids in first] == [[-1], [0], [0]] and list(second) == [-1]
    assert list(tracks.update(detector.predict([image])[0], "b.mp4").ids) == [0]  # b's ids start at 0 again


def test_empty_frames_and_rows_without_ids() -> None:
    tracks = Tracks()
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), (H, W))
    assert tracks.update(empty, "a.mp4").ids.shape == (0,)
    det = Detections(np.array([[0, 0, 20, 10]], np.float32), np.array([0.9], np.float32), np.array([1]), (H, W))
    assert det.label_lines() == ["1 0.050000 0.041667 0.100000 0.083333"]  # untracked: no id column
    det.ids = np.array([7])
    assert det.label_lines(save_conf=True) == ["1 0.050000 0.041667 0.100000 0.083333 0.900000 7"]
    assert det.to_dict()["detections"][0]["id"] == 7


def test_detect_track_end_to_end(tmp_path: Path) -> None:
    """A real checkpoint through detect.py --track: the labels gain an id column, the json an id."""
    weights = write_checkpoint(tmp_path / "weights.pt")
    video = write_moving_shapes(tmp_path / "clip.avi")
    result = run_script("detect.py", "--weights", str(weights), "--source", str(video), "--track", "--save-txt",
                        "--save-json", "--nosave", "--project", str(tmp_path / "runs"), "--name", "t", "--json")
    assert result.returncode == 0, result.stderr
    save_dir = Path(json.loads(result.stdout.strip().splitlines()[-1])["save_dir"])
    rows = np.concatenate([np.loadtxt(p, ndmin=2) for p in sorted((save_dir / "labels").iterdir())])
    assert rows.shape[1] == 6 and len(rows) > 0
    assert (rows[:, 5] == rows[:, 5].round()).all() and (rows[:, 5] >= -1).all()
    entries = json.loads((save_dir / "detections.json").read_text())
    assert all("id" in d for e in entries for d in e["detections"])
