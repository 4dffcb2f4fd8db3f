"""The kinds of weights file, declared once (``FORMATS``), and the metadata exported files carry.

Each ``Format`` row says what a file is called, what writes it (export.py), what reads it
(``--backend``), how it is recognised from its contents and what it supports (``--nms``,
``--dynamic``, ``--int8``, a fixed input shape). export.py's ``--include`` choices and help, the
exporter (engine/export/exporter.py), ``BACKENDS``, ``weights_kind`` and ``load_backend``
(engine/backends.py) all read the table, so a new format is one row here plus its writer and
reader. Writers, quantisers and readers are named as ``"module:attribute"`` strings (``resolve``):
importing the table loads neither torch, onnx nor openvino.
"""

from __future__ import annotations

import importlib
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.errors import UserError

METADATA_KEY = "elan_yolo"  # ONNX metadata_props key, TorchScript extra-file name, OpenVINO rt_info key


class BackendError(UserError, ValueError):
    """A weights file that cannot be used; the message names the file."""


@dataclass
class Metadata:
    """What a backend must know about its model (stored as JSON under ``METADATA_KEY`` in exports).

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


# Recognisers: (path, its first 64 bytes, b"" for a folder) -> is it this kind. Each looks for
# its own marks, so they exclude each other and the table's order does not matter.
def _zip_entries(path: Path, head: bytes) -> list[str]:
    """The entries of a zip archive (checkpoints and TorchScript files are both), [] for another file."""
    if not head.startswith(b"PK"):
        return []
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def _is_checkpoint(path: Path, head: bytes) -> bool:
    # torch.save's zip holds a pickle and no code; b"\x80": a pickle, its legacy (non-zip) format
    entries = _zip_entries(path, head)
    return head.startswith(b"\x80") or (any(e.endswith("/data.pkl") for e in entries)
                                         and not any("/code/" in e for e in entries))


def _is_torchscript(path: Path, head: bytes) -> bool:
    return any("/code/" in e for e in _zip_entries(path, head))  # only TorchScript stores code


def _is_onnx(path: Path, head: bytes) -> bool:
    # protobuf field 1 (ir_version), varint: every ONNX model starts so (an IR's .bin may too)
    return head[:1] == b"\x08" and path.suffix.lower() != ".bin"


def _is_openvino(path: Path, head: bytes) -> bool:
    # an IR's folder, its weights half (.bin) or its XML half
    return path.is_dir() or path.suffix.lower() == ".bin" or head.lstrip().startswith((b"<?xml", b"<net"))


@dataclass(frozen=True)
class Format:
    """One kind of weights file.

    ``name``: what export.py --include and ``weights_kind`` call it. ``backend``: the --backend
    that runs it by default, through ``reader`` ("module:class", called (path, device, threads));
    ``also_runs_on``: other backends that read it. ``recognise(path, head)``: is a file this kind.
    Exported kinds also have ``file`` (where export.py writes it: a pattern of ``stem``, the
    checkpoint's path without suffix, and ``int8``, '' or '_int8'), ``writer`` ("module:function",
    (model, path, spec, files) -> path, engine/export/exporter.py) and, for those converted from
    another format's checked file, ``source`` (that format, written first). ``quantizer``
    ("module:function", (src, dst, batches, meta) -> dst): writes the INT8 copy of --int8.
    Supports: ``nms`` (--nms puts NMS inside; others are written without it), ``dynamic``
    (--dynamic frees batch, height and width), ``fixed_shape`` (otherwise the file runs only at
    its export batch and size; without it the file is always shape-free). ``by_default``: in
    --include's default; ``note``: said after the name in help texts.
    """

    name: str
    backend: str
    reader: str
    recognise: Callable[[Path, bytes], bool]
    also_runs_on: tuple[str, ...] = ()
    file: str = ""
    writer: str | None = None
    source: str | None = None
    quantizer: str | None = None
    nms: bool = False
    dynamic: bool = False
    fixed_shape: bool = False
    by_default: bool = False
    note: str = ""

    @property
    def backends(self) -> tuple[str, ...]:
        """Every --backend that runs this kind, the default first."""
        return (self.backend, *self.also_runs_on)

    @property
    def folder(self) -> bool:
        """Written as a folder of files of its own (``file`` names one file in it)."""
        return "/" in self.file

    def path(self, stem: Path, int8: bool = False) -> Path:
        """Where export writes it for checkpoint ``stem`` (path without suffix), or its INT8 copy."""
        return stem.parent / self.file.format(stem=stem.name, int8="_int8" if int8 else "")


FORMATS = (
    Format("checkpoint", "torch", "engine.backends:TorchBackend", _is_checkpoint,
           note="of this project or an official YOLOv7 one"),
    Format("onnx", "onnxruntime", "engine.backends:OnnxBackend", _is_onnx, also_runs_on=("openvino",),
           file="{stem}{int8}.onnx", writer="engine.export.exporter:write_onnx",
           quantizer="engine.export.quantize:quantize_onnx", nms=True, dynamic=True, fixed_shape=True,
           by_default=True),
    Format("torchscript", "torchscript", "engine.backends:TorchScriptBackend", _is_torchscript,
           file="{stem}.torchscript", writer="engine.export.exporter:write_torchscript", by_default=True),
    Format("openvino", "openvino", "engine.openvino_backend:OpenVinoBackend", _is_openvino,
           file="{stem}{int8}_openvino_model/{stem}.xml", writer="engine.export.openvino_export:write_openvino",
           source="onnx", quantizer="engine.export.openvino_export:quantize_openvino", nms=True, dynamic=True,
           fixed_shape=True, note="an IR folder"),
)
EXPORT_FORMATS = tuple(f for f in FORMATS if f.writer)
# What runs a weights file (--backend); "auto" picks by the file's kind (weights_kind).
BACKENDS = ("auto", *(f.backend for f in FORMATS))


def format_named(name: str) -> Format:
    """The row called ``name`` (KeyError for another name)."""
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise KeyError(name)


def reader_of(backend: str) -> Callable[..., Any]:
    """The class that runs files on --backend ``backend`` (one of BACKENDS but 'auto')."""
    return resolve(next(f.reader for f in FORMATS if f.backend == backend))


def names(formats: tuple[Format, ...], notes: bool = False) -> str:
    """'onnx, torchscript, openvino' (with ``notes``: 'openvino (an IR folder)'), for messages and help."""
    return ", ".join(f"{f.name} ({f.note})" if notes and f.note else f.name for f in formats)


def resolve(ref: str) -> Any:
    """The object a "module:attribute" reference of the table names, imported now."""
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


def format_of(path: Path) -> Format:
    """The kind of the file (or IR folder) at ``path``, read from its contents whatever it is
    called (``Format.recognise``). Raises BackendError for anything else."""
    head = b""
    if not path.is_dir():
        with open(path, "rb") as f:
            head = f.read(64)
    for fmt in FORMATS:
        if fmt.recognise(path, head):
            return fmt
    kinds = [f.name for f in FORMATS]
    raise BackendError(f"{path}: not a {', '.join(kinds[:-1])} or {kinds[-1]} file")


def weights_kind(path: Path) -> str:
    """The name of the kind of ``path`` ('checkpoint', 'onnx', ...; see ``format_of``)."""
    return format_of(path).name
