"""Export a checkpoint to ONNX and TorchScript, each checked against the PyTorch model.

    python export.py --weights runs/train/exp/weights/best.pt                 # both formats
    python export.py --weights best.pt --include onnx --dynamic --nms         # NMS inside the graph
    python export.py --weights best.pt --include torchscript --img-size 640 --batch-size 1

Files are written beside the checkpoint (best.onnx, best.torchscript). The work happens in
engine.export.exporter; this file only parses the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.detect.backends import BackendError, TorchBackend
from engine.export.exporter import ExportError, export_model
from utils.errors import command_main
from utils.torch_utils import select_device


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="checkpoint of this project")
    p.add_argument("--include", nargs="+", default=["onnx", "torchscript"], choices=["onnx", "torchscript"])
    p.add_argument("--img-size", "--img", nargs="+", type=int, default=None,
                   help="input size: H [W] (default: the checkpoint's validation size)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size of the traced input")
    p.add_argument("--device", default="cpu", help="cpu or a CUDA index (the export traces on it)")
    p.add_argument("--dynamic", action="store_true", help="ONNX: dynamic batch, height and width")
    p.add_argument("--nms", action="store_true", help="ONNX: NonMaxSuppression inside the graph")
    p.add_argument("--conf-thres", type=float, default=0.25, help="--nms default score threshold")
    p.add_argument("--iou-thres", type=float, default=0.45, help="--nms default IoU threshold")
    p.add_argument("--max-det", type=int, default=300, help="--nms boxes kept per image and class")
    p.add_argument("--agnostic-nms", action="store_true", help="--nms across classes")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17)")
    p.add_argument("--onnx-exporter", default="dynamo", choices=["dynamo", "torchscript"],
                   help="torch.onnx.export path: dynamo (torch.export, default) or torchscript (deprecated "
                   "tracer, much faster to export)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object (last line)")
    return p


@command_main("export.py")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        backend = TorchBackend(Path(args.weights), select_device(args.device))
        stride = backend.meta.stride
        sizes = args.img_size or [backend.meta.default_img_size]
        img_size = tuple(-(-s // stride) * stride for s in (sizes * 2)[:2])  # multiples of the stride
        results = export_model(backend.model, Path(args.weights).with_suffix(""), args.include, img_size,
                               args.batch_size, args.dynamic, args.nms, args.conf_thres, args.iou_thres,
                               args.max_det, args.agnostic_nms, args.opset, args.onnx_exporter)
    except (BackendError, ExportError, ValueError) as e:
        print(f"export.py: {e}", file=sys.stderr)
        return 2
    for r in results:
        print(f"{r.format}: {r.file} ({r.size_mb:.1f} MB), input {args.batch_size}x3x{img_size[0]}x{img_size[1]}"
              f"{' dynamic' if args.dynamic and r.format == 'onnx' else ''}; check passed: {r.check}")
    if args.json:
        print(json.dumps({"img_size": list(img_size), "exports": [r.to_dict() for r in results]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
