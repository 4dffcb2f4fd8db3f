"""Detect objects in images, folders, globs, .txt lists, videos, webcams or streams.

    python detect.py                                       # shapes val images, newest trained checkpoint
    python detect.py --weights best.pt --source img/ --save-txt --save-json
    python detect.py --weights best.onnx --source clip.mp4 --classes 0 2
    python detect.py --weights best.pt --source 0          # webcam 0 (OpenCV)
    python detect.py --weights best.pt --source clip.mp4 --track --save-txt   # rows: class cx cy w h [score] id
    python detect.py --weights best.pt --source big.jpg --tile 640            # sliced inference

Results go to runs/detect/exp<N>. The work happens in engine.detect.run (and the Python API in
engine.detect.predictor); this file only parses the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from utils.cpu import shorten_openmp_spin

if __name__ == "__main__":  # run as the command, not imported: before the imports below load torch
    shorten_openmp_spin()

from engine.detect.run import DetectOptions, run_detect  # noqa: E402
from utils import cli  # noqa: E402
from utils.errors import UserError, command_main  # noqa: E402

TRAIN_RUNS = Path("runs/train")


def build_parser() -> argparse.ArgumentParser:
    """The command line, derived from DetectOptions' field declarations."""
    return cli.build_parser(DetectOptions, __doc__)


def newest_checkpoint(runs: Path = TRAIN_RUNS) -> Path | None:
    """The most recently written runs/train/*/weights/best.pt, else last.pt, or None."""
    for name in ("best.pt", "last.pt"):
        found = sorted(runs.glob(f"*/weights/{name}"), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    return None


def default_source() -> str:
    """The val images of the built-in shapes set (generated on first use)."""
    from data.config import load_data_config  # local: only the no-argument run needs the data set

    return str(load_data_config("shapes").split("val")[0])


@command_main("detect.py")
def main(argv: list[str] | None = None) -> int:
    opt = cli.namespace_to(DetectOptions, build_parser().parse_args(argv))
    weights = opt.weights
    if not weights:
        found = newest_checkpoint()
        if found is None:
            raise UserError(f"none given and no trained checkpoint under {TRAIN_RUNS}/*/weights/. Train one first "
                            "(python train.py trains yolov7-tiny on the built-in shapes set) or pass --weights FILE",
                            what="--weights")
        weights = str(found)
        print(f"using weights {weights}")
    opt = dataclasses.replace(opt, weights=weights, source=opt.source or default_source())
    summary = run_detect(opt)  # UserErrors (backend, source, config) become one line in command_main
    skipped = f", {len(summary['skipped'])} skipped" if summary["skipped"] else ""
    print(f"{summary['images']} images, {summary['detections']} detections{skipped}, "
          f"{summary['ms_per_image']} ms per image. Results saved to {summary['save_dir']}")
    if opt.json:
        print(json.dumps(summary))
    if summary["images"] == 0:
        print("detect.py: no image could be read", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
