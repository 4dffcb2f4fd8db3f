"""INT8 post-training static quantisation of exported files, calibrated on training images.

ONNX files go through ONNX Runtime's quantiser (QDQ, per-channel int8 weights, uint8
activations: the U8S8 form its x86 kernels run with VNNI), OpenVINO IR through NNCF. In both
the detection head's decode (sigmoid, grid and anchor arithmetic, concat) and an NMS graph
stay in float: those tensors mix pixel coordinates (0..img_size) with probabilities (0..1) in
one output, which one int8 scale cannot hold: quantised, the objectness scores no longer follow
the fp32 file's (docs/benchmarks.md).
Calibration images are letterboxed exactly as a fixed-shape file sees them (square, gray
padding), taken evenly spaced from the split so the subset is deterministic.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from data import build_dataloader, letterbox
from engine.formats import METADATA_KEY, Metadata
from utils.errors import UserError


def calibration_batches(sources: list[Path], nc: int, img_size: tuple[int, int], batch: int, count: int,
                        stride: int) -> list[np.ndarray]:
    """``count`` images of ``sources`` (evenly spaced, at most the split's size) as float32
    [batch, 3, H, W] RGB 0..1 arrays, letterboxed to ``img_size`` (H, W); the last batch is
    filled up with the first images so every batch has the file's fixed shape."""
    _, dataset = build_dataloader(sources, nc, img_size=max(img_size), batch_size=batch, stride=stride)
    if len(dataset) == 0:
        raise UserError("no calibration images", where=str(sources[0]))
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int))
    images = []
    for i in picks:
        img = dataset.letterboxed(int(i))[0]  # RGB uint8 [s, s, 3], s = max(img_size)
        if img.shape[:2] != tuple(img_size):
            img = letterbox(img, img_size, stride, auto=False)[0]
        images.append(img.transpose(2, 0, 1))
    images += images[: -len(images) % batch]
    stacked = np.stack(images).astype(np.float32) / 255
    return [stacked[i:i + batch] for i in range(0, len(stacked), batch)]


def onnx_decode_nodes(proto: onnx.ModelProto) -> list[str]:
    """Names of the nodes between the head's last convolutions and the graph outputs (decode,
    NMS): every node an output depends on without passing through a Conv."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    stack, seen, names = [o.name for o in proto.graph.output], set(), []
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type != "Conv":
            names.append(node.name)
            stack += list(node.input)
    return names


def openvino_decode_ops(model) -> list[str]:
    """Friendly names of the ops of an ``openvino.Model`` between its last convolutions and
    its results (the decode and NMS), as ``onnx_decode_nodes`` for ONNX."""
    stack, seen, names = list(model.get_results()), set(), []
    while stack:
        op = stack.pop()
        if op.get_friendly_name() in seen:
            continue
        seen.add(op.get_friendly_name())
        kind = op.get_type_name()
        if kind == "Convolution":
            continue
        if kind not in ("Result", "Constant", "Parameter"):
            names.append(op.get_friendly_name())
        stack += [inp.get_source_output().get_node() for inp in op.inputs()]
    return names


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over prepared batches."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self.batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self.batches, None)
        return None if x is None else {"images": x}


def quantize_onnx(src: Path, dst: Path, batches: list[np.ndarray], meta: Metadata) -> Path:
    """Write an INT8 (QDQ) copy of ONNX file ``src`` to ``dst``, calibrated on ``batches``
    (float32 [B, 3, H, W] of the file's input shape); ``meta`` is stored with precision int8."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        # shape inference + onnxruntime's graph optimisations first, as its docs advise: without
        # them the QDQ file runs hardly faster than fp32 (docs/benchmarks.md)
        prepared, out = Path(tmp) / "prepared.onnx", Path(tmp) / dst.name
        quant_pre_process(str(src), str(prepared))
        quantize_static(str(prepared), str(out), _Reader(batches), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=onnx_decode_nodes(onnx.load(str(prepared))),
                        calibrate_method=CalibrationMethod.MinMax)
        quantized = onnx.load(str(out))
    onnx.helper.set_model_props(quantized, {METADATA_KEY: meta.to_json()})
    tmp_dst = dst.with_name(dst.name + ".tmp")
    onnx.save(quantized, str(tmp_dst))
    tmp_dst.replace(dst)
    return dst
