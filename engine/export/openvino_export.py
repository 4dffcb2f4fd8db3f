"""OpenVINO IR export: the ONNX graph engine.export.exporter writes (and checks), converted by
OpenVINO's own converter and saved as ``<stem>_openvino_model/<stem>.xml`` + ``.bin``.

Going through the ONNX file rather than ``openvino.convert_model(torch_module)`` keeps one
traced graph for both formats, NMS-in-graph included (those nodes are appended to the ONNX
proto, not traced). An fp32 IR is really fp32: ``compress_to_fp16=False`` when saving (the
default halves the weights), and every compile passes ``OPENVINO_FP32`` (OpenVINO's CPU plugin
otherwise runs bf16 on CPUs that have it: measured on a small model, outputs then differ from
PyTorch by up to 0.6 pixels instead of 1e-4).
"""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx

from engine.detect.backends import METADATA_KEY, Metadata

THRESHOLD_INPUTS = ("conf_thres", "iou_thres")  # NMS graph inputs with defaults (engine.export.onnx_nms)


def openvino_dir(stem: Path, int8: bool = False) -> Path:
    """Folder of the IR of ``stem`` (ultralytics' naming): best -> best_openvino_model/."""
    return stem.parent / f"{stem.name}{'_int8' if int8 else ''}_openvino_model"


def openvino_model_from_onnx(path: Path):
    """``openvino.Model`` of an ONNX file of this project; NMS thresholds stay inputs.

    OpenVINO folds an input that also has an initializer (ONNX's "input with a default") into a
    constant, so the defaults are dropped first: the caller then feeds the thresholds every run
    (engine.detect.openvino_backend does, with the file's own defaults when given none).
    """
    import openvino as ov

    proto = onnx.load(str(path))
    kept = [t for t in proto.graph.initializer if t.name not in THRESHOLD_INPUTS]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    return ov.convert_model(io.BytesIO(proto.SerializeToString()))


def save_openvino(model, folder: Path, name: str, meta: Metadata) -> Path:
    """Save ``model`` with ``meta`` (rt_info ``elan_yolo``) as ``folder/name.xml`` (+ .bin),
    uncompressed; the folder is written beside and renamed into place. Returns the .xml path."""
    import openvino as ov

    model.set_rt_info(meta.to_json(), METADATA_KEY)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ov.save_model(model, str(tmp / f"{name}.xml"), compress_to_fp16=False)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder / f"{name}.xml"


def export_openvino(onnx_path: Path, stem: Path, meta: Metadata) -> Path:
    """IR of the exported ONNX file ``onnx_path`` in ``openvino_dir(stem)``; returns the .xml."""
    return save_openvino(openvino_model_from_onnx(onnx_path), openvino_dir(stem), stem.name, meta)


def quantize_openvino(xml: Path, stem: Path, batches: list, meta: Metadata) -> Path:
    """INT8 IR of fp32 IR ``xml`` by NNCF post-training quantisation over ``batches`` (float32
    [B, 3, H, W] of the file's input shape); decode and NMS ops stay float (engine.export.quantize).
    Written to ``openvino_dir(stem, int8=True)``; returns the .xml."""
    import nncf
    import openvino as ov

    from engine.export.quantize import openvino_decode_ops

    model = ov.Core().read_model(str(xml))
    inputs = [p.get_any_name() for p in model.inputs]
    defaults = meta.nms_options

    def feed(x):
        return {"images": x} | {k: np.array([defaults[k]], np.float32) for k in THRESHOLD_INPUTS if k in inputs}

    level = nncf.nncf_logger.level
    nncf.set_log_level(logging.WARNING)  # its INFO lists every op left in float
    try:
        quantized = nncf.quantize(model, nncf.Dataset(batches, feed), subset_size=len(batches),
                                  ignored_scope=nncf.IgnoredScope(names=openvino_decode_ops(model), validate=False))
    finally:
        nncf.set_log_level(level)
    return save_openvino(quantized, openvino_dir(stem, int8=True), stem.name, meta)
