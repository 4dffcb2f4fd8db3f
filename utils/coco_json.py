"""COCO json files <-> the tensors of ``utils.coco_eval``.

Ground truth: a COCO instances file (``images``, ``annotations``, ``categories``). Detections:
a COCO results list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
Classes are numbered by sorted category id, as pycocotools' ``COCOeval`` orders them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from utils.coco_match import DatasetDetections, GroundTruth
from utils.errors import UserError


class CocoJsonError(UserError, ValueError):
    """A COCO json file is malformed; the message names the file and the entry."""


@dataclass
class CocoGroundTruth:
    """A parsed ground-truth file: tensors plus the id maps needed to read detections."""

    gt: GroundTruth
    category_ids: list[int]  # class index -> COCO category id (sorted)
    names: list[str]
    image_ids: set[int]


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise CocoJsonError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise CocoJsonError(f"{path}:{e.lineno}: invalid json ({e.msg})") from None


def _field(entry: dict, key: str, path: Path, where: str) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise CocoJsonError(f"{path}: {where} has no '{key}'")
    return entry[key]


def _bbox(entry: dict, path: Path, where: str) -> list[float]:
    box = _field(entry, "bbox", path, where)
    if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
        raise CocoJsonError(f"{path}: {where} 'bbox' must be 4 finite numbers [x, y, w, h], got {box!r:.80}")
    return [float(v) for v in box]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_entries(data: dict, key: str, path: Path, required: bool) -> list:
    entries = data.get(key)
    if entries is None and not required:
        return []
    if not isinstance(entries, list):
        raise CocoJsonError(f"{path}: {key!r} must be a list, got {type(entries).__name__}")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise CocoJsonError(f"{path}: {key}[{i}] must be an object, got {entry!r:.60}")
    return entries


def _unique_ids(entries: list[dict], key: str, path: Path) -> set[int]:
    ids: set[int] = set()
    for i, entry in enumerate(entries):
        if "id" not in entry or not _is_int(entry["id"]):
            raise CocoJsonError(f"{path}: {key}[{i}] needs an integer 'id', got {entry.get('id')!r}")
        if entry["id"] in ids:
            raise CocoJsonError(f"{path}: {key}[{i}] repeats id {entry['id']} (ids must be unique)")
        ids.add(entry["id"])
    return ids


def check_instances(data: Any, path: str | Path, *, need_files: bool = False) -> None:
    """Raise CocoJsonError (naming the file and entry) unless ``data`` is a well-formed COCO
    instances object: integer unique image and category ids, annotations with integer
    ``image_id`` / ``category_id`` and a ``bbox`` of 4 finite numbers with w, h >= 0, positive
    finite image ``width`` / ``height`` where given. ``need_files`` (a training / validation data
    source, not just ground truth): the three lists and every image's ``file_name`` are required."""
    path = Path(path)
    if not isinstance(data, dict):
        raise CocoJsonError(f"{path}: expected a COCO instances object at the top level, got {type(data).__name__}")
    images = _check_entries(data, "images", path, need_files)
    annotations = _check_entries(data, "annotations", path, need_files)
    categories = _check_entries(data, "categories", path, need_files)
    _unique_ids(images, "images", path)
    _unique_ids(categories, "categories", path)
    for i, im in enumerate(images):
        name = im.get("file_name")
        if need_files and not (isinstance(name, str) and name.strip()):
            raise CocoJsonError(f"{path}: images[{i}] (id {im['id']}) needs a 'file_name', got {name!r}")
        for side in ("width", "height"):
            if side in im and not (_is_number(im[side]) and im[side] > 0):
                raise CocoJsonError(f"{path}: images[{i}] (id {im['id']}) {side!r} must be a positive number, "
                                    f"got {im[side]!r}")
    for i, ann in enumerate(annotations):
        where = f"annotations[{i}]"
        for key in ("image_id", "category_id", "bbox"):
            if key not in ann:
                raise CocoJsonError(f"{path}: {where} has no '{key}'")
        for key in ("image_id", "category_id"):
            if not _is_int(ann.get(key)):
                raise CocoJsonError(f"{path}: {where} needs an integer {key!r}, got {ann.get(key)!r}")
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            raise CocoJsonError(f"{path}: {where} 'bbox' must be 4 finite numbers [x, y, w, h], got {box!r:.80}")
        if box[2] < 0 or box[3] < 0:
            raise CocoJsonError(f"{path}: {where} 'bbox' has a negative width or height: {box}")
        if "area" in ann and not (_is_number(ann["area"]) and ann["area"] >= 0):
            raise CocoJsonError(f"{path}: {where} 'area' must be a finite number >= 0, got {ann['area']!r}")


def load_ground_truth(path: str | Path, device: torch.device | str = "cpu") -> CocoGroundTruth:
    """Read a COCO instances json. Area is the ``area`` field when present, else w * h.
    Without an ``images`` list, the images are those the annotations name."""
    path = Path(path)
    data = _read(path)
    check_instances(data, path)
    cats = sorted(data.get("categories", []), key=lambda c: _field(c, "id", path, "a category"))
    category_ids = [int(c["id"]) for c in cats]
    index = {c: i for i, c in enumerate(category_ids)}
    listed = "images" in data
    image_ids = {int(_field(im, "id", path, f"images[{i}]")) for i, im in enumerate(data.get("images", []))}
    images, classes, boxes, areas, crowd = [], [], [], [], []
    for i, ann in enumerate(data.get("annotations", [])):
        where = f"annotations[{i}]"
        if listed and int(_field(ann, "image_id", path, where)) not in image_ids:
            continue  # pycocotools evaluates only the images listed in 'images'
        cat = _field(ann, "category_id", path, where)
        if cat not in index:
            raise CocoJsonError(f"{path}: {where} has category_id {cat} that is not in 'categories'")
        box = _bbox(ann, path, where)
        images.append(int(_field(ann, "image_id", path, where)))
        classes.append(index[cat])
        boxes.append(box)
        areas.append(float(ann.get("area", box[2] * box[3])))
        crowd.append(bool(ann.get("iscrowd", 0)))
    gt = GroundTruth(
        torch.tensor(images, dtype=torch.long, device=device),
        torch.tensor(classes, dtype=torch.long, device=device),
        torch.tensor(boxes, dtype=torch.float64, device=device).view(-1, 4),
        torch.tensor(areas, dtype=torch.float64, device=device),
        torch.tensor(crowd, dtype=torch.bool, device=device),
    )
    names = [str(c.get("name", c["id"])) for c in cats]
    return CocoGroundTruth(gt, category_ids, names, image_ids | set(images))


def load_detections(path: str | Path, ref: CocoGroundTruth, device: torch.device | str = "cpu") -> DatasetDetections:
    """Read a COCO results json. Detections of categories absent from the ground truth are
    dropped (as pycocotools does); an image id absent from it is an error (pycocotools asserts)."""
    path = Path(path)
    data = _read(path)
    if not isinstance(data, list):
        raise CocoJsonError(f"{path}: expected a list of detections at the top level")
    index = {c: i for i, c in enumerate(ref.category_ids)}
    images, classes, boxes, scores = [], [], [], []
    for i, det in enumerate(data):
        where = f"detection [{i}]"
        image = _field(det, "image_id", path, where)
        if not _is_int(image):
            raise CocoJsonError(f"{path}: {where} needs an integer 'image_id', got {image!r:.60}")
        if image not in ref.image_ids:
            raise CocoJsonError(f"{path}: {where} has image_id {image} that is not in the ground truth")
        cat = _field(det, "category_id", path, where)
        box = _bbox(det, path, where)
        score = _field(det, "score", path, where)
        if not _is_number(score):
            raise CocoJsonError(f"{path}: {where} 'score' must be a finite number, got {score!r:.60}")
        if cat not in index:
            continue
        images.append(image)
        classes.append(index[cat])
        boxes.append(box)
        scores.append(float(score))
    return DatasetDetections(
        torch.tensor(images, dtype=torch.long, device=device),
        torch.tensor(classes, dtype=torch.long, device=device),
        torch.tensor(boxes, dtype=torch.float64, device=device).view(-1, 4),
        torch.tensor(scores, dtype=torch.float64, device=device),
    )


def detections_to_json(dt: DatasetDetections, category_ids: list[int], decimals: int = 3) -> list[dict]:
    """COCO results list from detections (class index -> original category id). Boxes are
    rounded to ``decimals``; scores are not, since rounding them creates ties that reorder
    detections (an untrained model's scores differ in the 6th digit)."""
    boxes = dt.boxes.double().cpu().round(decimals=decimals).tolist()
    scores = dt.scores.double().cpu().tolist()
    return [
        {"image_id": int(i), "category_id": category_ids[c], "bbox": b, "score": s}
        for i, c, b, s in zip(dt.image.tolist(), dt.category.tolist(), boxes, scores, strict=True)
    ]
