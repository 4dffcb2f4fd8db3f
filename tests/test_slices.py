"""Sliced inference (engine.detect.slices, detect.py --tile): tile windows, cut-edge fragments, the
NMS merge, and small objects that only the tiles find."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from detect_fixtures import one_thread, write_checkpoint  # noqa: F401 (one_thread: autouse fixture)

from engine.detect import Detections, DetectOptions
from engine.detect.run import predictor_for
from engine.detect.slices import merge, sliced_predict, tile_windows, whole_in_tile


def test_tile_windows_hand_values() -> None:
    # 1280 px, 640 px tiles 512 apart: 0, 512 and the last one flush with the edge at 640
    windows = tile_windows(1280, 1280, 640, 0.2)
    assert sorted({int(x) for x in windows[:, 0]}) == [0, 512, 640] and len(windows) == 9
    assert windows[1].tolist() == [512, 0, 1152, 640]
    # 700 x 1000 at 640 / 0.5: rows at 0 and 60, columns at 0, 320 and 360
    assert tile_windows(700, 1000, 640, 0.5).tolist() == [
        [0, 0, 640, 640], [320, 0, 960, 640], [360, 0, 1000, 640],
        [0, 60, 640, 700], [320, 60, 960, 700], [360, 60, 1000, 700]]
    assert tile_windows(100, 300, 640, 0.2).tolist() == [[0, 0, 300, 100]]  # smaller than a tile: itself


@pytest.mark.parametrize(("h", "w", "tile", "overlap"), [(1280, 1280, 320, 0.2), (333, 1001, 128, 0.0),
                                                         (64, 65, 32, 0.9)])
def test_tiles_cover_the_image_and_stay_inside(h: int, w: int, tile: int, overlap: float) -> None:
    covered = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in tile_windows(h, w, tile, overlap):
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and x1 - x0 == min(tile, w) and y1 - y0 == min(tile, h)
        covered[y0:y1, x0:x1] = True
    assert covered.all()


def test_bad_tile_arguments() -> None:
    with pytest.raises(ValueError, match="overlap"):
        tile_windows(100, 100, 64, 1.0)


def test_fragments_at_cut_edges_are_dropped() -> None:
    window = np.array([512, 0, 1152, 640])  # cut on the left, right and bottom; the top is the image's edge
    boxes = np.array([[1, 10, 20, 20],  # touches the left cut
                      [10, 0, 20, 20],  # touches the top, which is the image's own edge: kept
                      [10, 10, 20, 639],  # touches the bottom cut
                      [600, 10, 638.5, 20],  # touches the right cut
                      [300, 300, 340, 340]], np.float32)
    assert whole_in_tile(boxes, window, 1280, 1280).tolist() == [False, True, False, False, True]
    assert whole_in_tile(boxes, np.array([0, 0, 640, 640]), 640, 640).all()  # a whole-image tile cuts nothing


def _dets(rows: list[list[float]], shape=(100, 100)) -> Detections:
    a = np.array(rows, np.float32).reshape(-1, 6)
    return Detections(a[:, :4], a[:, 4], a[:, 5].astype(np.int64), shape, ["a", "b"])


def test_merge_keeps_the_best_of_overlapping_boxes_per_class() -> None:
    whole = _dets([[0, 0, 10, 10, 0.9, 0]])
    tile = _dets([[1, 0, 11, 10, 0.8, 0], [1, 0, 11, 10, 0.7, 1], [50, 50, 60, 60, 0.95, 0]])  # IoU 9/11 with whole
    merged = merge([whole, tile], (100, 100), ["a", "b"], iou_thres=0.45)
    assert merged.scores.tolist() == pytest.approx([0.95, 0.9, 0.7]) and merged.classes.tolist() == [0, 0, 1]
    agnostic = merge([whole, tile], (100, 100), ["a", "b"], iou_thres=0.45, agnostic=True, max_det=1)
    assert agnostic.scores.tolist() == pytest.approx([0.95])
    empty = merge([_dets([]), _dets([])], (100, 100), ["a", "b"], iou_thres=0.45)
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)


class BlobDetector:
    """Predictor stand-in with a detector's blind spot: it sees each image resized so the longer side
    is ``size`` px and finds bright blobs at least ``min_side`` px wide there (boxes in original px)."""

    def __init__(self, size: int = 320, min_side: int = 5) -> None:
        self.size, self.min_side, self.calls = size, min_side, 0

    def __call__(self, images: list[np.ndarray]) -> list[Detections]:
        results = []
        for image in images:
            self.calls += 1
            r = self.size / max(image.shape[:2])
            small = cv2.resize(image, (round(image.shape[1] * r), round(image.shape[0] * r)),
                               interpolation=cv2.INTER_AREA)
            _, _, stats, _ = cv2.connectedComponentsWithStats((small.max(2) > 100).astype(np.uint8))
            stats = stats[1:][(stats[1:, 2] >= self.min_side) & (stats[1:, 3] >= self.min_side)]
            boxes = np.stack([stats[:, 0], stats[:, 1], stats[:, 0] + stats[:, 2], stats[:, 1] + stats[:, 3]], 1) / r
            results.append(Detections(boxes.astype(np.float32), np.full(len(boxes), 0.9, np.float32),
                                      np.zeros(len(boxes), np.int64), image.shape[:2], ["square"]))
        return results


CUTS = (320, 576, 832, 1088, 256, 960)  # where 320 px tiles 256 apart cut a 1280 px image


def _squares(n: int, size: int = 1280, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A dark ``size`` px image with ``n`` white squares of 12-15 px, some on tile borders."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), 30, np.uint8)
    boxes = []
    while len(boxes) < n:
        side = int(rng.integers(12, 16))
        x, y = (int(v) for v in rng.integers(0, size - side, 2))
        if size == 1280 and len(boxes) < len(CUTS):
            x = CUTS[len(boxes)] - 5  # a 5 px fragment on one side: IoU 1/3 with the whole square
        box = np.array([x, y, x + side, y + side])
        if boxes and (np.abs(np.array(boxes)[:, :2] - box[:2]).max(1) < 30).any():
            continue
        boxes.append(box)
        image[y:y + side, x:x + side] = 255
    return image, np.array(boxes, np.float32)


def test_small_objects_only_tiles_find_each_once() -> None:
    image, truth = _squares(30)
    detector = BlobDetector()
    assert len(detector([image])[0]) == 0  # 12-15 px squares shrink to 3-4 px at 320: missed whole
    det = sliced_predict(detector, image, 320, 0.2, iou_thres=0.45)
    assert detector.calls == 1 + 1 + 25  # the check above, the whole image, 5 x 5 tiles
    assert len(det) == len(truth)  # each square once: no fragment of a cut square survives
    order = np.lexsort((det.boxes[:, 1], det.boxes[:, 0]))
    np.testing.assert_allclose(det.boxes[order], truth[np.lexsort((truth[:, 1], truth[:, 0]))], atol=1.0)
    assert det.shape == (1280, 1280) and det.names == ["square"]


def test_an_image_within_one_tile_is_detected_once() -> None:
    image, _ = _squares(3, size=256)
    detector = BlobDetector(size=256)
    det = sliced_predict(detector, image, 320, 0.2, iou_thres=0.45)
    assert detector.calls == 1 and len(det) == 3


def test_predictor_tiles_a_real_model(tmp_path: Path) -> None:
    """--tile reaches the Predictor; boxes from tiles stay inside the image and are sorted by score."""
    weights = write_checkpoint(tmp_path / "weights.pt")
    predictor = predictor_for(DetectOptions(weights=str(weights), device="cpu", img_size=64, tile=64,
                                            tile_overlap=0.25))
    assert (predictor.tile, predictor.tile_overlap) == (64, 0.25)
    image = np.random.default_rng(0).integers(0, 255, (96, 160, 3), dtype=np.uint8)
    det = predictor.predict([image])[0]
    whole = predictor.predict_whole([image])[0]
    assert len(det) >= 1 and len(whole) >= 1 and det.shape == (96, 160)
    assert (det.boxes[:, [0, 2]] >= -1).all() and (det.boxes[:, [0, 2]] <= 161).all()
    assert (np.diff(det.scores) <= 0).all()
