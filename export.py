"""Export a checkpoint to ONNX, TorchScript and OpenVINO, each checked against the PyTorch model.

    python export.py --weights runs/train/exp/weights/best.pt                 # both formats
    python export.py --weights best.pt --include onnx --dynamic --nms         # NMS inside the graph
    python export.py --weights best.pt --include torchscript --img-size 640 --batch-size 1
    python export.py --weights best.pt --include onnx openvino --int8 --data shapes   # + INT8, mAP side by side

Files are written beside the checkpoint (best.onnx, best.torchscript, best_openvino_model/; with
--int8 also best_int8.onnx, best_int8_openvino_model/). The work happens in
engine.export.exporter; this file only parses the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data import load_data_config
from engine.detect.backends import TorchBackend
from engine.export.accuracy import accuracy_table, format_accuracy
from engine.export.exporter import ExportError, export_model
from engine.export.options import ExportOptions
from utils import cli
from utils.device import select_device
from utils.errors import command_main
from utils.paths import check_writable
from utils.rounding import round_up


def build_parser() -> argparse.ArgumentParser:
    """The command line, derived from ExportOptions' field declarations."""
    return cli.build_parser(ExportOptions, __doc__)


@command_main("export.py")
def main(argv: list[str] | None = None) -> int:
    opt = cli.namespace_to(ExportOptions, build_parser().parse_args(argv))
    backend = TorchBackend(Path(opt.weights), select_device(opt.device))  # UserErrors: one line (command_main)
    stride = backend.meta.stride
    sizes = opt.img_size or [backend.meta.default_img_size]
    img_size = tuple(round_up(s, stride) for s in (sizes * 2)[:2])  # multiples of the stride
    data = opt.data or backend.train_options.get("data")
    if opt.int8 and not data:
        raise ExportError("--int8 needs --data (the checkpoint names no training data set)")
    calib_sources = load_data_config(data).split("train") if opt.int8 else None
    out = Path(opt.weights).with_suffix("")
    check_writable(out.parent)  # torch's C++ writers report a read-only folder as an opaque RuntimeError
    results = export_model(backend.model, out, opt.include, img_size,
                           batch=opt.batch_size, dynamic=opt.dynamic, nms=opt.nms, conf_thres=opt.conf_thres,
                           iou_thres=opt.iou_thres, max_det=opt.max_det, agnostic=opt.agnostic_nms,
                           opset=opt.opset, exporter=opt.onnx_exporter, int8=opt.int8,
                           calib_sources=calib_sources, calib=opt.calib)
    for r in results:
        print(f"{r.format}: {r.file} ({r.size_mb:.1f} MB), input {opt.batch_size}x3x{img_size[0]}x{img_size[1]}"
              f"{' dynamic' if opt.dynamic and r.format == 'onnx' else ''}; check passed: {r.check}")
    summary = {"img_size": list(img_size), "exports": [r.to_dict() for r in results]}
    if opt.int8:
        files = {r.format: r.file for r in results if r.format != "torchscript"}
        rows = accuracy_table(backend.model, files, data, img_size[0], opt.batch_size, backend.device)
        print(format_accuracy(rows))
        summary["accuracy"] = rows
    if opt.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
