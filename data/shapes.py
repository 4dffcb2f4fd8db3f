"""The built-in synthetic data set: coloured shapes on varied backgrounds, in YOLO and COCO form.

Generated deterministically (seeded per image) on first use, so every command runs offline on a
fresh machine. Sizes are chosen so that a yolov7-tiny-sized model learns it at ~256-320 px on a
couple of CPU cores in minutes: objects are 20-100 px, at most 6 per image, never mostly hidden.

Layout under the root (``$ELAN_YOLO_DATASETS/shapes`` by default, see data/shapes.yaml)::

    images/{train,val}/000001.jpg   labels/{train,val}/000001.txt   (cls cx cy w h, normalised)
    annotations/instances_{train,val}.json   (COCO; category ids 1..5, image id = file stem)
    .complete.json                            (the parameters it was generated with)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle", "star", "cross")


@dataclasses.dataclass(frozen=True)
class ShapesSpec:
    """Generation parameters; a change here regenerates existing copies on next use."""

    version: int = 1
    seed: int = 0
    splits: tuple[tuple[str, int], ...] = (("train", 1500), ("val", 200))
    min_side: int = 256  # image width and height are drawn from [min_side, max_side]
    max_side: int = 320
    max_objects: int = 6
    min_object: int = 20  # object extent (bounding-box size before rotation effects), pixels
    max_object: int = 100
    max_ioa: float = 0.4  # an earlier (larger) object is at most this much covered by a later one
    jpeg_quality: int = 92


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An RGB uint8 [h, w, 3] background: flat, a gradient, or smooth noise, plus faint lines."""
    kind = rng.integers(3)
    if kind == 0:
        img = np.empty((h, w, 3), np.uint8)
        img[:] = rng.integers(0, 256, 3)
    elif kind == 1:
        a, b = rng.integers(0, 256, (2, 3)).astype(np.float32)
        t = np.linspace(0, 1, w if rng.random() < 0.5 else h, dtype=np.float32)[:, None]
        ramp = a + (b - a) * t
        img = np.broadcast_to(ramp[None] if len(t) == w else ramp[:, None], (h, w, 3)).astype(np.uint8)
    else:
        small = rng.integers(0, 256, (rng.integers(2, 8), rng.integers(2, 8), 3)).astype(np.uint8)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.ascontiguousarray(img)
    for _ in range(rng.integers(0, 4)):  # distractor lines that are not objects
        p1, p2 = rng.integers(0, (w, h), (2, 2))
        cv2.line(img, tuple(int(v) for v in p1), tuple(int(v) for v in p2), rng.integers(0, 256, 3).tolist(), 1)
    return img


def _polygon(cls: int, size: float, angle: float) -> np.ndarray:
    """Vertices [k, 2] of shape ``cls`` centred on 0 with extent about ``size`` (circle: None-like)."""
    r = size / 2
    if cls == 1:  # square
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * r / np.sqrt(2)
    elif cls == 2:  # triangle
        a = np.deg2rad([90, 210, 330])
        pts = np.stack([np.cos(a), np.sin(a)], 1) * r
    elif cls == 3:  # five-point star
        a = np.deg2rad(np.arange(10) * 36 - 90)
        pts = np.stack([np.cos(a), np.sin(a)], 1) * np.where(np.arange(10) % 2, 0.45 * r, r)[:, None]
    else:  # cross (plus sign), arm half-width 0.3 r
        t = 0.3 * r
        pts = np.array([[-t, -r], [t, -r], [t, -t], [r, -t], [r, t], [t, t], [t, r], [-t, r], [-t, t],
                        [-r, t], [-r, -t], [-t, -t]], np.float64)
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _ioa(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Fraction of each xyxy box in ``others`` [n, 4] covered by ``box`` [4]."""
    iw = (np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])).clip(0)
    ih = (np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])).clip(0)
    return iw * ih / ((others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]))


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> list[int]:
    """A random RGB colour far (> 120 in RGB distance) from the background's mean colour."""
    mean = background.reshape(-1, 3).mean(0)
    for _ in range(50):
        colour = rng.integers(0, 256, 3)
        if np.linalg.norm(colour - mean) > 120:
            break
    return colour.tolist()


def draw_image(rng: np.random.Generator, spec: ShapesSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample: RGB uint8 [h, w, 3], classes int [n], boxes float [n, 4] xyxy pixels."""
    h, w = (int(v) for v in rng.integers(spec.min_side, spec.max_side + 1, 2))
    img = _background(rng, h, w)
    sizes = np.sort(rng.uniform(spec.min_object, spec.max_object, rng.integers(1, spec.max_objects + 1)))[::-1]
    classes, boxes = [], np.zeros((0, 4))
    for size in sizes:  # largest first, so later (smaller) shapes are drawn on top, fully visible
        cls = int(rng.integers(len(CLASSES)))
        pts = None if cls == 0 else _polygon(cls, size, rng.uniform(0, 2 * np.pi))
        lo, hi = (-size / 2, size / 2) if pts is None else (pts.min(0), pts.max(0))
        lo, hi = np.broadcast_to(lo, 2), np.broadcast_to(hi, 2)
        for _ in range(20):
            centre = rng.uniform(-lo + 1, np.array([w, h]) - hi - 1)
            box = np.concatenate([centre + lo, centre + hi])
            if len(boxes) == 0 or _ioa(box, boxes).max() <= spec.max_ioa:
                break
        else:
            continue
        colour = _contrasting_colour(rng, img[int(box[1]):int(box[3]) + 1, int(box[0]):int(box[2]) + 1])
        if pts is None:
            cv2.circle(img, tuple(int(round(v)) for v in centre), int(round(size / 2)), colour, -1, cv2.LINE_AA)
        else:
            cv2.fillPoly(img, [np.round(centre + pts).astype(np.int32)], colour, cv2.LINE_AA)
        classes.append(cls)
        boxes = np.concatenate([boxes, box[None]])
    return img, np.array(classes, np.int64), boxes


def _write_split(root: Path, split: str, count: int, split_index: int, spec: ShapesSpec) -> None:
    """Write images, YOLO labels and the COCO json of one split under ``root``."""
    for sub in ("images", "labels"):
        (root / sub / split).mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [],
            "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)]}
    for i in range(1, count + 1):
        img, classes, boxes = draw_image(np.random.default_rng([spec.seed, split_index, i]), spec)
        h, w = img.shape[:2]
        name = f"{i:06d}"
        cv2.imwrite(str(root / "images" / split / f"{name}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality])
        rows = [f"{c} {(b[0] + b[2]) / 2 / w:.6f} {(b[1] + b[3]) / 2 / h:.6f} {(b[2] - b[0]) / w:.6f} "
                f"{(b[3] - b[1]) / h:.6f}" for c, b in zip(classes, boxes, strict=False)]
        (root / "labels" / split / f"{name}.txt").write_text("".join(r + "\n" for r in rows))
        coco["images"].append({"id": i, "file_name": f"{name}.jpg", "width": w, "height": h})
        for c, b in zip(classes, boxes, strict=False):
            bw, bh = float(b[2] - b[0]), float(b[3] - b[1])
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i, "category_id": int(c) + 1,
                                        "bbox": [float(b[0]), float(b[1]), bw, bh], "area": bw * bh, "iscrowd": 0})
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


def ensure_shapes(root: str | Path, spec: ShapesSpec = ShapesSpec()) -> Path:
    """Generate the shapes set into ``root`` unless a complete copy with the same spec is there.

    Writes into a temporary sibling folder and renames it, so an interrupted or concurrent
    generation (several DDP ranks) never leaves a half-written set behind. Returns ``root``.
    """
    root = Path(root)
    params = json.dumps(dataclasses.asdict(spec), sort_keys=True)
    marker = root / ".complete.json"
    if marker.is_file() and marker.read_text() == params:
        return root
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for split_index, (split, count) in enumerate(spec.splits):
        _write_split(tmp, split, count, split_index, spec)
    (tmp / ".complete.json").write_text(params)
    if marker.is_file() and marker.read_text() == params:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        return root
    shutil.rmtree(root, ignore_errors=True)
    try:
        tmp.rename(root)
    except OSError:  # lost a race to another process's rename
        shutil.rmtree(tmp, ignore_errors=True)
    return root
