"""OpenVINO IR export: the ONNX graph engine.export.exporter writes (and checks), converted by
OpenVINO's own converter (engine/openvino_backend.py) and saved as
``<stem>_openvino_model/<stem>.xml`` + ``.bin``.

Going through the ONNX file rather than ``openvino.convert_model(torch_module)`` keeps one
traced graph for both formats, NMS-in-graph included (those nodes are appended to the ONNX
proto, not traced). An fp32 IR is really fp32: ``compress_to_fp16=False`` when saving (the
default halves the weights), and every compile passes ``OPENVINO_FP32`` (OpenVINO's CPU plugin
otherwise runs bf16 on CPUs that have it, and its outputs then no longer match PyTorch within
the parity check's tolerance).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from engine.formats import METADATA_KEY, Metadata
from engine.openvino_backend import THRESHOLD_INPUTS, openvino_model_from_onnx

if TYPE_CHECKING:
    from engine.export.exporter import ExportSpec


def save_openvino(model, xml: Path, meta: Metadata) -> Path:
    """Save ``model`` with ``meta`` (rt_info ``elan_yolo``) as ``xml`` (+ .bin) in a folder of its
    own, uncompressed; the folder is written beside and renamed into place. Returns ``xml``."""
    import openvino as ov

    model.set_rt_info(meta.to_json(), METADATA_KEY)
    folder = xml.parent
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ov.save_model(model, str(tmp / xml.name), compress_to_fp16=False)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return xml


def write_openvino(model: nn.Module, xml: Path, spec: ExportSpec, files: dict[str, Path]) -> Path:
    """The writer of FORMATS' 'openvino': the IR of the checked ONNX file ``files['onnx']`` as ``xml``."""
    return save_openvino(openvino_model_from_onnx(files["onnx"]), xml, spec.metadata(model))


def quantize_openvino(xml: Path, dst: Path, batches: list, meta: Metadata) -> Path:
    """INT8 IR of fp32 IR ``xml`` by NNCF post-training quantisation over ``batches`` (float32
    [B, 3, H, W] of the file's input shape); decode and NMS ops stay float (engine.export.quantize).
    Written to ``dst`` (an .xml in its own folder); returns it."""
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
    return save_openvino(quantized, dst, meta)
