"""COCO json files <-> the tensors of ``utils.coco_eval``.

Ground truth: a COCO instances file (``images``, ``annotations``, ``categories``). Detections:
a COCO results list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
Classes are numbered by sorted category id, as pycocotools' ``COCOeval`` orders them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from utils.coco_match import Detections, GroundTruth
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
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        raise CocoJsonError(f"{path}: {where} 'bbox' must be 4 numbers [x, y, w, h], got {box!r}")
    return [float(v) for v in box]


def load_ground_truth(path: str | Path, device: torch.device | str = "cpu") -> CocoGroundTruth:
    """Read a COCO instances json. Area is the ``area`` field when present, else w * h.
    Without an ``images`` list, the images are those the annotations name."""
    path = Path(path)
    data = _read(path)
    if not isinstance(data, dict):
        raise CocoJsonError(f"{path}: expected a COCO instances object at the top level")
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


def load_detections(path: str | Path, ref: CocoGroundTruth, device: torch.device | str = "cpu") -> Detections:
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
        image = int(_field(det, "image_id", path, where))
        if image not in ref.image_ids:
            raise CocoJsonError(f"{path}: {where} has image_id {image} that is not in the ground truth")
        cat = _field(det, "category_id", path, where)
        box = _bbox(det, path, where)
        score = _field(det, "score", path, where)
        if cat not in index:
            continue
        images.append(image)
        classes.append(index[cat])
        boxes.append(box)
        scores.append(float(score))
    return Detections(
        torch.tensor(images, dtype=torch.long, device=device),
        torch.tensor(classes, dtype=torch.long, device=device),
        torch.tensor(boxes, dtype=torch.float64, device=device).view(-1, 4),
        torch.tensor(scores, dtype=torch.float64, device=device),
    )


def detections_to_json(dt: Detections, category_ids: list[int], decimals: int = 3) -> list[dict]:
    """COCO results list from detections (class index -> original category id). Boxes are
    rounded to ``decimals``; scores are not, since rounding them creates ties that reorder
    detections (an untrained model's scores differ in the 6th digit)."""
    boxes = dt.boxes.double().cpu().round(decimals=decimals).tolist()
    scores = dt.scores.double().cpu().tolist()
    return [
        {"image_id": int(i), "category_id": category_ids[c], "bbox": b, "score": s}
        for i, c, b, s in zip(dt.image.tolist(), dt.category.tolist(), boxes, scores, strict=True)
    ]
