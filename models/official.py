"""Reading checkpoints written by the official YOLOv7 code (WongKinYiu/yolov7) without running them.

An official ``.pt`` is a pickle of whole ``models.yolo.Model`` objects (train.py saves
``{'epoch', 'best_fitness', 'training_results', 'model', 'ema', 'updates', 'optimizer',
'wandb_id'}`` with ``model`` / ``ema`` as fp16 modules). Loading it the usual way imports the
official source tree and calls whatever the file names. Here it is read with torch's own
``torch.load(weights_only=True)``: every class the file may name (the official modules and the
``torch.nn`` layers they hold) is registered, under its official dotted path, as an inert
:class:`StandIn` that only records the attributes the pickle gives it (``_parameters``,
``_buffers``, ``_modules``, ``yaml``, ``names``, ...). numpy values (``best_fitness`` is an
ndarray, under numpy 1's ``numpy.core`` paths) become inert records too and are turned into
numbers afterwards, for plain dtypes only. Nothing is imported by name and nothing of the file
is called; any other global is refused before loading, with an error naming the file and it.
"""

from __future__ import annotations

import pickle
import pickletools
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from utils.checkpoint import CheckpointError

# The official classes a YOLOv7 detection checkpoint holds (models/yolo.py, models/common.py).
OFFICIAL_CLASSES: dict[str, tuple[str, ...]] = {
    "models.yolo": ("Model", "Detect", "IDetect", "IAuxDetect"),
    "models.common": ("Conv", "RepConv", "ImplicitA", "ImplicitM", "Concat", "Shortcut", "MP", "SP",
                      "ReOrg", "DownC", "SPPCSPC", "Bottleneck", "BottleneckCSPA", "BottleneckCSPB",
                      "BottleneckCSPC"),
    "torch.nn.modules.conv": ("Conv2d",),
    "torch.nn.modules.batchnorm": ("BatchNorm2d",),
    "torch.nn.modules.activation": ("SiLU", "LeakyReLU", "ReLU", "Hardswish", "Mish", "Sigmoid", "Tanh",
                                    "GELU"),
    "torch.nn.modules.linear": ("Identity",),
    "torch.nn.modules.pooling": ("MaxPool2d",),
    "torch.nn.modules.upsampling": ("Upsample",),
    "torch.nn.modules.container": ("Sequential", "ModuleList"),
}
# Globals of files that are not YOLOv7 detection checkpoints, and what such a file is.
FOREIGN_MARKERS: tuple[tuple[str, str], ...] = (
    ("models.yolo.IKeypoint", "a YOLOv7 pose (keypoint) checkpoint"),
    ("models.yolo.ISegment", "a YOLOv7 instance-segmentation (mask) checkpoint"),
    ("models.yolo.IRSegment", "a YOLOv7 instance-segmentation (mask) checkpoint"),
    ("models.yolo.Segment", "an instance-segmentation (mask) checkpoint"),
    ("models.yolo.SegmentationModel", "an instance-segmentation (mask) checkpoint"),
    ("models.yolo.IBin", "a YOLOv7 IBin (bin-regression head) checkpoint"),
    ("models.yolo.DetectionModel", "a YOLOv5 checkpoint (ultralytics/yolov5)"),
    ("models.yolo.ClassificationModel", "a YOLOv5 classification checkpoint"),
    ("models.common.C3", "a YOLOv5 checkpoint (ultralytics/yolov5)"),
    ("models.models.", "a YOLOR checkpoint (WongKinYiu/yolor, Darknet-style model)"),
    ("ultralytics.", "an ultralytics (YOLOv8 or later) checkpoint"),
    ("detectron2.", "a detectron2 checkpoint (e.g. YOLOv7's BlendMask mask model)"),
    ("yolov6.", "a YOLOv6 checkpoint"),
    ("yolox.", "a YOLOX checkpoint"),
)
_NUMPY_CORES = ("numpy.core.multiarray", "numpy._core.multiarray")
_PLAIN_KINDS = "biufc"  # bool, int, uint, float, complex: no objects, strings or records


class StandIn:
    """Inert record of one pickled object of an allowed class: the unpickler creates it with
    ``__new__`` and fills ``__dict__`` from the pickle (BUILD); it has no behaviour of its own."""

    official: ClassVar[str] = ""

    def __repr__(self) -> str:
        return f"<stand-in {self.official}>"


@dataclass
class MethodRef:
    """What a pickled bound method (``m.forward = m.fuseforward`` in the official ``fuse()``)
    leaves: the object and the method name, recorded instead of looked up."""

    obj: Any
    name: str


class DtypeRecord:
    """A pickled ``numpy.dtype(spec, align, copy)`` with its BUILD state, never built by numpy here."""

    def __init__(self, spec: Any, align: bool = False, copy: bool = False) -> None:
        self.spec, self.state = spec, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_numpy(self) -> np.dtype:
        """The plain numpy dtype; CheckpointError for objects, strings, records or odd states."""
        if not isinstance(self.spec, str) or not isinstance(self.state, tuple) or len(self.state) < 2:
            raise ValueError(f"numpy dtype {self.spec!r} with state {self.state!r}")
        order = self.state[1] if self.state[1] in "<>|=" else "="
        dtype = np.dtype(self.spec).newbyteorder(order) if order != "|" else np.dtype(self.spec)
        if dtype.kind not in _PLAIN_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise ValueError(f"numpy dtype {self.spec!r} is not a plain number type")
        return dtype


class ArrayRecord:
    """A pickled ``numpy.ndarray`` (``_reconstruct`` + BUILD state), kept as recorded data."""

    def __init__(self, cls: Any, shape: Any, code: Any) -> None:
        self.cls, self.state = cls, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_numpy(self) -> np.ndarray:
        if self.cls is not ArrayRecord or not isinstance(self.state, tuple) or len(self.state) != 5:
            raise ValueError("numpy array with an unexpected layout")
        _, shape, dtype, fortran, raw = self.state
        if not isinstance(dtype, DtypeRecord) or not isinstance(raw, (bytes, bytearray)):
            raise ValueError("numpy array without a plain dtype and raw data")
        array = np.frombuffer(bytes(raw), dtype=dtype.to_numpy()).copy()
        return array.reshape(tuple(shape), order="F" if fortran else "C")


@dataclass
class ScalarRecord:
    """A pickled numpy scalar (``multiarray.scalar(dtype, bytes)``)."""

    dtype: Any
    raw: Any

    def to_numpy(self) -> Any:
        if not isinstance(self.dtype, DtypeRecord) or not isinstance(self.raw, (bytes, bytearray)):
            raise ValueError("numpy scalar without a plain dtype")
        return np.frombuffer(bytes(self.raw), dtype=self.dtype.to_numpy())[0]


def _stand_in(path: str) -> type[StandIn]:
    module, _, name = path.rpartition(".")
    return type(name, (StandIn,), {"official": path, "__module__": f"stand_in.{module}"})


def _safe_globals() -> list[tuple[Any, str]]:
    """(object, official dotted path) pairs for ``torch.serialization.safe_globals``."""
    pairs: list[tuple[Any, str]] = [(_stand_in(f"{m}.{n}"), f"{m}.{n}")
                                    for m, names in OFFICIAL_CLASSES.items() for n in names]
    pairs.append((MethodRef, "builtins.getattr"))
    pairs += [(DtypeRecord, "numpy.dtype"), (ArrayRecord, "numpy.ndarray")]
    for core in _NUMPY_CORES:
        pairs += [(ArrayRecord, f"{core}._reconstruct"), (ScalarRecord, f"{core}.scalar")]
    return pairs


_SAFE = _safe_globals()
ALLOWED_GLOBALS = frozenset(path for _, path in _SAFE)


def _pickle_bytes(path: Path) -> bytes | None:
    """The main pickle of a torch zip checkpoint (``<archive>/data.pkl``); None for other files."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            return z.read(min(names, key=len)) if names else None
    except (zipfile.BadZipFile, OSError):
        return None


def pickle_globals(path: str | Path) -> list[str] | None:
    """Every global (``module.name``) the checkpoint's pickle refers to, in order of first use,
    read from its opcodes without unpickling; None when ``path`` is not a torch zip file."""
    data = _pickle_bytes(Path(path))
    if data is None:
        return None
    found: dict[str, None] = {}
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                module, name = str(arg).split(" ", 1)
                # protocol-2 names of Python 2 (``__builtin__.set``), mapped as torch's loader does
                module, name = NAME_MAPPING.get((module, name), (IMPORT_MAPPING.get(module, module), name))
                found[f"{module}.{name}"] = None
            elif op.name == "STACK_GLOBAL":
                found["<STACK_GLOBAL>"] = None  # torch's safe loader refuses these too
    except (ValueError, EOFError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint pickle ({e})") from None
    return list(found)


def describe_foreign(globals_: list[str]) -> str | None:
    """What a checkpoint is when its globals mark another task or repository, else None."""
    for marker, what in FOREIGN_MARKERS:
        if any(g == marker or (marker.endswith(".") and g.startswith(marker)) for g in globals_):
            return what
    return None


def is_official(globals_: list[str] | None) -> bool:
    """True when a pickle's globals (``pickle_globals``) are those of an official-style
    ``models.*`` checkpoint (YOLOv7, or another task/repository to refuse with a reason)."""
    return bool(globals_) and any(g.startswith("models.") for g in globals_)


def read_official(path: str | Path) -> dict[str, Any]:
    """Load an official YOLOv7 checkpoint as a dict whose modules are :class:`StandIn` trees.

    Raises CheckpointError (naming the file) for a pose / mask / YOLOv5 / ultralytics file,
    saying what it is, and for any global outside the allowed list, naming the global; the
    check runs on the pickle's opcodes before anything is loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    globals_ = pickle_globals(path)
    if globals_ is None:
        raise CheckpointError(f"{path}: not a torch zip checkpoint (official YOLOv7 files are)")
    foreign = describe_foreign(globals_)
    if foreign:
        raise CheckpointError(f"{path}: {foreign}, not a YOLOv7 detection checkpoint; only those convert")
    refused = [g for g in globals_ if g not in ALLOWED_GLOBALS and g not in _torch_globals()]
    if refused:
        raise CheckpointError(f"{path}: the pickle refers to {refused[0]}, which is not allowed in a YOLOv7 "
                              "detection checkpoint (nothing was loaded)")
    try:
        with torch.serialization.safe_globals(_SAFE):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: official checkpoint does not load safely ({first})") from None
    if not isinstance(ckpt, dict) or not any(isinstance(ckpt.get(k), StandIn) for k in ("model", "ema")):
        raise CheckpointError(f"{path}: no 'model' or 'ema' module: not an official YOLOv7 checkpoint")
    return ckpt


def _torch_globals() -> dict[str, Any]:
    """torch's own weights_only allowlist (tensor and storage rebuilders, OrderedDict, set, ...)."""
    from torch._weights_only_unpickler import _get_allowed_globals

    return _get_allowed_globals()


def plain(value: Any) -> Any:
    """``value`` with numpy records turned into Python numbers / lists (plain dtypes only)."""
    if isinstance(value, (ArrayRecord, ScalarRecord)):
        array = np.asarray(value.to_numpy())
        return array.item() if array.size == 1 else array.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def state_dict(module: StandIn, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict ``module`` had (parameters, persistent buffers, in module order), from
    its recorded ``_parameters`` / ``_buffers`` / ``_modules``."""
    attrs = vars(module)
    skip = attrs.get("_non_persistent_buffers_set") or set()
    out = {f"{prefix}{k}": v for k, v in (attrs.get("_parameters") or {}).items() if v is not None}
    out.update({f"{prefix}{k}": v for k, v in (attrs.get("_buffers") or {}).items()
                if v is not None and k not in skip})
    for name, child in (attrs.get("_modules") or {}).items():
        if isinstance(child, StandIn):
            out.update(state_dict(child, f"{prefix}{name}."))
    return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in out.items()}


def named_modules(module: StandIn, prefix: str = "") -> list[tuple[str, StandIn]]:
    """(dotted name, stand-in) for ``module`` and all its submodules, parents first."""
    out = [(prefix.rstrip("."), module)]
    for name, child in (vars(module).get("_modules") or {}).items():
        if isinstance(child, StandIn):
            out += named_modules(child, f"{prefix}{name}.")
    return out
