"""Typed configuration objects loaded from YAML.

Every config in the project (hyper-parameters, data sets, run options) is a dataclass. Loading
rejects unknown keys, wrong types, non-finite numbers and values outside a field's declared
``Range`` with a message that names the file and the key, so a typo in a YAML file never
silently falls back to a default. YAML is read with YAML 1.2's number syntax (``1e-3`` is a
number, not the string YAML 1.1 makes of it) and with size and nesting limits checked on the
event stream, before anything is built (an alias bomb or 5000 nested lists fail in milliseconds).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import operator
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from utils.errors import UserError

T = TypeVar("T")
LOGGER = logging.getLogger(__name__)
# Hyp keys read only so that YOLOv7's own hyp files load: nothing here uses them (the OTA and
# YOLOv5-rule assignments use anchor_t, not iou_t; anchors come from the model config and
# autoanchor). A non-default value is warned about once per process, never silently dropped.
COMPAT_ONLY_KEYS = ("iou_t", "anchors")
_warned: set[tuple[str, Any]] = set()
# YOLOv7's loss_ota names one of two assignment rules (models/assign.py ASSIGNERS)
LOSS_OTA_RULES = {True: "ota", False: "yolov5"}


class ConfigError(UserError, ValueError):
    """A config file or mapping is malformed; the message names the file and key."""


MAX_YAML_NODES = 100_000  # after alias expansion; YOLOv7-E6E's config has ~3,000
MAX_YAML_DEPTH = 32  # nested mappings / lists; a model config needs 6


class YamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads YAML 1.2 floats without a dot (``1e-3``, ``5E4``)."""


YamlLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _check_yaml_size(text: str, source: str) -> None:
    """Raise ConfigError when ``text`` nests deeper than MAX_YAML_DEPTH or holds more than
    MAX_YAML_NODES nodes once aliases are expanded. Works on the parser's event stream (no
    recursion, nothing built): an alias counts the size of the node it names."""
    anchors: dict[str, int] = {}
    stack: list[list] = []  # [anchor, expanded size so far] of each open collection
    for event in yaml.parse(text, Loader=YamlLoader):
        where = f"{source}:{event.start_mark.line + 1}" if event.start_mark else source
        if isinstance(event, yaml.CollectionStartEvent):
            stack.append([event.anchor, 1])
            if len(stack) > MAX_YAML_DEPTH:
                raise ConfigError(f"{where}: nested more than {MAX_YAML_DEPTH} levels deep")
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, size = stack.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            anchor, size = None, anchors.get(event.anchor, 1)
        else:
            continue
        if anchor is not None:
            anchors[anchor] = size
        if stack:
            stack[-1][1] += size
        if size > MAX_YAML_NODES or (stack and stack[-1][1] > MAX_YAML_NODES):
            raise ConfigError(f"{where}: more than {MAX_YAML_NODES:,} nodes once aliases are expanded")


def parse_yaml(text: str, source: str = "<yaml>") -> Any:
    """``text`` parsed as YAML (safe, YAML 1.2 numbers, size limits); errors name ``source`` and line."""
    try:
        _check_yaml_size(text, source)
        return yaml.load(text, Loader=YamlLoader)  # noqa: S506 - YamlLoader is a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{where}: YAML syntax error: {getattr(e, 'problem', None) or e}") from None


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping from ``path``; errors name the file (and line, for syntax errors)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    data = parse_yaml(text, str(path))
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


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a number accepts (inclusive ``at_least`` / ``at_most``, exclusive ``above`` /
    ``below``): the one range check of config fields (declared with :func:`ranged`, checked by
    from_mapping) and of command-line flags (``utils.cli.option``)."""

    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None

    def error(self, value: float) -> str | None:
        """Why ``value`` is outside the range, or None."""
        for bound, holds, word in ((self.at_least, operator.ge, ">="), (self.above, operator.gt, ">"),
                                   (self.at_most, operator.le, "<="), (self.below, operator.lt, "<")):
            if bound is not None and not holds(value, bound):  # compared only when bounded: a str has no range
                shown = f"{value:g}" if isinstance(value, float) else value  # an int as typed: 100000, not 1e+05
                return f"must be {word} {bound:g}, got {shown}"
        return None


PROBABILITY = Range(at_least=0.0, at_most=1.0)
NON_NEGATIVE = Range(at_least=0.0)
POSITIVE = Range(above=0.0)


def ranged(default: Any, valid: Range) -> Any:
    """A dataclass field with default ``default`` whose values must lie in ``valid``."""
    return dataclasses.field(default=default, metadata={"range": valid})


def _check_value(field: dataclasses.Field, value: Any) -> None:
    """Raise TypeError when a number of ``value`` is NaN/inf or outside the field's Range."""
    numbers = value if isinstance(value, (list, tuple)) else [value]
    for v in numbers:
        if isinstance(v, float) and not math.isfinite(v):
            raise TypeError(f"must be a finite number, got {v}")
        valid = field.metadata.get("range")
        if valid is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
            why = valid.error(v)
            if why:
                raise TypeError(why)


def from_mapping(cls: type[T], data: Mapping[str, Any], source: str = "<config>") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys, wrong types, non-finite numbers and
    values outside a field's ``Range`` raise ConfigError.

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
            _check_value(fields[key], kwargs[key])
        except TypeError as e:
            raise ConfigError(f"{source}: key {key!r}: {e}") from None
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{source}: missing key {missing[0]!r}")
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a check across keys (__post_init__)
        raise ConfigError(f"{source}: {e}") from None


def load(cls: type[T], path: str | Path) -> T:
    """Read YAML file ``path`` into dataclass ``cls`` (see from_mapping)."""
    return from_mapping(cls, read_yaml(path), str(path))


def apply_overrides(obj: T, overrides: list[str], source: str = "command line") -> T:
    """Return a copy of dataclass ``obj`` with ``key=value`` strings applied (values parsed as YAML).

    Keys that spell one setting (the class's ``ONE_SETTING`` groups): an override of any of them
    resets the others to their defaults, so the command line's choice replaces the file's.
    """
    data = dataclasses.asdict(obj)
    given = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} is not key=value")
        key, value = item.split("=", 1)
        given[key.strip()] = parse_yaml(value, f"{source}: {item}")
    defaults = {f.name: f.default for f in dataclasses.fields(obj)}
    for group in getattr(obj, "ONE_SETTING", ()):
        if any(key in given for key in group):
            data.update({key: defaults[key] for key in group})
    data.update(given)
    return from_mapping(type(obj), data, source)


@dataclasses.dataclass(frozen=True)
class Hyp:
    """Training hyper-parameters; the keys of YOLOv7's data/hyp.scratch.*.yaml files.

    Each numeric key declares the values it accepts (signs, probabilities in [0, 1]); a file or
    ``key=value`` override outside them is a ConfigError naming the key."""

    lr0: float = ranged(0.01, POSITIVE)  # initial learning rate (SGD 1e-2, Adam 1e-3)
    lrf: float = ranged(0.1, NON_NEGATIVE)  # final learning rate as a fraction of lr0
    momentum: float = ranged(0.937, Range(at_least=0.0, below=1.0))  # SGD momentum / Adam beta1
    weight_decay: float = ranged(0.0005, NON_NEGATIVE)  # at the nominal batch size (nbs)
    warmup_epochs: float = ranged(3.0, NON_NEGATIVE)
    warmup_momentum: float = ranged(0.8, Range(at_least=0.0, below=1.0))
    warmup_bias_lr: float = ranged(0.1, NON_NEGATIVE)
    box: float = ranged(0.05, NON_NEGATIVE)  # box loss gain
    cls: float = ranged(0.3, NON_NEGATIVE)  # class loss gain
    cls_pw: float = ranged(1.0, POSITIVE)  # class BCE positive weight
    obj: float = ranged(0.7, NON_NEGATIVE)  # objectness loss gain (scaled with image size)
    obj_pw: float = ranged(1.0, POSITIVE)  # objectness BCE positive weight
    iou_t: float = ranged(0.20, PROBABILITY)  # IoU training threshold (unused: COMPAT_ONLY_KEYS)
    anchor_t: float = ranged(4.0, Range(above=1.0))  # anchor-multiple threshold (a ratio: 1 or less matches nothing)
    anchors: float = ranged(0.0, NON_NEGATIVE)  # anchors per output layer (unused: COMPAT_ONLY_KEYS; the model config sets them)
    fl_gamma: float = ranged(0.0, NON_NEGATIVE)  # focal loss gamma (0: plain BCE)
    hsv_h: float = ranged(0.015, PROBABILITY)
    hsv_s: float = ranged(0.7, PROBABILITY)
    hsv_v: float = ranged(0.4, PROBABILITY)
    degrees: float = ranged(0.0, Range(at_least=0.0, at_most=180.0))
    translate: float = ranged(0.2, Range(at_least=0.0, below=1.0))
    scale: float = ranged(0.9, Range(at_least=0.0, below=1.0))  # gain 1 +/- scale: 1 would allow a 0-px image
    shear: float = ranged(0.0, Range(at_least=0.0, below=90.0))
    perspective: float = ranged(0.0, Range(at_least=0.0, at_most=0.1))
    flipud: float = ranged(0.0, PROBABILITY)
    fliplr: float = ranged(0.5, PROBABILITY)
    mosaic: float = ranged(1.0, PROBABILITY)
    mixup: float = ranged(0.15, PROBABILITY)
    copy_paste: float = ranged(0.0, PROBABILITY)  # fraction of polygon objects mirrored and pasted (data.paste)
    paste_in: float = ranged(0.15, PROBABILITY)  # probability of pasting pool objects into a sample (data.paste)
    # The label assignment rule by name (models/assign.py ASSIGNERS: ota, yolov5; the trainer checks
    # the name). YOLOv7's files say loss_ota instead (true: ota, false: yolov5); neither given: ota.
    # Both given: they must agree.
    assigner: str | None = None
    loss_ota: bool | None = None
    label_smoothing: float = ranged(0.0, Range(at_least=0.0, below=1.0))
    # nominal batch size (ultralytics' nbs): gradients of about this many images make one optimizer
    # step (accumulated over batches), and weight_decay is defined at it; YOLOv7 fixes it at 64
    nbs: int = ranged(64, POSITIVE)

    # keys that spell one setting: a key=value override of one replaces the file's other (apply_overrides)
    ONE_SETTING: ClassVar[tuple[tuple[str, ...], ...]] = (("assigner", "loss_ota"),)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in COMPAT_ONLY_KEYS and value != f.default and (f.name, value) not in _warned:
                _warned.add((f.name, value))
                LOGGER.warning("hyp %s=%g is ignored: the key is read only so YOLOv7 hyp files load "
                               "(default %g)", f.name, value, f.default)
        if self.assigner is not None and self.loss_ota is not None:
            implied = LOSS_OTA_RULES[self.loss_ota]
            if self.assigner != implied:
                raise ConfigError(f"keys 'assigner' ({self.assigner}) and 'loss_ota' ({str(self.loss_ota).lower()}, "
                                  f"which means assigner {implied}) disagree: give one of them")

    @property
    def assignment_rule(self) -> str:
        """The name of the label assignment rule: ``assigner``, else loss_ota's (default ``"ota"``)."""
        if self.assigner is not None:
            return self.assigner
        return LOSS_OTA_RULES[self.loss_ota is not False]
