"""Inference backends behind one call: a checkpoint (fused PyTorch model), a TorchScript file or
an ONNX file (onnxruntime). Each maps a float batch [B, 3, H, W] in 0..1 (RGB) to either the
decoded predictions [B, N, 5 + nc] (cx, cy, w, h input pixels, obj, class probs) or, for ONNX
files exported with NMS in the graph, per-image detections [n, 6] (x1, y1, x2, y2, score, class).

Exported files carry a JSON metadata block (names, stride, input shape, whether NMS is inside),
written by engine/export/exporter.py, so a file is self-describing.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.tta import augmented_forward
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.errors import UserError

METADATA_KEY = "elan_yolo"  # ONNX metadata_props key and TorchScript extra-file name


class BackendError(UserError, ValueError):
    """A weights file that cannot be used; the message names the file."""


@dataclass
class Metadata:
    """What a backend must know about its model.

    ``img_size``: (H, W) a fixed-shape export was traced at, None when shapes are dynamic.
    ``batch``: the fixed batch size, None when dynamic. ``nms``: the graph ends in NMS.
    ``default_img_size``: the inference size to use when the caller gives none (the training
    validation size of a checkpoint, the export size of a file).
    """

    names: list[str]
    stride: int
    img_size: tuple[int, int] | None = None
    batch: int | None = None
    nms: bool = False
    nms_options: dict[str, Any] = field(default_factory=dict)
    default_img_size: int = 640

    def to_json(self) -> str:
        return json.dumps({"names": self.names, "stride": self.stride, "img_size": self.img_size,
                           "batch": self.batch, "nms": self.nms, "nms_options": self.nms_options,
                           "default_img_size": self.default_img_size})

    @classmethod
    def from_json(cls, text: str, source: str) -> Metadata:
        try:
            data = json.loads(text)
            img_size = tuple(data["img_size"]) if data.get("img_size") else None
            return cls(list(data["names"]), int(data["stride"]), img_size, data.get("batch"),
                       bool(data.get("nms", False)), dict(data.get("nms_options", {})),
                       int(data.get("default_img_size", 640)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise BackendError(f"{source}: metadata {METADATA_KEY!r} is not valid ({e})") from None


class TorchBackend:
    """A checkpoint of this project, rebuilt and fused (BN, RepConv, implicit layers folded)."""

    def __init__(self, path: Path, device: torch.device) -> None:
        from models.checkpoint_io import model_from_checkpoint  # local: ONNX-only use builds no model

        try:
            ckpt = load_checkpoint(path)
            model = model_from_checkpoint(ckpt)
        except CheckpointError as e:
            raise BackendError(str(e)) from None
        except (KeyError, RuntimeError, ValueError) as e:  # our keys, but weights that do not fit the config
            raise BackendError(f"{path}: checkpoint does not rebuild its model ({str(e).splitlines()[0]})") from None
        self.model = model.fuse().to(device).eval()
        self.device = device
        train_sizes = (ckpt.get("opt") or {}).get("img_size") or [640]
        self.meta = Metadata(list(model.names), int(model.stride.max()), default_img_size=int(train_sizes[-1]))

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, augment: bool = False) -> torch.Tensor:
        """[B, 3, H, W] -> decoded [B, N, 5 + nc]; ``augment`` adds scaled and flipped passes."""
        if augment:
            return augmented_forward(lambda t: self.model(t)[0], x, self.meta.stride)
        return self.model(x)[0]


class TorchScriptBackend:
    """A file written by ``export.py --include torchscript`` (a traced fused model)."""

    def __init__(self, path: Path, device: torch.device) -> None:
        extra = {METADATA_KEY: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch 2.x marks torch.jit deprecated
                self.module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        except (RuntimeError, ValueError) as e:
            raise BackendError(f"{path}: not a TorchScript file ({str(e).strip().splitlines()[0]})") from None
        if not extra[METADATA_KEY]:
            raise BackendError(f"{path}: TorchScript file without {METADATA_KEY!r} metadata (not exported by export.py)")
        self.meta = Metadata.from_json(extra[METADATA_KEY], str(path))
        self.device = device

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, augment: bool = False) -> torch.Tensor:
        return self.module(x)


class OnnxBackend:
    """A file written by ``export.py --include onnx``, run with onnxruntime.

    CUDA is used when the device is CUDA and onnxruntime-gpu provides it; CPU otherwise.
    """

    def __init__(self, path: Path, device: torch.device) -> None:
        import onnxruntime as ort  # local: only needed for .onnx files

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: overridable NMS thresholds are initializers by design
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise BackendError(f"{path}: not a readable ONNX model ({str(e).strip().splitlines()[0]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if meta is None:
            raise BackendError(f"{path}: ONNX model without {METADATA_KEY!r} metadata (not exported by export.py)")
        self.meta = Metadata.from_json(meta, str(path))
        self.input_name = self.session.get_inputs()[0].name
        self.device = device

    def __call__(self, x: torch.Tensor, conf_thres: float | None = None, iou_thres: float | None = None,
                 augment: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Decoded [B, N, 5 + nc], or with NMS in the graph a list of per-image [n, 6]; the
        thresholds override the graph's NMS defaults."""
        feeds = {self.input_name: x.cpu().numpy().astype(np.float32)}
        if self.meta.nms:
            for name, value in (("conf_thres", conf_thres), ("iou_thres", iou_thres)):
                if value is not None:
                    feeds[name] = np.array([value], np.float32)
        outputs = self.session.run(None, feeds)
        out = torch.from_numpy(outputs[0]).to(x.device)
        if not self.meta.nms:
            return out
        # NMS output rows: (batch index, x1, y1, x2, y2, score, class)
        return [out[out[:, 0] == i, 1:] for i in range(x.shape[0])]


def load_backend(weights: str | Path, device: torch.device) -> TorchBackend | TorchScriptBackend | OnnxBackend:
    """Pick the backend from the file suffix (.onnx, .torchscript / .ts, anything else: checkpoint)."""
    path = Path(weights)
    if not path.is_file():
        raise BackendError(f"{path}: no such weights file")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxBackend(path, device)
    if suffix in (".torchscript", ".ts"):
        return TorchScriptBackend(path, device)
    return TorchBackend(path, device)

