"""Writing checkpoints laid out as the official YOLOv7 train.py writes them, without its code.

The official files pickle whole modules of classes named ``models.yolo.Model``,
``models.common.Conv``, ... (WongKinYiu/yolov7, read through the search tool for the attribute
layout; nothing copied). Our own package is also named ``models``, so the file is written in a
subprocess whose ``sys.path`` starts with a temporary folder holding a stand-in ``models``
package: empty ``nn.Module`` subclasses with the official names. This process describes the
object tree (class path, plain attributes, parameters, buffers, children; real ``torch.nn``
layers as they are) from one of our models built from an official unrolled config; the
subprocess rebuilds it from those classes and ``torch.save``s the checkpoint dict.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.blocks import MP, SP, SPPCSPC, Concat, Conv, DownC, ReOrg, Shortcut, Upsample
from models.head import Detect
from models.reparam import ImplicitA, ImplicitM, RepConv
from models.yolo import Model

_COMMON = {Conv: "Conv", RepConv: "RepConv", Concat: "Concat", Shortcut: "Shortcut", MP: "MP", SP: "SP",
           ReOrg: "ReOrg", DownC: "DownC", SPPCSPC: "SPPCSPC", ImplicitA: "ImplicitA", ImplicitM: "ImplicitM"}

_PACKAGE = {
    "__init__.py": "",
    "yolo.py": "from torch import nn\n"
               "class Model(nn.Module): pass\n"
               "class Detect(nn.Module): pass\n"
               "class IDetect(nn.Module):\n    def fuseforward(self, x): return x\n"
               "class IAuxDetect(IDetect): pass\n"
               "class IKeypoint(nn.Module): pass\n",
    "common.py": "from torch import nn\n"
                 "class Conv(nn.Module):\n    def fuseforward(self, x): return x\n"
                 + "".join(f"class {n}(nn.Module): pass\n" for n in _COMMON.values() if n != "Conv"),
}

_BUILD = """
import importlib, os, sys, numpy as np, torch
from torch import nn
# the spec holds real torch.nn layers: allow their classes (and numpy scalars), nothing else
allowed = [np.dtypes.Float64DType]  # built by pickle after numpy.dtype: not among the listed globals
for name in torch.serialization.get_unsafe_globals_in_checkpoint(sys.argv[1]):
    assert name.startswith(("torch.nn.modules.", "numpy.", "collections.OrderedDict")), name
    module, _, attr = name.rpartition(".")
    allowed.append(getattr(importlib.import_module(module), attr))
with torch.serialization.safe_globals(allowed):
    spec = torch.load(sys.argv[1], weights_only=True)

def build(node):
    if not (isinstance(node, dict) and "__official__" in node):
        return node  # a real torch.nn layer, None, or a plain value
    module, _, name = node["__official__"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    obj = cls.__new__(cls)
    nn.Module.__init__(obj)
    for k, v in node["params"].items():
        obj.register_parameter(k, None if v is None else nn.Parameter(v))
    for k, v in node["buffers"].items():
        obj.register_buffer(k, v)
    for k, v in node["children"].items():
        obj.add_module(k, build(v))
    for k, v in node["attrs"].items():
        setattr(obj, k, v)
    if node.get("fused_forward"):
        obj.forward = obj.fuseforward  # what the official fuse() does
    return obj

if spec.get("numpy1_paths"):
    # numpy 1 pickled arrays as numpy.core.multiarray._reconstruct; numpy 2 names numpy._core
    import copyreg, types
    core = types.ModuleType("numpy.core.multiarray")
    def _reconstruct(*args):
        return np._core.multiarray._reconstruct(*args)
    _reconstruct.__module__ = core.__name__
    core._reconstruct = _reconstruct
    sys.modules[core.__name__] = core
    copyreg.pickle(np.ndarray, lambda a: (_reconstruct, (np.ndarray, (0,), b"b"), a.__reduce__()[2]))

class Evil:
    def __init__(self, command):
        self.command = command
    def __reduce__(self):
        return (os.system, (self.command,))

for out, files in spec["files"].items():
    ckpt = {k: Evil(v["__evil__"]) if isinstance(v, dict) and "__evil__" in v else build(v)
            for k, v in files.items()}
    torch.save(ckpt, out)
"""


def _node(cls: str, module: nn.Module | None = None, attrs: dict | None = None, children: dict | None = None,
          params: dict | None = None, buffers: dict | None = None) -> dict:
    return {"__official__": cls, "attrs": attrs or {}, "children": children or {}, "params": params or {},
            "buffers": buffers or {}}


def describe(m: nn.Module | None) -> object:
    """The official object tree of one of our modules (a dict node, or a real torch.nn layer)."""
    if m is None or type(m).__module__.startswith("torch.nn"):
        if isinstance(m, (nn.Sequential, nn.ModuleList)) and any(type(c) in _COMMON for c in m):
            node = _node(f"{type(m).__module__}.{type(m).__name__}")
            node["children"] = {k: describe(c) for k, c in m.named_children()}
            return node
        return m
    if isinstance(m, Upsample):
        return m.m  # the official rows use nn.Upsample itself
    name = _COMMON[type(m)]
    node = _node(f"models.common.{name}")
    node["params"] = dict(m._parameters)
    node["buffers"] = dict(m._buffers)
    node["children"] = {k: describe(c) for k, c in m._modules.items() if not (isinstance(m, Conv) and k == "bn"
                                                                            and isinstance(c, nn.Identity))}
    if isinstance(m, Concat | Shortcut):
        node["attrs"]["d"] = getattr(m, "d", 1)
    if isinstance(m, ImplicitA | ImplicitM):
        c = m.implicit.shape[1]
        node["attrs"].update(channel=c, mean=0.0 if isinstance(m, ImplicitA) else 1.0, std=0.02)
    if isinstance(m, RepConv):
        conv = m.rbr_reparam if m.rbr_reparam is not None else m.rbr_dense[0]
        node["attrs"].update(deploy=m.rbr_reparam is not None, groups=conv.groups,
                             in_channels=conv.in_channels, out_channels=conv.out_channels)
        if m.rbr_reparam is None:
            node["children"].pop("rbr_reparam", None)
    if isinstance(m, Conv) and isinstance(m.bn, nn.Identity):
        node["fused_forward"] = True
    return node


def describe_head(head: Detect, kind: str, fused: bool = False) -> dict:
    """The official Detect / IDetect / IAuxDetect: anchors in grid units, anchor_grid in pixels."""
    node = _node(f"models.yolo.{kind}")
    stride = head.stride.clone()
    node["buffers"] = {"anchors": head.anchors / stride.view(-1, 1, 1),
                       "anchor_grid": head.anchors.clone().view(head.nl, 1, -1, 1, 1, 2)}
    node["children"] = {"m": head.m}
    if head.m2 is not None:
        node["children"]["m2"] = head.m2
    if head.ia is not None:
        node["children"]["ia"] = describe_list(head.ia)
        node["children"]["im"] = describe_list(head.im)
    node["attrs"] = {"nc": head.nc, "no": head.no, "nl": head.nl, "na": head.na, "stride": stride,
                     "grid": [torch.zeros(1)] * head.nl}
    node["fused_forward"] = fused
    return node


def describe_list(mods: nn.ModuleList) -> dict:
    node = _node("torch.nn.modules.container.ModuleList")
    node["children"] = {k: describe(c) for k, c in mods.named_children()}
    return node


def describe_model(model: Model, yaml: dict, head_kind: str, head_fused: bool = False,
                   yaml_file: str = "custom.yaml") -> dict:
    """models.yolo.Model: ``model`` an nn.Sequential of rows (each with i, f, type, np), ``yaml``
    (with the ``ch`` the official Model adds), names, nc, stride, hyp, gr, class_weights."""
    rows = _node("torch.nn.modules.container.Sequential")
    for i, (layer, f) in enumerate(zip(model.model, model.froms, strict=True)):
        if i == len(model.model) - 1:
            d = describe_head(layer, head_kind, head_fused)
        else:
            d = describe(layer)
        row_attrs = {"i": i, "f": f, "type": "x", "np": sum(p.numel() for p in layer.parameters())}
        if isinstance(d, dict):
            d["attrs"].update(row_attrs)
        else:
            for k, v in row_attrs.items():
                setattr(d, k, v)
        rows["children"][str(i)] = d
    attrs = {"yaml": dict(yaml, ch=3), "yaml_file": yaml_file, "traced": False, "save": sorted(model.save),
             "names": list(model.names), "nc": model.nc, "stride": model.stride.clone(),
             "hyp": {"lr0": 0.01, "box": np.float64(0.05)}, "gr": 1.0,
             "class_weights": torch.ones(model.nc)}
    return _node("models.yolo.Model", attrs=attrs, children={"model": rows})


def write_official(tmp: Path, files: dict[Path, dict], numpy1_paths: bool = False) -> None:
    """Write each ``files[path]`` (a dict of described trees and plain values) as an official
    checkpoint, all in one subprocess. A value ``{"__evil__": command}`` becomes an object whose
    unpickling would run ``os.system(command)``. ``numpy1_paths``: arrays under numpy 1's
    ``numpy.core.multiarray`` name, as the official files have them."""
    package = tmp / "official_src" / "models"
    package.mkdir(parents=True, exist_ok=True)
    for name, text in _PACKAGE.items():
        (package / name).write_text(text)
    spec = tmp / "official_spec.pt"
    torch.save({"files": {str(k): v for k, v in files.items()}, "numpy1_paths": numpy1_paths}, spec)
    script = tmp / "official_build.py"
    script.write_text(_BUILD)
    env = dict(os.environ, PYTHONPATH=str(package.parent))  # the stand-in ``models`` only
    done = subprocess.run([sys.executable, str(script), str(spec)], capture_output=True, text=True,
                          cwd=tmp, env=env, timeout=300)
    assert done.returncode == 0, done.stderr


def randomize(model: Model, seed: int = 0) -> Model:
    """Every tensor of ``model`` random (BN statistics too) and fp16-exact, so each key's
    tensor is distinct and survives a trip through fp16 unchanged."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.is_floating_point() and not k.endswith(("anchors", "stride")):
                r = torch.rand(v.shape, generator=g)
                v.copy_((r + 0.5 if "running_var" in k else (r - 0.5) * 0.2).half().float())
            elif k.endswith("num_batches_tracked"):
                v.fill_(int(torch.randint(1, 10**6, (1,), generator=g)))
        model.head.anchors.mul_(1.5).round_()
    return model


def half_tree(node: object) -> object:
    """A described tree with its floating tensors in fp16 (train.py saves ``.half()`` copies)."""
    if isinstance(node, dict) and "__official__" in node:
        out = dict(node)
        for key in ("params", "buffers"):
            out[key] = {k: v.half() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                        for k, v in node[key].items()}
        out["children"] = {k: half_tree(v) for k, v in node["children"].items()}
        return out
    if isinstance(node, nn.Module):
        import copy

        return copy.deepcopy(node).half()
    return node


def train_checkpoint(ema: Model, raw: Model | None, yaml: dict, head_kind: str, *, epoch: int = 7,
                     yaml_file: str = "custom.yaml", head_fused: bool = False) -> dict:
    """The dict official train.py saves (``raw`` None: as its strip_optimizer leaves it, the EMA
    as ``model``, training keys None, epoch -1); modules in fp16, ``best_fitness`` an ndarray."""
    tree = half_tree(describe_model(ema, yaml, head_kind, head_fused, yaml_file))
    if raw is None:
        return {"epoch": -1, "best_fitness": np.array([0.25]), "training_results": None, "model": tree,
                "ema": None, "updates": None, "optimizer": None, "wandb_id": None}
    momentum = {i: {"momentum_buffer": torch.zeros(2)} for i in range(3)}
    return {"epoch": epoch, "best_fitness": np.array([0.25]), "training_results": "0/9 ...",
            "model": half_tree(describe_model(raw, yaml, head_kind, head_fused, yaml_file)), "ema": tree,
            "updates": 1234, "optimizer": {"state": momentum, "param_groups": [{"lr": 0.01, "params": [0, 1, 2]}]},
            "wandb_id": None}
