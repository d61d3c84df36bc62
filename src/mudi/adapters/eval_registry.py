"""Registries of evaluation models: plain dicts of ``"module:Class.constructor"`` paths (kept as strings so
``import mudi`` stays light). ``tiny-*`` entries build random models from configs, for tests and demos."""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from mudi.errors import MudiError

EMBEDDERS: dict[str, str] = {
    "dinov2": "mudi.adapters.dinov2:Dinov2Embedder.from_pretrained",
    "dreamsim": "mudi.adapters.dreamsim:DreamsimEmbedder.from_pretrained",
    "clip": "mudi.adapters.clip:ClipEmbedder.from_pretrained",
    "tiny-dinov2": "mudi.adapters.dinov2:Dinov2Embedder.build_tiny",
    "tiny-clip": "mudi.adapters.clip:ClipEmbedder.build_tiny",
}

DETECTORS: dict[str, str] = {
    "owlv2": "mudi.adapters.owlv2:Owlv2Detector.from_pretrained",
    "tiny-owlv2": "mudi.adapters.owlv2:Owlv2Detector.build_tiny",
}

TEXT_SCORERS: dict[str, str] = {
    "clip": "mudi.adapters.clip:ClipScorer.from_pretrained",
    "image_reward": "mudi.adapters.image_reward:ImageRewardScorer.from_pretrained",
    "tiny-clip": "mudi.adapters.clip:ClipScorer.build_tiny",
}

# The name each embedder's D&C score is reported under (the paper's D&C-DS / D&C-DINO columns).
METRIC_NAMES: dict[str, str] = {"dinov2": "dnc_dino", "tiny-dinov2": "dnc_dino", "dreamsim": "dnc_ds",
                                "clip": "dnc_clip", "tiny-clip": "dnc_clip"}


def check_names(registry: dict[str, str], names: list[str], kind: str) -> None:
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
