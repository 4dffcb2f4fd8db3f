"""export.py's job: a checkpoint -> the exported files (engine.export.exporter), one line per file,
and with --int8 the mAP of the files beside the checkpoint's (engine.export.accuracy)."""

from __future__ import annotations

from pathlib import Path

from data import load_data_config
from engine.backends import TorchBackend
from engine.export.accuracy import accuracy_table, format_accuracy
from engine.export.exporter import INT8_SUFFIX, ExportError, export_model
from engine.export.options import ExportOptions
from engine.formats import EXPORT_FORMATS
from utils.device import select_device
from utils.paths import check_writable
from utils.rounding import round_up


def run_export(opt: ExportOptions) -> dict:
    """Export ``opt.weights`` to ``opt.include`` beside it; print each file, its size and check.
    Returns {img_size: [H, W], exports: [ExportResult.to_dict()], accuracy: rows (--int8 only)}.
    Raises UserErrors (a bad checkpoint, --int8 without a data set, a failed check) naming the cause."""
    backend = TorchBackend(Path(opt.weights), select_device(opt.device))
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
              f"{' dynamic' if r.dynamic else ''}; check passed: {r.check}")
    summary = {"img_size": list(img_size), "exports": [r.to_dict() for r in results]}
    if opt.int8:
        quantised = {f.name for f in EXPORT_FORMATS if f.quantizer}
        files = {r.format: r.file for r in results if r.format.removesuffix(INT8_SUFFIX) in quantised}
        rows = accuracy_table(backend.model, files, data, img_size[0], opt.batch_size, backend.device)
        print(format_accuracy(rows))
        summary["accuracy"] = rows
    return summary
