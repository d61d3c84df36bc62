"""Dataclass configs filled from YAML files and dotted overrides.

One source of truth: each workflow's config is a dataclass with defaults, types and ``help`` metadata,
validated in ``__post_init__``. YAML and ``key.sub=value`` overrides only fill it; unknown keys are rejected
with a close-match suggestion; values are parsed as YAML scalars, never ``eval``-ed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from mudi.errors import MudiError
from mudi.io import write_text_atomic

T = TypeVar("T")


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]


def _nested_names(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of ``cls``, nested dataclass fields included (``segmix.max_margin_frac``)."""
    hints = get_type_hints(cls)
    out = []
    for name in _field_names(cls):
        tp = hints[name]
        args = [a for a in get_args(tp) if a is not type(None)] if get_origin(tp) in (Union, types.UnionType) else []
        tp = args[0] if len(args) == 1 else tp
        out.append(prefix + name)
        if dataclasses.is_dataclass(tp):
            out += _nested_names(tp, f"{prefix}{name}.")
    return out


def _unknown_key_error(key: str, cls: type, where: str) -> MudiError:
    names = _field_names(cls)
    nested = [n for n in _nested_names(cls) if n.rsplit(".", 1)[-1] == key]
    close = nested or difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    hint = f"; did you mean '{where}{close[0]}'?" if close else f"; known keys: {', '.join(names)}"
    return MudiError(f"unknown config key '{where}{key}'{hint}")


def _coerce(value: Any, tp: Any, name: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, name)
            except MudiError as e:
                errors.append(str(e))
        raise MudiError(errors[0] if errors else f"config key '{name}': bad value {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise MudiError(f"config key '{name}': {value!r} is not one of {list(choices)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise MudiError(f"config key '{name}': expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{name}.")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise MudiError(f"config key '{name}': expected {len(args)} values, got {list(value)}")
            return tuple(_coerce(v, a, name) for v, a in zip(value, args))
        item = args[0] if args else Any
        out = [_coerce(v, item, name) for v in value]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise MudiError(f"config key '{name}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise MudiError(f"config key '{name}': expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise MudiError(f"config key '{name}': expected a number, got {value!r}")
        try:
            num = float(value) if tp is float else int(str(value), 0) if isinstance(value, str) else int(value)
        except (TypeError, ValueError, OverflowError):
            raise MudiError(f"config key '{name}': expected {tp.__name__}, got {_show(value)}") from None
        if not math.isfinite(num):
            raise MudiError(f"config key '{name}': expected a finite number, got {_show(value)}")
        if tp is int and isinstance(value, float) and value != int(value):
            raise MudiError(f"config key '{name}': expected an integer, got {value!r}")
        return num
    if tp is str:
        if isinstance(value, (dict, list)):
            raise MudiError(f"config key '{name}': expected text, got {_show(value)}")
        return str(value)
    if tp is Path:
        return Path(value)
    return value


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for one-line errors."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping, coercing types and rejecting unknown keys."""
    if not isinstance(data, dict):
        raise MudiError(f"config{(' ' + prefix.rstrip('.')) if prefix else ''}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = set(_field_names(cls))
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key_error(key, cls, prefix)
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise MudiError(f"config{(' ' + prefix.rstrip('.')) if prefix else ''}: {e}") from None


def to_dict(obj: Any) -> Any:
    """A dataclass as plain YAML-able data (paths as strings, tuples as lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not f.name.startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_overrides(items: typing.Iterable[str]) -> dict:
    """``["train.learning_rate=1e-4", "segmix.allow_overlap=false"]`` → nested dict (YAML scalars)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise MudiError(f"override {item!r} must look like key=value, e.g. max_train_steps=100")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise MudiError(f"override {item!r} conflicts with an earlier override of '{p}'")
        node[parts[-1]] = value
    return out


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def yaml_error_text(e: yaml.YAMLError) -> str:
    """A YAML error on one line: ``line 3, column 7: mapping values are not allowed here``."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MudiError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise MudiError(f"{path}: not valid YAML ({yaml_error_text(e)})") from None
    if not isinstance(data, dict):
        raise MudiError(f"{path}: a config file must be a mapping of keys to values")
    return data


def load_config(cls: type[T], yaml_path: str | Path | None = None, overrides: typing.Iterable[str] = (),
                values: dict | None = None) -> T:
    """Defaults ← YAML file ← ``values`` (e.g. explicit CLI flags) ← dotted ``overrides``."""
    data: dict = load_yaml(yaml_path) if yaml_path else {}
    if yaml_path and hasattr(cls, "resolve_file_paths"):  # paths in the file are relative to the file
        data = cls.resolve_file_paths(data, Path(yaml_path).resolve().parent)
    if values:
        data = merge(data, values)
    data = merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def save_config(obj: Any, path: str | Path) -> None:
    """Write the resolved config next to an output."""
    write_text_atomic(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


def field_help(cls: type, name: str) -> str:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    return ""
