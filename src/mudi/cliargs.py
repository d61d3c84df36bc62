"""Command-line flags generated from a config dataclass, so a new option is one dataclass field.

Every field becomes ``--name`` (also spelled ``--na-me``), nested dataclass fields ``--parent.name``; the help
is the field's ``metadata["help"]`` with its default; ``metadata["flags"]`` adds aliases (``--out``). Types:

- ``bool``: ``--name`` sets true, ``--no-name`` sets false;
- ``list`` / ``tuple``: several values (``--lora A B``); numeric items may also be comma-separated (``1,2``);
- ``Literal``: the values as choices;
- ``dict`` fields are left to YAML and ``--set key.sub=value``.

Values arrive as text and go through :func:`mudi.config.load_config`, the same coercion and validation as
YAML files and ``key=value`` overrides; only flags actually given override the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
from collections.abc import Iterator
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from mudi.config import load_config

PREFIX = "cfg:"  # argparse dest prefix of generated flags: ``cfg:segmix.scale_range``
NUMERIC = (int, float)


def _strip_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def config_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """``(dotted name, field, type)`` of every leaf field of ``cls``, nested dataclasses flattened."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        tp = _strip_optional(hints[f.name])
        if dataclasses.is_dataclass(tp):
            yield from config_fields(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, tp


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return ""
    if value in (None, "", [], ()):
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    return f" (default: {value})"


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, positional: str | None = None,
                         aliases: dict[str, str | tuple[str, Any]] | None = None) -> None:
    """Add one flag per field of ``cls`` (and ``positional`` as the positional argument, one or more values).

    ``aliases``: extra spellings of a (nested) field's flag, ``{"--background": "segmix.background"}``, or flags
    that set a field to a constant, ``{"--no-overlap": ("segmix.allow_overlap", "false")}``.
    """
    aliases = dict(aliases or {})
    spellings: dict[str, list[str]] = {}
    for flag, target in list(aliases.items()):
        if isinstance(target, str):
            spellings.setdefault(target, []).append(flag)
            del aliases[flag]
    for dotted, f, tp in config_fields(cls):
        origin = get_origin(tp)
        if origin is dict or tp is dict:
            continue
        help_text = (f.metadata.get("help", "") + _default_text(f)).replace("%", "%%")
        dest = PREFIX + dotted
        if dotted == positional:
            parser.add_argument(dest, nargs="+", metavar=dotted.upper().rstrip("S") or dotted, help=help_text)
            continue
        flags = [f"--{dotted}", *f.metadata.get("flags", []), *spellings.get(dotted, [])]
        common: dict[str, Any] = {"dest": dest, "help": help_text, "default": argparse.SUPPRESS}
        if tp is bool:
            parser.add_argument(*flags, action="store_const", const="true", **common)
            parser.add_argument(f"--no-{dotted}", action="store_const", const="false", dest=dest,
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        elif origin in (list, tuple):
            item = (get_args(tp) or (str,))[0]
            nargs = "*" if origin is list and not f.metadata.get("nonempty") else "+"
            parser.add_argument(*flags, nargs=nargs, metavar=_metavar(dotted, item), **common)
        elif origin is Literal:
            parser.add_argument(*flags, choices=[str(c) for c in get_args(tp)], **common)
        else:
            parser.add_argument(*flags, metavar=_metavar(dotted, tp), **common)
    for flag, (dotted, value) in aliases.items():
        parser.add_argument(flag, action="store_const", const=value, dest=PREFIX + dotted,
                            default=argparse.SUPPRESS, help=f"same as setting {dotted} to {value}")


def _metavar(dotted: str, tp: Any) -> str:
    name = dotted.rsplit(".", 1)[-1].upper()
    return name if tp not in NUMERIC else ("N" if tp is int else "X")


def values_from_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The nested mapping of the flags given on the command line (numeric lists split on commas)."""
    types_by_name = {dotted: tp for dotted, _, tp in config_fields(cls)}
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if not key.startswith(PREFIX):
            continue
        dotted = key[len(PREFIX):]
        tp = types_by_name.get(dotted)
        if isinstance(value, list) and tp is not None and get_origin(tp) in (list, tuple):
            item = (get_args(tp) or (str,))[0]
            if item in NUMERIC:
                value = [v for part in value for v in str(part).replace(" ", ",").split(",") if v.strip()]
        node = out
        parts = dotted.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def load_from_args(cls: type, args: argparse.Namespace) -> Any:
    """``cls`` filled from (in order of precedence) ``--set``/trailing overrides, flags, ``--config``, defaults."""
    return load_config(cls, getattr(args, "config", None), getattr(args, "overrides", None) or [],
                       values_from_args(args, cls))


