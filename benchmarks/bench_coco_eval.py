"""Time our COCO metric (utils/coco_eval.py) against pycocotools (and faster-coco-eval if installed).

    python benchmarks/bench_coco_eval.py [--images 5000] [--dets 100] [--classes 80] [--json]

A synthetic data set: per image a few ground-truth boxes (some crowd) and ``--dets``
detections (jittered copies of the gts plus random boxes). Each library gets the same
in-memory data and is timed from its own input form to the 12 numbers (for pycocotools:
loadRes + evaluate + accumulate + summarize; for ours: the tensors already built, as the
evaluator holds them). Prints the times, the speed-up and the largest difference of the 12.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.coco_eval import DatasetDetections, GroundTruth, coco_evaluate  # noqa: E402


def make_dataset(images: int, dets: int, classes: int, seed: int) -> tuple[dict, list[dict]]:
    """COCO gt dict and results list: ~7 gts per image (3% crowd), ``dets`` detections each."""
    rng = np.random.default_rng(seed)
    anns, results = [], []
    for img in range(1, images + 1):
        n_gt = int(rng.integers(1, 15))
        wh = np.exp(rng.uniform(np.log(4), np.log(600), (n_gt, 2)))
        xy = rng.uniform(0, 1, (n_gt, 2)) * (640 - wh)
        gts = np.concatenate([xy, wh], 1)
        g_cls = rng.integers(1, classes + 1, n_gt)
        for box, c in zip(gts, g_cls, strict=True):
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": int(c), "bbox": box.tolist(),
                         "area": float(box[2] * box[3]), "iscrowd": int(rng.random() < 0.03)})
        src = rng.integers(0, n_gt, dets)
        boxes = gts[src].copy()
        boxes[:, :2] += rng.normal(0, 0.1, (dets, 2)) * boxes[:, 2:]
        boxes[:, 2:] *= np.exp(rng.normal(0, 0.15, (dets, 2)))
        cls = np.where(rng.random(dets) < 0.7, g_cls[src], rng.integers(1, classes + 1, dets))
        scores = rng.random(dets)
        for box, c, s in zip(boxes, cls, scores, strict=True):
            results.append({"image_id": img, "category_id": int(c), "bbox": box.tolist(), "score": float(s)})
    gt = {
        "images": [{"id": i, "width": 640, "height": 640} for i in range(1, images + 1)],
        "annotations": anns,
        "categories": [{"id": c, "name": str(c)} for c in range(1, classes + 1)],
    }
    return gt, results


def run_ours(gt: dict, results: list[dict], device: str) -> tuple[np.ndarray, float]:
    """Our 12 numbers and the seconds from tensors (on ``device``) to stats."""
    a = gt["annotations"]
    g = GroundTruth(
        torch.tensor([x["image_id"] for x in a], device=device),
        torch.tensor([x["category_id"] - 1 for x in a], device=device),
        torch.tensor([x["bbox"] for x in a], dtype=torch.float64, device=device),
        torch.tensor([x["area"] for x in a], dtype=torch.float64, device=device),
        torch.tensor([bool(x["iscrowd"]) for x in a], device=device),
    )
    d = DatasetDetections(
        torch.tensor([x["image_id"] for x in results], device=device),
        torch.tensor([x["category_id"] - 1 for x in results], device=device),
        torch.tensor([x["bbox"] for x in results], dtype=torch.float64, device=device),
        torch.tensor([x["score"] for x in results], dtype=torch.float64, device=device),
    )
    num_classes = len(gt["categories"])
    coco_evaluate(g, d, num_classes)  # warm-up (allocator, kernels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    stats = coco_evaluate(g, d, num_classes).stats.cpu().numpy()
    return stats, time.perf_counter() - start


def run_cocoeval(module: str, gt: dict, results: list[dict]) -> tuple[np.ndarray, float]:
    """pycocotools-compatible library ``module``'s 12 numbers and seconds (loadRes to summarize)."""
    if module == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        res = copy.deepcopy(results)
        start = time.perf_counter()
        ev = COCOeval(coco, coco.loadRes(res), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        seconds = time.perf_counter() - start
    return np.asarray(ev.stats[:12], dtype=np.float64), seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--dets", type=int, default=100, help="detections per image")
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--libraries", nargs="+", default=["pycocotools", "faster_coco_eval"],
                   choices=["pycocotools", "faster_coco_eval"], help="references to time (when installed)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    gt, results = make_dataset(args.images, args.dets, args.classes, args.seed)
    out: dict = {"images": args.images, "detections": len(results), "classes": args.classes,
                 "device": args.device, "torch_threads": torch.get_num_threads()}
    ours, out["ours_s"] = run_ours(gt, results, args.device)
    print(f"ours ({args.device}, {torch.get_num_threads()} threads): {out['ours_s']:.3f} s")
    for module in args.libraries:
        try:
            __import__(module)
        except ImportError:
            print(f"{module}: not installed, skipped")
            continue
        stats, seconds = run_cocoeval(module, gt, results)
        out[f"{module}_s"] = seconds
        out[f"{module}_speedup"] = seconds / out["ours_s"]
        out[f"{module}_max_abs_diff"] = float(np.abs(stats - ours).max())
        print(f"{module}: {seconds:.3f} s, ours is {seconds / out['ours_s']:.1f}x faster, "
              f"largest difference of the 12 numbers {out[f'{module}_max_abs_diff']:.2e}")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
