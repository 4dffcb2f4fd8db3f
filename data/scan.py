"""The label scan: check every image and label of a split once, and cache the result.

The cache (``data.label_cache``) is keyed by a hash of the file list with each file's size and
modification time (and ``nc``, and the class names for VOC sources, which name classes by
string), so an edited, added or removed file triggers a rescan and an unchanged set loads
without parsing text. ``CACHE_VERSION`` is part of the key.

A large YOLO or COCO split is checked in chunks by a process pool (the per-file work is Python,
which threads would run one at a time), with a progress bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.label_cache import CACHE_VERSION, read_cache, write_cache
from data.label_store import RaggedRows, SegmentStore
from data.labels import NO_SEGMENT, read_label_file, verify_image
from data.polygons import merge_parts
from data.sources import (
    coco_image_dir,
    coco_image_path,
    folder_files,
    image_names,
    is_coco_json,
    label_path,
    list_images,
    read_coco,
    suffix,
)
from data.voc import files_to_hash, is_voc_source, scan_voc, stems
from utils.config import ConfigError

LOGGER = logging.getLogger(__name__)
MAX_MESSAGES_SHOWN = 10
COUNT_KEYS = ("found", "missing", "empty", "corrupt")
SCAN_CHUNK = 1000  # images per task of the scan's process pool; a split of one chunk is scanned in-process


@dataclasses.dataclass
class ScanResult:
    """The usable images of a split and their labels (corrupt images already removed)."""

    files: list[str]
    shapes: list[tuple[int, int]]  # original (height, width) after EXIF rotation
    labels: RaggedRows  # labels[i] float32 [n, 5] = cls, cx, cy, w, h normalised (non-crowd)
    crowd: RaggedRows  # crowd[i] float32 [m, 5], same format, COCO iscrowd boxes
    segments: SegmentStore  # segments[i]: per label row a polygon float32 [k, 2] normalised; [0, 2]: box row
    image_ids: list[int]
    category_ids: list[int]  # contiguous class index -> original category id
    counts: dict[str, int]  # found / missing / empty / corrupt images
    messages: list[str]  # "file[:line]: reason" for every skipped file and every repair


def _stat(path: Path | str) -> list:
    try:
        st = os.stat(path)  # not Path.stat: a million Path objects cost seconds at start-up
        return [str(path), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(path), -1, -1]


def _label_paths(images: list[str]) -> list[str]:
    """``data.sources.label_path`` of each image, worked out once per folder (it depends on the
    folder only, and a Path per image is slow at COCO's size)."""
    folders: dict[str, str] = {}
    out = []
    for image in images:
        cut = image.rfind("/") + 1
        folder, name = image[:cut], image[cut:]
        if folder not in folders:
            folders[folder] = str(label_path(Path(folder or ".") / "x.jpg").parent)
        ext = suffix(name)
        out.append(os.path.join(folders[folder], (name[:-len(ext)] if ext else name) + ".txt"))
    return out


def _fingerprint(sources: list[Path], nc: int, names: list[str] | None) -> str:
    """Hash of every image, label and annotation file (path, size, mtime), ``nc`` and ``names``.

    Paths stay strings here: this runs at every start, and a Path per file of COCO's 118k
    images and labels was most of a cached start."""
    entries: list = [CACHE_VERSION, nc]
    for source in sources:
        if is_voc_source(source):
            entries += [names] + [_stat(p) for p in files_to_hash(source)]
        elif is_coco_json(source):
            entries.append(_stat(source))
            image_dir = coco_image_dir(source)
            entries += [_stat(p) for p in folder_files(image_dir)]
        else:
            images = image_names(source)
            for image, label in zip(images, _label_paths(images), strict=True):
                entries += [_stat(image), _stat(label)]
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def count_images(sources: list[Path]) -> int:
    """Number of images ``sources`` name, without opening them (for choosing a recipe by set size)."""
    total = 0
    for source in sources:
        if is_voc_source(source):
            total += len(stems(source))
        elif is_coco_json(source):
            total += len(read_coco(source)["images"])
        else:
            total += len(image_names(source))
    return total


def _empty() -> np.ndarray:
    return np.zeros((0, 5), np.float32)


def _image_id(path: Path, index: int) -> int:
    return int(path.stem) if path.stem.isdigit() else index


def _scan_yolo_image(image: Path, nc: int) -> tuple[dict | None, list[str], str]:
    """Check one image and its label file -> (entry or None, messages, count key)."""
    shape, error = verify_image(image)
    if error:
        return None, [f"{image}: {error}"], "corrupt"
    entry = {"file": str(image), "shape": list(shape), "labels": _empty(), "crowd": _empty(), "segments": []}
    path = label_path(image)
    if not path.is_file():
        return entry, [], "missing"
    labels, segments, notes, error = read_label_file(path, nc)
    if error:
        return None, notes + [error], "corrupt"
    entry["labels"], entry["segments"] = labels, segments
    return entry, notes, "found" if len(labels) else "empty"


def _coco_polygon(ann: dict, width: float, height: float, where: str) -> tuple[np.ndarray, str | None]:
    """The ``segmentation`` polygon of a non-crowd annotation, normalised float32 [k, 2] ([0, 2]
    when it has none or an RLE mask, which stays a box); parts of a split outline are merged."""
    seg = ann.get("segmentation")
    if not isinstance(seg, list) or not seg:
        return NO_SEGMENT, None
    try:
        parts = [np.array(part, np.float64).reshape(-1, 2) for part in seg]
    except (TypeError, ValueError):
        return NO_SEGMENT, f"{where}: annotation {ann.get('id')}: malformed segmentation polygon, box kept"
    parts = [p for p in parts if len(p) >= 3 and np.isfinite(p).all()]
    if not parts:
        return NO_SEGMENT, f"{where}: annotation {ann.get('id')}: segmentation polygon under 3 points, box kept"
    return (merge_parts(parts) / [width, height]).clip(0, 1).astype(np.float32), None


def _coco_boxes(annotations: list[dict], width: float, height: float, cat_index: dict, where: str):
    """COCO annotations of one image -> (labels [n, 5], crowd [m, 5], segments of the labels, messages)."""
    labels, crowd, segments, messages = [], [], [], []
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
        if ann.get("iscrowd", 0):
            crowd.append(row)
            continue
        polygon, note = _coco_polygon(ann, width, height, where)
        labels.append(row)
        segments.append(polygon)
        messages += [note] if note else []
    return (np.array(labels, np.float32).reshape(-1, 5), np.array(crowd, np.float32).reshape(-1, 5), segments,
            messages)


def _part(entries: list[dict], messages: list[str], counts: dict[str, int]) -> ScanResult:
    """The scan of some images from their per-image entries (image_ids None: from the file name)."""
    return ScanResult(
        files=[e["file"] for e in entries],
        shapes=[tuple(e["shape"]) for e in entries],
        labels=RaggedRows.from_arrays([e["labels"] for e in entries]),
        crowd=RaggedRows.from_arrays([e["crowd"] for e in entries]),
        segments=SegmentStore.from_lists([e.get("segments") or [NO_SEGMENT] * len(e["labels"])  # VOC: boxes only
                                          for e in entries]),
        image_ids=[e.get("id") for e in entries],
        category_ids=[],
        counts=counts,
        messages=messages,
    )


def _scan_yolo_chunk(images: list[Path], nc: int) -> ScanResult:
    """The scan of some images of a YOLO source (a task of the process pool)."""
    results = [_scan_yolo_image(p, nc) for p in images]
    return _part([entry for entry, _, _ in results if entry is not None],
                 [m for _, msgs, _ in results for m in msgs],
                 {k: sum(key == k for _, _, key in results) for k in COUNT_KEYS})


def _verify_chunk(paths: list[Path]) -> list[tuple[tuple[int, int], str | None]]:
    return [verify_image(p) for p in paths]


def _map_chunks(fn: Callable, items: Sequence, *args, desc: str) -> list:
    """``fn(chunk, *args)`` for each chunk of SCAN_CHUNK ``items``, in order; a process per core
    when there are several chunks (the checks are Python: threads would take turns), with a
    progress bar. ``fn`` is a module-level function (it is pickled by name)."""
    chunks = [items[i:i + SCAN_CHUNK] for i in range(0, len(items), SCAN_CHUNK)]
    workers = min(os.cpu_count() or 1, len(chunks))
    repeated = [itertools.repeat(a, len(chunks)) for a in args]
    with contextlib.ExitStack() as stack:
        if workers > 1:  # the platform's start method, as the DataLoader's workers use it
            pool = stack.enter_context(ProcessPoolExecutor(workers))
            results = pool.map(fn, chunks, *repeated)
        else:
            results = map(fn, chunks, *repeated)
        bar = stack.enter_context(tqdm(total=len(items), desc=desc, unit=" images", disable=len(chunks) < 2,
                                       file=sys.stderr))
        out = []
        for chunk, result in zip(chunks, results, strict=True):
            out.append(result)
            bar.update(len(chunk))
    return out


def _scan_coco(json_path: Path, nc: int) -> tuple[ScanResult, list[int]]:
    """The scan of one COCO annotation file and its category ids."""
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
    paths = [coco_image_path(image_dir, im["file_name"], json_path) for im in infos]
    checks = [c for chunk in _map_chunks(_verify_chunk, paths, desc=f"checking {image_dir}") for c in chunk]
    entries, messages, counts = [], [], dict.fromkeys(COUNT_KEYS, 0)
    for info, path, (shape, error) in zip(infos, paths, checks, strict=True):
        if error:
            messages.append(f"{path}: {error}")
            counts["corrupt"] += 1
            continue
        where = f"{json_path}: image {info['id']}"
        labels, crowd, segments, notes = _coco_boxes(by_image.get(info["id"], []), info.get("width", shape[1]),
                                           info.get("height", shape[0]), cat_index, where)
        messages += notes
        counts["found" if len(labels) + len(crowd) else "empty"] += 1
        entries.append({"file": str(path), "shape": list(shape), "labels": labels, "crowd": crowd,
                        "segments": segments, "id": info["id"]})
    return _part(entries, messages, counts), category_ids


def _scan(sources: list[Path], nc: int, names: list[str] | None) -> ScanResult:
    parts: list[ScanResult] = []
    category_ids = list(range(nc))
    for source in sources:
        if is_voc_source(source):
            with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # XML parsing: small sets
                parts.append(_part(*scan_voc(source, names, pool)))
        elif is_coco_json(source):
            part, category_ids = _scan_coco(source, nc)
            parts.append(part)
        else:
            parts += _map_chunks(_scan_yolo_chunk, list_images(source), nc, desc=f"scanning {source}")
    files = [f for p in parts for f in p.files]
    ids = [i for p in parts for i in p.image_ids]
    return ScanResult(
        files=files,
        shapes=[s for p in parts for s in p.shapes],
        labels=RaggedRows.concat([p.labels for p in parts]),
        crowd=RaggedRows.concat([p.crowd for p in parts]),
        segments=SegmentStore.concat([p.segments for p in parts]),
        image_ids=[_image_id(Path(f), n) if i is None else i for n, (f, i) in enumerate(zip(files, ids, strict=True))],
        category_ids=category_ids,
        counts={k: sum(p.counts[k] for p in parts) for k in COUNT_KEYS},
        messages=[m for p in parts for m in p.messages],
    )


MIN_SIDE_AT_SIZE = 4  # px: an image resized to the train size needs both sides at least this long


def drop_too_thin(result: ScanResult, img_size: int) -> ScanResult:
    """``result`` without the images whose short side falls below MIN_SIDE_AT_SIZE once the long
    side is resized to ``img_size`` (a 20000x20 image at 640 px would be 0 px tall); each one is
    logged by name. The cached scan keeps them: another size may use them."""
    keep = [i for i, (h, w) in enumerate(result.shapes) if min(h, w) * img_size / max(h, w) >= MIN_SIDE_AT_SIZE]
    if len(keep) == len(result.files):
        return result
    dropped = sorted(set(range(len(result.files))) - set(keep))
    for i in dropped[:MAX_MESSAGES_SHOWN]:
        h, w = result.shapes[i]
        LOGGER.warning("%s: image is %dx%d, under %d px on its short side at --img-size %d: skipped",
                       result.files[i], w, h, MIN_SIDE_AT_SIZE, img_size)
    if len(dropped) > MAX_MESSAGES_SHOWN:
        LOGGER.warning("... and %d more images too thin at --img-size %d", len(dropped) - MAX_MESSAGES_SHOWN, img_size)
    pick = lambda items: [items[i] for i in keep]  # noqa: E731
    return dataclasses.replace(result, files=pick(result.files), shapes=pick(result.shapes),
                               labels=result.labels.take(keep), crowd=result.crowd.take(keep),
                               segments=result.segments.take(keep), image_ids=pick(result.image_ids))


def load_or_scan(
    sources: list[Path], nc: int, cache_path: Path | None, names: list[str] | None = None
) -> tuple[ScanResult, bool]:
    """Scan ``sources`` or reuse the cache at ``cache_path``; returns (result, came from cache).

    ``names`` (the data set's classes) is needed by VOC sources, which name classes by string.

    Messages are logged (the first few in full, then a count); an unwritable cache folder is
    a warning, not an error.
    """
    key = _fingerprint(sources, nc, names)
    if cache_path is not None:
        cached = read_cache(cache_path, key)
        if cached is not None:
            return ScanResult(**cached), True
    result = _scan(sources, nc, names)
    for message in result.messages[:MAX_MESSAGES_SHOWN]:
        LOGGER.warning(message)
    if len(result.messages) > MAX_MESSAGES_SHOWN:
        LOGGER.warning("... and %d more label messages", len(result.messages) - MAX_MESSAGES_SHOWN)
    LOGGER.info("%s: %s", ", ".join(map(str, sources)), ", ".join(f"{v} {k}" for k, v in result.counts.items()))
    if cache_path is not None:
        write_cache(cache_path, key, vars(result))
    return result, False
