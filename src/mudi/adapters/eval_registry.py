"""Registries of evaluation models: plain dicts of ``"module:Class.constructor"`` paths (kept as strings so
``import mudi`` stays light). ``tiny-*`` entries build random models from configs, for tests and demos."""

from __future__ import annotations

from mudi.adapters.lookup import build, check_names, resolve
from mudi.adapters.segment_registry import DETECTORS  # one detector registry, shared with `mudi segment`

__all__ = ["DETECTORS", "EMBEDDERS", "METRIC_NAMES", "TEXT_SCORERS", "build", "check_names", "resolve"]

EMBEDDERS: dict[str, str] = {
    "dinov2": "mudi.adapters.dinov2:Dinov2Embedder.from_pretrained",
    "dreamsim": "mudi.adapters.dreamsim:DreamsimEmbedder.from_pretrained",
    "clip": "mudi.adapters.clip:ClipEmbedder.from_pretrained",
    "tiny-dinov2": "mudi.adapters.dinov2:Dinov2Embedder.build_tiny",
    "tiny-clip": "mudi.adapters.clip:ClipEmbedder.build_tiny",
}

TEXT_SCORERS: dict[str, str] = {
    "clip": "mudi.adapters.clip:ClipScorer.from_pretrained",
    "image_reward": "mudi.adapters.image_reward:ImageRewardScorer.from_pretrained",
    "tiny-clip": "mudi.adapters.clip:ClipScorer.build_tiny",
}

# The name each embedder's D&C score is reported under (the paper's D&C-DS / D&C-DINO columns).
METRIC_NAMES: dict[str, str] = {"dinov2": "dnc_dino", "tiny-dinov2": "dnc_dino", "dreamsim": "dnc_ds",
                                "clip": "dnc_clip", "tiny-clip": "dnc_clip"}
