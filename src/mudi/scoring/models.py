"""The detector, embedders and text scorers of an evaluation, built from the registry on the resolved device."""

from __future__ import annotations

from typing import Any

from mudi.adapters import registry
from mudi.devices import resolve_device, resolve_dtype
from mudi.scoring.config import EvaluateConfig

# The name each embedder's D&C score is reported under (the paper's D&C-DS / D&C-DINO columns).
METRIC_NAMES: dict[str, str] = {"dinov2": "dnc_dino", "tiny-dinov2": "dnc_dino", "dreamsim": "dnc_ds",
                                "clip": "dnc_clip", "tiny-clip": "dnc_clip"}


def metric_name(kind: str, name: str) -> str:
    """The key a model's score is reported under: ``dnc_dino`` for the ``dinov2`` embedder, ``clip_score``
    for the ``clip`` text scorer."""
    if kind == "embedder":
        return METRIC_NAMES.get(name, f"dnc_{name.replace('-', '_')}")
    return "clip_score" if name in ("clip", "tiny-clip") else name


def placement(config: EvaluateConfig) -> tuple[Any, Any]:
    """The evaluation's ``(torch.device, torch.dtype)`` with ``auto`` resolved."""
    device = resolve_device(config.device)
    return device, resolve_dtype(config.dtype, device)


def build_detector(config: EvaluateConfig) -> Any:
    device, dtype = placement(config)
    return registry.load("detector", config.detector, config.detector_path or None, device=device, dtype=dtype,
                         batch_size=config.batch_size, nms_iou=config.nms_iou)


def build_embedders(config: EvaluateConfig) -> dict[str, Any]:
    """``{metric name: embedder}`` in the configured order (``dinov2`` and ``tiny-dinov2`` together get
    distinct names)."""
    device, dtype = placement(config)
    out = {}
    for name in config.embedders:
        metric = metric_name("embedder", name)
        if metric in out:
            metric = f"dnc_{name.replace('-', '_')}"
        out[metric] = registry.load("embedder", name, device=device, dtype=dtype, batch_size=config.batch_size)
    return out


def build_text_scorers(config: EvaluateConfig) -> dict[str, Any]:
    device, dtype = placement(config)
    return {metric_name("text_scorer", name): registry.load("text_scorer", name, device=device, dtype=dtype,
                                                            batch_size=config.batch_size)
            for name in config.text_scorers}
