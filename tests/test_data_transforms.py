"""Boxes follow every transform exactly: letterbox, flips, known warp matrices, mosaic placement,
and the whole training pipeline (white boxes on black images must stay under their labels)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from data import build_dataloader, letterbox
from data.augment import apply_albumentations, build_albumentations
from data.mosaic import mosaic, place4, place9
from data.transforms import (
    augment_hsv,
    flip_lr,
    flip_ud,
    normalized_to_pixels,
    pixels_to_normalized,
    random_perspective,
    warp_boxes,
)
from utils.config import Hyp


def white_box_image(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Black RGB image [h, w, 3] with a white filled rectangle at xyxy pixel ``box`` (x2, y2 exclusive)."""
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 255
    return img


def white_extent(img: np.ndarray) -> np.ndarray:
    """xyxy bounding box (x2, y2 exclusive) of the bright pixels of ``img``."""
    ys, xs = np.nonzero(img[..., 0] > 200)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_letterbox_square_target_pads_height():
    img = white_box_image(100, 200, (50, 20, 100, 40))
    out, gains, pad = letterbox(img, 64, stride=32, auto=False)
    assert out.shape == (64, 64, 3)
    assert gains == (0.32, 0.32) and pad == (0, 16)
    assert (out[:16] == 114).all() and (out[48:] == 114).all()  # 16 px grey bands top and bottom
    expected = np.array([50, 20, 100, 40]) * 0.32 + [0, 16, 0, 16]  # [16, 22.4, 32, 28.8]
    assert np.abs(white_extent(out) - expected).max() <= 1


def test_letterbox_auto_pads_to_stride_and_scaleup_off_keeps_size():
    img = np.zeros((100, 200, 3), np.uint8)
    out, gains, pad = letterbox(img, 64, stride=32, auto=True)
    assert out.shape == (32, 64, 3) and pad == (0, 0)
    out, gains, pad = letterbox(img, (320, 352), stride=32, auto=False, scaleup=False)
    assert out.shape == (320, 352, 3) and gains == (1.0, 1.0) and pad == (76, 110)


def test_letterbox_gains_are_exact_after_rounding():
    img = np.zeros((333, 500, 3), np.uint8)
    out, (gw, gh), (pw, ph) = letterbox(img, 320, auto=False)
    # 333 * 0.64 = 213.12 is rounded to 213 rows: the height gain is 213/333, not 0.64
    assert gw == 320 / 500 and gh == 213 / 333 and ph == (320 - 213) // 2


def test_normalized_pixel_round_trip():
    labels = np.array([[3, 0.5, 0.25, 0.2, 0.1]], np.float32)
    pix = normalized_to_pixels(labels, 200, 100, pad_w=5, pad_h=7)
    np.testing.assert_allclose(pix, [[3, 85, 27, 125, 37]])
    np.testing.assert_allclose(pixels_to_normalized(normalized_to_pixels(labels, 200, 100), 200, 100), labels, atol=1e-6)


@pytest.mark.parametrize("flip", ["lr", "ud"])
def test_flips_move_boxes_with_pixels(flip):
    h, w, box = 60, 80, (10, 5, 30, 25)
    img = white_box_image(h, w, box)
    labels = np.array([[1, *box]], np.float32)
    polygon = np.float32([[10, 5], [30, 5], [30, 25], [10, 25]])
    out, flipped, polygons = (flip_lr if flip == "lr" else flip_ud)(img, labels, [polygon, None])
    np.testing.assert_allclose(white_extent(out), flipped[0, 1:], atol=1e-4)
    assert flipped[0, 0] == 1 and polygons[1] is None
    np.testing.assert_allclose(np.concatenate([polygons[0].min(0), polygons[0].max(0)]), flipped[0, 1:])


def test_warp_boxes_known_affine_matrix():
    # scale 2 then shift (5, -3); the box lands exactly, the second is clipped at the border
    m = np.array([[2, 0, 5], [0, 2, -3], [0, 0, 1]], np.float64)
    boxes = np.array([[10, 10, 20, 30], [40, 0, 60, 10]], np.float32)
    out = warp_boxes(boxes, m, out_size=(100, 110))
    np.testing.assert_allclose(out, [[25, 17, 45, 57], [85, 0, 110, 17]])


def test_warp_boxes_rotation_and_perspective():
    rot90 = np.array([[0, -1, 50], [1, 0, 0], [0, 0, 1]], np.float64)  # (x, y) -> (50 - y, x)
    np.testing.assert_allclose(warp_boxes(np.array([[10, 5, 20, 15]]), rot90, (100, 100)), [[35, 10, 45, 20]])
    persp = np.array([[1, 0, 0], [0, 1, 0], [0.01, 0, 1]], np.float64)  # divide by 1 + 0.01 x
    out = warp_boxes(np.array([[0, 0, 100, 50]]), persp, (200, 200))
    # corners: (0,0)->(0,0); (100,50)->(50,25); (0,50)->(0,50); (100,0)->(50,0)
    np.testing.assert_allclose(out, [[0, 0, 50, 50]], atol=1e-5)


def test_warp_image_matches_warped_box():
    img = white_box_image(64, 64, (8, 16, 24, 40))
    rng = np.random.default_rng(3)
    out, labels, _ = random_perspective(img, np.array([[0, 8, 16, 24, 40]], np.float32), rng,
                                     degrees=0, translate=0.1, scale=0.3, out_size=(64, 64))
    assert len(labels) == 1
    np.testing.assert_allclose(white_extent(out), labels[0, 1:], atol=1.5)


def test_random_perspective_with_no_jitter_is_identity():
    img = white_box_image(40, 50, (5, 6, 20, 30))
    labels = np.array([[2, 5, 6, 20, 30]], np.float32)
    out, out_labels, _ = random_perspective(img, labels, np.random.default_rng(0), 0, 0, 0, 0, 0)
    assert (out == img).all()
    np.testing.assert_allclose(out_labels, labels)


def test_random_perspective_drops_boxes_that_become_tiny():
    img = np.zeros((100, 100, 3), np.uint8)
    labels = np.array([[0, 10, 10, 13, 13], [1, 20, 20, 80, 80]], np.float32)  # 3 px box -> 1.5 px
    rng = np.random.default_rng(0)
    _, out, _ = random_perspective(img, labels, rng, translate=0, scale=0)  # scale drawn from [1, 1]
    assert out[:, 0].tolist() == [0, 1]
    m = np.array([[0.5, 0, 0], [0, 0.5, 0], [0, 0, 1]])  # same boxes at half size: the tiny one goes
    from data import transforms

    orig = transforms.perspective_matrix
    transforms.perspective_matrix = lambda *a, **k: m
    try:
        _, out, _ = random_perspective(img, labels, rng)
    finally:
        transforms.perspective_matrix = orig
    assert out[:, 0].tolist() == [1]
    np.testing.assert_allclose(out[0, 1:], [10, 10, 40, 40])


def test_place4_hand_made():
    sizes = [(40, 30)] * 4  # (h, w)
    p = place4((50, 60), sizes, canvas=100)
    assert p[0] == ((20, 60, 20, 50), (0, 40, 0, 30))  # ends at the centre from the top-left
    assert p[1] == ((20, 60, 50, 80), (0, 40, 0, 30))
    assert p[2] == ((60, 100, 20, 50), (0, 40, 0, 30))
    assert p[3] == ((60, 100, 50, 80), (0, 40, 0, 30))
    p = place4((10, 10), sizes, canvas=100)  # near the corner: image 0 is cropped to its bottom-right
    assert p[0] == ((0, 10, 0, 10), (30, 40, 20, 30))
    assert p[3] == ((10, 50, 10, 40), (0, 40, 0, 30))


def test_place9_windows_inside_canvas():
    sizes = [(50, 40)] * 9
    for offset in [(0, 0), (17, 33), (50, 50)]:
        for (y1, y2, x1, x2), (iy1, iy2, ix1, ix2) in place9(offset, sizes, cell=50):
            assert 0 <= x1 <= x2 <= 100 and 0 <= y1 <= y2 <= 100
            assert (y2 - y1, x2 - x1) == (iy2 - iy1, ix2 - ix1)
    # offset (0, 0): the centre image (cell 1, 1; 40 wide, centred -> x 55..95) is fully visible
    assert place9((0, 0), sizes, 50)[4] == ((50, 100, 55, 95), (0, 50, 0, 40))


def test_mosaic_boxes_follow_pasted_images():
    imgs = [white_box_image(40, 30, (2, 10, 15, 30)) for _ in range(4)]
    labels = [pixels_to_normalized(np.array([[i, 2, 10, 15, 30]], np.float32), 30, 40) for i in range(4)]
    canvas, out, _ = mosaic(imgs, labels, place4((25, 50), [(40, 30)] * 4, 100), 100)
    assert out[:, 0].tolist() == [0, 1, 2, 3]
    # images 0 and 2 start at x = -5 (cropped): their boxes are clipped at the canvas edge
    np.testing.assert_allclose(out[:, 1:], [[0, 20, 10, 40], [27, 20, 40, 40], [0, 60, 10, 80], [27, 60, 40, 80]],
                               atol=1e-5)
    for _, x1, y1, x2, y2 in out:
        assert (canvas[int(y1):int(y2), int(x1):int(x2)] == 255).all()
    _, out, _ = mosaic(imgs, labels, place4((12, 50), [(40, 30)] * 4, 100), 100)
    assert out[:, 0].tolist() == [1, 3]  # boxes of images 0 and 2 lie wholly in their cropped parts


def _white_box_set(root, n=8, seed=0):
    """A YOLO data set of black images, each with one white rectangle exactly labelled."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        h, w = (int(v) for v in rng.integers(60, 120, 2))
        x1, y1 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        x2, y2 = x1 + int(rng.integers(12, w // 2)), y1 + int(rng.integers(12, h // 2))
        cv2.imwrite(str(root / "images" / f"{i}.png"), white_box_image(h, w, (x1, y1, x2, y2)))
        cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
        (root / "labels" / f"{i}.txt").write_text(f"0 {cx} {cy} {bw} {bh}\n")
    return root / "images"


def test_training_pipeline_keeps_boxes_on_their_pixels(tmp_path):
    """Mosaic + perspective + flips: every target box covers white pixels, inside the image."""
    hyp = Hyp(hsv_h=0, hsv_s=0, hsv_v=0, mixup=0.0, degrees=0, shear=0, translate=0.1, scale=0.5,
              fliplr=0.5, flipud=0.5, mosaic=1.0)
    _, dataset = build_dataloader(_white_box_set(tmp_path), nc=1, img_size=64, batch_size=4, hyp=hyp, augment=True)
    dataset.augmenter.albumentations = None  # its rare grey/blur would blur the box edges tested here
    n_boxes = 0
    for epoch in range(2):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            image, targets, _, _, _ = dataset[i]
            assert image.shape == (3, 64, 64)
            xyxy = normalized_to_pixels(targets[:, 1:].numpy(), 64, 64)[:, 1:]
            assert (xyxy >= -1e-4).all() and (xyxy <= 64 + 1e-4).all()
            for x1, y1, x2, y2 in xyxy:
                inner = image[0, int(np.ceil(y1)) + 1:int(y2) - 1, int(np.ceil(x1)) + 1:int(x2) - 1]
                if inner.numel():
                    assert inner.float().mean() > 200  # box edges land on the rectangle's edges
                n_boxes += 1
    assert n_boxes > 8


def _labels(*rows: tuple[float, ...]) -> np.ndarray:
    return np.array(rows, np.float32).reshape(-1, 5)


def test_albumentations_pixel_stage_returns_boxes_and_classes_unchanged():
    A = pytest.importorskip("albumentations")
    img = white_box_image(60, 100, (10, 5, 30, 25))
    img[30:50, 60:90] = (200, 30, 30)
    labels = _labels((2, 10, 5, 30, 25), (0, 60, 30, 90, 50))
    default = build_albumentations()
    every_time = build_albumentations([A.Blur(p=1), A.MedianBlur(p=1), A.ToGray(p=1), A.CLAHE(p=1)])
    for compose in (default, every_time):
        for seed in range(5):
            out, out_labels, _ = apply_albumentations(compose, img, labels, seed)
            assert out.shape == img.shape and out_labels.dtype == np.float32
            np.testing.assert_allclose(out_labels, labels, atol=1e-4)
    assert not np.array_equal(out, img)  # the p=1 set did change the pixels
    _, empty, _ = apply_albumentations(every_time, img, _labels(), 0)
    assert empty.shape == (0, 5)


def test_albumentations_box_processing_only_for_geometric_sets():
    """Pixel-only sets skip albumentations' box checks (they cannot move a box); others keep them."""
    A = pytest.importorskip("albumentations")
    assert "bboxes" not in build_albumentations().processors
    assert "bboxes" in build_albumentations([A.Blur(p=1), A.HorizontalFlip(p=1)]).processors


def test_hsv_jitter_maps_each_channel_through_its_own_gain():
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    out = augment_hsv(img, np.random.default_rng(3), 0.5, 0.7, 0.4)
    gains = np.random.default_rng(3).uniform(-1, 1, 3) * [0.5, 0.7, 0.4] + 1
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    expected = np.stack([(hsv[..., 0] * gains[0]) % 180, np.clip(hsv[..., 1] * gains[1], 0, 255),
                         np.clip(hsv[..., 2] * gains[2], 0, 255)], -1).astype(np.uint8)  # OpenCV hue: 0..179
    np.testing.assert_array_equal(out, cv2.cvtColor(expected, cv2.COLOR_HSV2RGB))
    assert augment_hsv(img, np.random.default_rng(3), 0, 0, 0) is img


def test_albumentations_geometric_transform_moves_boxes_with_pixels():
    A = pytest.importorskip("albumentations")
    img = white_box_image(60, 100, (10, 5, 30, 25))
    out, labels, _ = apply_albumentations(build_albumentations([A.HorizontalFlip(p=1)]), img, _labels((3, 10, 5, 30, 25)), 0)
    np.testing.assert_allclose(labels, _labels((3, 70, 5, 90, 25)), atol=1e-4)
    np.testing.assert_allclose(white_extent(out), labels[0, 1:])


def test_albumentations_crop_drops_mostly_hidden_boxes_with_their_classes():
    A = pytest.importorskip("albumentations")
    img = np.zeros((60, 100, 3), np.uint8)
    labels = _labels((4, 45, 0, 65, 20), (1, 10, 10, 30, 30), (7, 20, 35, 60, 55))  # 25 %, all, half inside
    _, out, _ = apply_albumentations(build_albumentations([A.Crop(0, 0, 50, 60)]), img, labels, 0)
    np.testing.assert_allclose(out, _labels((4, 45, 0, 50, 20), (1, 10, 10, 30, 30), (7, 20, 35, 50, 55)), atol=1e-4)
    labels[0, 1] = 49  # now 1 / 16 of its area is inside the crop: under min_visibility 0.1
    _, out, _ = apply_albumentations(build_albumentations([A.Crop(0, 0, 50, 60)]), img, labels[[1, 0, 2]], 0)
    np.testing.assert_allclose(out, _labels((1, 10, 10, 30, 30), (7, 20, 35, 50, 55)), atol=1e-4)


def test_training_pipeline_passes_boxes_through_albumentations(tmp_path):
    """A geometric albumentations transform in the augmenter moves the targets with the pixels."""
    A = pytest.importorskip("albumentations")
    hyp = Hyp(hsv_h=0, hsv_s=0, hsv_v=0, mixup=0.0, degrees=0, shear=0, translate=0.1, scale=0.5,
              fliplr=0.0, flipud=0.0, mosaic=1.0)
    _, dataset = build_dataloader(_white_box_set(tmp_path), nc=1, img_size=64, batch_size=4, hyp=hyp, augment=True)
    dataset.augmenter.albumentations = build_albumentations([A.HorizontalFlip(p=1)])
    n_boxes = 0
    for i in range(len(dataset)):
        image, targets, _, _, _ = dataset[i]
        for x1, y1, x2, y2 in normalized_to_pixels(targets[:, 1:].numpy(), 64, 64)[:, 1:]:
            inner = image[0, int(np.ceil(y1)) + 1:int(y2) - 1, int(np.ceil(x1)) + 1:int(x2) - 1]
            if inner.numel():
                assert inner.float().mean() > 200
                n_boxes += 1
    assert n_boxes > 4
