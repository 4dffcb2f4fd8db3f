"""Data-set YAMLs, YOLO vs COCO loading, corrupt files, the label cache, the shapes generator."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from data import load_data_config, shapes
from data.label_cache import read_header
from data.labels import read_label_file
from data.scan import CACHE_VERSION, load_or_scan
from data.shapes import ShapesSpec, ensure_shapes
from data.sources import IMAGE_SUFFIXES, files_in_folder, files_in_list
from utils.config import ConfigError

SMALL = ShapesSpec(splits=(("train", 8), ("val", 6)), min_side=64, max_side=96, min_object=12, max_object=40)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return ensure_shapes(tmp_path_factory.mktemp("shapes") / "shapes", SMALL)


def test_yolo_and_coco_load_identical_labels(shapes_root):
    yolo, _ = load_or_scan([shapes_root / "images" / "val"], 5, None)
    coco, _ = load_or_scan([shapes_root / "annotations" / "instances_val.json"], 5, None)
    assert yolo.files == coco.files and yolo.shapes == coco.shapes and yolo.image_ids == coco.image_ids
    assert sum(len(x) for x in yolo.labels) > 6
    for a, b in zip(yolo.labels, coco.labels, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)  # YOLO txt keeps 6 decimals
    assert yolo.category_ids == [0, 1, 2, 3, 4] and coco.category_ids == [1, 2, 3, 4, 5]


def _write_image(path, h=32, w=48):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))


def test_coco_category_mapping_and_crowd(tmp_path):
    _write_image(tmp_path / "images" / "val" / "a.jpg", 50, 100)
    _write_image(tmp_path / "images" / "val" / "b.jpg")
    ann = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 50},
                   {"id": 9, "file_name": "b.jpg", "width": 48, "height": 32}],
        "categories": [{"id": 90, "name": "y"}, {"id": 3, "name": "x"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 90, "bbox": [10, 5, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 100, 50], "iscrowd": 1},
            {"id": 3, "image_id": 7, "category_id": 3, "bbox": [50, 10, 0, 10], "iscrowd": 0},  # zero width
        ],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(ann))
    result, _ = load_or_scan([tmp_path / "annotations" / "instances_val.json"], 2, None)
    assert result.category_ids == [3, 90] and result.image_ids == [7, 9]
    np.testing.assert_allclose(result.labels[0], [[1, 0.2, 0.2, 0.2, 0.2]])  # id 90 -> class 1
    np.testing.assert_allclose(result.crowd[0], [[0, 0.5, 0.5, 1, 1]])
    assert len(result.labels[1]) == 0 and result.counts == {"found": 1, "missing": 0, "empty": 1, "corrupt": 0}
    assert any("annotation 3" in m and "zero-size" in m for m in result.messages)
    with pytest.raises(ConfigError, match="instances_val.json: 2 categories but the data set has nc=80"):
        load_or_scan([tmp_path / "annotations" / "instances_val.json"], 80, None)


def test_polygon_rows_become_boxes_and_duplicates_are_dropped(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("1 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n2 0.5 0.5 0 0.1\n")
    labels, segments, notes, error = read_label_file(path, nc=3)
    assert error is None
    np.testing.assert_allclose(labels, [[1, 0.3, 0.4, 0.4, 0.4], [0, 0.5, 0.5, 0.2, 0.2]], atol=1e-6)
    assert any("duplicate" in n for n in notes) and any(":4: zero-size" in n for n in notes)


BAD_LABELS = {
    "four_cols": ("0 0.5 0.5 0.2\n", "4 columns"),
    "six_cols": ("0 0.5 0.5 0.2 0.2 0.9\n", "6 columns"),
    "two_point_polygon": ("0 0.1 0.1 0.5 0.5 0.9 0.1 0.2\n", "8 columns"),
    "negative": ("0 0.5 -0.5 0.2 0.2\n", "outside 0..1"),
    "above_one": ("0 1.5 0.5 0.2 0.2\n", "outside 0..1"),
    "class_id": ("0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n", "class id 5"),
    "nan": ("0 nan 0.5 0.2 0.2\n", "not a finite number"),
    "text": ("zero 0.5 0.5 0.2 0.2\n", "not a number"),
}


def _corrupt_set(root):
    """Good images 0-1, one background image, then one broken file of each kind."""
    images, labels = root / "images", root / "labels"
    for name in ["good0", "good1", "background", *BAD_LABELS]:
        _write_image(images / f"{name}.jpg")
    labels.mkdir()
    (labels / "good0.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (labels / "good1.txt").write_text("1 0.25 0.25 0.5 0.5\n\n")
    for name, (text, _) in BAD_LABELS.items():
        (labels / f"{name}.txt").write_text(text)
    data = (images / "good0.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (images / "noeoi.jpg").write_bytes(data[:-2])  # decodes, but the end-of-image marker is gone
    (images / "zero.jpg").write_bytes(b"")
    (images / "notimage.jpg").write_text("this is not an image\n")
    for name in ("truncated", "noeoi", "zero", "notimage"):
        (labels / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    return images


def test_corrupt_files_are_reported_and_skipped(tmp_path, caplog):
    images = _corrupt_set(tmp_path)
    with caplog.at_level(logging.WARNING):
        result, cached = load_or_scan([images], 2, tmp_path / "c.npz")
    assert not cached
    assert sorted(os.path.basename(f) for f in result.files) == ["background.jpg", "good0.jpg", "good1.jpg"]
    assert result.counts == {"found": 2, "missing": 1, "empty": 0, "corrupt": len(BAD_LABELS) + 4}
    for name, (_, reason) in BAD_LABELS.items():
        assert any(f"{name}.txt:" in m and reason in m for m in result.messages), name
    assert any("truncated.jpg" in m and "truncated" in m.lower() for m in result.messages)
    assert any("noeoi.jpg" in m and "truncated JPEG" in m for m in result.messages)
    assert any("zero.jpg" in m and "empty file" in m for m in result.messages)
    assert any("notimage.jpg" in m and "not a readable image" in m for m in result.messages)
    assert "class_id.txt:2: class id 5" in caplog.text or "more label messages" in caplog.text
    assert len(result.labels[0]) == 0  # the background image: no labels, still used


def test_cache_is_reused_then_rebuilt_when_a_label_changes(tmp_path):
    images = _corrupt_set(tmp_path)
    cache = tmp_path / "labels.cache.npz"
    first, cached = load_or_scan([images], 2, cache)
    assert not cached and read_header(cache)["version"] == CACHE_VERSION == 3
    again, cached = load_or_scan([images], 2, cache)
    assert cached and again.files == first.files and again.messages == first.messages
    label = tmp_path / "labels" / "good0.txt"
    stat = label.stat()
    label.write_text("1 0.5 0.5 0.2 0.2\n")  # same size: only the modification time tells
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    changed, cached = load_or_scan([images], 2, cache)
    assert not cached
    assert changed.labels[changed.files.index(str(images / "good0.jpg"))][0, 0] == 1
    _, cached = load_or_scan([images], 3, cache)  # another nc validates differently
    assert not cached


def test_shapes_generation_is_deterministic_and_not_repeated(tmp_path):
    a = ensure_shapes(tmp_path / "a", SMALL)
    b = ensure_shapes(tmp_path / "b", SMALL)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 2 * 14 + 3
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    mtime = (a / "images" / "val" / "000001.jpg").stat().st_mtime_ns
    ensure_shapes(tmp_path / "a", SMALL)
    assert (a / "images" / "val" / "000001.jpg").stat().st_mtime_ns == mtime


def test_shapes_objects_are_large_enough_and_inside():
    rng = np.random.default_rng(1)
    spec = ShapesSpec()
    for _ in range(30):
        img, classes, boxes, outlines = shapes.draw_image(rng, spec)
        h, w = img.shape[:2]
        for box, outline in zip(boxes, outlines, strict=True):  # each box is its outline's extent
            np.testing.assert_allclose(np.concatenate([outline.min(0), outline.max(0)]), box, atol=1e-9)
        assert spec.min_side <= min(h, w) and max(h, w) <= spec.max_side
        assert len(classes) >= 1 and set(classes.tolist()) <= set(range(len(shapes.CLASSES)))
        assert (boxes[:, 2:] - boxes[:, :2]).min() >= 16 * 0.8  # rotated triangles are a bit flatter
        assert (boxes >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()


def test_load_data_config_names_paths_and_errors(tmp_path):
    cfg_path = tmp_path / "set.yaml"
    cfg_path.write_text("path: root\ntrain: images/train\nval: [a.txt, /abs/b]\nnames: {0: cat, 1: dog}\n")
    cfg = load_data_config(cfg_path)
    assert cfg.nc == 2 and cfg.names == ["cat", "dog"]
    assert cfg.train == [tmp_path / "root" / "images" / "train"]
    assert cfg.val == [tmp_path / "root" / "a.txt", Path("/abs/b")]
    with pytest.raises(ConfigError, match="no 'test' source"):
        cfg.split("test")
    cfg_path.write_text("train: x\nnc: 3\nnames: [a, b]\n")
    with pytest.raises(ConfigError, match=r"set.yaml: key 'nc' is 3 but 'names' has 2"):
        load_data_config(cfg_path)
    cfg_path.write_text("train: x\nnames: [a]\nvall: y\n")
    with pytest.raises(ConfigError, match=r"set.yaml: unknown key 'vall'"):
        load_data_config(cfg_path)
    with pytest.raises(ConfigError, match="not found"):
        load_data_config(tmp_path / "missing.yaml")


def test_builtin_shapes_name_generates_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("ELAN_YOLO_DATASETS", str(tmp_path))
    monkeypatch.setattr(shapes, "ensure_shapes", lambda root: ensure_shapes(root, SMALL))
    for name in ("shapes", "data/shapes.yaml"):
        cfg = load_data_config(name)
        assert cfg.root == tmp_path / "shapes" and cfg.names == list(shapes.CLASSES)
        assert cfg.train == [tmp_path / "shapes" / "images" / "train"]
        assert len(list(cfg.val[0].glob("*.jpg"))) == 6


def test_shipped_coco_yaml_points_into_the_datasets_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ELAN_YOLO_DATASETS", str(tmp_path))
    cfg = load_data_config("coco")
    assert cfg.nc == 80 and cfg.names[0] == "person" and cfg.names[-1] == "toothbrush"
    assert cfg.val == [tmp_path / "coco" / "annotations" / "instances_val2017.json"]


def test_exif_rotation_is_applied_in_scan_and_load(tmp_path):
    from PIL import Image

    from data import build_dataloader

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 60 wide x 40 tall, shown rotated 90 degrees: 40 wide x 60 tall
    (tmp_path / "images").mkdir()
    Image.new("RGB", (60, 40), (200, 10, 10)).save(tmp_path / "images" / "r.jpg", exif=exif)
    result, _ = load_or_scan([tmp_path / "images"], 1, None)
    assert result.shapes == [(60, 40)]
    _, ds = build_dataloader(tmp_path / "images", 1, img_size=64, batch_size=1)
    image, (h0, w0) = ds.load_image(0)
    assert (h0, w0) == (60, 40) and image.shape[:2] == (64, round(40 * 64 / 60))


@pytest.mark.parametrize("img_size", [64, 600])  # decoded at 1/8 size, and at full size
def test_images_load_as_rgb(tmp_path, img_size):
    from data import build_dataloader

    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "red.jpg"), np.full((420, 560, 3), (10, 10, 200), np.uint8))  # BGR: red
    _, ds = build_dataloader(tmp_path / "images", 1, img_size=img_size, batch_size=1)
    assert ds._reduction(0) == (8 if img_size == 64 else 1)
    image, _ = ds.load_image(0)
    np.testing.assert_allclose(image.reshape(-1, 3).mean(0), (200, 10, 10), atol=3)


def test_txt_list_source_and_missing_source(tmp_path):
    for name in ("a", "b"):
        _write_image(tmp_path / "set" / "images" / f"{name}.jpg")
    (tmp_path / "set" / "labels").mkdir()
    (tmp_path / "set" / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "set" / "train.txt").write_text("# list\n./images/a.jpg\n\nimages/b.jpg\n")
    result, _ = load_or_scan([tmp_path / "set" / "train.txt"], 1, None)
    assert [os.path.basename(f) for f in result.files] == ["a.jpg", "b.jpg"]
    assert result.counts == {"found": 1, "missing": 1, "empty": 0, "corrupt": 0}
    with pytest.raises(ConfigError, match="nothere: image source not found"):
        load_or_scan([tmp_path / "nothere"], 1, None)


def test_list_and_folder_readers_keep_the_suffixes_asked_for(tmp_path):
    for name in ("a.jpg", "b.mp4", "c.txt"):
        (tmp_path / "media" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "media" / name).write_bytes(b"x")
    (tmp_path / "media" / "folder.png").mkdir()  # a folder is never an image
    (tmp_path / "list.txt").write_text("media/b.mp4\n# media/old.jpg\n\n  media/a.jpg  \nmedia/c.txt\n")
    assert files_in_list(tmp_path / "list.txt") == [(tmp_path / "media" / "a.jpg").resolve()]
    assert [p.name for p in files_in_list(tmp_path / "list.txt", {".jpg", ".mp4"})] == ["b.mp4", "a.jpg"]
    assert [p.name for p in files_in_folder(tmp_path / "media")] == ["a.jpg"]
    assert [p.name for p in files_in_folder(tmp_path / "media", {".mp4", ".png"})] == ["b.mp4"]


def test_list_lines_resolve_as_path_resolve_does(tmp_path):
    """Each line is ``(list folder / line).resolve()``: through a linked folder, a linked file,
    an absolute line, '..' and a doubled slash (the key resolves folders once and links by name)."""
    _write_image(tmp_path / "real" / "images" / "a.jpg")
    _write_image(tmp_path / "real" / "images" / "b.jpg")
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "linked").symlink_to(tmp_path / "real" / "images")
    (tmp_path / "real" / "images" / "c.jpg").symlink_to(tmp_path / "real" / "images" / "b.jpg")
    lines = ["linked/a.jpg", "linked/c.jpg", str(tmp_path / "real" / "images" / "b.jpg"), "../real/images//a.jpg",
             "missing/d.jpg", "e.jpg"]
    (tmp_path / "set" / "train.txt").write_text("\n".join(lines) + "\n")
    expected = [(tmp_path / "set" / line).resolve() for line in lines]
    assert files_in_list(tmp_path / "set" / "train.txt") == expected
    assert expected[1] == tmp_path / "real" / "images" / "b.jpg"  # the link resolved to its target


def test_cache_of_a_list_is_rebuilt_when_an_image_changes_or_is_added_or_removed(tmp_path):
    for name in ("a", "b", "c"):
        _write_image(tmp_path / "images" / f"{name}.jpg")
        (tmp_path / "labels").mkdir(exist_ok=True)
        (tmp_path / "labels" / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    listing, cache = tmp_path / "train.txt", tmp_path / "train.cache.npz"
    listing.write_text("./images/a.jpg\n./images/b.jpg\n")
    assert not load_or_scan([listing], 1, cache)[1]
    assert load_or_scan([listing], 1, cache)[1]
    image = tmp_path / "images" / "a.jpg"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # an image edited in place
    assert not load_or_scan([listing], 1, cache)[1] and load_or_scan([listing], 1, cache)[1]
    listing.write_text("./images/a.jpg\n./images/b.jpg\n./images/c.jpg\n")  # an image added
    result, cached = load_or_scan([listing], 1, cache)
    assert not cached and len(result.files) == 3
    (tmp_path / "labels" / "c.txt").unlink()  # a label removed
    result, cached = load_or_scan([listing], 1, cache)
    assert not cached and result.counts["missing"] == 1
    (tmp_path / "labels" / "c.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # and added back
    result, cached = load_or_scan([listing], 1, cache)
    assert not cached and result.counts["missing"] == 0
    (tmp_path / "images" / "b.jpg").unlink()  # an image removed from disk, still listed
    result, cached = load_or_scan([listing], 1, cache)
    assert not cached and len(result.files) == 2


def test_folder_reader_finds_and_orders_files_as_rglob_does(tmp_path):
    """One scandir per folder, yet the files and order of ``sorted(rglob)``: by parts ("a/b/c.jpg"
    before "a/b.jpg", "a/b.jpg" before "a-b/x.jpg", which characters would swap), links to files counted, links to folders not
    entered, folders named like images skipped, suffixes compared in lower case."""
    root = tmp_path / "set"
    for name in ("a.jpg", "a-b/x.jpg", "a/b.jpg", "a/b/c.JPG", "a/b/d.txt", ".hidden.png", "z/deep/er/e.webp"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (root / "dir.jpg").mkdir()
    (root / "link.jpg").symlink_to(root / "a.jpg")
    (root / "linked").symlink_to(root / "a")
    (root / "broken.jpg").symlink_to(root / "nothing.jpg")
    expected = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    assert files_in_folder(root) == expected
    assert [str(p.relative_to(root)) for p in expected] == [
        ".hidden.png", "a/b/c.JPG", "a/b.jpg", "a-b/x.jpg", "a.jpg", "link.jpg", "z/deep/er/e.webp"]


def test_cache_of_a_coco_json_is_rebuilt_when_its_image_folder_changes(tmp_path):
    _write_image(tmp_path / "images" / "val" / "a.jpg")
    ann = {"images": [{"id": 1, "file_name": "a.jpg", "width": 48, "height": 32}],
           "categories": [{"id": 1, "name": "x"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "iscrowd": 0}]}
    (tmp_path / "annotations").mkdir()
    source, cache = tmp_path / "annotations" / "instances_val.json", tmp_path / "c.npz"
    source.write_text(json.dumps(ann))
    assert not load_or_scan([source], 1, cache)[1] and load_or_scan([source], 1, cache)[1]
    _write_image(tmp_path / "images" / "val" / "sub" / "b.png")  # an image added below the folder
    assert not load_or_scan([source], 1, cache)[1] and load_or_scan([source], 1, cache)[1]
    image = tmp_path / "images" / "val" / "a.jpg"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # an image edited in place
    assert not load_or_scan([source], 1, cache)[1]
