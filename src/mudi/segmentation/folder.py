"""``mudi segment`` as a library call: a mask for every reference photo, by detection + box-prompted segmentation.

For each reference image that has no mask yet: detect, segment (:func:`mudi.segmentation.detect.detect_and_segment`),
write the mask in the subject set's own format and record a status:

- ``ok``: one detection (or no detector), a mask of reasonable size was written;
- ``multiple_detections``: several boxes; the best-scoring one was used (the report says which and why);
- ``no_detection``: nothing scored above the threshold; no mask was written;
- ``tiny_mask``: the mask covers less than ``min_mask_fraction`` of the image; it was not written;
- ``kept_user_mask``: the image already has a mask (file or alpha channel), left untouched;
- ``error``: the image could not be read or processed; the run goes on and exits non-zero at the end.

Masks go to ``masks/<stem>.png`` in native subject folders, and to ``mask_<stem>.png`` in benchmark / prior
folders (whose ``metadata.jsonl`` / ``class_metadata.jsonl`` line for the image gets ``mask_path``). Each
folder gets ``segment/segment_report.json``, ``segment/segment_preview.png`` (image with box, mask overlay,
cut-out on white, one row per image) and ``segment/segment_config.yaml``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mudi.adapters.base import GroupSegmenter
from mudi.config import save_config
from mudi.data.images import read_image, read_mask
from mudi.data.subjects import check_photo_size, load_subjects, mask_path_for, record_masks
from mudi.devices import describe, place_config
from mudi.errors import MudiError
from mudi.io import OutputLock, prepare_output_dir, save_image_atomic, write_json_atomic
from mudi.segmentation.config import CONFIG_FILE, SegmentConfig
from mudi.segmentation.detect import Found, choose_detection, detect_and_segment, load_models, subject_queries
from mudi.visualize import preview_thumbnail, segment_preview

OUTPUT_DIR = "segment"  # a subfolder, so the preview sheet is never taken for a reference photo
REPORT_FILE = "segment_report.json"
PREVIEW_FILE = "segment_preview.png"
REFERENCE_SIDE = 512  # user-masked photos handed to segment_group as references, at this longer side
STATUSES = ("ok", "multiple_detections", "no_detection", "tiny_mask", "kept_user_mask", "error")
log = logging.getLogger(__name__)


@dataclass
class ImageResult:
    subject: str
    image: str
    status: str
    mask_path: str | None = None
    box_xyxy: list[float] | None = None
    score: float | None = None
    mask_fraction: float | None = None
    num_detections: int = 0
    note: str = ""

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None and v != ""}


@dataclass
class SegmentResult:
    images: list[ImageResult]
    report_paths: list[Path]
    preview_paths: list[Path]

    @property
    def failures(self) -> list[ImageResult]:
        return [r for r in self.images if r.status == "error"]

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.images) for s in STATUSES}


def judge(mask: np.ndarray, detections: list[Any] | None, min_mask_fraction: float) -> tuple[str, str]:
    """Status of a fresh mask: ``tiny_mask`` beats ``multiple_detections`` beats ``ok``."""
    fraction = float(mask.mean()) if mask.size else 0.0
    if fraction < min_mask_fraction or not mask.any():
        return "tiny_mask", f"mask covers {fraction:.2%} of the image (< {min_mask_fraction:.2%}); not written"
    if detections is not None and len(detections) > 1:
        return "multiple_detections", choose_detection(detections)[1]
    return "ok", ""


def _existing_mask(subject: Any, index: int) -> Path | str | None:
    item = subject.images[index]
    if item.mask_path is not None and Path(item.mask_path).is_file():
        return item.mask_path
    candidate = mask_path_for(subject, item.path)
    if candidate.is_file():
        return candidate
    return None


def segment_subjects(config: SegmentConfig, detector: Any = None, segmenter: Any = None) -> SegmentResult:
    """Segment every subject of ``config.subjects``. ``detector``/``segmenter`` may be injected (tests);
    otherwise they are loaded once from ``config.backend``."""
    subjects = load_subjects(config.subjects)
    roots = list(dict.fromkeys(Path(s.root) for s in subjects))
    for root in roots:  # every folder this run writes, checked before a model loads
        prepare_output_dir(root, "subject folder (masks are written into it)")
        prepare_output_dir(root / OUTPUT_DIR, "segmentation report folder")
    with contextlib.ExitStack() as locks:
        for root in roots:
            locks.enter_context(OutputLock(root / OUTPUT_DIR, "segmentation"))
        return _segment_all(config, subjects, detector, segmenter)


def _segment_all(config: SegmentConfig, subjects: list, detector: Any, segmenter: Any) -> SegmentResult:
    if segmenter is None:
        config, device, dtype = place_config(config)
        log.info("mudi segment: %s", describe(device, dtype))
        detector, segmenter = load_models(config.backend, config.detector_model, config.segmenter_model, device,
                                          dtype, config.batch_size)
    by_root: dict[Path, list[Any]] = {}
    for s in subjects:
        by_root.setdefault(Path(s.root), []).append(s)
    all_results: list[ImageResult] = []
    reports, previews = [], []
    total = sum(len(s.images) for s in subjects)
    with tqdm(total=total, desc="segment", unit="img", disable=None) as bar:
        for root, root_subjects in by_root.items():
            rows: list[tuple[ImageResult, np.ndarray | None, np.ndarray | None]] = []
            for subject in root_subjects:
                rows.extend(_segment_subject(subject, config, detector, segmenter, bar))
            results = [r for r, _, _ in rows]
            record_masks(root, root_subjects, {Path(r.image).name: Path(r.mask_path).name for r in results
                                               if r.mask_path and r.status in ("ok", "multiple_detections")})
            report = root / OUTPUT_DIR / REPORT_FILE
            _write_report(report, config, results)
            preview = root / OUTPUT_DIR / PREVIEW_FILE
            save_image_atomic(preview, segment_preview(rows, config.preview_tile))
            save_config(config, root / OUTPUT_DIR / CONFIG_FILE)
            reports.append(report)
            previews.append(preview)
            all_results.extend(results)
    return SegmentResult(all_results, reports, previews)


def _segment_subject(subject: Any, config: SegmentConfig, detector: Any, segmenter: Any,
                     bar: Any) -> list[tuple[ImageResult, np.ndarray | None, np.ndarray | None]]:
    """Rows ``(result, small preview rgb, small preview mask)`` for every image of one subject.

    A :class:`~mudi.adapters.base.GroupSegmenter` (GrabCut) sees all of the subject's photos at once and the
    subject's user masks as references (the subject looks alike in all of them); others go in batches.
    """
    rows: list[tuple[ImageResult, np.ndarray | None, np.ndarray | None]] = []
    grouped = isinstance(segmenter, GroupSegmenter)
    references: list[tuple[np.ndarray, np.ndarray]] = []
    tile = config.preview_tile

    def kept(item: Any, rgb: np.ndarray, mask: np.ndarray, where: str) -> None:
        res = ImageResult(subject.name, item.path.name, "kept_user_mask", mask_path=where,
                          mask_fraction=round(float(mask.mean()), 5))
        rows.append((res, *preview_thumbnail(rgb, mask, None, tile)))
        if grouped:
            references.append(_reference(rgb, mask))
        bar.update(1)

    def failed(item: Any, note: str) -> None:
        rows.append((ImageResult(subject.name, item.path.name, "error", note=note), None, None))
        bar.update(1)

    todo: list[int] = []
    for i, item in enumerate(subject.images):
        existing = _existing_mask(subject, i)
        if existing is None or config.overwrite:
            todo.append(i)
            continue
        try:
            rgb, mask = subject.load(i)
            if mask is None:
                mask = read_mask(existing, item.path, (rgb.shape[1], rgb.shape[0]))
        except MudiError as e:
            failed(item, str(e))
        else:
            kept(item, rgb, mask, str(existing))
    queries = subject_queries(subject)
    step = max(1, len(todo)) if grouped else config.batch_size
    for start in range(0, len(todo), step):
        loaded: list[tuple[int, np.ndarray]] = []
        for i in todo[start:start + step]:
            item = subject.images[i]
            try:
                rgb, alpha, _ = read_image(item.path)  # not subject.load: a replaced mask need not be readable
                check_photo_size(rgb.shape[:2], item.path)
            except MudiError as e:
                failed(item, str(e))
                continue
            if alpha is not None and not config.overwrite:  # an RGBA reference carries its own mask
                kept(item, rgb, alpha, "(alpha channel)")
                continue
            loaded.append((i, rgb))
        if not loaded:
            continue
        try:
            found = detect_and_segment([rgb for _, rgb in loaded], queries, detector, segmenter, config.threshold,
                                       references=references if grouped else None)
        except MudiError:
            raise
        except Exception as e:  # a model failure on this batch: report every image in it, go on
            for i, _ in loaded:
                failed(subject.images[i], f"{type(e).__name__}: {e}")
            continue
        for (i, rgb), f in zip(loaded, found):
            rows.append(_judge_one(subject, subject.images[i], rgb, f, queries, config))
            bar.update(1)
    order = {item.path.name: n for n, item in enumerate(subject.images)}
    rows.sort(key=lambda r: order.get(r[0].image, 0))
    return rows


def _judge_one(subject: Any, item: Any, rgb: np.ndarray, found: Found, queries: list[str],
               config: SegmentConfig) -> tuple[ImageResult, np.ndarray | None, np.ndarray | None]:
    """The row of one freshly segmented photo; writes its mask unless it is tiny."""
    dets, det = found.detections, found.chosen
    res = ImageResult(subject.name, item.path.name, "ok", num_detections=len(dets) if dets else 0)
    if det is not None:
        res.box_xyxy = [round(v, 2) for v in det.box_xyxy]
        res.score = round(det.score, 4)
    if found.mask is None:
        res.status = "no_detection"
        res.note = (f"no {' / '.join(queries)} scored >= {config.threshold}; lower --threshold, draw the "
                    f"mask by hand, or use --backend grabcut")
        return (res, *preview_thumbnail(rgb, None, None, config.preview_tile))
    mask = found.mask
    res.mask_fraction = round(float(mask.mean()), 5)
    res.status, res.note = judge(mask, dets, config.min_mask_fraction)
    if res.status != "tiny_mask":
        target = mask_path_for(subject, item.path)
        save_image_atomic(target, mask)
        item.mask_path = target
        res.mask_path = str(target)
    return (res, *preview_thumbnail(rgb, mask, det.box_xyxy if det is not None else None, config.preview_tile))


def _reference(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A user-masked photo and its mask for ``segment_group``, at longer side at most ``REFERENCE_SIDE``."""
    h, w = rgb.shape[:2]
    if max(h, w) <= REFERENCE_SIDE:
        return rgb, np.asarray(mask, dtype=bool)
    rgb_small, mask_small = preview_thumbnail(rgb, mask, None, REFERENCE_SIDE)
    return rgb_small, mask_small


def _write_report(path: Path, config: SegmentConfig, results: list[ImageResult]) -> None:
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    write_json_atomic(path, {"backend": config.backend, "threshold": config.threshold,
                             "min_mask_fraction": config.min_mask_fraction, "counts": counts,
                             "images": [r.to_json() for r in results]})


def format_summary(result: SegmentResult) -> str:
    """A plain-text table: one line per image, then the counts."""
    header = ("subject", "image", "status", "score", "mask", "note")
    rows = [(r.subject, r.image, r.status, "" if r.score is None else f"{r.score:.2f}",
             "" if r.mask_fraction is None else f"{r.mask_fraction:.1%}", r.note) for r in result.images]
    widths = [max([len(header[c])] + [len(row[c]) for row in rows]) for c in range(5)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header[:5], widths)) + "  note"]
    for row in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row[:5], widths)) + ("  " + row[5] if row[5] else ""))
    counts = ", ".join(f"{k} {v}" for k, v in result.counts().items() if v)
    lines.append(f"{len(result.images)} images: {counts}")
    return "\n".join(lines)
