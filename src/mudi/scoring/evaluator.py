"""Detect-and-Compare (paper Sec. 4.3, Fig. 4, Algorithm 3) over batches of generated images.

For every image: detect the subjects with an open-vocabulary detector (the subjects' class nouns as
queries), crop each box and pad it to a white square, embed the crops, and compare them with the subjects'
reference photos, embedded once per subject (optionally cached on disk by file hash): ``S_GT``, ``S_DC`` and
the score of :mod:`mudi.core.dnc`. :class:`DncEvaluator` / :func:`score_images` are the entry points for
``mudi evaluate``, the benchmark runner and iterative training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mudi.core.dnc import dc_similarity, dnc_details, gt_similarity
from mudi.core.geometry import mask_to_box, nms
from mudi.errors import MudiError
from mudi.io import atomic_path


def pad_to_white_square(rgb: np.ndarray) -> np.ndarray:
    """Centre an ``(h, w, 3)`` crop on a white ``(s, s, 3)`` canvas, ``s = max(h, w)``."""
    h, w = rgb.shape[:2]
    s = max(h, w)
    out = np.full((s, s, 3), 255, dtype=np.uint8)
    top, left = (s - h) // 2, (s - w) // 2
    out[top:top + h, left:left + w] = rgb
    return out


def crop_box(rgb: np.ndarray, box_xyxy: Sequence[float]) -> np.ndarray:
    """The box's pixels (clamped to the image, at least 1x1), padded to a white square."""
    h, w = rgb.shape[:2]
    x0, y0 = int(np.clip(np.floor(box_xyxy[0]), 0, w - 1)), int(np.clip(np.floor(box_xyxy[1]), 0, h - 1))
    x1, y1 = int(np.clip(np.ceil(box_xyxy[2]), x0 + 1, w)), int(np.clip(np.ceil(box_xyxy[3]), y0 + 1, h))
    return pad_to_white_square(rgb[y0:y1, x0:x1])


def merge_detections(dets: Sequence[Any], iou: float) -> list[Any]:
    """Greedy NMS over detections of all queries (best first): a box overlapping a kept one by more than
    ``iou`` is the same object found by another query."""
    if not dets:
        return []
    keep = nms(np.array([d.box_xyxy for d in dets], dtype=np.float64), np.array([d.score for d in dets]), iou)
    return [dets[i] for i in keep]


def detection_queries(subjects: Sequence[Any]) -> list[str]:
    """The detector's text queries: each subject's ``detect_as`` (by default its class phrase without the
    identifier: "russian blue", "chow chow", "red monster plush"), without repeats."""
    out: list[str] = []
    for s in subjects:
        if s.detect_as not in out:
            out.append(s.detect_as)
    return out


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ImageScore:
    """The evaluation of one generated image.

    ``detections``: merged detections, best first. ``dnc``: per metric name (``dnc_dino``, ``dnc_ds``, …)
    a dict with ``score``, ``s_dc`` (rows = detections), ``s_dc_matched``, ``assignment``, ``failures``.
    ``text``: per text metric (``clip_score``, ``image_reward``) the mean over subject orders.
    """

    detections: list[Any]
    dnc: dict[str, dict[str, Any]] = field(default_factory=dict)
    text: dict[str, float] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        out: list[str] = []
        for m in self.dnc.values():
            out += [f for f in m["failures"] if f not in out]
        return out


class DncEvaluator:
    """Detect-and-Compare for one subject set: reference embeddings and ``S_GT`` are computed once per
    embedder (and cached on disk under ``cache_dir`` when given); :meth:`score_images` then scores batches
    of generated images.

    ``embedders`` maps a metric name (``"dnc_dino"``) to an :class:`~mudi.adapters.base.Embedder`.
    """

    def __init__(self, subjects: Sequence[Any], detector: Any, embedders: dict[str, Any], threshold: float = 0.4,
                 norm: str = "spectral", matching: str = "greedy", nms_iou: float | None = None,
                 mixed_margin: float = 0.1, reference_crop: str = "full", cache_dir: str | Path | None = None,
                 batch_size: int = 8, reference_padding: str = "none"):
        if not subjects:
            raise MudiError("no subjects to evaluate against; pass --subjects")
        self.subjects, self.detector, self.embedders = list(subjects), detector, dict(embedders)
        self.threshold, self.norm, self.matching = threshold, norm, matching
        self.nms_iou, self.mixed_margin, self.batch_size = nms_iou, mixed_margin, batch_size
        self.reference_crop, self.reference_padding = reference_crop, reference_padding
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.queries = detection_queries(self.subjects)
        self.references: dict[str, list[np.ndarray]] = {}
        self.s_gt: dict[str, np.ndarray] = {}
        for metric, emb in self.embedders.items():
            self.references[metric] = [self._reference_embeddings(s, emb) for s in self.subjects]
            self.s_gt[metric] = gt_similarity(self.references[metric])

    def _reference_images(self, subject: Any) -> list[np.ndarray]:
        out = []
        for i in range(len(subject.images)):
            rgb, mask = subject.load(i)
            if self.reference_crop == "mask_box" and mask is not None:
                rgb = crop_box(rgb, mask_to_box(mask))
            out.append(pad_to_white_square(rgb) if self.reference_padding == "white_square" else rgb)
        return out

    def _reference_embeddings(self, subject: Any, embedder: Any) -> np.ndarray:
        cache_file = None
        if self.cache_dir is not None:
            key = hashlib.sha256()
            key.update(f"{embedder.name}|{getattr(embedder, 'cache_key', '')}|{self.reference_crop}|"
                       f"{self.reference_padding}".encode())
            for im in subject.images:
                key.update(_file_sha256(im.path).encode())
                if self.reference_crop == "mask_box" and im.mask_path is not None:
                    key.update(_file_sha256(im.mask_path).encode())
            cache_file = self.cache_dir / embedder.name / f"{key.hexdigest()[:32]}.npy"
            if cache_file.is_file():
                return np.load(cache_file)
        emb = np.asarray(embedder.embed(self._reference_images(subject)), dtype=np.float32)
        if cache_file is not None:
            with atomic_path(cache_file) as tmp, open(tmp, "wb") as f:
                np.save(f, emb)
        return emb

    def score_images(self, images: Sequence[np.ndarray], progress: bool = False) -> list[ImageScore]:
        """Score RGB uint8 ``(H, W, 3)`` images, ``batch_size`` at a time (one detector call and one
        embedder call per batch and metric)."""
        results: list[ImageScore] = []
        starts = range(0, len(images), self.batch_size)
        for start in tqdm(starts, desc="D&C", unit="batch", disable=not progress):
            batch = list(images[start:start + self.batch_size])
            raw = self.detector.detect(batch, [self.queries] * len(batch), self.threshold)
            dets = [merge_detections(d, self.nms_iou) if self.nms_iou is not None else list(d) for d in raw]
            crops = [crop_box(img, d.box_xyxy) for img, ds in zip(batch, dets) for d in ds]
            per_metric = {m: np.asarray(e.embed(crops), dtype=np.float64) if crops else None
                          for m, e in self.embedders.items()}
            offset = 0
            for ds in dets:
                res = ImageScore(detections=ds)
                for metric, emb in per_metric.items():
                    rows = emb[offset:offset + len(ds)] if emb is not None else np.zeros((0, 1))
                    s_dc = dc_similarity(rows, self.references[metric])
                    det = dnc_details(self.s_gt[metric], s_dc, norm=self.norm, matching=self.matching,
                                      mixed_margin=self.mixed_margin)
                    res.dnc[metric] = {"score": det.score, "s_dc": s_dc, "s_dc_matched": det.s_dc_matched,
                                       "assignment": det.assignment, "failures": det.failures}
                offset += len(ds)
                results.append(res)
        return results


def score_images(images: Sequence[np.ndarray], subjects: Sequence[Any], detector: Any, embedder: Any,
                 metric: str | None = None, **kwargs: Any) -> list[ImageScore]:
    """One-call D&C scoring of ``images`` against ``subjects`` with one embedder (for scripts, the
    benchmark runner and iterative training). ``kwargs`` go to :class:`DncEvaluator`."""
    name = metric or f"dnc_{embedder.name}"
    return DncEvaluator(subjects, detector, {name: embedder}, **kwargs).score_images(images)
