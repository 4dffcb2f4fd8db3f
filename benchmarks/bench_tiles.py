"""Sliced inference (detect.py --tile) against whole-image inference on large images of small objects.

    python benchmarks/bench_tiles.py --weights small.pt                  # evaluate a checkpoint
    python benchmarks/bench_tiles.py --train-epochs 30 --device 0 --json # train one first (a GPU's job)

The set: shapes of 12-24 px on 320 px images (``SMALL``, a variant of the built-in shapes set); the
detector is yolov7-tiny trained on them at 320 (``--train-epochs``), or ``--weights``. Evaluation
images are ``--grid`` x ``--grid`` such images side by side (1280 px for 4 x 4; labels shifted),
detected whole at ``--img`` (objects shrink ``--grid`` times) and with ``--tile`` tiles at the same
``--img`` (objects keep their size). Prints COCO AP50 and AP (utils.coco_eval, pycocotools' numbers)
of both, and the seconds per image.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.shapes import CLASSES, ShapesSpec, draw_image, ensure_shapes  # noqa: E402
from engine.detect import Predictor  # noqa: E402
from utils.coco_eval import coco_evaluate  # noqa: E402
from utils.coco_match import DatasetDetections, GroundTruth  # noqa: E402

SMALL = ShapesSpec(seed=7, splits=(("train", 2000), ("val", 100)), min_side=320, max_side=320, max_objects=5,
                   min_object=12, max_object=24)
EVAL_SEED = 1007  # the large images' shapes are drawn apart from the training set's


def train_small(root: Path, epochs: int, device: str, batch_size: int, images: int) -> Path:
    """yolov7-tiny trained ``epochs`` on ``images`` SMALL images at 320 under ``root``; its best.pt."""
    from engine.train import TrainOptions, train

    spec = dataclasses.replace(SMALL, splits=(("train", images), SMALL.splits[1]))
    data_root = ensure_shapes(root / "shapes_small", spec)
    data = root / "small.yaml"
    data.write_text(yaml.safe_dump({"path": str(data_root), "train": "images/train", "val": "images/val",
                                    "names": list(CLASSES)}))
    summary = train(TrainOptions(data=str(data), cfg="yolov7-tiny.yaml", epochs=epochs, batch_size=batch_size,
                                 img_size=[320, 320], device=device, project=str(root / "runs"), name="small",
                                 exist_ok=True, notest=True))
    return Path(summary["weights"])


def large_images(count: int, grid: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``count`` BGR images of ``grid`` x ``grid`` SMALL images each: (image, classes int64 [n],
    boxes float [n, 4] xyxy pixels)."""
    out = []
    side = SMALL.max_side
    for i in range(count):
        image = np.zeros((grid * side, grid * side, 3), np.uint8)
        classes, boxes = [], []
        for cell in range(grid * grid):
            rgb, cls, box, _ = draw_image(np.random.default_rng([EVAL_SEED, i, cell]), SMALL)
            y, x = divmod(cell, grid)
            image[y * side:(y + 1) * side, x * side:(x + 1) * side] = rgb[..., ::-1]
            classes.append(cls)
            boxes.append(box + [x * side, y * side, x * side, y * side])
        out.append((image, np.concatenate(classes), np.concatenate(boxes)))
    return out


def _xywh(boxes: np.ndarray) -> torch.Tensor:
    b = torch.as_tensor(np.asarray(boxes, np.float64).reshape(-1, 4))
    return torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], 1)


def coco_ap(predictor: Predictor, samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, float]:
    """COCO AP50 / AP of ``predictor`` on ``samples``, and its seconds per image."""
    gt_parts, dt_parts, seconds = [], [], 0.0
    for key, (image, classes, boxes) in enumerate(samples):
        start = time.perf_counter()
        det = predictor.predict([image])[0]
        seconds += time.perf_counter() - start
        gt_parts.append((torch.full((len(classes),), key), torch.as_tensor(classes), _xywh(boxes)))
        dt_parts.append((torch.full((len(det),), key), torch.as_tensor(det.classes), _xywh(det.boxes),
                         torch.as_tensor(det.scores, dtype=torch.float64)))
    image, category, xywh = (torch.cat(t) for t in zip(*gt_parts, strict=True))
    gt = GroundTruth(image, category, xywh, xywh[:, 2] * xywh[:, 3], torch.zeros(len(image), dtype=torch.bool))
    dt = DatasetDetections(*(torch.cat(t) for t in zip(*dt_parts, strict=True)))
    stats = coco_evaluate(gt, dt, len(CLASSES)).as_dict()
    return {"AP50": round(stats["AP50"], 4), "AP": round(stats["AP"], 4),
            "s_per_image": round(seconds / len(samples), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="", help="a checkpoint trained on small shapes (else --train-epochs)")
    parser.add_argument("--train-epochs", type=int, default=0, help="train yolov7-tiny on SMALL first")
    parser.add_argument("--train-images", type=int, default=SMALL.splits[0][1])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--root", default="runs/bench_tiles", help="where the training set and run go")
    parser.add_argument("--device", default="")
    parser.add_argument("--images", type=int, default=20, help="large evaluation images")
    parser.add_argument("--grid", type=int, default=4, help="small images per side of a large one")
    parser.add_argument("--img", type=int, default=320, help="network input size, whole and tiled")
    parser.add_argument("--tile", type=int, default=320)
    parser.add_argument("--tile-overlap", type=float, default=0.2)
    parser.add_argument("--json", action="store_true")
    opt = parser.parse_args(argv)
    weights = opt.weights
    if not weights:
        if opt.train_epochs < 1:
            parser.error("give --weights or --train-epochs N")
        weights = str(train_small(Path(opt.root), opt.train_epochs, opt.device, opt.batch_size,
                                      opt.train_images))
    samples = large_images(opt.images, opt.grid)
    report = {"weights": weights, "images": len(samples), "size": samples[0][0].shape[0],
              "objects": int(sum(len(c) for _, c, _ in samples)), "img": opt.img, "tile": opt.tile}
    whole = Predictor(weights, opt.device, opt.img, conf_thres=0.001, iou_thres=0.65)  # val.py's thresholds
    tiled = Predictor(weights, opt.device, opt.img, conf_thres=0.001, iou_thres=0.65, tile=opt.tile,
                      tile_overlap=opt.tile_overlap)
    report["whole"], report["tiled"] = coco_ap(whole, samples), coco_ap(tiled, samples)
    for name in ("whole", "tiled"):
        print(f"{name:>6}: AP50 {report[name]['AP50']:.4f}  AP {report[name]['AP']:.4f}  "
              f"{report[name]['s_per_image']:.3f} s/image")
    if opt.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    cv2.setNumThreads(1)
    sys.exit(main())
