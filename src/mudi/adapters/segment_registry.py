"""Registered detectors and segmenters for ``mudi segment`` / ``mudi prior`` / the D&C metric.

Plain dicts of dotted paths (``module:attribute``) so that importing this module imports no model code.
Every factory takes ``device`` and ``dtype``; those that read weights also take
``pretrained_model_name_or_path``.
"""

from __future__ import annotations

import inspect
from typing import Any

from mudi.adapters.lookup import resolve
from mudi.errors import MudiError

DETECTORS: dict[str, str] = {
    "owlv2": "mudi.adapters.owlv2:Owlv2Detector.from_pretrained",
    "tiny-owlv2": "mudi.adapters.owlv2:Owlv2Detector.build_tiny",
}

SEGMENTERS: dict[str, str] = {
    "sam": "mudi.adapters.sam:SamSegmenter.from_pretrained",
    "grabcut": "mudi.adapters.grabcut:GrabCutSegmenter.build",
    "tiny-sam": "mudi.adapters.sam:SamSegmenter.build_tiny",
}


def _load(kind: str, table: dict[str, str], name: str, pretrained_model_name_or_path: str | None,
          device: Any, dtype: Any, **kwargs: Any) -> Any:
    factory = resolve(table, name, kind)
    params = inspect.signature(factory).parameters
    call = {"device": device, "dtype": dtype, **kwargs}
    if pretrained_model_name_or_path:
        if "pretrained_model_name_or_path" not in params:
            raise MudiError(f"the {kind} {name!r} takes no weights; drop the checkpoint "
                            f"{pretrained_model_name_or_path!r}")
        call["pretrained_model_name_or_path"] = pretrained_model_name_or_path
    return factory(**call)


def load_detector(name: str, pretrained_model_name_or_path: str | None = None, device: Any = "cpu",
                  dtype: Any = None, **kwargs: Any) -> Any:
    """Build the detector registered as ``name`` (a :class:`mudi.adapters.base.Detector`)."""
    return _load("detector", DETECTORS, name, pretrained_model_name_or_path, device, dtype, **kwargs)


def load_segmenter(name: str, pretrained_model_name_or_path: str | None = None, device: Any = "cpu",
                   dtype: Any = None, **kwargs: Any) -> Any:
    """Build the segmenter registered as ``name`` (a :class:`mudi.adapters.base.Segmenter`)."""
    return _load("segmenter", SEGMENTERS, name, pretrained_model_name_or_path, device, dtype, **kwargs)


def parse_backend(backend: str) -> tuple[str | None, str]:
    """``"owlv2+sam"`` → ``("owlv2", "sam")``; ``"grabcut"`` → ``(None, "grabcut")`` (no detector)."""
    parts = [p.strip() for p in backend.split("+") if p.strip()]
    if len(parts) == 1 and parts[0] in SEGMENTERS:
        return None, parts[0]
    if len(parts) == 2 and parts[0] in DETECTORS and parts[1] in SEGMENTERS:
        return parts[0], parts[1]
    choices = ["+".join((d, s)) for d in DETECTORS for s in SEGMENTERS] + list(SEGMENTERS)
    raise MudiError(f"unknown backend {backend!r}; use DETECTOR+SEGMENTER or SEGMENTER, e.g. "
                    f"{', '.join(choices[:4])} (detectors: {sorted(DETECTORS)}, segmenters: {sorted(SEGMENTERS)})")
