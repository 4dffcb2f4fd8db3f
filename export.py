"""Export a checkpoint to ONNX, TorchScript and OpenVINO, each checked against the PyTorch model.

    python export.py --weights runs/train/exp/weights/best.pt                 # both formats
    python export.py --weights best.pt --include onnx --dynamic --nms         # NMS inside the graph
    python export.py --weights best.pt --include torchscript --img-size 640 --batch-size 1
    python export.py --weights best.pt --include onnx openvino --int8 --data shapes   # + INT8, mAP side by side

Files are written beside the checkpoint (best.onnx, best.torchscript, best_openvino_model/; with
--int8 also best_int8.onnx, best_int8_openvino_model/). The formats are engine.formats.FORMATS;
the work happens in engine.export.run; this file only parses the command line.
"""

from __future__ import annotations

import argparse
import json
import sys

from engine.export import ExportOptions, run_export
from utils import cli
from utils.errors import command_main


def build_parser() -> argparse.ArgumentParser:
    """The command line, derived from ExportOptions' field declarations."""
    return cli.build_parser(ExportOptions, __doc__)


@command_main("export.py")
def main(argv: list[str] | None = None) -> int:
    opt = cli.namespace_to(ExportOptions, build_parser().parse_args(argv))
    summary = run_export(opt)
    if opt.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
