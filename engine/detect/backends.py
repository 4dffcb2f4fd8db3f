"""Inference backends behind one call: a checkpoint (fused PyTorch model), a TorchScript file,
an ONNX file (onnxruntime, or OpenVINO) or an OpenVINO IR (engine/detect/openvino_backend.py). Each maps a float batch [B, 3, H, W] in 0..1 (RGB) to either the
decoded predictions [B, N, 5 + nc] (cx, cy, w, h input pixels, obj, class probs) or, for ONNX
files exported with NMS in the graph, per-image detections [n, 6] (x1, y1, x2, y2, score, class).

Exported files carry a JSON metadata block (names, stride, input shape, whether NMS is inside),
written by engine/export/exporter.py, so a file is self-describing. ``weights_kind`` tells the
kinds apart by their contents, whatever the file is called; every command loads through
``load_backend``.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.tta import augmented_forward
from utils.checkpoint import CheckpointError
from utils.errors import UserError

METADATA_KEY = "elan_yolo"  # ONNX metadata_props key, TorchScript extra-file name, OpenVINO rt_info key
# What runs a weights file (--backend); "auto" picks by the file's kind (weights_kind).
BACKENDS = ("auto", "torch", "torchscript", "onnxruntime", "openvino")
KIND_BACKEND = {"checkpoint": "torch", "torchscript": "torchscript", "onnx": "onnxruntime", "openvino": "openvino"}


class BackendError(UserError, ValueError):
    """A weights file that cannot be used; the message names the file."""


@dataclass
class Metadata:
    """What a backend must know about its model.

    ``img_size``: (H, W) a fixed-shape export was traced at, None when shapes are dynamic.
    ``batch``: the fixed batch size, None when dynamic. ``nms``: the graph ends in NMS.
    ``default_img_size``: the inference size to use when the caller gives none (the training
    validation size of a checkpoint, the export size of a file). ``precision``: fp32 or int8
    (a quantised export).
    """

    names: list[str]
    stride: int
    img_size: tuple[int, int] | None = None
    batch: int | None = None
    nms: bool = False
    nms_options: dict[str, Any] = field(default_factory=dict)
    default_img_size: int = 640
    precision: str = "fp32"

    def to_json(self) -> str:
        return json.dumps({"names": self.names, "stride": self.stride, "img_size": self.img_size,
                           "batch": self.batch, "nms": self.nms, "nms_options": self.nms_options,
                           "default_img_size": self.default_img_size, "precision": self.precision})

    @classmethod
    def from_json(cls, text: str, source: str) -> Metadata:
        try:
            data = json.loads(text)
            img_size = tuple(data["img_size"]) if data.get("img_size") else None
            return cls(list(data["names"]), int(data["stride"]), img_size, data.get("batch"),
                       bool(data.get("nms", False)), dict(data.get("nms_options", {})),
                       int(data.get("default_img_size", 640)), str(data.get("precision", "fp32")))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise BackendError(f"{source}: metadata {METADATA_KEY!r} is not valid ({e})") from None


class TorchBackend:
    """A checkpoint of this project (or an official YOLOv7 one), rebuilt and fused (BN, RepConv, implicit layers folded);
    several checkpoints run as one ``models.ensemble.Ensemble`` (the first one's options and sizes).

    On the CPU the model runs channels-last (NHWC): in torch's profiler of yolov7-tiny at 640,
    batch 1, one thread, its 3x3 convolutions take 36% less time, the SPP max-pools 17x less and
    the concatenations 40% less than in NCHW (the whole forward ~30% less, on 1 and 2 threads;
    outputs equal within float rounding).
    """

    def __init__(self, path: Path | Sequence[Path], device: torch.device) -> None:
        # local: ONNX-only use builds no model
        from models.ensemble import Ensemble

        paths = [path] if isinstance(path, str | Path) else list(path)
        read = [_read_fused(p) for p in paths]
        ckpt, model = read[0]
        if len(read) > 1:  # several checkpoints: one model whose predictions are all of theirs
            model = Ensemble([m for _, m in read], [str(p) for p in paths])
        self.model = model.to(device).eval()
        self.memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.device = device
        self.train_options = dict(ckpt.get("opt") or {})  # the run's options (export.py reads its data set)
        train_sizes = self.train_options.get("img_size") or [640]
        self.meta = Metadata(list(model.names), int(model.stride.max()), default_img_size=int(train_sizes[-1]))

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, augment: bool = False) -> torch.Tensor:
        """[B, 3, H, W] -> decoded [B, N, 5 + nc]; ``augment`` adds scaled and flipped passes."""
        x = x.contiguous(memory_format=self.memory_format)
        if augment:
            return augmented_forward(lambda t: self.model(t)[0], x, self.meta.stride)
        return self.model(x)[0]


def _read_fused(path: Path) -> tuple[dict[str, Any], torch.nn.Module]:
    """The checkpoint at ``path`` and its model, fused (BackendError naming the file)."""
    from models.checkpoint_io import model_from_checkpoint, read_checkpoint

    try:
        ckpt = read_checkpoint(path)  # ours, or an official YOLOv7 file converted in memory
        return ckpt, model_from_checkpoint(ckpt).fuse()
    except CheckpointError as e:
        raise BackendError(str(e)) from None
    except (KeyError, RuntimeError, ValueError) as e:  # our keys, but weights that do not fit the config
        raise BackendError(f"{path}: checkpoint does not rebuild its model ({str(e).splitlines()[0]})") from None


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
    ``threads``: CPU threads of one inference (None: onnxruntime's default, all cores).
    """

    def __init__(self, path: Path, device: torch.device, threads: int | None = None) -> None:
        import onnxruntime as ort  # local: only needed for .onnx files

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: overridable NMS thresholds are initializers by design
        if threads:
            options.intra_op_num_threads = threads
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


def read_onnx_metadata(path: Path) -> Metadata:
    """The ``elan_yolo`` metadata of an ONNX file of this project (BackendError without it)."""
    import onnx  # local: only ONNX files need it

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if METADATA_KEY not in props:
        raise BackendError(f"{path}: ONNX model without {METADATA_KEY!r} metadata (not exported by export.py)")
    return Metadata.from_json(props[METADATA_KEY], str(path))


# The backends share one call: backend(x, ...) -> decoded [B, N, 5 + nc] or per-image [n, 6], and .meta.
Backend = TorchBackend | TorchScriptBackend | OnnxBackend  # and OpenVinoBackend (imported on demand)


def weights_kind(path: Path) -> str:
    """'checkpoint', 'torchscript', 'onnx' or 'openvino', read from the file's first bytes (a
    folder: an OpenVINO IR folder). Checkpoints and TorchScript files are both zip archives;
    only TorchScript stores code (``<name>/code/``). Raises BackendError for anything else."""
    if path.is_dir() or path.suffix.lower() == ".bin":  # an IR's folder or its weights half
        return "openvino"
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK"):
        with zipfile.ZipFile(path) as archive:
            code = any("/code/" in name for name in archive.namelist())
        return "torchscript" if code else "checkpoint"
    if head.startswith(b"\x80"):  # a pickle: torch.save's legacy (non-zip) format
        return "checkpoint"
    if head.lstrip().startswith((b"<?xml", b"<net")):
        return "openvino"
    if head[:1] == b"\x08":  # protobuf field 1 (ir_version), varint: every ONNX model starts so
        return "onnx"
    raise BackendError(f"{path}: not a checkpoint, TorchScript, ONNX or OpenVINO file")


def load_backend(weights: str | Path | Sequence[str | Path], device: torch.device, backend: str = "auto",
                 threads: int | None = None) -> Backend:
    """The backend for a weights file, chosen by its contents (``weights_kind``); ``backend``
    overrides where another can serve (an .onnx file on 'openvino'). ``threads``: CPU threads of
    onnxruntime / OpenVINO (None: their default, all cores; PyTorch's are torch.set_num_threads).
    A released YOLOv7 name (``yolov7-tiny.pt``) that is not a file is downloaded first
    (models.released). Several checkpoints make one TorchBackend over their ``Ensemble``.
    """
    from models.released import resolve_weights  # local: exported files need no models package

    paths = [resolve_weights(w) for w in ([weights] if isinstance(weights, str | Path) else weights)]
    for path in paths:
        if not path.exists():
            raise BackendError(f"{path}: no such weights file")
    if len(paths) > 1:
        for path in paths:
            if weights_kind(path) != "checkpoint" or backend not in ("auto", "torch"):
                raise BackendError(f"{path}: an ensemble (several --weights) runs PyTorch checkpoints only, on "
                                   "--backend auto or torch")
        return TorchBackend(paths, device)
    path = paths[0]
    kind = weights_kind(path)
    name = KIND_BACKEND[kind] if backend == "auto" else backend
    if name not in {KIND_BACKEND[kind]} | ({"openvino"} if kind == "onnx" else set()):
        raise BackendError(f"{path}: a {kind} file does not run on --backend {name}")
    if name == "openvino":
        from engine.detect.openvino_backend import OpenVinoBackend  # local: openvino is only needed here

        return OpenVinoBackend(path, device, threads)
    if name == "onnxruntime":
        return OnnxBackend(path, device, threads)
    return {"torch": TorchBackend, "torchscript": TorchScriptBackend}[name](path, device)


def call_fixed_batch(run: Callable[[torch.Tensor], torch.Tensor | list[torch.Tensor]], x: torch.Tensor,
                     batch: int | None) -> torch.Tensor | list[torch.Tensor]:
    """``run`` over ``x`` [B, 3, H, W] in chunks of a fixed-batch file's ``batch`` (the last one
    padded with zero images); outputs of the B real images: a tensor [B, ...] or a list of B."""
    if batch is None or batch == len(x):
        return run(x)
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        n = len(chunk)
        if n < batch:
            chunk = torch.cat([chunk, chunk.new_zeros((batch - n, *chunk.shape[1:]))])
        outs.append(run(chunk)[:n])
    return torch.cat(outs) if isinstance(outs[0], torch.Tensor) else [d for out in outs for d in out]
