"""The flat label store: the same samples as the per-image lists it replaced, and its cache."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from data import build_dataloader
from data.label_store import RaggedRows, SegmentStore
from data.scan import load_or_scan
from data.shapes import ShapesSpec, ensure_shapes
from utils.config import Hyp

SPEC = ShapesSpec(splits=(("train", 40), ("val", 12)), min_side=64, max_side=128, min_object=12, max_object=40)
# md5 of the samples below as the per-image lists (json cache) gave them, before the flat store
SAMPLES_MD5 = "044b6d00ae0d80d67204a69e9a2c55ba"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return ensure_shapes(tmp_path_factory.mktemp("store") / "shapes", SPEC)


def _update(md5, img: np.ndarray, labels: np.ndarray, polygons: list) -> None:
    md5.update(np.ascontiguousarray(img).tobytes())
    md5.update(np.asarray(labels, np.float32).tobytes())
    for p in polygons:
        md5.update(b"box" if p is None else np.asarray(p, np.float32).tobytes())


def test_the_flat_store_gives_the_same_samples_as_the_lists(root):
    """120 augmented training samples (mosaic, mixup, copy-paste, paste-in: every path that reads
    labels and polygons) and the letterboxed validation samples, single-class too."""
    hyp = Hyp(copy_paste=0.5, paste_in=0.5, mixup=0.3)
    md5 = hashlib.md5()
    _, train = build_dataloader(root / "images" / "train", 5, img_size=96, hyp=hyp, augment=True, seed=3)
    for epoch in range(3):
        train.set_epoch(epoch)
        for i in range(len(train)):
            _update(md5, *train.augmenter.sample(i, train.rng(i)))
    for single_cls in (False, True):
        _, val = build_dataloader(root / "images" / "val", 5, img_size=96, batch_size=4, rect=True,
                                  single_cls=single_cls)
        for i in range(len(val)):
            img, labels, polygons, _ = val.letterboxed(i)
            _update(md5, img, labels, polygons)
            md5.update(np.asarray(val.crowd[i], np.float32).tobytes())
    assert md5.hexdigest() == SAMPLES_MD5


def _set(root: Path, images: int = 3) -> Path:
    """``images`` images with a box and a triangle each."""
    for i in range(images):
        (root / "images").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), np.full((40, 50, 3), 90, np.uint8))
        (root / "labels").mkdir(exist_ok=True)
        (root / "labels" / f"{i}.txt").write_text(f"{i % 2} 0.5 0.5 0.2 0.2\n1 0.1 0.2 0.5 0.2 0.3 0.6\n")
    return root / "images"


def _same_scan(a, b) -> bool:
    return (a.files == b.files and a.image_ids == b.image_ids and a.shapes == b.shapes
            and all(np.array_equal(x, y) for x, y in zip(a.labels, b.labels, strict=True))
            and all(np.array_equal(x, y) for s, t in zip(a.segments, b.segments, strict=True)
                    for x, y in zip(s, t, strict=True)))


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_json_cache_of_the_previous_format_is_rebuilt_with_one_line(tmp_path, caplog):
    images, cache = _set(tmp_path), tmp_path / "labels.cache.npz"
    legacy = tmp_path / "labels.cache.json"
    legacy.write_text(json.dumps({"version": 2, "hash": "x", "result": {}}))
    first, cached = load_or_scan([images], 2, cache)
    assert not cached and _warnings(caplog) == [f"{legacy}: label cache of the previous format (json); "
                                                f"rebuilding it as {cache.name}"]
    caplog.clear()
    again, cached = load_or_scan([images], 2, cache)
    assert cached and _same_scan(first, again) and not _warnings(caplog)
    legacy.replace(cache)  # the old format under the new name
    assert not load_or_scan([images], 2, cache)[1]
    assert _warnings(caplog) == [f"{cache}: label cache of the previous format (json); rebuilding it"]


@pytest.mark.parametrize("damage", ["truncated", "values", "offsets", "not a zip", "flipped byte", "compressed"])
def test_a_truncated_or_altered_cache_is_rebuilt_not_trusted(tmp_path, caplog, damage):
    images, cache = _set(tmp_path), tmp_path / "c.npz"
    first, _ = load_or_scan([images], 2, cache)
    if damage == "truncated":
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    elif damage == "not a zip":
        cache.write_bytes(b"\x00" * 100)
    elif damage == "flipped byte":  # inside the labels' data, the zip index intact: the sha256 tells, not a CRC
        data = bytearray(cache.read_bytes())
        data[data.index(b"label_offsets.npy") - 31] ^= 0xFF  # the last byte before the next entry's 30-byte header
        cache.write_bytes(bytes(data))
    elif damage == "compressed":  # the reader reads stored entries only
        with np.load(cache) as data:
            arrays = dict(data)
        np.savez_compressed(cache, **arrays)
    else:
        with np.load(cache) as data:
            arrays = dict(data)
        if damage == "values":
            arrays["labels"][0, 1] = 0.9  # the header keeps the sha256 of the written arrays
        else:
            arrays["label_offsets"][1] = 3  # was 2
        np.savez(cache, **arrays)
    second, cached = load_or_scan([images], 2, cache)
    assert not cached and _same_scan(first, second)
    assert len(_warnings(caplog)) == 1 and "unreadable label cache, rescanning" in _warnings(caplog)[0]
    assert load_or_scan([images], 2, cache)[1]  # rewritten whole


def test_the_process_pool_scan_equals_the_in_process_one(tmp_path, monkeypatch):
    images = _set(tmp_path, images=5)
    alone, _ = load_or_scan([images], 2, None)
    monkeypatch.setattr("data.scan.SCAN_CHUNK", 2)  # three chunks: a process pool where there are 2+ cores
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    pooled, _ = load_or_scan([images], 2, None)
    assert _same_scan(alone, pooled) and pooled.counts == alone.counts == {"found": 5, "missing": 0, "empty": 0,
                                                                            "corrupt": 0}


def test_the_store_gives_views_of_its_rows_and_keeps_them_read_only():
    arrays = [np.arange(5 * n, dtype=np.float32).reshape(n, 5) for n in (2, 0, 1)]
    rows = RaggedRows.from_arrays(arrays)
    assert len(rows) == 3 and [len(r) for r in rows] == [2, 0, 1] and np.array_equal(rows[-1], arrays[2])
    with pytest.raises(ValueError, match="read-only"):
        rows[0][0, 0] = 1
    assert np.array_equal(rows.take([2, 0]).values, np.concatenate([arrays[2], arrays[0]]))
    rows[0] = rows[0][:1]  # a whole image's rows can be replaced
    assert [len(r) for r in rows] == [1, 0, 1] and (rows.with_class(0).values[:, 0] == 0).all()
    segments = SegmentStore.from_lists([[np.ones((3, 2)), np.zeros((0, 2))], [], [np.full((4, 2), 0.5)]])
    assert [[len(p) for p in image] for image in segments] == [[3, 0], [], [4]]
    assert [[len(p) for p in image] for image in segments.take([2, 0])] == [[4], [3, 0]]
    with pytest.raises(IndexError):
        segments[3]


def _copied_mb(touch) -> float:
    """MB of private memory a forked child writes while it calls ``touch()`` (Linux)."""
    def private_dirty() -> float:
        with open("/proc/self/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Private_Dirty:")) / 1024

    gc.collect()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        before = private_dirty()
        touch()
        os.write(write, str(private_dirty() - before).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        copied = float(f.read())
    os.waitpid(pid, 0)
    return copied


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").is_file(), reason="Linux: /proc/self/smaps_rollup")
def test_a_forked_worker_copies_nothing_when_it_reads_every_label():
    """100,000 polygons of 10,000 images: as lists of arrays, a reading child copies the page of
    every array object (their reference counts); as one store, it copies next to nothing."""
    rng = np.random.default_rng(0)
    lists = [[rng.random((int(k), 2), dtype=np.float32) for k in rng.integers(8, 40, 10)] for _ in range(10_000)]
    store = SegmentStore.from_lists(lists)

    def read(images):
        return lambda: sum(len(p) for i in range(len(images)) for p in images[i])

    copied_lists, copied_store = _copied_mb(read(lists)), _copied_mb(read(store))
    assert copied_lists > 5 and copied_store < 2
