"""Evaluate a detector with YOLOv7 test.py's flags, or score any detector's COCO results file:

    python val.py --weights runs/train/exp/weights/best.pt --data shapes --img-size 320
    python val.py --weights best.pt --data coco.yaml --save-json     # also runs pycocotools
    python val.py --gt instances_val2017.json --dt results.json --json  # fast pycocotools drop-in

The work happens in engine.val.run (which uses engine.val.evaluator, the evaluation the trainer
calls each epoch); this file only parses the command line.
"""

from __future__ import annotations

import argparse
import json
import sys

from engine.val.report import format_stats
from engine.val.run import ValOptions, evaluate_files, run_val
from utils.errors import UserError, command_main


def build_parser() -> argparse.ArgumentParser:
    """The command line; defaults come from ValOptions."""
    d = ValOptions()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=d.weights, help="checkpoint (.pt) to evaluate")
    p.add_argument("--data", default=d.data, help="data-set YAML or built-in name (default: shapes)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--img-size", "--img", type=int, default=d.img_size, help="inference size (pixels)")
    p.add_argument("--conf-thres", type=float, default=d.conf_thres, help="object confidence threshold")
    p.add_argument("--iou-thres", type=float, default=d.iou_thres, help="IoU threshold for NMS")
    p.add_argument("--task", default=d.task, choices=["val", "test", "speed"])
    p.add_argument("--device", default=d.device, help="'' (cuda if available, else cpu), cpu, 0, ...")
    p.add_argument("--single-cls", action="store_true", help="treat every class as one")
    p.add_argument("--augment", action="store_true", help="test-time augmentation (flips and scales)")
    p.add_argument("--verbose", action="store_true", help="per-class table")
    p.add_argument("--save-txt", action="store_true", help="save detections as YOLO label files")
    p.add_argument("--save-conf", action="store_true", help="add the score to --save-txt labels")
    p.add_argument("--save-json", action="store_true", help="save a COCO results json (and check it with pycocotools)")
    p.add_argument("--project", default=d.project)
    p.add_argument("--name", default=d.name)
    p.add_argument("--exist-ok", action="store_true", help="reuse project/name instead of incrementing it")
    p.add_argument("--workers", type=int, default=d.workers, help="data-loader workers")
    p.add_argument("--gt", help="COCO ground-truth json (with --dt: score a results file, no model)")
    p.add_argument("--dt", help="COCO results json to score against --gt")
    p.add_argument("--json", action="store_true", help="print one JSON object with the numbers as the last line")
    return p


@command_main("val.py")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.gt or args.dt:
        if not (args.gt and args.dt):
            raise UserError("--gt and --dt go together", what="--gt/--dt")
        stats, seconds = evaluate_files(args.gt, args.dt, args.device)
        print(format_stats(stats))
        print(f"COCO metric: {seconds:.3f} s")
        result = stats
    else:
        if not args.weights:
            raise UserError("give --weights (a checkpoint) or --gt/--dt (json files)", what="--weights")
        fields = {k: v for k, v in vars(args).items() if k not in ("gt", "dt", "json")}
        result = run_val(ValOptions(**fields))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
