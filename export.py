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
from engine.export.options import ExportOptions
from utils import cli
from utils.errors import command_main
from utils.torch_utils import select_device


def build_parser() -> argparse.ArgumentParser:
    """The command line, derived from ExportOptions' field declarations."""
    return cli.build_parser(ExportOptions, __doc__)


@command_main("export.py")
def main(argv: list[str] | None = None) -> int:
    opt = cli.namespace_to(ExportOptions, build_parser().parse_args(argv))
    try:
        backend = TorchBackend(Path(opt.weights), select_device(opt.device))
        stride = backend.meta.stride
        sizes = opt.img_size or [backend.meta.default_img_size]
        img_size = tuple(-(-s // stride) * stride for s in (sizes * 2)[:2])  # multiples of the stride
        results = export_model(backend.model, Path(opt.weights).with_suffix(""), opt.include, img_size,
                               batch=opt.batch_size, dynamic=opt.dynamic, nms=opt.nms, conf_thres=opt.conf_thres,
                               iou_thres=opt.iou_thres, max_det=opt.max_det, agnostic=opt.agnostic_nms,
                               opset=opt.opset, exporter=opt.onnx_exporter)
    except (BackendError, ExportError, ValueError) as e:
        print(f"export.py: {e}", file=sys.stderr)
        return 2
    for r in results:
        print(f"{r.format}: {r.file} ({r.size_mb:.1f} MB), input {opt.batch_size}x3x{img_size[0]}x{img_size[1]}"
              f"{' dynamic' if opt.dynamic and r.format == 'onnx' else ''}; check passed: {r.check}")
    if opt.json:
        print(json.dumps({"img_size": list(img_size), "exports": [r.to_dict() for r in results]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
