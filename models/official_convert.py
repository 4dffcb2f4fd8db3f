"""Mapping an official YOLOv7 checkpoint (read by ``models.official``) onto one of our models.

The model is rebuilt from the checkpoint's own ``yaml`` dict (the official rows, which our
parser builds unchanged, key for key), the weights come from ``ema`` when the file has it,
else ``model``, in float32. The official head keeps ``anchors`` in grid units and
``anchor_grid`` in pixels; ours keeps pixels in ``head.anchors`` (docs/design.md). Modules the
official ``fuse()`` changed (Conv without BN, RepConv with ``rbr_reparam``, an IDetect running
``fuseforward``) are fused in our model before loading. When the network is one of our compact
configs (same keys, shapes and outputs) the weights move onto it through
``models.yolo.unrolled_key_map``, kept in the result so they can be mapped back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.official import MethodRef, StandIn, named_modules, plain, read_official, state_dict
from models.parse import CFG_DIR, load_model_config
from models.yolo import Model, unrolled_key_map
from utils.checkpoint import CHECKPOINT_VERSION, CheckpointError
from utils.config import ConfigError

HEADS = ("models.yolo.Detect", "models.yolo.IDetect", "models.yolo.IAuxDetect")


@dataclass
class Conversion:
    """An official checkpoint turned into one of ours (``checkpoint``, docs/design.md schema)."""

    checkpoint: dict[str, Any]
    model: Model
    cfg: str  # our compact config's name, or "official" for the file's own unrolled rows
    weights_from: str  # "ema" or "model"
    epoch: int  # the official file's epoch (-1: stripped / final)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The numbers ``python -m models.convert`` prints."""
        return {"cfg": self.cfg, "params": sum(p.numel() for p in self.model.parameters()),
                "nc": self.model.nc, "names": list(self.model.names), "epoch": self.epoch,
                "weights": self.weights_from, "head": self.checkpoint["converted_from"]["head"],
                "notes": self.notes}


def _fused(tree: StandIn) -> bool:
    """Whether the official ``fuse()`` ran (Conv without BN, RepConv with ``rbr_reparam``, an
    IDetect running ``fuseforward``); it fuses every such module at once."""
    for _, m in named_modules(tree):
        mods = vars(m).get("_modules") or {}
        if ((m.official == "models.common.Conv" and mods.get("bn") is None)
                or (m.official == "models.common.RepConv" and mods.get("rbr_reparam") is not None)
                or (m.official in HEADS[1:] and isinstance(vars(m).get("forward"), MethodRef))):
            return True
    return False


def _config(tree: StandIn, source: Path) -> tuple[dict, int]:
    """The checkpoint's own config dict, cleaned for our parser, and its class count."""
    yaml = plain(vars(tree).get("yaml"))
    if not isinstance(yaml, dict):
        raise CheckpointError(f"{source}: the official model has no 'yaml' config dict")
    yaml = dict(yaml)
    ch = yaml.pop("ch", 3)
    if ch != 3:
        raise CheckpointError(f"{source}: the model takes {ch} input channels; only 3 (RGB) are supported")
    yaml.pop("nkpt", None)
    head = _layers(tree, source)[-1]
    nc = vars(head).get("nc", yaml.get("nc"))
    if not isinstance(nc, int) or nc < 1:
        raise CheckpointError(f"{source}: the head has no valid class count ({nc!r})")
    yaml["nc"] = nc
    return yaml, nc


def _layers(tree: StandIn, source: Path) -> list[StandIn]:
    seq = (vars(tree).get("_modules") or {}).get("model")
    layers = list((vars(seq).get("_modules") or {}).values()) if isinstance(seq, StandIn) else []
    if not layers or not isinstance(layers[-1], StandIn) or layers[-1].official not in HEADS:
        last = layers[-1].official if layers and isinstance(layers[-1], StandIn) else None
        raise CheckpointError(f"{source}: the last layer is {last}, not a YOLOv7 detection head ({', '.join(HEADS)})")
    return layers


def _official_anchors(head: StandIn, source: Path) -> torch.Tensor:
    """Anchors [nl, na, 2] in pixels: ``anchor_grid`` (pixels), else ``anchors`` x ``stride``."""
    buffers = vars(head).get("_buffers") or {}
    nl = len(buffers["anchors"]) if buffers.get("anchors") is not None else None
    if buffers.get("anchor_grid") is not None and nl:
        return buffers["anchor_grid"].float().reshape(nl, -1, 2)
    stride = vars(head).get("stride")
    if nl and isinstance(stride, torch.Tensor):
        return buffers["anchors"].float() * stride.float().view(-1, 1, 1)
    raise CheckpointError(f"{source}: the head has no anchors")


def _load_weights(model: Model, official: dict[str, torch.Tensor], head_name: str, anchors: torch.Tensor,
                  fused: bool, source: Path) -> None:
    """Copy every official tensor into ``model`` (same key), anchors converted; all must fit."""
    own = model.state_dict()
    extra = {f"{head_name}.anchors", f"{head_name}.anchor_grid"}
    if fused:  # the official fuse() folds ia / im into m but keeps them, m2 and the aux-only rows
        unused = (f"{head_name}.ia.", f"{head_name}.im.", f"{head_name}.m2.", *(f"model.{i}." for i in model.dropped))
        extra |= {k for k in official if k.startswith(unused)}
    new: dict[str, torch.Tensor] = {}
    for key, mine in own.items():
        if key == f"{head_name}.anchors":
            value = anchors
        elif key == f"{head_name}.stride":
            value = mine
        elif key not in official:
            raise CheckpointError(f"{source}: the model built from its config needs {key!r}, which the file lacks")
        else:
            value = official[key]
        if value.shape != mine.shape:
            raise CheckpointError(f"{source}: {key!r} has shape {tuple(value.shape)} in the file, "
                                  f"{tuple(mine.shape)} in the model built from its config")
        new[key] = value.to(mine.dtype)
    unused = [k for k in official if k not in own and k not in extra]
    if unused:
        raise CheckpointError(f"{source}: the file's tensor {unused[0]!r} has no place in the model built "
                              "from its own config")
    model.load_state_dict(new)


def _head_row(cfg: dict) -> tuple[str, int]:
    """(head module name, anchor levels) of a config: cheap to compare before building."""
    rows = cfg.get("head") or []
    name = str(rows[-1][2]) if rows and isinstance(rows[-1], list) and len(rows[-1]) == 4 else ""
    return name, len(cfg.get("anchors") or [])


def _compact_candidates(yaml: dict, hint: str = "") -> list[tuple[str, dict]]:
    """Our compact configs with the file's head, at its depth / width, class count and anchors;
    the one named like ``hint`` (the official ``yaml_file``) first."""
    out = []
    for path in sorted(CFG_DIR.glob("*.yaml"), key=lambda p: p.stem != hint):
        data = load_model_config(path).data
        if _head_row(data) != _head_row(yaml):
            continue
        for key in ("scales", "scale"):
            data.pop(key, None)
        data.update({k: yaml[k] for k in ("nc", "anchors", "depth_multiple", "width_multiple") if k in yaml})
        out.append((path.stem, data))
    return out


@torch.no_grad()
def to_compact(unrolled: Model, yaml: dict, hint: str = "") -> tuple[str, Model, dict[str, str]] | None:
    """(name, compact model holding ``unrolled``'s weights, our key -> official key) when one
    of our compact configs is the same network: same keys and shapes through
    ``unrolled_key_map`` and the same eval outputs on a random image; else None."""
    target = {k: v.shape for k, v in unrolled.state_dict().items()}
    for name, data in _compact_candidates(yaml, hint):
        try:
            compact = Model(data)
            key_map = unrolled_key_map(compact)
        except (ConfigError, KeyError, ValueError):
            continue
        if {key_map[k]: v.shape for k, v in compact.state_dict().items()} != target:
            continue
        src = unrolled.state_dict()
        compact.load_state_dict({k: src[key_map[k]] for k in compact.state_dict()})
        compact.names = list(unrolled.names)
        size = int(unrolled.stride.max()) * 2
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        a, b = unrolled.eval()(x)[0], compact.eval()(x)[0]
        if torch.allclose(a, b, rtol=1e-5, atol=1e-5):
            return name, compact, key_map
    return None


@torch.no_grad()
def convert_official(path: str | Path, keep_official_cfg: bool = False) -> Conversion:
    """Read the official checkpoint ``path`` safely and rebuild it as one of our models.

    ``keep_official_cfg`` keeps the file's unrolled config even when it is one of our compact
    networks. Raises CheckpointError naming the file for anything that does not map exactly.
    """
    source = Path(path)
    ckpt = read_official(source)
    weights_from = "ema" if isinstance(ckpt.get("ema"), StandIn) else "model"
    tree = ckpt[weights_from]
    if tree.official != "models.yolo.Model":
        raise CheckpointError(f"{source}: '{weights_from}' is a {tree.official}, not models.yolo.Model")
    yaml, nc = _config(tree, source)
    layers = _layers(tree, source)
    head_name = f"model.{len(layers) - 1}"
    fused = _fused(tree)
    try:
        model = Model(yaml)
    except ConfigError as e:
        raise CheckpointError(f"{source}: its model config does not build here ({e})") from None
    if fused:
        model.fuse()
    _load_weights(model, state_dict(tree), head_name, _official_anchors(layers[-1], source), fused, source)
    stride = vars(layers[-1]).get("stride")
    if isinstance(stride, torch.Tensor) and not torch.equal(stride.float().cpu(), model.stride.cpu()):
        raise CheckpointError(f"{source}: strides {stride.tolist()} in the file, {model.stride.tolist()} "
                              "in the model built from its config")
    names = plain(vars(tree).get("names"))
    names = [str(n) for n in (names.values() if isinstance(names, dict) else names or [])]
    model.names = names if len(names) == nc else [str(i) for i in range(nc)]
    notes = ["already fused by the official fuse(): an inference model (fine-tuning takes only the "
             "tensors that match an unfused model)"] if fused else []
    cfg_name, key_map, cfg = "official", None, yaml
    if not keep_official_cfg and not fused:
        found = to_compact(model, yaml, Path(str(vars(tree).get("yaml_file") or "")).stem)
        if found:
            cfg_name, model, key_map = found
            cfg = model.yaml
        else:
            notes.append("not one of our compact configs: kept the file's own config")
    epoch = plain(ckpt.get("epoch"))
    best = plain(ckpt.get("best_fitness"))  # an ndarray [1] in train.py's files, or a number
    best = best[0] if isinstance(best, list) and best else best
    best = float(best) if isinstance(best, (int, float)) else 0.0
    ours = {
        "model": {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()},
        "model_cfg": cfg, "fused": fused, "names": list(model.names), "nc": nc, "hyp": {}, "opt": {}, "epoch": -1,
        "best_fitness": best, "metrics": [], "class_maps": [0.0] * nc, "version": CHECKPOINT_VERSION,
        "converted_from": {"file": str(source), "format": "WongKinYiu/yolov7", "weights": weights_from,
                           "epoch": epoch if isinstance(epoch, int) else -1, "head": layers[-1].official,
                           "official_key_map": key_map or {}},
    }
    return Conversion(ours, model.eval(), cfg_name, weights_from, ours["converted_from"]["epoch"], notes)
