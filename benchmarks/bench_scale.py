"""Start-up and memory of the data pipeline at COCO's size (train2017: 118,287 images, 860,001 polygons).

    python benchmarks/bench_scale.py [--scale 1.0] [--cache-dir DIR] [--data YAML] [--json]

Without ``--data`` it generates, once (kept under ``--cache-dir``, default
``$ELAN_YOLO_DATASETS/bench_scale``), a YOLO set with train2017's and val2017's image and object
counts times ``--scale``: 80 classes, every object a polygon row of 8-40 vertices (yolov7's
coco2017labels-segments form), images as hard links to a few tiny JPEGs, listed in .txt files as
yolov7's coco.yaml lists them. Each measurement runs in a fresh process so that its peak memory
is its own:

- first start: no label cache; scan, cache write, dataset, first training batch (seconds);
- second start: the same with the cache (seconds, and the main process's CPU seconds, which a
  busy machine inflates less), the cache's size on disk, the process's peak and settled (after
  the first batch) resident memory;
- worker copy: a process forked as a loader worker is (after the second start) touches every
  sample's ``labels``, ``crowd`` and ``segments``; the growth of its ``Private_Dirty``
  (/proc/self/smaps_rollup) is the memory that each worker holds as its own copy;
- evaluation: the val split's ground truth and 100 detections per image through the evaluator's
  scoring (engine.val.evaluator, utils.coco_eval): seconds and peak memory above the baseline.

With ``--json`` the last line is one JSON object of these numbers.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRAIN2017 = (118_287, 860_001)  # images, objects (yolov7's coco2017labels-segments)
VAL2017 = (5_000, 36_781)
NC = 80
VERTICES = (8, 40)
TEMPLATE_SIZES = ((32, 32), (24, 32), (32, 24), (30, 40))  # (h, w) of the JPEGs the images link to
DETECTIONS_PER_IMAGE = 100
MB = 2**20


def _object_counts(images: int, objects: int, rng: np.random.Generator) -> np.ndarray:
    """Objects per image, Poisson-like, summing to exactly ``objects`` (a few images stay empty)."""
    counts = rng.poisson(objects / images, images)
    while (diff := objects - int(counts.sum())) != 0:
        pick = rng.integers(0, images, abs(diff))
        np.add.at(counts, pick, np.sign(diff))
        counts = counts.clip(0)
    return counts


def _polygon_rows(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` label rows ``cls x1 y1 ... xk yk``: star-shaped polygons of 8-40 vertices inside the image."""
    rows = []
    for _ in range(n):
        k = int(rng.integers(VERTICES[0], VERTICES[1] + 1))
        radius = float(np.exp(rng.uniform(np.log(0.01), np.log(0.3))))
        centre = rng.uniform(radius, 1 - radius, 2)
        angle = np.sort(rng.uniform(0, 2 * np.pi, k))
        r = radius * rng.uniform(0.6, 1.0, k)
        xy = np.stack([centre[0] + r * np.cos(angle), centre[1] + r * np.sin(angle)], 1).clip(0, 1)
        rows.append(f"{int(rng.integers(0, NC))} " + " ".join(f"{v:.6f}" for v in xy.ravel()))
    return rows


def _write_split(root: Path, split: str, images: int, objects: int, templates: list[Path], seed: int) -> None:
    rng = np.random.default_rng(seed)
    image_dir, label_dir = root / "images" / split, root / "labels" / split
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    names = []
    for i, n in enumerate(_object_counts(images, objects, rng)):
        name = f"{i + 1:012d}"
        os.link(templates[i % len(templates)], image_dir / f"{name}.jpg")
        (label_dir / f"{name}.txt").write_text("".join(row + "\n" for row in _polygon_rows(int(n), rng)))
        names.append(f"./images/{split}/{name}.jpg")
    (root / f"{split}.txt").write_text("\n".join(names) + "\n")


def generate(root: Path, scale: float) -> Path:
    """The COCO-sized set at ``root`` (made once; a complete copy is marked by ``spec.json``)."""
    splits = {"train2017": [round(n * scale) for n in TRAIN2017], "val2017": [round(n * scale) for n in VAL2017]}
    spec = {"splits": splits, "vertices": list(VERTICES), "version": 1}
    if (root / "spec.json").is_file() and json.loads((root / "spec.json").read_text()) == spec:
        return root
    import cv2

    tmp = root.with_name(root.name + f".{os.getpid()}.tmp")
    (tmp / "templates").mkdir(parents=True)
    templates = []
    for h, w in TEMPLATE_SIZES:
        path = tmp / "templates" / f"{h}x{w}.jpg"
        cv2.imwrite(str(path), np.random.default_rng(h * w).integers(0, 255, (h, w, 3), dtype=np.uint8))
        templates.append(path)
    start = time.perf_counter()
    for seed, (split, (images, objects)) in enumerate(splits.items()):
        print(f"generating {split}: {images} images, {objects} polygons", file=sys.stderr)
        _write_split(tmp, split, images, objects, templates, seed)
    (tmp / "spec.json").write_text(json.dumps(spec))
    if root.exists():
        subprocess.run(["rm", "-rf", str(root)], check=True)
    tmp.rename(root)
    print(f"generated {root} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return root


# ---- measurements, each in its own process -----------------------------------------------------

def _status_mb(key: str, path: str = "/proc/self/status") -> float:
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024 / MB
    raise KeyError(key)


def _reset_peak() -> None:
    """Start VmHWM (peak resident memory) afresh from the current resident size (Linux)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _worker_copy_mb(dataset) -> float:
    """MB a forked process (as a loader worker) copies when it touches every sample's labels."""
    gc.collect()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        os.close(read)
        before = _status_mb("Private_Dirty", "/proc/self/smaps_rollup")
        rows = 0
        for i in range(len(dataset)):
            labels, crowd, segments = dataset.labels[i], dataset.crowd[i], dataset.segments[i]
            rows += len(labels) + len(crowd) + sum(len(s) for s in segments)
        after = _status_mb("Private_Dirty", "/proc/self/smaps_rollup")
        os.write(write, json.dumps(after - before).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        copied = json.loads(f.read())
    os.waitpid(pid, 0)
    return copied


def phase_start(args: dict) -> dict:
    """Build the training loader and take its first batch; time, memory, cache size."""
    from data import build_dataloader
    from utils.config import Hyp

    baseline = _status_mb("VmRSS")
    _reset_peak()
    start, cpu = time.perf_counter(), time.process_time()
    loader, dataset = build_dataloader([Path(s) for s in args["sources"]], args["nc"], img_size=args["img"],
                                       batch_size=args["batch"], hyp=Hyp(), augment=True, shuffle=True,
                                       workers=args["workers"], cache_path=Path(args["cache"]))
    built = time.perf_counter() - start
    next(iter(loader))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    gc.collect()
    out = {"seconds": seconds, "cpu_seconds": cpu, "dataset_seconds": built, "images": len(dataset),
           "objects": int(sum(len(x) for x in dataset.labels)),
           "peak_rss_mb": _status_mb("VmHWM"), "settled_rss_mb": _status_mb("VmRSS"), "baseline_rss_mb": baseline,
           "cache_mb": Path(args["cache"]).stat().st_size / MB}
    if args.get("fork_probe"):
        out["worker_copy_mb"] = _worker_copy_mb(dataset)
    return out


def phase_eval(args: dict) -> dict:
    """The val split's ground truth and 100 detections per image through the evaluator's scoring."""
    import torch

    from data import build_dataloader
    from engine.val.evaluator import _Predictions, _score

    _, dataset = build_dataloader([Path(s) for s in args["sources"]], args["nc"], img_size=args["img"],
                                  rect=True, cache_path=Path(args["cache"]))
    rng = np.random.default_rng(0)
    detections = []
    for i in range(len(dataset)):
        w0, h0 = dataset.shapes[i]
        lab = np.asarray(dataset.labels[i], np.float64).reshape(-1, 5)
        xyxy = np.concatenate([lab[:, 1:3] - lab[:, 3:5] / 2, lab[:, 1:3] + lab[:, 3:5] / 2], 1) * [w0, h0, w0, h0]
        src = rng.integers(0, max(len(lab), 1), DETECTIONS_PER_IMAGE)
        boxes = xyxy[src] if len(lab) else rng.uniform(0, min(w0, h0), (DETECTIONS_PER_IMAGE, 4))
        boxes = boxes + rng.normal(0, 1.0, boxes.shape)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 0.5)
        cls = np.where(rng.random(DETECTIONS_PER_IMAGE) < 0.7, lab[src, 0] if len(lab) else 0,
                       rng.integers(0, args["nc"], DETECTIONS_PER_IMAGE))
        rows = np.concatenate([boxes, rng.random((DETECTIONS_PER_IMAGE, 1)), cls[:, None]], 1)
        detections.append(torch.from_numpy(rows).float())
    run = _Predictions(detections, list(range(len(dataset))), torch.zeros(3), np.zeros(3), torch.device("cpu"))
    gc.collect()
    baseline = _status_mb("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    result = _score(run, dataset, nc=args["nc"], single_cls=False, ground_truth=None, n_batches=1)
    return {"seconds": time.perf_counter() - start, "peak_above_baseline_mb": _status_mb("VmHWM") - baseline,
            "images": len(dataset), "detections": len(dataset) * DETECTIONS_PER_IMAGE,
            "AP50": result.metrics["AP50"]}


PHASES = {"start": phase_start, "eval": phase_eval}


def _run_phase(name: str, args: dict) -> dict:
    """Run phase ``name`` in a fresh interpreter; its last stdout line is its JSON result."""
    proc = subprocess.run([sys.executable, __file__, "--phase", name, "--phase-args", json.dumps(args)],
                          stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sources(args: argparse.Namespace) -> tuple[list[str], list[str], int, Path]:
    """(train sources, val sources, nc, folder for the label caches) of --data or the generated set."""
    cache_dir = Path(args.cache_dir or os.environ.get("ELAN_YOLO_DATASETS", "datasets")) / "bench_scale"
    if args.data:
        from data import load_data_config

        cfg = load_data_config(args.data)
        return [str(s) for s in cfg.train], [str(s) for s in cfg.val], cfg.nc, cache_dir / f"label-cache-{cfg.root.name}"
    root = generate(cache_dir / f"coco-size-{args.scale:g}", args.scale)
    return [str(root / "train2017.txt")], [str(root / "val2017.txt")], NC, root / "label-cache"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of COCO's image and object counts")
    parser.add_argument("--cache-dir", help="where the generated set and the label caches go "
                        "(default $ELAN_YOLO_DATASETS/bench_scale)")
    parser.add_argument("--data", help="a data-set YAML to measure instead of the generated set")
    parser.add_argument("--img", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="loader workers of the start measurements")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--phase-args", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](json.loads(args.phase_args))))
        return
    train, val, nc, cache_dir = _sources(args)
    cache_dir.mkdir(parents=True, exist_ok=True)
    common = {"nc": nc, "img": args.img, "batch": args.batch, "workers": args.workers}
    train_args = {**common, "sources": train, "cache": str(cache_dir / "train.cache")}
    val_args = {**common, "sources": val, "cache": str(cache_dir / "val.cache")}
    for path in (train_args["cache"], val_args["cache"]):
        Path(path).unlink(missing_ok=True)
    first = _run_phase("start", train_args)
    second = _run_phase("start", {**train_args, "fork_probe": True})
    _run_phase("start", val_args)  # the val split's cache, so that the evaluation measures only itself
    evaluation = _run_phase("eval", val_args)
    result = {
        "images": second["images"], "objects": second["objects"], "scale": None if args.data else args.scale,
        "first_start_s": round(first["seconds"], 2), "second_start_s": round(second["seconds"], 2),
        "second_start_cpu_s": round(second["cpu_seconds"], 2),
        "cache_mb": round(second["cache_mb"], 1),
        "first_start_peak_rss_mb": round(first["peak_rss_mb"]), "peak_rss_mb": round(second["peak_rss_mb"]),
        "settled_rss_mb": round(second["settled_rss_mb"]), "baseline_rss_mb": round(second["baseline_rss_mb"]),
        "worker_copy_mb": round(second["worker_copy_mb"], 1),
        "eval_images": evaluation["images"], "eval_s": round(evaluation["seconds"], 2),
        "eval_peak_mb": round(evaluation["peak_above_baseline_mb"]),
    }
    for key, value in result.items():
        print(f"{key:>24}: {value}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
