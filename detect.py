"""Detect objects in images, folders, globs, .txt lists, videos, webcams or streams.

    python detect.py                                       # shapes val images, newest trained checkpoint
    python detect.py --weights best.pt --source img/ --save-txt --save-json
    python detect.py --weights best.onnx --source clip.mp4 --classes 0 2
    python detect.py --weights best.pt --source 0          # webcam 0 (OpenCV)

Results go to runs/detect/exp<N>. The work happens in engine.detect.run (and the Python API in
engine.detect.predictor); this file only parses the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.detect.backends import BackendError
from engine.detect.run import DetectOptions, run_detect
from engine.detect.sources import SourceError
from utils.config import ConfigError
from utils.errors import command_main

TRAIN_RUNS = Path("runs/train")


def build_parser() -> argparse.ArgumentParser:
    d = DetectOptions(weights="", source="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="", help="checkpoint, .onnx or .torchscript (default: newest "
                   "runs/train/*/weights/best.pt or last.pt)")
    p.add_argument("--source", default="", help="image, folder, glob, .txt list, video, webcam index or URL "
                   "(default: the built-in shapes val images)")
    p.add_argument("--img-size", "--img", type=int, default=None,
                   help="inference size, longer side (default: the checkpoint's validation size, else 640)")
    p.add_argument("--conf-thres", type=float, default=d.conf_thres, help="score threshold")
    p.add_argument("--iou-thres", type=float, default=d.iou_thres, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=d.max_det, help="most detections per image")
    p.add_argument("--device", default=d.device, help="'' (auto), cpu, 0 or mps")
    p.add_argument("--classes", nargs="+", type=int, help="keep only these class indices")
    p.add_argument("--agnostic-nms", action="store_true", help="NMS across classes")
    p.add_argument("--augment", action="store_true", help="test-time augmentation (checkpoints only)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per forward (folders, lists)")
    p.add_argument("--save-txt", action="store_true", help="write labels/*.txt (YOLO format)")
    p.add_argument("--save-conf", action="store_true", help="add the score to --save-txt rows")
    p.add_argument("--save-json", action="store_true", help="write detections.json (xyxy original pixels)")
    p.add_argument("--nosave", action="store_true", help="do not write drawn images or videos")
    p.add_argument("--project", default=d.project)
    p.add_argument("--name", default=d.name)
    p.add_argument("--exist-ok", action="store_true", help="reuse project/name instead of incrementing")
    p.add_argument("--line-thickness", type=int, default=None, help="box line width in pixels")
    p.add_argument("--hide-labels", action="store_true", help="draw boxes without labels")
    p.add_argument("--hide-conf", action="store_true", help="draw labels without scores")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object (last line)")
    return p


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
    args = build_parser().parse_args(argv)
    weights = args.weights
    if not weights:
        found = newest_checkpoint()
        if found is None:
            print(f"detect.py: no --weights given and no trained checkpoint under {TRAIN_RUNS}/*/weights/. "
                  "Train one first (python train.py trains yolov7-tiny on the built-in shapes set) "
                  "or pass --weights FILE.", file=sys.stderr)
            return 2
        weights = str(found)
        print(f"using weights {weights}")
    options = {k: v for k, v in vars(args).items() if k not in ("json", "weights", "source")}
    try:
        opt = DetectOptions(weights=weights, source=args.source or default_source(), **options)
        summary = run_detect(opt)
    except (BackendError, SourceError, ConfigError, ValueError) as e:
        print(f"detect.py: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    skipped = f", {len(summary['skipped'])} skipped" if summary["skipped"] else ""
    print(f"{summary['images']} images, {summary['detections']} detections{skipped}, "
          f"{summary['ms_per_image']} ms per image. Results saved to {summary['save_dir']}")
    if args.json:
        print(json.dumps(summary))
    if summary["images"] == 0:
        print("detect.py: no image could be read", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
