"""Train a detector: ``python train.py`` (built-in shapes set) or YOLOv7's flags, e.g.

    python train.py --data coco.yaml --cfg yolov7.yaml --hyp cfg/hyp/hyp.scratch.p5.yaml --epochs 300
    python train.py --resume                   # continue the newest runs/train/*/weights/last.pt
    python train.py lr0=0.02 mosaic=0.5        # key=value overrides of the hyper-parameters
    python train.py --evolve 20 --epochs 3     # 20 Optuna trials; hyp_evolved.yaml in runs/evolve/exp
    torchrun --nproc_per_node 2 train.py --batch-size 32 --device 0,1   # DDP (gloo on CPU)
    python -m torch.distributed.launch --nproc_per_node 2 train.py ...  # YOLOv7's way; same DDP
    python train.py --logger mlflow --logger wandb   # also track in MLflow / W&B (when installed)

The work happens in engine.train.loop.train; this file only parses the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

from utils.cpu import shorten_openmp_spin

if __name__ == "__main__":  # run as the command, not imported: before the imports below load torch
    shorten_openmp_spin()

from engine.train.options import TrainOptions  # noqa: E402
from utils import cli  # noqa: E402
from utils.config import Hyp  # noqa: E402
from utils.errors import command_main  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command line, derived from TrainOptions' field declarations."""
    return cli.build_parser(TrainOptions, __doc__)


def parse_options(argv: list[str] | None = None) -> TrainOptions:
    """TrainOptions from the command line; ``key=value`` hyper-parameter overrides may stand
    anywhere (even after multi-value flags like --img-size, which would otherwise swallow them)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    keys = {f.name for f in dataclasses.fields(Hyp)}
    is_override = [not a.startswith("-") and a.split("=", 1)[0] in keys and "=" in a for a in argv]
    args = build_parser().parse_args([a for a, o in zip(argv, is_override, strict=True) if not o])
    args.overrides = [a for a, o in zip(argv, is_override, strict=True) if o] + args.overrides
    return cli.namespace_to(TrainOptions, args)


@command_main("train.py")
def main(argv: list[str] | None = None) -> int:
    opt = parse_options(argv)
    if opt.local_rank >= 0:  # python -m torch.distributed.launch passes it (torchrun: LOCAL_RANK only)
        os.environ.setdefault("LOCAL_RANK", str(opt.local_rank))
        opt = dataclasses.replace(opt, local_rank=-1)  # the environment holds it; runs store no rank
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if opt.evolve:
        from engine.evolve import evolve  # imported here so --help stays fast

        summary = evolve(opt)
    else:
        from engine.train import train

        summary = train(opt)
    if opt.json and summary:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
