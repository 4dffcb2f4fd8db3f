"""Evaluate a detector: ``python val.py --weights W.pt --data D.yaml`` (YOLOv7 test.py flags), or
score any detector's COCO results file: ``python val.py --gt GT.json --dt DT.json [--json]``."""

from __future__ import annotations

import argparse
import json
import sys
import time

from utils.coco_eval import STAT_NAMES, coco_evaluate
from utils.coco_json import CocoJsonError, load_detections, load_ground_truth

_STAT_LABELS = (
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.75      | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
)


def format_stats(stats: dict[str, float], other: dict[str, float] | None = None, other_name: str = "") -> str:
    """pycocotools' summary lines; with ``other``, a second column (e.g. pycocotools' own)."""
    head = f" {'':71} {'ours':>7}" + (f" {other_name:>11}" if other else "")
    lines = [head] if other else []
    for name, label in zip(STAT_NAMES, _STAT_LABELS):
        line = f" {label} = {stats[name]:0.3f}" if not other else f" {label} {stats[name]:7.4f} {other[name]:11.4f}"
        lines.append(line)
    return "\n".join(lines)


def evaluate_files(gt_path: str, dt_path: str, device: str) -> tuple[dict[str, float], float]:
    """The 12 COCO numbers for a results file against a ground-truth file, and seconds taken
    by the metric itself (reading json excluded)."""
    ref = load_ground_truth(gt_path, device)
    dt = load_detections(dt_path, ref, device)
    start = time.perf_counter()
    result = coco_evaluate(ref.gt, dt, len(ref.category_ids))
    stats = result.as_dict()
    return stats, time.perf_counter() - start


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", help="COCO ground-truth json (with --dt: evaluate a results file, no model)")
    p.add_argument("--dt", help="COCO results json to score against --gt")
    p.add_argument("--device", default="", help="cuda device (0, 0,1, ...) or cpu; default cuda if available")
    p.add_argument("--json", action="store_true", help="print one JSON object with the numbers as the last line")
    return p


def _resolve_device(name: str) -> str:
    import torch

    if not name:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu" if name == "cpu" else f"cuda:{name.split(',')[0]}" if name[0].isdigit() else name


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = _resolve_device(args.device)
    if args.gt or args.dt:
        if not (args.gt and args.dt):
            print("val.py: --gt and --dt go together", file=sys.stderr)
            return 2
        try:
            stats, seconds = evaluate_files(args.gt, args.dt, device)
        except CocoJsonError as e:
            print(f"val.py: {e}", file=sys.stderr)
            return 2
        print(format_stats(stats))
        print(f"COCO metric: {seconds:.3f} s on {device}")
        if args.json:
            print(json.dumps(stats))
        return 0
    print("val.py: give --gt/--dt (model evaluation is not implemented yet)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
