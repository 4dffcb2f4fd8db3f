"""The OpenVINO backend: an IR exported by ``export.py --include openvino`` (its .xml, or the
folder holding it), or an ONNX file run by OpenVINO (``--backend openvino``); and the ONNX ->
OpenVINO conversion both it and the export (engine/export/openvino_export.py) use."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from engine.backends import read_onnx_metadata
from engine.formats import METADATA_KEY, BackendError, Metadata, format_of
from utils.nms import split_by_image

THRESHOLD_INPUTS = ("conf_thres", "iou_thres")  # NMS graph inputs with defaults (engine.export.onnx_nms)

# OpenVINO's CPU plugin defaults to bf16 where the CPU has it; fp32 files are meant as fp32.
# (INT8 layers of a quantised IR still run in int8 under this hint.)
OPENVINO_FP32 = {"INFERENCE_PRECISION_HINT": "f32"}


def openvino_model_from_onnx(path: Path):
    """``openvino.Model`` of an ONNX file of this project; NMS thresholds stay inputs.

    OpenVINO folds an input that also has an initializer (ONNX's "input with a default") into a
    constant, so the defaults are dropped first: the caller then feeds the thresholds every run
    (OpenVinoBackend does, with the file's own defaults when given none).
    """
    import onnx
    import openvino as ov

    proto = onnx.load(str(path))
    kept = [t for t in proto.graph.initializer if t.name not in THRESHOLD_INPUTS]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    return ov.convert_model(io.BytesIO(proto.SerializeToString()))


def openvino_xml(path: Path) -> Path:
    """The .xml of an IR given as its .xml, its .bin or its folder (one .xml inside)."""
    if path.is_dir():
        found = sorted(path.glob("*.xml"))
        if len(found) != 1:
            raise BackendError(f"{path}: an OpenVINO folder holds one .xml, found {len(found)}")
        return found[0]
    return path.with_suffix(".xml") if path.suffix.lower() == ".bin" else path


class OpenVinoBackend:
    """Runs on OpenVINO's CPU plugin with ``threads`` inference threads (None: its default, all
    cores); same call as OnnxBackend: decoded [B, N, 5 + nc], or per-image [n, 6] with NMS inside."""

    def __init__(self, path: Path, device: torch.device, threads: int | None = None) -> None:
        import openvino as ov

        if device.type != "cpu":
            raise BackendError(f"{path}: the OpenVINO backend runs on the CPU (--device cpu), not {device}")
        try:
            if format_of(path).name == "onnx":  # by its contents, as load_backend tells kinds apart
                self.meta = read_onnx_metadata(path)
                model = openvino_model_from_onnx(path)
            else:
                model = ov.Core().read_model(str(openvino_xml(path)))
                if not model.has_rt_info(METADATA_KEY):
                    raise BackendError(f"{path}: OpenVINO model without {METADATA_KEY!r} metadata "
                                       "(not exported by export.py)")
                self.meta = Metadata.from_json(model.get_rt_info(METADATA_KEY).astype(str), str(path))
        except (RuntimeError, OSError) as e:
            raise BackendError(f"{path}: not a readable OpenVINO model ({str(e).strip().splitlines()[0]})") from None
        config = dict(OPENVINO_FP32) | ({"INFERENCE_NUM_THREADS": threads} if threads else {})
        self.request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
        self.inputs = {p.get_any_name() for p in model.inputs}
        self.device = device

    def __call__(self, x: torch.Tensor, conf_thres: float | None = None, iou_thres: float | None = None,
                 augment: bool = False) -> torch.Tensor | list[torch.Tensor]:
        feeds = {"images": np.ascontiguousarray(x.cpu().numpy(), np.float32)}
        defaults = self.meta.nms_options
        for name, value in zip(THRESHOLD_INPUTS, (conf_thres, iou_thres), strict=True):
            if name in self.inputs:
                feeds[name] = np.array([defaults[name] if value is None else value], np.float32)
        self.request.infer(feeds)
        out = torch.from_numpy(self.request.get_output_tensor(0).data.copy())
        if not self.meta.nms:
            return out
        return split_by_image(out, x.shape[0])

