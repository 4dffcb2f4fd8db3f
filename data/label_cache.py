"""The label cache of a split: its flat label arrays (``data.label_store``) in one .npz.

The file holds the arrays and a ``header`` (utf-8 json: ``version``, the scan's key ``hash``,
counts, messages, category ids and a sha256 of the arrays) and is read with
``allow_pickle=False``: loading it parses no numbers as text and never runs code. A cache of
another ``CACHE_VERSION`` or of the previous json format is rebuilt with one line saying so; one
that is truncated, altered (its arrays no longer match the header's sha256) or inconsistent is
rebuilt, never trusted. Writes are atomic (a temporary file renamed over the cache).
History: 3: flat arrays in an .npz; 2: json with polygons; 1: json, boxes only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from data.label_store import RaggedRows, SegmentStore

LOGGER = logging.getLogger(__name__)
CACHE_VERSION = 3
ARRAYS = ("labels", "label_offsets", "crowd", "crowd_offsets", "points", "point_offsets", "row_offsets", "shapes",
          "image_ids", "files")
HEADER_FIELDS = ("counts", "messages", "category_ids")
_FILE_SEPARATOR = "\0"  # the one character a POSIX path cannot hold
_LOCAL_HEADER = struct.Struct("<4s22sHH")  # a zip entry's fixed header: signature, 22 bytes, name and extra lengths


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def _arrays(fields: dict) -> dict[str, np.ndarray]:
    labels, crowd, segments = fields["labels"], fields["crowd"], fields["segments"]
    return {
        "labels": labels.values, "label_offsets": labels.offsets, "crowd": crowd.values, "crowd_offsets": crowd.offsets,
        "points": segments.points, "point_offsets": segments.point_offsets, "row_offsets": segments.row_offsets,
        "shapes": np.array(fields["shapes"], np.int64).reshape(-1, 2),
        "image_ids": np.array(fields["image_ids"], np.int64),
        "files": np.frombuffer(_FILE_SEPARATOR.join(fields["files"]).encode(), np.uint8),
    }


def write_cache(path: Path, key: str, fields: dict) -> None:
    """Save a scan (``fields``: the ScanResult's fields) under ``key``; an unwritable place is a warning."""
    arrays = _arrays(fields)
    header = {"version": CACHE_VERSION, "hash": key, "sha256": _digest(arrays)} | {k: fields[k] for k in HEADER_FIELDS}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:  # a file object: numpy adds no .npz suffix
            np.savez(f, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    except OSError as e:
        tmp.unlink(missing_ok=True)
        LOGGER.warning("%s: cannot write label cache (%s)", path, e)


def _fields(arrays: dict[str, np.ndarray], header: dict) -> dict:
    """The ScanResult fields of a cache's arrays; ValueError when they do not fit together."""
    files = arrays["files"].tobytes().decode()
    files = files.split(_FILE_SEPARATOR) if len(arrays["shapes"]) else []
    labels = RaggedRows(arrays["labels"].astype(np.float32, copy=False), arrays["label_offsets"])
    crowd = RaggedRows(arrays["crowd"].astype(np.float32, copy=False), arrays["crowd_offsets"])
    segments = SegmentStore(arrays["points"].astype(np.float32, copy=False), arrays["point_offsets"],
                            arrays["row_offsets"])
    n = len(files)
    if not (len(labels) == len(crowd) == len(segments) == len(arrays["image_ids"]) == len(arrays["shapes"]) == n
            and np.array_equal(segments.row_offsets, labels.offsets)):
        raise ValueError("arrays of different lengths")
    heights, widths = arrays["shapes"].reshape(-1, 2).T.tolist()  # two lists: a tuple per row from tolist is slow
    return {"files": files, "shapes": list(zip(heights, widths, strict=True)), "labels": labels,
            "crowd": crowd, "segments": segments, "image_ids": arrays["image_ids"].tolist()} | \
        {k: header[k] for k in HEADER_FIELDS}


def _member(members: zipfile.ZipFile, f: BinaryIO, name: str) -> np.ndarray:
    """Array ``name`` of the .npz open as ``members`` (its index) and ``f`` (its bytes), read
    straight into its own array: np.load would pass every byte through zipfile's reader and its
    CRC (a second of a COCO-sized start), which the header's sha256 makes redundant."""
    info = members.getinfo(name + ".npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{name} is compressed")
    f.seek(info.header_offset)
    local = f.read(_LOCAL_HEADER.size)
    if len(local) != _LOCAL_HEADER.size or local[:4] != b"PK\x03\x04":
        raise ValueError(f"{name}: no zip entry where its index says")
    name_length, extra_length = _LOCAL_HEADER.unpack(local)[-2:]
    start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    f.seek(start)
    array = np.lib.format.read_array(f, allow_pickle=False)
    if f.tell() != start + info.file_size:
        raise ValueError(f"{name}: its array does not fill its zip entry")
    return array


def _is_json(path: Path) -> bool:
    """True for a cache of the previous format (a json object), which this version replaces."""
    with open(path, "rb") as f:
        return f.read(1) == b"{"


def read_cache(path: Path, key: str) -> dict | None:
    """The ScanResult fields saved at ``path`` under ``key``, or None (missing, another key, or not
    to be trusted: said in one line, except for a changed key, which a changed file explains)."""
    legacy = path.with_suffix(".json")  # the previous default name beside the labels
    if not path.is_file():
        if path.suffix == ".npz" and legacy.is_file():
            LOGGER.warning("%s: label cache of the previous format (json); rebuilding it as %s", legacy, path.name)
        return None
    try:
        if _is_json(path):
            LOGGER.warning("%s: label cache of the previous format (json); rebuilding it", path)
            return None
        with open(path, "rb") as f, zipfile.ZipFile(f) as members:  # one open: a replaced cache cannot mix in
            header = json.loads(_member(members, f, "header").tobytes().decode())
            if header.get("version") != CACHE_VERSION:
                LOGGER.warning("%s: label cache version %s, this is %d; rebuilding it", path, header.get("version"),
                               CACHE_VERSION)
                return None
            if header.get("hash") != key:
                return None
            arrays = {name: _member(members, f, name) for name in ARRAYS}
        if _digest(arrays) != header.get("sha256"):
            raise ValueError("its arrays do not match the sha256 it was written with")
        return _fields(arrays, header)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        LOGGER.warning("%s: unreadable label cache, rescanning (%s)", path, e)
        return None


def read_header(path: Path) -> dict:
    """The json header of the cache at ``path`` (version, hash, sha256, counts, messages, category_ids)."""
    with np.load(path, allow_pickle=False) as data:
        return json.loads(data["header"].tobytes().decode())
