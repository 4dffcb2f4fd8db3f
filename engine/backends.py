"""Inference backends behind one call, one per --backend of ``engine.formats.FORMATS``: a checkpoint
(fused PyTorch model), a TorchScript file, an ONNX file (onnxruntime) here; an OpenVINO IR, or an
ONNX file on OpenVINO, in engine/openvino_backend.py. Each maps a float batch [B, 3, H, W] in 0..1
(RGB) to either the decoded predictions [B, N, 5 + nc] (cx, cy, w, h input pixels, obj, class
probs) or, for files exported with NMS in the graph, per-image detections [n, 6] (x1, y1, x2, y2,
score, class).

Exported files carry a JSON metadata block (``engine.formats.Metadata``: names, stride, input
shape, whether NMS is inside), so a file is self-describing. ``weights_kind`` tells the kinds
apart by their contents, whatever the file is called; every command loads through
``load_backend``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from engine.formats import BACKENDS, METADATA_KEY, BackendError, Metadata, format_of, reader_of, weights_kind
from engine.tta import tta_forward
from utils.checkpoint import CheckpointError
from utils.device import compile_module
from utils.nms import split_by_image

__all__ = ["BACKENDS", "Backend", "BackendError", "Metadata", "OnnxBackend", "TorchBackend", "TorchScriptBackend",
           "call_fixed_batch", "load_backend", "read_onnx_metadata", "weights_kind"]


class Backend(Protocol):
    """What every reader of ``FORMATS`` is: ``backend(x, ...)`` maps a float batch [B, 3, H, W] in
    0..1 (RGB) to decoded [B, N, 5 + nc], or, when ``meta.nms`` (NMS inside the file), to per-image
    [n, 6] (x1, y1, x2, y2, score, class), the thresholds overriding the file's defaults.
    ``augment`` adds test-time augmentation where the backend can (a checkpoint)."""

    meta: Metadata
    device: torch.device

    def __call__(self, x: torch.Tensor, conf_thres: float | None = None, iou_thres: float | None = None,
                 augment: bool = False) -> torch.Tensor | list[torch.Tensor]: ...


class TorchBackend:
    """A checkpoint of this project (or an official YOLOv7 one), rebuilt and fused (BN, RepConv, implicit layers folded);
    several checkpoints run as one ``models.ensemble.Ensemble`` (the first one's options and sizes).

    On the CPU the model runs channels-last (NHWC): torch's CPU kernels for its convolutions,
    max-pools and concatenations are faster in that layout than in NCHW (docs/benchmarks.md),
    and the outputs are equal within float rounding. ``threads`` is unused: PyTorch's CPU threads
    are process-wide (torch.set_num_threads).
    """

    def __init__(self, path: Path | Sequence[Path], device: torch.device, threads: int | None = None) -> None:
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
    def __call__(self, x: torch.Tensor, conf_thres: float | None = None, iou_thres: float | None = None,
                 augment: bool = False) -> torch.Tensor:
        """[B, 3, H, W] -> decoded [B, N, 5 + nc] (no NMS inside: the thresholds are unused);
        ``augment`` adds scaled and flipped passes."""
        x = x.contiguous(memory_format=self.memory_format)
        if augment:
            return tta_forward(self.model, x)
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
    """A file written by ``export.py --include torchscript`` (a traced fused model); ``threads``
    is unused, as for TorchBackend."""

    def __init__(self, path: Path, device: torch.device, threads: int | None = None) -> None:
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
    def __call__(self, x: torch.Tensor, conf_thres: float | None = None, iou_thres: float | None = None,
                 augment: bool = False) -> torch.Tensor:
        """[B, 3, H, W] -> decoded [B, N, 5 + nc] (no NMS inside: the thresholds are unused)."""
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
        return split_by_image(out, x.shape[0])


def read_onnx_metadata(path: Path) -> Metadata:
    """The ``elan_yolo`` metadata of an ONNX file of this project (BackendError without it)."""
    import onnx  # local: only ONNX files need it

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if METADATA_KEY not in props:
        raise BackendError(f"{path}: ONNX model without {METADATA_KEY!r} metadata (not exported by export.py)")
    return Metadata.from_json(props[METADATA_KEY], str(path))


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
            if format_of(path).name != "checkpoint" or backend not in ("auto", "torch"):
                raise BackendError(f"{path}: an ensemble (several --weights) runs PyTorch checkpoints only, on "
                                   "--backend auto or torch")
        return TorchBackend(paths, device)
    path = paths[0]
    kind = format_of(path)
    name = kind.backend if backend == "auto" else backend
    if name not in kind.backends:
        raise BackendError(f"{path}: a {kind.name} file does not run on --backend {name}")
    return reader_of(name)(path, device, threads)  # imported now: only an OpenVINO file loads openvino


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


def compile_backend(backend: Backend, weights: str | Path) -> None:
    """--compile of detect.py and val.py: ``torch.compile`` the model of a checkpoint's backend in
    place. Exported files (``weights``) are refused: their runtimes compile on their own."""
    if not isinstance(backend, TorchBackend):
        raise BackendError(f"{weights}: --compile needs a PyTorch checkpoint, not an exported file")
    compile_module(backend.model, backend.device)
