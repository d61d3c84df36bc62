"""Looking up a model constructor in a registry of ``"module:Class.constructor"`` strings (shared by all registries)."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from typing import Any

from mudi.errors import MudiError


def check_names(registry: Mapping[str, Any], names: list[str], kind: str) -> None:
    """Raise :class:`MudiError` for a name not in ``registry``, suggesting the closest one."""
    for name in names:
        if name not in registry:
            close = difflib.get_close_matches(name, list(registry), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise MudiError(f"unknown {kind} {name!r}; {hint}choose one of {sorted(registry)}")


def resolve(registry: dict[str, str], name: str, kind: str) -> Any:
    """The constructor registered as ``name``; an unknown name raises :class:`MudiError` listing the choices."""
    check_names(registry, [name], kind)
    module, _, attr = registry[name].partition(":")
    try:
        obj: Any = importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise MudiError(f"{kind} {name!r} needs module {module} which is not available ({e})") from None
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def build(registry: dict[str, str], name: str, kind: str, **kwargs: Any) -> Any:
    """Construct the registered ``name`` with ``kwargs`` (e.g. ``device=``, ``dtype=``)."""
    return resolve(registry, name, kind)(**kwargs)
