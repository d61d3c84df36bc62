"""Detect, then segment (paper Sec. 4.1, Fig. 3a): OWLv2 finds a subject's box from its class name, a
box-prompted segmenter (SAM, GrabCut) cuts it out. One implementation for ``mudi segment`` (reference photos)
and ``mudi prior`` (generated class images).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mudi.adapters import registry
from mudi.adapters.base import Detection, GroupSegmenter
from mudi.devices import resolve_device, resolve_dtype
from mudi.errors import MudiError
from mudi.segmentation.config import parse_backend


@dataclass
class Found:
    """What detection and segmentation found in one image.

    ``detections``: every box above the threshold, best first (``None`` without a detector); ``chosen``: the
    one segmented; ``mask``: ``(H, W)`` bool, or ``None`` when nothing usable was detected.
    """

    detections: list[Detection] | None
    chosen: Detection | None
    mask: np.ndarray | None


def load_models(backend: str, detector_model: str | None = None, segmenter_model: str | None = None,
                device: Any = "auto", dtype: Any = "auto", batch_size: int = 4,
                detector_kwargs: dict | None = None, **segmenter_kwargs: Any) -> tuple[Any, Any]:
    """The ``(detector or None, segmenter)`` of a ``DETECTOR+SEGMENTER`` backend, on the resolved device
    (``detector_kwargs``, e.g. ``nms_iou``, go to the detector's factory)."""
    det_name, seg_name = parse_backend(backend)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    try:
        detector = (registry.load("detector", det_name, detector_model, device=device, dtype=dtype,
                                  batch_size=batch_size, **(detector_kwargs or {})) if det_name else None)
        segmenter = registry.load("segmenter", seg_name, segmenter_model, device=device, dtype=dtype,
                                  batch_size=batch_size, **segmenter_kwargs)
    except MudiError as e:
        if "cannot load" not in str(e):
            raise
        raise MudiError(f"{e}; or use `--backend grabcut`, which works offline without any weights") from None
    return detector, segmenter


def subject_queries(subject: Any) -> list[str]:
    """Detector queries of a subject: its class noun and its descriptive class (paper Sec. 4.1)."""
    queries = [subject.class_noun]
    if subject.descriptive_class and subject.descriptive_class != subject.class_noun:
        queries.append(subject.descriptive_class)
    return queries


def class_queries(class_name: str) -> list[str]:
    """The class name and, for a descriptive class, its last word (``mudi prior --use_class_noun_query``)."""
    noun = class_name.split()[-1]
    return [class_name] if noun == class_name else [class_name, noun]


def choose_detection(detections: list[Detection]) -> tuple[Detection | None, str]:
    """The detection to segment and why: the highest score."""
    if not detections:
        return None, ""
    best = max(detections, key=lambda d: d.score)
    if len(detections) == 1:
        return best, ""
    others = ", ".join(f"{d.score:.2f}" for d in detections if d is not best)
    return best, (f"{len(detections)} boxes above the threshold; chose the highest-scoring one ({best.query!r}, "
                  f"score {best.score:.2f}; others {others})")


def detect_and_segment(images: Sequence[np.ndarray], queries: Sequence[str], detector: Any, segmenter: Any,
                       threshold: float, single_only: bool = False,
                       references: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> list[Found]:
    """Detect ``queries`` in every image and segment the chosen box (all images in one detector call and one
    segmenter call).

    ``single_only``: segment only images with exactly one detection (the prior filter), else the best of any.
    ``references``: the subject's user-masked photos; a :class:`~mudi.adapters.base.GroupSegmenter` then cuts
    the images together (they show one subject) with these in view. Without a detector every image is
    segmented without a box.
    """
    if detector is not None:
        detections: list[list[Detection] | None] = list(detector.detect(images, [list(queries)] * len(images),
                                                                        threshold))
    else:
        detections = [None] * len(images)
    chosen: list[Detection | None] = []
    for d in detections:
        if d is None:
            chosen.append(None)
        elif single_only:
            chosen.append(d[0] if len(d) == 1 else None)
        else:
            chosen.append(choose_detection(d)[0])
    todo = [k for k, d in enumerate(detections) if d is None or chosen[k] is not None]
    masks: dict[int, np.ndarray] = {}
    if todo:
        imgs = [images[k] for k in todo]
        boxes = [chosen[k].box_xyxy if chosen[k] is not None else None for k in todo]
        if references is not None and isinstance(segmenter, GroupSegmenter):
            out = segmenter.segment_group(imgs, boxes, references=references)
        else:
            out = segmenter.segment(imgs, boxes)
        for k, m in zip(todo, out):
            m = np.asarray(m, dtype=bool)
            if m.shape != np.asarray(images[k]).shape[:2]:
                raise MudiError(f"the segmenter returned a {m.shape} mask for an image of size "
                                f"{np.asarray(images[k]).shape[:2]}")
            masks[k] = m
    return [Found(detections[k], chosen[k], masks.get(k)) for k in range(len(images))]
