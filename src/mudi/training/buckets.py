"""Aspect-ratio buckets for single photos (``aspect_buckets``; as kohya's sd-scripts and diffusers'
``--aspect_ratio_buckets``), off by default: the authors crop every photo square.

**The bucket list** (:func:`make_buckets`) is deterministic: the square ``(R, R)``, and for every width ``w`` on the
ladder ``step, 2·step, …`` above ``R`` the tallest height ``h = ⌊R² / w / step⌋ · step`` (so every bucket's area is
at most ``R²`` and both sides are multiples of ``step``, itself a multiple of the backbone's ``pixel_multiple``),
kept while ``w / h ≤ max_ratio``; then each landscape bucket's portrait twin ``(w, h)``; sorted by aspect
``w / h``. A photo trains at the bucket whose aspect is nearest its own in log scale (:func:`nearest_bucket`; ties:
the first in the list), resized to cover it and cropped (randomly, or at the centre), its mask alike.

**A micro-batch holds one size** (:func:`draw_bucketed`): its first instance sample is drawn exactly as without
buckets (its own subject uniform, a composition with probability ``composition_prob`` — compositions are on the
square ``(R, R)`` canvas, as the recipe has them — else one photo) and decides the micro-batch's bucket; each
further instance sample is drawn from the same distribution *conditioned on* that bucket
(:func:`draw_in_bucket`: the bucket's photos with their usual probabilities, and in the square bucket the
compositions with theirs). So every sample of a micro-batch, taken alone, has exactly the recipe's distribution
(the composition rate stays ``composition_prob``, each subject and photo keeps its frequency); only which samples
share a micro-batch changes. Nothing is rejected or redrawn; with ``train_batch_size`` 1 there is nothing to
condition. Prior samples share their instance sample's forward pass, so each prior photo is resized to cover the
micro-batch's bucket and cropped to it (prior compositions stay square, with their instance compositions).
All randomness comes from the micro-batch's generator (:meth:`~mudi.training.trainer.LoraTrainer.batch_rng`), so
resume and DataLoader workers stay bit-exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mudi.errors import MudiError


def make_buckets(resolution: int, step: int, max_ratio: float = 2.0) -> list[tuple[int, int]]:
    """``[(h, w), …]`` sorted by aspect ``w / h``: the square ``(R, R)`` and every ``(h, w)`` / ``(w, h)`` with
    ``w`` a multiple of ``step`` above ``R``, ``h = ⌊R² / w / step⌋ · step`` (area ≤ ``R²``), ``w / h ≤ max_ratio``."""
    if step < 1 or max_ratio < 1:
        raise MudiError(f"buckets need step >= 1 and max_ratio >= 1 (got {step}, {max_ratio})")
    area = resolution * resolution
    landscape = []
    w = (resolution // step + 1) * step
    while True:
        h = area // w // step * step
        if h < step or w > max_ratio * h:
            break
        landscape.append((h, w))
        w += step
    out = {(resolution, resolution), *landscape, *((w, h) for h, w in landscape)}
    return sorted(out, key=lambda hw: (hw[1] / hw[0], hw[1]))


def log_aspect(size_hw: Sequence[int]) -> float:
    """``ln(w / h)``: 0 for a square, symmetric for portrait and landscape."""
    return math.log(size_hw[1] / size_hw[0])


def nearest_bucket(size_hw: Sequence[int], buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect is nearest ``size_hw``'s in log scale (ties: the first in ``buckets``)."""
    a = log_aspect(size_hw)
    return min(buckets, key=lambda b: abs(log_aspect(b) - a))


def bucket_tolerance(buckets: Sequence[tuple[int, int]], max_ratio: float) -> float:
    """The largest ``|ln(aspect of bucket) − ln(aspect of photo)|`` a photo whose aspect is within ``max_ratio``
    can get: half the widest gap between neighbouring buckets, or the distance from the outermost bucket to
    ``max_ratio`` (a photo more elongated than ``max_ratio`` is cropped to the outermost bucket)."""
    a = sorted(log_aspect(b) for b in buckets)
    gaps = [(y - x) / 2 for x, y in zip(a, a[1:])]
    return max(gaps + [math.log(max_ratio) - a[-1], a[0] + math.log(max_ratio)])


def training_buckets(config: Any, pixel_multiple: int, resolution: int) -> list[tuple[int, int]] | None:
    """The run's bucket list (None when ``aspect_buckets`` is off); ``bucket_step`` 0 = ``pixel_multiple``."""
    if not config.aspect_buckets:
        return None
    step = config.bucket_step or int(pixel_multiple)
    if step % int(pixel_multiple):
        raise MudiError(f"bucket_step {step} is not a multiple of the backbone's pixel multiple {pixel_multiple}; use "
                        f"e.g. {max(1, step // pixel_multiple) * pixel_multiple}")
    return make_buckets(resolution, step, config.bucket_max_ratio)


def draw_in_bucket(source: Any, rng: np.random.Generator, size_hw: tuple[int, int], allow_compose: bool) -> Any:
    """One instance sample of the recipe's distribution conditioned on training at ``size_hw``: a photo of that
    bucket with probability ∝ ``(1 − p) / (num_subjects · num_photos of its subject)``, or (square bucket only) a
    composition with probability ∝ ``p`` (``p = composition_prob``, 0 before ``segmix_start_step``)."""
    n = len(source.subjects)
    p = source.composition_prob if allow_compose else 0.0
    members = source.bucket_members.get(tuple(size_hw), [])
    weights = [(1 - p) / (n * len(source.subjects[si].images)) for si, _ in members]
    if tuple(size_hw) == (source.resolution, source.resolution) and p > 0:
        weights.append(p)  # the compositions, on the square canvas
    cdf = np.cumsum(weights)
    k = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(weights) - 1)
    if k == len(members):
        return source.compose(rng, int(rng.integers(n)))
    si, ii = members[k]
    return source.single(rng, si, size_hw=tuple(size_hw), ii=ii)


def draw_bucketed(source: Any, rng: np.random.Generator, allow_compose: bool, num: int) -> list:
    """``num`` instance samples of one size: the first drawn as without buckets decides the bucket, the rest are
    drawn conditioned on it (:func:`draw_in_bucket`)."""
    first = source.draw(rng, allow_compose)
    size_hw = tuple(first.image.shape[:2])
    return [first] + [draw_in_bucket(source, rng, size_hw, allow_compose) for _ in range(num - 1)]
