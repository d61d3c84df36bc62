"""Scoring and selection of the generated images of a round: the D&C scorer (or any scorer given), the top-K
rule, and the per-round statistics and histogram.

A **scorer** is any callable ``scorer(images, records) -> list[dict]``: ``images`` are RGB ``(H, W, 3)`` uint8
arrays, ``records`` their sidecars (prompt, seed, …); each result has ``score`` (higher is better) and may have
``failures`` (e.g. ``["count"]``) and ``num_detections``. An optional ``fingerprint`` attribute (a string) names
what it measures, so a changed scorer re-scores finished rounds. :class:`DncScorer` is the paper's
(Detect-and-Compare, D&C-DS by default); tests give scripted ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mudi.config import to_dict
from mudi.data.manifests import fingerprint
from mudi.errors import MudiError
from mudi.scoring.config import EvaluateConfig
from mudi.scoring.evaluator import DncEvaluator
from mudi.scoring.models import build_detector, build_embedders

HISTOGRAM_BINS = 20


class DncScorer:
    """D&C of each image against the subjects (:class:`mudi.scoring.evaluator.DncEvaluator`), ranked by
    ``metric`` (``dnc_ds`` for DreamSim, ``dnc_dino`` for DINOv2; default the first embedder's)."""

    def __init__(self, subjects: Sequence[Any], config: EvaluateConfig, metric: str = "",
                 detector: Any = None, embedders: dict[str, Any] | None = None, cache_dir: str = "") -> None:
        embedders = embedders if embedders is not None else build_embedders(config)
        detector = detector if detector is not None else build_detector(config)
        self.metric = metric or next(iter(embedders))
        if self.metric not in embedders:
            raise MudiError(f"metric {self.metric!r} is not computed by the embedders {list(embedders)}; choose one "
                            f"of {list(embedders)}")
        self.evaluator = DncEvaluator(subjects, detector, embedders, threshold=config.threshold, norm=config.norm,
                                      matching=config.matching, nms_iou=config.nms_iou,
                                      mixed_margin=config.mixed_margin, reference_crop=config.reference_crop,
                                      reference_padding=config.reference_padding, cache_dir=cache_dir or None,
                                      batch_size=config.batch_size)
        settings = {k: v for k, v in to_dict(config).items() if k not in ("device", "batch_size", "cache_dir",
                                                                          "images", "output_dir", "report")}
        self.fingerprint = fingerprint({"scorer": "dnc", "metric": self.metric, **settings})

    def __call__(self, images: Sequence[np.ndarray], records: Sequence[dict]) -> list[dict]:
        out = []
        for r in self.evaluator.score_images(list(images)):
            m = r.dnc[self.metric]
            out.append({"score": float(m["score"]), "failures": list(m["failures"]),
                        "num_detections": len(r.detections),
                        "metrics": {k: float(v["score"]) for k, v in r.dnc.items()}})
        return out


def scorer_fingerprint(scorer: Any) -> str:
    return str(getattr(scorer, "fingerprint", None) or f"{type(scorer).__module__}.{type(scorer).__qualname__}")


def top_k(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the ``k`` best scores, best first; ties go to the earlier image (lower index, so lower seed),
    and a NaN score ranks below every number."""
    key = [(-(s if isinstance(s, (int, float)) and not math.isnan(s) else -math.inf), i) for i, s in enumerate(scores)]
    return [i for _, i in sorted(key)[:k]]


def score_stats(scores: Sequence[float], failures: Sequence[Sequence[str]] = ()) -> dict:
    """Mean, median, spread and a histogram of ``scores`` over ``[0, 1]`` in 20 bins (scores outside fall in the
    edge bins; D&C is 0 for a count error and may be slightly negative for a badly mixed image)."""
    arr = np.asarray([s for s in scores if not math.isnan(s)], dtype=np.float64)
    counts, edges = np.histogram(np.clip(arr, 0.0, 1.0), bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    stats = {"num_images": len(scores), "histogram": {"edges": [round(float(e), 4) for e in edges],
                                                      "counts": [int(c) for c in counts]}}
    if arr.size:
        stats.update(mean=float(arr.mean()), median=float(np.median(arr)), std=float(arr.std()),
                     min=float(arr.min()), max=float(arr.max()))
    kinds: dict[str, int] = {}
    for f in failures:
        for name in f:
            kinds[name] = kinds.get(name, 0) + 1
    stats["failure_counts"] = kinds
    return stats
