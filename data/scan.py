"""The label scan: check every image and label of a split once, and cache the result as json.

The cache is keyed by a hash of the file list with each file's size and modification time (and
``nc``), so an edited, added or removed file triggers a rescan and an unchanged set loads in
milliseconds. It is plain json: loading it never runs code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from data.labels import read_label_file, verify_image
from data.sources import IMAGE_SUFFIXES, coco_image_dir, is_coco_json, label_path, list_images, read_coco
from utils.config import ConfigError

LOGGER = logging.getLogger(__name__)
CACHE_VERSION = 1
MAX_MESSAGES_SHOWN = 10


@dataclasses.dataclass
class ScanResult:
    """The usable images of a split and their labels (corrupt images already removed)."""

    files: list[str]
    shapes: list[tuple[int, int]]  # original (height, width) after EXIF rotation
    labels: list[np.ndarray]  # each float32 [n, 5] = cls, cx, cy, w, h normalised (non-crowd)
    crowd: list[np.ndarray]  # each float32 [m, 5], same format, COCO iscrowd boxes
    image_ids: list[int]
    category_ids: list[int]  # contiguous class index -> original category id
    counts: dict[str, int]  # found / missing / empty / corrupt images
    messages: list[str]  # "file[:line]: reason" for every skipped file and every repair


def _stat(path: Path) -> list:
    try:
        st = path.stat()
        return [str(path), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(path), -1, -1]


def _fingerprint(sources: list[Path], nc: int) -> str:
    """Hash of every image, label and annotation file (path, size, mtime) and ``nc``."""
    entries: list = [CACHE_VERSION, nc]
    for source in sources:
        if is_coco_json(source):
            entries.append(_stat(source))
            image_dir = coco_image_dir(source)
            entries += [_stat(p) for p in sorted(image_dir.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        else:
            for image in list_images(source):
                entries += [_stat(image), _stat(label_path(image))]
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _empty() -> np.ndarray:
    return np.zeros((0, 5), np.float32)


def _image_id(path: Path, index: int) -> int:
    return int(path.stem) if path.stem.isdigit() else index


def _scan_yolo_image(image: Path, nc: int) -> tuple[dict | None, list[str], str]:
    """Check one image and its label file -> (entry or None, messages, count key)."""
    shape, error = verify_image(image)
    if error:
        return None, [f"{image}: {error}"], "corrupt"
    entry = {"file": str(image), "shape": list(shape), "labels": _empty(), "crowd": _empty()}
    path = label_path(image)
    if not path.is_file():
        return entry, [], "missing"
    labels, notes, error = read_label_file(path, nc)
    if error:
        return None, notes + [error], "corrupt"
    entry["labels"] = labels
    return entry, notes, "found" if len(labels) else "empty"


def _coco_boxes(annotations: list[dict], width: float, height: float, cat_index: dict, where: str):
    """COCO annotations of one image -> (labels [n, 5], crowd [m, 5], messages)."""
    labels, crowd, messages = [], [], []
    for ann in annotations:
        x, y, w, h = ann.get("bbox", (0, 0, 0, 0))
        if ann.get("category_id") not in cat_index:
            messages.append(f"{where}: annotation {ann.get('id')}: unknown category_id {ann.get('category_id')}")
            continue
        x1, x2 = np.clip([x / width, (x + w) / width], 0, 1)
        y1, y2 = np.clip([y / height, (y + h) / height], 0, 1)
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            messages.append(f"{where}: annotation {ann.get('id')}: zero-size box dropped")
            continue
        row = [cat_index[ann["category_id"]], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
        (crowd if ann.get("iscrowd", 0) else labels).append(row)
    return (np.array(labels, np.float32).reshape(-1, 5), np.array(crowd, np.float32).reshape(-1, 5), messages)


def _scan_coco(json_path: Path, nc: int, pool: ThreadPoolExecutor):
    """Entries, messages, counts and category ids of one COCO annotation file."""
    data = read_coco(json_path)
    category_ids = sorted(c["id"] for c in data["categories"])
    if len(category_ids) != nc:
        raise ConfigError(f"{json_path}: {len(category_ids)} categories but the data set has nc={nc}")
    cat_index = {cid: i for i, cid in enumerate(category_ids)}
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    image_dir = coco_image_dir(json_path)
    infos = sorted(data["images"], key=lambda im: im["id"])
    checks = pool.map(lambda im: verify_image(image_dir / im["file_name"]), infos)
    entries, messages, counts = [], [], {"found": 0, "missing": 0, "empty": 0, "corrupt": 0}
    for info, (shape, error) in zip(infos, checks, strict=False):
        path = image_dir / info["file_name"]
        if error:
            messages.append(f"{path}: {error}")
            counts["corrupt"] += 1
            continue
        where = f"{json_path}: image {info['id']}"
        labels, crowd, notes = _coco_boxes(by_image.get(info["id"], []), info.get("width", shape[1]),
                                           info.get("height", shape[0]), cat_index, where)
        messages += notes
        counts["found" if len(labels) + len(crowd) else "empty"] += 1
        entries.append({"file": str(path), "shape": list(shape), "labels": labels, "crowd": crowd, "id": info["id"]})
    return entries, messages, counts, category_ids


def _scan(sources: list[Path], nc: int) -> ScanResult:
    entries, messages = [], []
    counts = {"found": 0, "missing": 0, "empty": 0, "corrupt": 0}
    category_ids = list(range(nc))
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for source in sources:
            if is_coco_json(source):
                found, notes, sub_counts, category_ids = _scan_coco(source, nc, pool)
            else:
                results = list(pool.map(lambda p: _scan_yolo_image(p, nc), list_images(source)))
                found = [entry for entry, _, _ in results if entry is not None]
                notes = [m for _, msgs, _ in results for m in msgs]
                sub_counts = {k: sum(key == k for _, _, key in results) for k in counts}
            entries += found
            messages += notes
            counts = {k: counts[k] + sub_counts[k] for k in counts}
    return ScanResult(
        files=[e["file"] for e in entries],
        shapes=[tuple(e["shape"]) for e in entries],
        labels=[e["labels"] for e in entries],
        crowd=[e["crowd"] for e in entries],
        image_ids=[e.get("id", _image_id(Path(e["file"]), i)) for i, e in enumerate(entries)],
        category_ids=category_ids,
        counts=counts,
        messages=messages,
    )


def _to_json(result: ScanResult, key: str) -> dict:
    data = dataclasses.asdict(result)
    data["labels"] = [a.tolist() for a in result.labels]
    data["crowd"] = [a.tolist() for a in result.crowd]
    return {"version": CACHE_VERSION, "hash": key, "result": data}


def _from_json(data: dict) -> ScanResult:
    r = data["result"]
    r["labels"] = [np.array(a, np.float32).reshape(-1, 5) for a in r["labels"]]
    r["crowd"] = [np.array(a, np.float32).reshape(-1, 5) for a in r["crowd"]]
    r["shapes"] = [tuple(s) for s in r["shapes"]]
    return ScanResult(**r)


def load_or_scan(sources: list[Path], nc: int, cache_path: Path | None) -> tuple[ScanResult, bool]:
    """Scan ``sources`` or reuse the cache at ``cache_path``; returns (result, came from cache).

    Messages are logged (the first few in full, then a count); an unwritable cache folder is
    a warning, not an error.
    """
    key = _fingerprint(sources, nc)
    if cache_path is not None and cache_path.is_file():
        try:
            data = json.loads(cache_path.read_text())
            if data.get("version") == CACHE_VERSION and data.get("hash") == key:
                return _from_json(data), True
        except (OSError, ValueError, KeyError, TypeError) as e:
            LOGGER.warning("%s: unreadable label cache, rescanning (%s)", cache_path, e)
    result = _scan(sources, nc)
    for message in result.messages[:MAX_MESSAGES_SHOWN]:
        LOGGER.warning(message)
    if len(result.messages) > MAX_MESSAGES_SHOWN:
        LOGGER.warning("... and %d more label messages", len(result.messages) - MAX_MESSAGES_SHOWN)
    LOGGER.info("%s: %s", ", ".join(map(str, sources)), ", ".join(f"{v} {k}" for k, v in result.counts.items()))
    if cache_path is not None:
        tmp = cache_path.with_name(f"{cache_path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(_to_json(result, key)))
            os.replace(tmp, cache_path)  # atomic: a concurrent reader never sees half a file
        except OSError as e:
            LOGGER.warning("%s: cannot write label cache (%s)", cache_path, e)
    return result, False
