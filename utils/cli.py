"""Command lines derived from option dataclasses: each option is declared once, as a field.

A field made with :func:`option` carries its default, help, aliases, choices, value range and
argparse shape in its metadata; :func:`build_parser` turns the dataclass into an
``argparse.ArgumentParser`` and :func:`namespace_to` its parsed namespace into an instance. A
value outside the declared range or choices is argparse's usage error (exit 2, ``prog: error:
argument --x: ...``). :func:`check_ranges` applies the same ranges to an instance built in Python
(``ConfigError``). A range is a ``utils.config.Range``, the check config files use too.

The flag is the field name with ``_`` turned into ``-`` (``img_size`` -> ``--img-size``); the
type comes from the annotation: ``bool`` is a store_true switch, ``list[T]`` takes one or more
values (``nargs="+"``), ``T | None`` is ``T`` with a default of None.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from utils.config import ConfigError, Range

T = TypeVar("T")
_KEY = "cli"
MIN_IMG_SIZE, MAX_IMG_SIZE = 32, 8192  # px: --img 100000 tried to allocate 28 GB
# what replaces YOLOv7 flags that several commands accept without effect (Flag.inert)
V5_METRIC_NOTE = ("AP here is pycocotools' already (101 recall points, 0 past the highest recall); YOLOv7's "
                  "--v5-metric only moves its own approximation of it, so the flag changes nothing")
NO_TRACE_NOTE = ("checkpoints run as they are, never traced; export.py --include torchscript writes a traced "
                 "model, which --weights accepts")


@dataclasses.dataclass(frozen=True)
class Flag:
    """How one option appears on the command line (see :func:`option`)."""

    help: str = ""
    aliases: tuple[str, ...] = ()
    choices: tuple[Any, ...] | None = None
    valid: Range = Range()  # the range of each value
    nargs: str | None = None  # overrides the one the type implies
    const: Any = None  # value when the flag stands without one (with nargs="?")
    shortcuts: tuple[tuple[str, Any], ...] = ()  # extra flags that store a constant, e.g. --adam
    positional: bool = False
    metavar: str | None = None
    required: bool = False
    cli: bool = True  # False: an option of the API only, no flag
    repeatable: bool = False  # a list flag that may stand several times, its values adding up
    inert: str = ""  # a YOLOv7 flag accepted without effect here: what replaces it (said on stderr when set)

    def range_error(self, value: Any) -> str | None:
        """Why ``value`` (one item) is outside this flag's range or choices, or None."""
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(repr, self.choices))}, got {value!r}"
        return self.valid.error(value)


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",  # noqa: A002 - argparse's own name for it
    *,
    aliases: Sequence[str] = (),
    choices: Sequence[Any] | None = None,
    at_least: float | None = None,
    at_most: float | None = None,
    below: float | None = None,
    nargs: str | None = None,
    const: Any = None,
    shortcuts: dict[str, Any] | None = None,
    positional: bool = False,
    metavar: str | None = None,
    required: bool = False,
    cli: bool = True,
    repeatable: bool = False,
    inert: str = "",
) -> Any:
    """A dataclass field with its command-line declaration; a list default is copied per instance."""
    flag = Flag(help=help, aliases=tuple(aliases), choices=None if choices is None else tuple(choices),
                valid=Range(at_least=at_least, at_most=at_most, below=below), nargs=nargs, const=const,
                shortcuts=tuple((shortcuts or {}).items()), positional=positional, metavar=metavar,
                required=required, cli=cli, repeatable=repeatable,
                inert=inert)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={_KEY: flag})
    return dataclasses.field(default=default, metadata={_KEY: flag})


def flag_of(field: dataclasses.Field) -> Flag:
    """The declaration of ``field`` (a plain field counts as an undocumented flag)."""
    return field.metadata.get(_KEY, Flag())


def flag_name(field: dataclasses.Field) -> str:
    return "--" + field.name.replace("_", "-")


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(item type, is a list) of an annotation such as ``int``, ``list[int] | None``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


def _checked(kind: type, flag: Flag) -> Callable[[str], Any]:
    """argparse ``type=``: convert, then apply the declared range (ArgumentTypeError -> exit 2)."""

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        why = flag.range_error(value) if flag.choices is None else None  # choices: argparse's own message
        if why:
            raise argparse.ArgumentTypeError(why)
        return value

    convert.__name__ = kind.__name__
    return convert


def build_parser(cls: type, description: str | None = None, prog: str | None = None) -> argparse.ArgumentParser:
    """The argparse parser of the option dataclass ``cls``; defaults are the fields' defaults.
    ``prog`` names the command in usage and errors (default: the script's file name)."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        flag = flag_of(field)
        if not flag.cli:
            continue
        kind, many = _base_type(hints[field.name])
        kwargs: dict[str, Any] = {"help": flag.help or (flag.inert and f"YOLOv7's flag, no effect: {flag.inert}")}
        if (default := _default(field)) is not dataclasses.MISSING:
            kwargs["default"] = default
        if kind is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = _checked(kind, flag)
            nargs = flag.nargs or ("+" if many else None)
            if nargs:
                kwargs["nargs"] = nargs
            if flag.repeatable:
                kwargs["action"] = "extend"
            if flag.const is not None:
                kwargs["const"] = flag.const
            if flag.choices is not None:
                kwargs["choices"] = list(flag.choices)
            if flag.metavar:
                kwargs["metavar"] = flag.metavar
        if flag.positional:
            parser.add_argument(field.name, **kwargs)
        else:
            parser.add_argument(flag_name(field), *flag.aliases, dest=field.name, required=flag.required, **kwargs)
        for shortcut, value in flag.shortcuts:
            parser.add_argument(shortcut, dest=field.name, action="store_const", const=value,
                                help=f"same as {flag_name(field)} {value}")
    return parser


def namespace_to(cls: type[T], namespace: argparse.Namespace) -> T:
    """The ``cls`` instance of a parsed namespace (every flag is a field: nothing is filtered).
    Each inert flag the command line set (a YOLOv7 flag without effect here) gets one line on
    stderr saying what replaces it."""
    options = cls(**vars(namespace))
    for line in inert_notes(options):
        print(line, file=sys.stderr)
    return options


def inert_notes(options: Any) -> list[str]:
    """One line per inert flag of ``options`` set away from its default: the flag and what replaces it."""
    return [f"{flag_name(f)}: {flag_of(f).inert}" for f in dataclasses.fields(options)
            if flag_of(f).inert and getattr(options, f.name) != _default(f)]


def _default(field: dataclasses.Field) -> Any:
    """The field's default (a fresh list for a list), or ``dataclasses.MISSING``."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def check_ranges(options: Any) -> None:
    """Raise ConfigError naming the flag when a field of ``options`` is outside its declared range."""
    for field in dataclasses.fields(options):
        flag = flag_of(field)
        value = getattr(options, field.name)
        for item in value if isinstance(value, list) else [value]:
            why = None if item is None else flag.range_error(item)
            if why:
                raise ConfigError(f"{flag_name(field)} {why}")
