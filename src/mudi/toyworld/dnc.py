"""A detector and an embedder made of the toy world's checker, so the real Detect-and-Compare code path
(:class:`mudi.scoring.evaluator.DncEvaluator`, :mod:`mudi.core.dnc`) scores toy images and can be checked
against the checker's ground truth (``benchmarks/toyworld_dnc_agreement.py``, docs/toyworld.md).

Registered as ``detector: toyworld`` and ``embedder: toyworld`` (metric ``dnc_toyworld``):

- :class:`ToyworldDetector` (an :class:`~mudi.adapters.base.Detector`): the checker's components — segmented
  against the border colour, one box per 4-connected object (:func:`~mudi.toyworld.checker.detect_objects`) —,
  each with score 1 and the image's first query: it knows no classes, like an open-vocabulary detector asked
  for every subject at once.
- :class:`ToyworldEmbedder` (an :class:`~mudi.adapters.base.Embedder`): what the crop shows, in three blocks of
  equal weight, each L2-normalised, then the whole L2-normalised (``D = 15``): the palette colours of the
  object's confident pixels above its vertical middle (6), below it (6), and its shape (3: the IoU of each
  shape template with the object's mask, minus their mean, so the block says which template fits best rather
  than how compact the object is). Object pixels are read against white — the padding D&C gives every crop;
  the world's backgrounds are pale (each channel ≥ 215), so they fall below the object threshold too. A
  two-colour object is "top colour above, bottom colour below"; a one-colour object has the same colour in
  both blocks. Nothing is learned and no weight was tuned on the toy lab.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mudi.adapters.base import Detection
from mudi.toyworld.checker import as_rgb_uint8, detect_objects, shape_ious, unmix
from mudi.toyworld.world import COLOURS, RESOLUTION, SHAPES, WHITE

EMBEDDING_DIM = 2 * len(COLOURS) + len(SHAPES)


class ToyworldDetector:
    """One box per object the checker finds (best = largest first), in the input image's pixels."""

    @classmethod
    def build(cls) -> ToyworldDetector:
        return cls()

    def detect(self, images: Sequence[np.ndarray], queries: Sequence[Sequence[str]],
               threshold: float) -> list[list[Detection]]:
        out = []
        for image, qs in zip(images, queries):
            h, w = np.asarray(image).shape[:2]
            sx, sy = w / RESOLUTION, h / RESOLUTION
            query = qs[0] if qs else ""
            out.append([Detection((x0 * sx, y0 * sy, x1 * sx, y1 * sy), 1.0, 0, query)
                        for x0, y0, x1, y1 in (o.box_xyxy for o in detect_objects(image))])
        return out


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def embed_crop(image: Any, min_alpha: float = 0.45) -> np.ndarray:
    """``(D,)`` float64 features of one crop (any size; read at 32 px); zeros where it shows no object."""
    rgb = as_rgb_uint8(image).astype(np.float32)
    labels, alpha, resid = unmix(rgb, np.asarray(WHITE, np.float32))
    fg = (np.linalg.norm(rgb - np.asarray(WHITE, np.float32), axis=-1) >= 25.0) & (alpha >= min_alpha)
    if fg.sum() < 4:
        return np.zeros(EMBEDDING_DIM)
    confident = fg & (alpha >= 0.75) & (resid < 60.0)
    confident = confident if confident.any() else fg
    ys, xs = np.nonzero(fg)
    mid = (ys.min() + ys.max() + 1) / 2
    rows = np.arange(rgb.shape[0])[:, None] + 0.5
    blocks = []
    for half in (rows < mid, rows >= mid):
        counts = np.bincount(labels[confident & half], minlength=len(COLOURS)).astype(np.float64)
        blocks.append(_unit(counts))
    ious = shape_ious(fg[ys.min():ys.max() + 1, xs.min():xs.max() + 1])
    shape = np.array([ious[s] for s in SHAPES])
    blocks.append(_unit(shape - shape.mean()))
    return _unit(np.concatenate(blocks))


class ToyworldEmbedder:
    """:func:`embed_crop` of each image, as the ``(N, D)`` float32 torch tensor the Embedder protocol returns."""

    name = "toyworld"

    @classmethod
    def build(cls) -> ToyworldEmbedder:
        return cls()

    def embed(self, images: Sequence[np.ndarray]) -> Any:
        import torch

        rows = [embed_crop(im) for im in images]
        return torch.from_numpy(np.stack(rows).astype(np.float32) if rows else np.zeros((0, EMBEDDING_DIM), np.float32))
