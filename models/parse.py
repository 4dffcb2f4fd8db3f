"""Reading model YAMLs: locating the file, choosing a scale, and building the layer list.

Format (YOLOv7's): ``nc``, ``depth_multiple``, ``width_multiple``, ``anchors`` and
``backbone`` / ``head`` lists of rows ``[from, number, module, args]``. Extensions:
``scales: {name: [depth_multiple, width_multiple]}`` (one file, several sizes; pick one with
``scale:`` in the file, a file name such as ``yolor-csp-x.yaml`` for ``yolor-csp.yaml`` at
scale ``x``, or the first entry), ``activation:`` (default activation of every block, e.g.
``LeakyReLU(0.1)``) and a mapping as the last element of ``args`` (keyword arguments).
String arguments ``nc``, ``anchors``, ``None``, ``True`` and ``False`` are substituted; every
other string is passed to the block as is (activations are parsed by ``blocks.make_act``).
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from models.blocks import Block, RowContext
from models.registry import lookup
from utils.config import ConfigError, read_yaml
from utils.rounding import round_up

CFG_DIR = Path(__file__).resolve().parents[1] / "cfg"
TOP_KEYS = ("nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head", "scales", "scale",
            "activation")
_LITERALS = {"None": None, "True": True, "False": False}


def resolve_cfg_path(cfg: str | Path) -> tuple[Path, str | None]:
    """(existing file, scale implied by the name or None) for a config path or a name in cfg/.

    ``yolor-csp-x.yaml`` resolves to ``yolor-csp.yaml`` with scale ``x`` when only the latter
    exists (``-x`` suffix or a single trailing letter, as in ``yolov8n``).
    """
    path = Path(cfg)
    candidates = [path] if path.is_absolute() or path.parent != Path(".") else [path, CFG_DIR / path]
    for base in candidates:
        if base.is_file():
            return base, None
        stem = base.stem
        options = []
        if "-" in stem:
            head, _, tail = stem.rpartition("-")
            options.append((head, tail))
        options.append((stem[:-1], stem[-1:]))
        for head, scale in options:
            file = base.with_name(head + base.suffix)
            if head and file.is_file():
                return file, scale
    raise ConfigError(f"{cfg}: model config not found (looked in {', '.join(str(c) for c in candidates)})")


def _row_lines(text: str) -> list[int | None]:
    """1-based line of each backbone + head row in YAML ``text`` (None where unknown)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return []
    lines: list[int | None] = []
    if isinstance(root, yaml.MappingNode):
        sections = {k.value: v for k, v in root.value if isinstance(k, yaml.ScalarNode)}
        for name in ("backbone", "head"):
            node = sections.get(name)
            if isinstance(node, yaml.SequenceNode):
                lines += [item.start_mark.line + 1 for item in node.value]
    return lines


@dataclass
class ModelConfig:
    """A model config dict (``data``, stored in checkpoints) and where it came from."""

    data: dict
    source: str
    lines: list[int | None]


def load_model_config(cfg: str | Path | dict, scale: str | None = None) -> ModelConfig:
    """Read and check a model config; apply its ``scales`` entry. ``cfg`` may be a dict."""
    if isinstance(cfg, dict):
        data, source, lines = copy.deepcopy(cfg), "<model config>", []
    else:
        path, name_scale = resolve_cfg_path(cfg)
        data, source = read_yaml(path), str(path)
        lines = _row_lines(path.read_text())
        scale = scale or name_scale
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(TOP_KEYS)})")
    for key in ("nc", "anchors", "backbone", "head"):
        if key not in data:
            raise ConfigError(f"{source}: missing key {key!r}")
    if "scales" in data:
        scales = data["scales"]
        if not isinstance(scales, dict) or not scales:
            raise ConfigError(f"{source}: key 'scales': expected a mapping name -> [depth, width]")
        scale = scale or data.get("scale") or next(iter(scales))
        if scale not in scales:
            raise ConfigError(f"{source}: scale {scale!r} not in scales ({', '.join(map(str, scales))})")
        if not (isinstance(scales[scale], list) and len(scales[scale]) == 2):
            raise ConfigError(f"{source}: key 'scales': entry {scale!r} must be [depth_multiple, width_multiple], "
                              f"got {scales[scale]!r:.60}")
        data["depth_multiple"], data["width_multiple"] = scales[scale]
        data["scale"] = scale
    elif scale is not None:
        raise ConfigError(f"{source}: scale {scale!r} requested but the config has no 'scales'")
    check_sections(data, source)
    return ModelConfig(data, source, lines)


def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def check_sections(data: dict, source: str) -> None:
    """Raise ConfigError naming the key unless every top-level section has its type: ``nc`` an
    integer >= 1, positive multiples, ``anchors`` per-level lists of positive numbers,
    ``backbone`` / ``head`` lists of rows, ``activation`` a name or true/false."""
    nc = data.get("nc")
    if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
        raise ConfigError(f"{source}: key 'nc' must be an integer >= 1, got {nc!r:.60}")
    for key in ("depth_multiple", "width_multiple"):
        if key in data and not _positive_number(data[key]):
            raise ConfigError(f"{source}: key {key!r} must be a positive number, got {data[key]!r:.60}")
    anchors = data.get("anchors")
    if not (isinstance(anchors, list) and anchors and all(
            isinstance(a, list) and a and all(_positive_number(v) for v in a) for a in anchors)):
        raise ConfigError(f"{source}: key 'anchors' must be per-level lists of positive numbers (w0, h0, w1, h1, "
                          f"...), got {anchors!r:.80}")
    for key in ("backbone", "head"):
        if data.get(key) is not None and not isinstance(data[key], list):
            raise ConfigError(f"{source}: key {key!r} must be a list of rows [from, number, module, args], "
                              f"got {type(data[key]).__name__} {data[key]!r:.40}")
    if "activation" in data and not isinstance(data["activation"], (str, bool)):
        raise ConfigError(f"{source}: key 'activation' must be a name such as LeakyReLU(0.1), got "
                          f"{data['activation']!r:.60}")
    if "scale" in data and not isinstance(data["scale"], str):
        raise ConfigError(f"{source}: key 'scale' must be a name in 'scales', got {data['scale']!r:.60}")


def _resolve_arg(value: Any, data: dict) -> Any:
    if isinstance(value, str):
        if value in ("nc", "anchors"):
            return data[value]
        return _LITERALS.get(value, value)
    return value


@dataclass
class ParsedModel:
    """Layers in row order, each layer's inputs, and the rows whose outputs later layers reuse.

    ``froms[i]`` is -1 (the previous layer's output, or the image for row 0), an absolute row
    index, or a list of those; ``channels[i]`` the output channels of row i.
    """

    layers: nn.ModuleList
    froms: list[int | list[int]]
    channels: list[int]
    save: set[int]


def _where(cfg: ModelConfig, i: int, n_backbone: int, row: Any) -> str:
    section, j = ("backbone", i) if i < n_backbone else ("head", i - n_backbone)
    line = cfg.lines[i] if i < len(cfg.lines) and cfg.lines[i] else None
    loc = f"{cfg.source}:{line}" if line else cfg.source
    return f"{loc}: {section} row {j} (layer {i}) {row!r}"


def _absolute_from(f: Any, i: int) -> int:
    if isinstance(f, bool) or not isinstance(f, int):
        raise ValueError(f"'from' entries must be integers, got {f!r}")
    if f == -1:
        return -1
    j = i + f if f < 0 else f
    if not 0 <= j < i:
        raise ValueError(f"'from' index {f} is out of range (rows 0..{i - 1} come before this one)")
    return j


def build_row(cls: type[Block], ctx: RowContext, args: list, kwargs: dict) -> Block:
    """Call ``cls.from_yaml(ctx, *args, **kwargs)`` after checking the arguments fit its signature."""
    try:
        inspect.signature(cls.from_yaml).bind(ctx, *args, **kwargs)
    except TypeError as e:
        sig = str(inspect.signature(cls.from_yaml)).replace("ctx: 'RowContext', ", "")
        raise ValueError(f"wrong arguments for {cls.__name__}: {e}; expected {sig}") from None
    return cls.from_yaml(ctx, *args, **kwargs)


def parse_model(cfg: ModelConfig, ch: int = 3) -> ParsedModel:
    """Build the layers of ``cfg``; every error names the file, section, row and layer index."""
    data = cfg.data
    gd, gw = float(data.get("depth_multiple", 1.0)), float(data.get("width_multiple", 1.0))
    rows = list(data["backbone"] or []) + list(data["head"] or [])
    n_backbone = len(data["backbone"] or [])
    layers, froms, channels, save = nn.ModuleList(), [], [], set()
    for i, row in enumerate(rows):
        where = _where(cfg, i, n_backbone, row)
        try:
            if not isinstance(row, list) or len(row) != 4:
                raise ValueError("a row must be [from, number, module, args]")
            f, n, name, args = row
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"'number' must be a positive integer, got {n!r}")
            if not isinstance(args, list):
                raise ValueError(f"'args' must be a list, got {args!r}")
            cls, kwargs = lookup(str(name))
            f_abs = [_absolute_from(x, i) for x in f] if isinstance(f, list) else _absolute_from(f, i)
            ins = f_abs if isinstance(f_abs, list) else [f_abs]
            ch_in = [(channels[-1] if channels else ch) if j == -1 else channels[j] for j in ins]
            args = [_resolve_arg(a, data) for a in args]
            if args and isinstance(args[-1], dict):
                kwargs.update(args.pop())
            n = max(round(n * gd), 1) if n > 1 else n
            ctx = RowContext(ch=ch_in, n=n, width=lambda c: round_up(c * gw, 8),
                             act=data.get("activation", True), nc=data["nc"], anchors=data["anchors"])
            layer = build_row(cls, ctx, args, kwargs)
            if n > 1 and not cls.takes_depth:
                repeats = [layer]
                for _ in range(n - 1):
                    ctx = RowContext(ch=[repeats[-1].out_channels], n=1, width=ctx.width, act=ctx.act,
                                     nc=ctx.nc, anchors=ctx.anchors)
                    repeats.append(build_row(cls, ctx, args, kwargs))
                layer = nn.Sequential(*repeats)
                layer.out_channels = repeats[-1].out_channels
        except ConfigError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise ConfigError(f"{where}: {msg}") from None
        layers.append(layer)
        froms.append(f_abs)
        channels.append(layer.out_channels)
        save.update(j for j in ins if j != -1)
    if not layers:
        raise ConfigError(f"{cfg.source}: the model has no rows")
    return ParsedModel(layers, froms, channels, save)


def row_location(cfg: ModelConfig, i: int) -> str:
    """'file:line: section row j (layer i) [row]' for error messages about layer ``i``."""
    rows = list(cfg.data["backbone"] or []) + list(cfg.data["head"] or [])
    return _where(cfg, i, len(cfg.data["backbone"] or []), rows[i])
