"""Typed configuration objects loaded from YAML.

Every config in the project (hyper-parameters, data sets, run options) is a dataclass. Loading
rejects unknown keys and wrong types with a message that names the file and the key, so a typo
in a YAML file never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from utils.errors import UserError

T = TypeVar("T")
LOGGER = logging.getLogger(__name__)
# Hyp keys read only so that YOLOv7's own hyp files load: nothing here uses them (the OTA and
# YOLOv5-rule assignments use anchor_t, not iou_t; anchors come from the model config and
# autoanchor). A non-default value is warned about once per process, never silently dropped.
COMPAT_ONLY_KEYS = ("iou_t", "anchors")
_warned: set[tuple[str, Any]] = set()


class ConfigError(UserError, ValueError):
    """A config file or mapping is malformed; the message names the file and key."""


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping from ``path``; errors name the file (and line, for syntax errors)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: YAML syntax error: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _check_type(value: Any, annotation: Any) -> Any:
    """Return ``value`` converted to ``annotation`` where that is lossless, else raise TypeError."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(annotation):
            try:
                return _check_type(value, arg)
            except TypeError as e:
                errors.append(str(e))
        raise TypeError(" or ".join(errors))
    if annotation is type(None):
        if value is None:
            return None
        raise TypeError(f"expected None, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError(f"expected a number, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError(f"expected an integer, got {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise TypeError(f"expected true/false, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"expected a string, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, got {value!r}")
        args = typing.get_args(annotation)
        item = args[0] if args else Any
        return origin(_check_type(v, item) for v in value)
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping, got {value!r}")
        return dict(value)
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any], source: str = "<config>") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError.

    ``source`` names where the mapping came from (a file path) for the error message.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(fields)})")
    kwargs = {}
    for key, value in data.items():
        try:
            kwargs[key] = _check_type(value, hints[key])
        except TypeError as e:
            raise ConfigError(f"{source}: key {key!r}: {e}") from None
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{source}: missing key {missing[0]!r}")
    return cls(**kwargs)


def load(cls: type[T], path: str | Path) -> T:
    """Read YAML file ``path`` into dataclass ``cls`` (see from_mapping)."""
    return from_mapping(cls, read_yaml(path), str(path))


def apply_overrides(obj: T, overrides: list[str], source: str = "command line") -> T:
    """Return a copy of dataclass ``obj`` with ``key=value`` strings applied (values parsed as YAML)."""
    data = dataclasses.asdict(obj)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} is not key=value")
        key, value = item.split("=", 1)
        data[key.strip()] = yaml.safe_load(value)
    return from_mapping(type(obj), data, source)


@dataclasses.dataclass(frozen=True)
class Hyp:
    """Training hyper-parameters; the keys of YOLOv7's data/hyp.scratch.*.yaml files."""

    lr0: float = 0.01  # initial learning rate (SGD 1e-2, Adam 1e-3)
    lrf: float = 0.1  # final learning rate as a fraction of lr0
    momentum: float = 0.937  # SGD momentum / Adam beta1
    weight_decay: float = 0.0005  # at nominal batch size 64
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    box: float = 0.05  # box loss gain
    cls: float = 0.3  # class loss gain
    cls_pw: float = 1.0  # class BCE positive weight
    obj: float = 0.7  # objectness loss gain (scaled with image size)
    obj_pw: float = 1.0  # objectness BCE positive weight
    iou_t: float = 0.20  # IoU training threshold (unused: COMPAT_ONLY_KEYS)
    anchor_t: float = 4.0  # anchor-multiple threshold
    anchors: float = 0.0  # anchors per output layer (unused: COMPAT_ONLY_KEYS; the model config sets them)
    fl_gamma: float = 0.0  # focal loss gamma (0: plain BCE)
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    degrees: float = 0.0
    translate: float = 0.2
    scale: float = 0.9
    shear: float = 0.0
    perspective: float = 0.0
    flipud: float = 0.0
    fliplr: float = 0.5
    mosaic: float = 1.0
    mixup: float = 0.15
    copy_paste: float = 0.0  # fraction of polygon objects mirrored and pasted (data.paste; needs segments)
    paste_in: float = 0.15  # probability of pasting pool objects into a sample (data.paste; needs segments)
    loss_ota: bool = True
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in COMPAT_ONLY_KEYS and value != f.default and (f.name, value) not in _warned:
                _warned.add((f.name, value))
                LOGGER.warning("hyp %s=%g is ignored: the key is read only so YOLOv7 hyp files load "
                               "(default %g)", f.name, value, f.default)
