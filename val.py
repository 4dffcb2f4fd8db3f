"""Evaluate a detector with YOLOv7 test.py's flags, or score any detector's COCO results file:

    python val.py --weights runs/train/exp/weights/best.pt --data shapes --img-size 320
    python val.py --weights best.pt --data coco.yaml --save-json     # also runs pycocotools
    python val.py --gt instances_val2017.json --dt results.json --json  # fast pycocotools drop-in
    python val.py --weights best.pt --task study     # mAP and speed at sizes 256..1536 (YOLOv7's study)

The work happens in engine.val.run (which uses engine.val.evaluator, the evaluation the trainer
calls each epoch); this file only parses the command line.
"""

from __future__ import annotations

import argparse
import json
import sys

from utils.cpu import shorten_openmp_spin

if __name__ == "__main__":  # run as the command, not imported: before the imports below load torch
    shorten_openmp_spin()

from engine.val.report import format_stats  # noqa: E402
from engine.val.run import ValOptions, evaluate_files, run_study, run_val  # noqa: E402
from utils import cli  # noqa: E402
from utils.errors import UserError, command_main  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command line, derived from ValOptions' field declarations."""
    return cli.build_parser(ValOptions, __doc__)


@command_main("val.py")
def main(argv: list[str] | None = None) -> int:
    opt = cli.namespace_to(ValOptions, build_parser().parse_args(argv))
    if opt.gt or opt.dt:
        if not (opt.gt and opt.dt):
            raise UserError("--gt and --dt go together", what="--gt/--dt")
        stats, seconds = evaluate_files(opt.gt, opt.dt, opt.device)
        print(format_stats(stats))
        print(f"COCO metric: {seconds:.3f} s")
        result = stats
    else:
        if not opt.weights:
            raise UserError("give --weights (a checkpoint) or --gt/--dt (json files)", what="--weights")
        result = run_study(opt) if opt.task == "study" else run_val(opt)
    if opt.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
