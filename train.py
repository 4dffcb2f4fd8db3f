"""Train a detector: ``python train.py`` (built-in shapes set) or YOLOv7's flags, e.g.

    python train.py --data coco.yaml --cfg yolov7.yaml --hyp cfg/hyp/hyp.scratch.p5.yaml --epochs 300
    python train.py --resume                   # continue the newest runs/train/*/weights/last.pt
    python train.py lr0=0.02 mosaic=0.5        # key=value overrides of the hyper-parameters
    torchrun --nproc_per_node 2 train.py --batch-size 32 --device 0,1   # DDP (gloo on CPU)

The work happens in engine.train.loop.train; this file only parses the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from engine.train.options import DEFAULT_CFG, TrainOptions
from utils.config import Hyp
from utils.errors import command_main


def build_parser() -> argparse.ArgumentParser:
    """The command line; defaults come from TrainOptions."""
    d = TrainOptions()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="hyper-parameter overrides, e.g. lr0=0.02")
    p.add_argument("--weights", default=d.weights, help="checkpoint to fine-tune from ('' = from scratch)")
    p.add_argument("--cfg", default=d.cfg, help=f"model YAML (default: --weights' model, else {DEFAULT_CFG})")
    p.add_argument("--data", default=d.data, help="data-set YAML or built-in name (default: shapes)")
    p.add_argument("--hyp", default=d.hyp, help="hyper-parameter YAML")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="total batch size over all processes")
    p.add_argument("--img-size", "--img", nargs="+", type=int, default=d.img_size, help="train [val] image size")
    p.add_argument("--rect", action="store_true", help="rectangular training batches (no mosaic)")
    p.add_argument("--resume", nargs="?", const="last", default=d.resume, help="resume the newest last.pt, or PATH")
    p.add_argument("--nosave", action="store_true", help="save only the final checkpoint")
    p.add_argument("--notest", action="store_true", help="validate only after the final epoch")
    p.add_argument("--noautoanchor", action="store_true", help="keep the config's anchors")
    p.add_argument("--cache-images", nargs="?", const="ram", default=d.cache_images, choices=["", "ram", "disk"])
    p.add_argument("--image-weights", action="store_true",
                   help="draw images by their classes' (1 - mAP@.5)^2 / frequency (one process)")
    p.add_argument("--device", default=d.device, help="'' (auto), cpu, 0, 0,1,2,3 or mps")
    p.add_argument("--multi-scale", action="store_true", help="vary the image size +/- 50%% per batch")
    p.add_argument("--single-cls", action="store_true", help="train every class as one")
    p.add_argument("--optimizer", default=d.optimizer, choices=["SGD", "Adam", "AdamW"])
    p.add_argument("--adam", dest="optimizer", action="store_const", const="Adam", help="same as --optimizer Adam")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP (CUDA)")
    p.add_argument("--workers", type=int, default=d.workers, help="data-loader workers per process")
    p.add_argument("--project", default=d.project)
    p.add_argument("--name", default=d.name)
    p.add_argument("--exist-ok", action="store_true", help="reuse project/name instead of incrementing")
    p.add_argument("--linear-lr", action="store_true", help="linear instead of cosine learning-rate decay")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--save-period", type=int, default=d.save_period, help="also save epoch<N>.pt every N epochs")
    p.add_argument("--freeze", nargs="+", type=int, default=d.freeze, help="first N layers, or layer indices")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower; exact reruns)")
    p.add_argument("--patience", type=int, default=d.patience, help="stop after this many epochs without gain")
    p.add_argument("--close-mosaic", type=int, default=d.close_mosaic, help="no mosaic in the last N epochs")
    p.add_argument("--json", action="store_true", help="print the final summary as one JSON object")
    return p


def parse_options(argv: list[str] | None = None) -> TrainOptions:
    """TrainOptions from the command line; ``key=value`` hyper-parameter overrides may stand
    anywhere (even after multi-value flags like --img-size, which would otherwise swallow them)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    keys = {f.name for f in dataclasses.fields(Hyp)}
    is_override = [not a.startswith("-") and a.split("=", 1)[0] in keys and "=" in a for a in argv]
    args = build_parser().parse_args([a for a, o in zip(argv, is_override, strict=True) if not o])
    args.overrides = [a for a, o in zip(argv, is_override, strict=True) if o] + args.overrides
    return TrainOptions(**vars(args))


@command_main("train.py")
def main(argv: list[str] | None = None) -> int:
    opt = parse_options(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from engine.train.loop import train  # imported here so --help stays fast

    summary = train(opt)
    if opt.json and summary:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
