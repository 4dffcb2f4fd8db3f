"""Polygon labels: parsing and caching, tight boxes after warps, copy-paste and paste-in, seeding, notes."""

from __future__ import annotations

import json
import logging
import math

import cv2
import numpy as np
import pytest
import torch

from data import build_dataloader
from data.label_cache import read_header
from data.labels import read_label_file
from data.mosaic import mosaic
from data.paste import PoolObject, copy_paste, paste_in
from data.polygons import areas, clip_packed, clip_polygon, extent, extents, fill_mask, pack, unpack
from data.scan import CACHE_VERSION, load_or_scan
from data.shapes import ShapesSpec, ensure_shapes
from data.transforms import perspective_matrix, random_perspective, warp_labels
from utils.config import Hyp

SMALL = ShapesSpec(splits=(("train", 10), ("val", 2)), min_side=64, max_side=128, min_object=12, max_object=40)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return ensure_shapes(tmp_path_factory.mktemp("polygons") / "shapes", SMALL)


def _image(path, h=40, w=50):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))


def test_polygon_rows_are_parsed_beside_boxes_and_cached(tmp_path):
    _image(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.1 0.2 0.5 0.2 0.3 0.6\n")
    first, cached = load_or_scan([tmp_path / "images"], 2, tmp_path / "c.npz")
    again, cached_again = load_or_scan([tmp_path / "images"], 2, tmp_path / "c.npz")
    assert not cached and cached_again and read_header(tmp_path / "c.npz")["version"] == CACHE_VERSION
    for result in (first, again):
        # the triangle's box is its extent: x 0.1..0.5, y 0.2..0.6
        np.testing.assert_allclose(result.labels[0], [[0, 0.5, 0.5, 0.2, 0.2], [1, 0.3, 0.4, 0.4, 0.4]], atol=1e-6)
        assert result.segments[0][0].shape == (0, 2)  # the box row has no outline
        np.testing.assert_allclose(result.segments[0][1], [[0.1, 0.2], [0.5, 0.2], [0.3, 0.6]], atol=1e-6)


def test_a_cache_of_another_version_is_rebuilt(tmp_path, caplog):
    _image(tmp_path / "images" / "a.jpg")
    load_or_scan([tmp_path / "images"], 2, tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as data:
        arrays = dict(data)
    header = read_header(tmp_path / "c.npz") | {"version": CACHE_VERSION + 1}
    np.savez(tmp_path / "c.npz", **arrays | {"header": np.frombuffer(json.dumps(header).encode(), np.uint8)})
    assert not load_or_scan([tmp_path / "images"], 2, tmp_path / "c.npz")[1]
    assert f"label cache version {CACHE_VERSION + 1}, this is {CACHE_VERSION}; rebuilding it" in caplog.text


@pytest.mark.parametrize("row, reason", [("0 0.1 0.1 0.5 0.5 0.9 0.1 0.2", "8 columns"),
                                         ("0 0.1 0.1 0.5 0.5 1.9 0.1", "outside 0..1"),
                                         ("0 0.1 0.1 0.5 0.5 nan 0.1", "not a finite number")])
def test_a_malformed_polygon_is_reported_with_file_and_line(tmp_path, row, reason):
    path = tmp_path / "x.txt"
    path.write_text(f"0 0.5 0.5 0.2 0.2\n{row}\n")
    labels, segments, _, error = read_label_file(path, nc=2)
    assert error.startswith(f"{path}:2:") and reason in error and len(labels) == 0


def test_coco_polygons_are_kept_and_rle_crowds_stay_crowd(tmp_path):
    _image(tmp_path / "images" / "val" / "a.jpg", 50, 100)
    two_parts = [[10, 10, 30, 10, 20, 20], [60, 30, 80, 30, 70, 40]]  # one object split in two
    ann = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 50}],
           "categories": [{"id": 1, "name": "x"}],
           "annotations": [
               {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 70, 30], "iscrowd": 0,
                "segmentation": two_parts},
               {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 1,
                "segmentation": {"counts": [0, 25], "size": [50, 100]}}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(ann))
    result, _ = load_or_scan([tmp_path / "annotations" / "instances_val.json"], 1, None)
    assert len(result.labels[0]) == 1 and len(result.crowd[0]) == 1
    polygon = result.segments[0][0] * [100, 50]
    np.testing.assert_allclose(extent(polygon), [10, 10, 80, 40], atol=1e-4)  # both parts, one outline
    merged = fill_mask((50, 100), [polygon]).astype(bool)
    parts = fill_mask((50, 100), [np.float32(p).reshape(-1, 2) for p in two_parts]).astype(bool)
    bridge = math.dist((20, 20), (60, 30))  # nearest points of the two parts
    assert (merged >= parts).all() and (merged & ~parts).sum() <= bridge + 2  # only a 1 px line added


def _square(centre: tuple[float, float], side: float) -> np.ndarray:
    cx, cy = centre
    h = side / 2
    return np.float32([[cx - h, cy - h], [cx + h, cy - h], [cx + h, cy + h], [cx - h, cy + h]])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_rotated_squares_box_is_the_tight_box_of_its_outline(seed):
    img = np.zeros((200, 200, 3), np.uint8)
    side, centre = 40.0, (100.0, 100.0)
    labels = np.float32([[0, 80, 80, 120, 120], [0, 80, 80, 120, 120]])  # the same square: polygon row, box row
    args = dict(degrees=45, translate=0.05, scale=0.2)
    matrix = perspective_matrix(np.random.default_rng(seed), (200, 200), (200, 200), **args)
    _, out, polygons = random_perspective(img, labels, np.random.default_rng(seed), **args,
                                          polygons=[_square(centre, side), None])
    gain = math.sqrt(np.linalg.det(matrix[:2, :2]))
    theta = math.atan2(matrix[1, 0], matrix[0, 0])
    half = gain * side / 2 * (abs(math.cos(theta)) + abs(math.sin(theta)))  # analytic extent of the rotated square
    cx, cy = (matrix @ [*centre, 1])[:2]
    np.testing.assert_allclose(out[0, 1:], [cx - half, cy - half, cx + half, cy + half], atol=1e-3)
    # the box row only knows its corners' box: the same here, since a box is a square's outline
    np.testing.assert_allclose(out[1, 1:], out[0, 1:], atol=1e-3)
    assert polygons[1] is None and len(polygons[0]) == 4


def test_a_rotated_triangle_is_tighter_than_its_rotated_box():
    img = np.zeros((200, 200, 3), np.uint8)
    triangle = np.float32([[80, 120], [120, 120], [100, 80]])
    labels = np.float32([[0, 80, 80, 120, 120], [0, 80, 80, 120, 120]])
    rot = dict(degrees=30, translate=0, scale=0)
    for seed in range(5):
        _, out, polygons = random_perspective(img, labels, np.random.default_rng(seed), **rot,
                                              polygons=[triangle, None])
        np.testing.assert_allclose(out[0, 1:], extent(polygons[0]), atol=1e-4)
        poly_area = np.prod(out[0, 3:5] - out[0, 1:3])
        assert poly_area < np.prod(out[1, 3:5] - out[1, 1:3]) - 1  # the box row's corner box is looser


def test_clipping_cuts_the_outline_not_just_the_box():
    diamond = np.float32([[50, 0], [100, 50], [50, 100], [0, 50]])
    cut = clip_polygon(diamond, (0, 0, 100, 25))  # keep the top quarter: a triangle tip x 25..75
    np.testing.assert_allclose(extent(cut), [25, 0, 75, 25], atol=1e-5)
    assert len(clip_polygon(diamond, (200, 200, 300, 300))) == 0
    # a mosaic cuts each outline to its image's window: the box is the visible part's extent
    img = np.zeros((100, 100, 3), np.uint8)
    labels = [np.float32([[0, 0.5, 0.5, 1, 1]])]
    _, out, polygons = mosaic([img], labels, [((0, 25, 0, 100), (0, 25, 0, 100))], 100, [[diamond / 100]])
    np.testing.assert_allclose(out[0, 1:], [25, 0, 75, 25], atol=1e-4)


def test_polygons_clipped_together_equal_each_clipped_alone():
    rng = np.random.default_rng(0)
    polygons = [rng.uniform(-50, 150, (int(k), 2)).astype(np.float32) for k in rng.integers(3, 9, 40)]
    polygons[3] = polygons[3][:0]  # an empty one among them
    polygons[7] = polygons[7] + 500  # wholly outside every window
    windows = (rng.uniform(0, 40, (40, 4)) + [0, 0, 60, 60]).astype(np.float32)  # xyxy, one per polygon
    points, lengths = clip_packed(*pack(polygons), windows)
    together = unpack(points, lengths)
    alone = [clip_polygon(p, tuple(w)) for p, w in zip(polygons, windows, strict=True)]
    assert [len(p) for p in together] == [len(p) for p in alone] and len(together[7]) == 0
    assert all(np.array_equal(a, b) for a, b in zip(together, alone, strict=True))
    boxes = extents(points, lengths)
    for p, box, area, w in zip(together, boxes, areas(points, lengths), windows, strict=True):
        if len(p):
            assert (box[:2] >= w[:2]).all() and (box[2:] <= w[2:]).all()
            np.testing.assert_array_equal(box, [*p.min(0), *p.max(0)])
        else:
            assert not box.any() and area == 0
        assert area == pytest.approx(cv2.contourArea(p) if len(p) >= 3 else 0, rel=1e-5, abs=1e-3)


def _object_scene():
    """Grey 100 x 120 image with a red triangle (polygon row) at the left."""
    img = np.full((100, 120, 3), 114, np.uint8)
    triangle = np.float32([[10, 60], [40, 60], [25, 20]])
    img[fill_mask(img.shape[:2], [triangle]).astype(bool)] = (255, 0, 0)
    return img, np.float32([[2, *extent(triangle)]]), [triangle]


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a != b).any(2)


def _pixel_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.float32([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_copy_paste_adds_the_mirrored_object_where_its_pixels_are():
    img, labels, polygons = _object_scene()
    out, new_labels, new_polygons = copy_paste(img, labels, polygons, 1.0, np.random.default_rng(0))
    assert len(new_labels) == 2 and new_labels[1, 0] == 2 and len(new_polygons) == 2
    np.testing.assert_allclose(new_labels[1, 1:], [120 - 40, 20, 120 - 10, 60], atol=1e-5)
    mask = fill_mask(img.shape[:2], [new_polygons[1]]).astype(bool)
    assert (out[mask] == img[:, ::-1][mask]).all() and (out[~mask] == img[~mask]).all()  # pasted through its mask
    assert np.abs(_pixel_box(mask) - new_labels[1, 1:]).max() <= 1  # the box is where the pixels went
    assert (out[_changed(img, out)] == (255, 0, 0)).all()
    # occlusion rule: an object on the mirror axis would hide itself by more than 30 %: not pasted
    central = [np.float32([[50, 60], [70, 60], [60, 20]])]
    _, kept, _ = copy_paste(img, np.float32([[2, 50, 20, 70, 60]]), central, 1.0, np.random.default_rng(0))
    assert len(kept) == 1
    assert copy_paste(img, labels, [None], 1.0, np.random.default_rng(0))[1] is labels  # box rows: nothing


def test_paste_in_adds_pool_objects_whose_boxes_match_their_pixels():
    crop = np.zeros((40, 30, 3), np.uint8)
    crop[:] = (0, 200, 0)  # the whole crop is object-coloured: every pasted pixel shows as changed
    pool = [PoolObject(4.0, crop, np.float32([[0, 40], [30, 40], [15, 0]]))]
    img = np.full((160, 160, 3), 114, np.uint8)
    existing = np.float32([[1, 0, 0, 20, 20]])
    added = 0
    for seed in range(6):
        out, labels, polygons = paste_in(img, existing, [None], pool, np.random.default_rng(seed))
        new = labels[1:]
        added += len(new)
        assert (new[:, 0] == 4).all() and len(polygons) == len(labels)
        changed = _changed(img, out)
        union = np.zeros_like(changed)
        for row, polygon in zip(new, polygons[1:], strict=True):
            mask = fill_mask(img.shape[:2], [polygon]).astype(bool)
            assert np.abs(_pixel_box(mask) - row[1:]).max() <= 1  # box = extent of the pasted pixels
            union |= mask
        assert (changed == union).all()  # pixels changed exactly inside the pasted outlines
        assert not changed[:20, :20].all()  # the existing box is not pasted over wholesale
    assert added >= 6


def _box_only_set(root, n=6):
    (root / "labels").mkdir(parents=True)
    for i in range(n):
        _image(root / "images" / f"{i}.jpg", 64, 64)
        (root / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.3 0.3\n")
    return root / "images"


def test_box_only_data_with_paste_in_logs_one_note(tmp_path, caplog):
    images = _box_only_set(tmp_path)
    with caplog.at_level(logging.WARNING):
        loader, _ = build_dataloader(images, 1, img_size=64, batch_size=3, hyp=Hyp(paste_in=0.15),
                                     augment=True, shuffle=True)
        for _ in range(2):
            list(loader)
    notes = [r for r in caplog.records if "paste_in=0.15 have no effect" in r.getMessage()]
    assert len(notes) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build_dataloader(images, 1, img_size=64, batch_size=3, hyp=Hyp(paste_in=0.0), augment=True)
    assert "no effect" not in caplog.text


def test_same_seed_same_batches_with_paste_and_0_or_2_workers(shapes_root):
    hyp = Hyp(copy_paste=0.5, paste_in=1.0, degrees=10, shear=2, mixup=0.5)

    def run(workers: int, h: Hyp = hyp):
        loader, _ = build_dataloader(shapes_root / "images" / "train", 5, img_size=96, batch_size=4, hyp=h,
                                     augment=True, shuffle=True, seed=5, workers=workers)
        return [list(loader) for _ in range(2)]  # two epochs: the pool is cut again for the second

    a, b = run(0), run(2)
    for x, y in zip(a[0] + a[1], b[0] + b[1], strict=True):
        assert torch.equal(x.images, y.images) and torch.equal(x.targets, y.targets)
    plain = run(0, Hyp(copy_paste=0.0, paste_in=0.0, degrees=10, shear=2, mixup=0.5))
    assert sum(len(x.targets) for x in a[0]) > sum(len(x.targets) for x in plain[0])  # pastes added objects


def test_compat_only_hyp_keys_warn_once_when_changed(caplog):
    with caplog.at_level(logging.WARNING):
        Hyp(iou_t=0.31), Hyp(iou_t=0.31), Hyp()
    assert caplog.text.count("iou_t=0.31 is ignored") == 1


def test_plot_images_draws_polygon_outlines_in_the_class_colour():
    from utils.plots import class_colour, plot_images

    images = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    targets = torch.tensor([[0, 3, 0.5, 0.5, 0.5, 0.5]])
    diamond = np.float32([[32, 16], [48, 32], [32, 48], [16, 32]])
    plain = plot_images(images, targets)
    drawn = plot_images(images, targets, polygons=[[diamond]])
    assert (plain[24:40, 40:46] == 0).all()  # the boxes alone leave the diamond's right edge black
    edge = drawn[24:40, 38:46].reshape(-1, 3)
    assert (edge == class_colour(3)).all(1).any()


def test_preview_reports_the_polygons_it_draws(shapes_root, tmp_path, capsys):
    from data import preview

    data = tmp_path / "small.yaml"
    data.write_text(f"path: {shapes_root}\ntrain: images/train\nval: images/val\nnames: [a, b, c, d, e]\n")
    assert preview.main(["--data", str(data), "--img", "64", "--batch", "2", "--out", str(tmp_path / "p.png"),
                         "paste_in=1"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (tmp_path / "p.png").is_file() and result["polygons"] == result["boxes"] > 0


def test_the_candidate_filter_keeps_an_object_by_its_visible_outline():
    # an L (area 1900) moved up until only its foot (y 0..9, 900 px) is in the image: its box kept
    # 9 % of the box area before (a box row is dropped) but 47 % of the outline is visible
    ell = np.float32([[0, 0], [10, 0], [10, 90], [100, 90], [100, 100], [0, 100]])
    labels = np.float32([[0, 0, 0, 100, 100], [0, 0, 0, 100, 100]])
    up = np.float64([[1, 0, 0], [0, 1, -91], [0, 0, 1]])
    out, polygons = warp_labels(labels, [ell, None], up, (200, 200))
    assert len(out) == 1 and polygons[0] is not None
    np.testing.assert_allclose(out[0, 1:], [0, 0, 100, 9], atol=1e-4)
    out, _ = warp_labels(labels[:1], [ell], np.float64([[1, 0, -95], [0, 1, -91], [0, 0, 1]]), (200, 200))
    assert len(out) == 0  # 5 x 9 px of 1900 left: dropped
