"""``mudi segment``: a mask for every reference image, by detection + box-prompted segmentation.

MuDI's preprocessing (paper Sec. 4.1, Fig. 3a): OWLv2 finds the subject's box from its class name, SAM
segments inside the box. For each reference image that has no mask yet this workflow detects, segments,
writes the mask in the subject set's own format and records a status:

- ``ok``: one detection (or no detector), a mask of reasonable size was written;
- ``multiple_detections``: several boxes; the best-scoring one was used (the report says which and why);
- ``no_detection``: nothing scored above the threshold; no mask was written;
- ``tiny_mask``: the mask covers less than ``min_mask_fraction`` of the image; it was not written;
- ``kept_user_mask``: the image already has a mask (file or alpha channel), left untouched;
- ``error``: the image could not be read or processed; the run goes on and exits non-zero at the end.

Masks go to ``masks/<stem>.png`` in native subject folders, and to ``mask_<stem>.png`` in benchmark / prior
folders (whose ``metadata.jsonl`` / ``class_metadata.jsonl`` line for the image gets ``mask_path``). Each
folder gets ``segment_report.json``, ``segment_preview.png`` (image with box, mask overlay, cut-out on
white, one row per image) and ``segment_config.yaml``.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mudi.errors import MudiError

HELP = "Detect and segment every subject in its reference photos (OWLv2 + SAM, or offline GrabCut)."
OUTPUT_DIR = "segment"  # a subfolder, so the preview sheet is never taken for a reference photo
REPORT_FILE = "segment_report.json"
PREVIEW_FILE = "segment_preview.png"
CONFIG_FILE = "segment_config.yaml"
REFERENCE_SIDE = 512  # user-masked photos handed to segment_group as references, at this longer side
STATUSES = ("ok", "multiple_detections", "no_detection", "tiny_mask", "kept_user_mask", "error")
log = logging.getLogger(__name__)


@dataclass
class SegmentConfig:
    subjects: list[str] = field(default_factory=list, metadata={
        "help": "subject folders, folders of them, benchmark pair folders or prior folders"})
    backend: str = field(default="owlv2+sam", metadata={
        "help": "DETECTOR+SEGMENTER or SEGMENTER: owlv2+sam (paper), owlv2+grabcut, grabcut (offline, no "
                "weights), tiny-owlv2+tiny-sam (tests)"})
    detector_model: str | None = field(default=None, metadata={
        "help": "detector checkpoint (hub id or local folder); default google/owlv2-base-patch16-ensemble"})
    segmenter_model: str | None = field(default=None, metadata={
        "help": "segmenter checkpoint (hub id or local folder); default facebook/sam-vit-huge"})
    threshold: float = field(default=0.1, metadata={"help": "detection score threshold"})
    min_mask_fraction: float = field(default=0.005, metadata={
        "help": "masks covering less of the image than this are reported as tiny_mask and not written"})
    overwrite: bool = field(default=False, metadata={"help": "replace existing (user) masks"})
    batch_size: int = field(default=4, metadata={"help": "images per detector/segmenter batch"})
    device: str = field(default="cpu", metadata={"help": "torch device for the models"})
    dtype: str = field(default="float32", metadata={"help": "float32 | float16 | bfloat16"})
    preview_tile: int = field(default=192, metadata={"help": "side of one tile of segment_preview.png (pixels)"})

    def __post_init__(self) -> None:
        from mudi.adapters.segment_registry import parse_backend

        parse_backend(self.backend)
        if not 0.0 <= self.threshold <= 1.0:
            raise MudiError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 <= self.min_mask_fraction < 1.0:
            raise MudiError(f"min_mask_fraction must be in [0, 1), got {self.min_mask_fraction}")
        if self.batch_size < 1:
            raise MudiError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.preview_tile < 32:
            raise MudiError(f"preview_tile must be >= 32 pixels, got {self.preview_tile}")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise MudiError(f"dtype {self.dtype!r} is not one of float32, float16, bfloat16")


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


def load_models(config: SegmentConfig) -> tuple[Any, Any]:
    """The configured ``(detector or None, segmenter)``, loaded once per run."""
    from mudi.adapters.segment_registry import load_detector, load_segmenter, parse_backend

    det_name, seg_name = parse_backend(config.backend)
    try:
        detector = (load_detector(det_name, config.detector_model, device=config.device, dtype=config.dtype,
                                  batch_size=config.batch_size) if det_name else None)
        seg_kwargs = {} if seg_name == "grabcut" else {"batch_size": config.batch_size}
        segmenter = load_segmenter(seg_name, config.segmenter_model, device=config.device, dtype=config.dtype,
                                   **seg_kwargs)
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


def mask_path_for(subject: Any, image_path: Path) -> Path:
    """Where the mask of ``image_path`` goes in ``subject``'s on-disk format."""
    if subject.source == "native":
        from mudi.data.subjects import MASK_DIR

        return image_path.parent / MASK_DIR / f"{image_path.stem}.png"
    return image_path.parent / f"mask_{image_path.stem}.png"


def choose_detection(detections: list[Any]) -> tuple[Any | None, str]:
    """The detection to segment and why: the highest score (detections arrive best first)."""
    if not detections:
        return None, ""
    best = max(detections, key=lambda d: d.score)
    if len(detections) == 1:
        return best, ""
    others = ", ".join(f"{d.score:.2f}" for d in detections if d is not best)
    return best, (f"{len(detections)} boxes above the threshold; chose the highest-scoring one ({best.query!r}, "
                  f"score {best.score:.2f}; others {others})")


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


def run(config: SegmentConfig, detector: Any = None, segmenter: Any = None) -> SegmentResult:
    """Segment every subject of ``config.subjects``. ``detector``/``segmenter`` may be injected (tests);
    otherwise they are loaded once from ``config.backend``."""
    from tqdm.auto import tqdm

    from mudi.config import save_config
    from mudi.data.subjects import load_subjects

    subjects = load_subjects(config.subjects)
    if segmenter is None:
        detector, segmenter = load_models(config)
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
            _update_metadata(root, root_subjects, results)
            report = root / OUTPUT_DIR / REPORT_FILE
            _write_report(report, config, results)
            preview = root / OUTPUT_DIR / PREVIEW_FILE
            _write_preview(preview, rows, config.preview_tile)
            save_config(config, root / OUTPUT_DIR / CONFIG_FILE)
            reports.append(report)
            previews.append(preview)
            all_results.extend(results)
    return SegmentResult(all_results, reports, previews)


def _segment_subject(subject: Any, config: SegmentConfig, detector: Any, segmenter: Any,
                     bar: Any) -> list[tuple[ImageResult, np.ndarray | None, np.ndarray | None]]:
    """Rows ``(result, small preview rgb, small preview mask)`` for every image of one subject."""
    from mudi.data.images import read_image
    from mudi.io import save_image_atomic

    rows: list[tuple[ImageResult, np.ndarray | None, np.ndarray | None]] = []
    todo: list[int] = []
    # A segmenter with ``segment_group`` (GrabCut) sees all of the subject's photos at once: it chooses each
    # photo's cut with the others in view (the subject looks alike in all of them), and the subject's user
    # masks as references. Others go in batches and get no references.
    group = getattr(segmenter, "segment_group", None)
    references: list[tuple[np.ndarray, np.ndarray]] = []
    for i, item in enumerate(subject.images):
        existing = _existing_mask(subject, i)
        if existing is not None and not config.overwrite:
            try:
                rgb, mask = subject.load(i)
                if mask is None:
                    from mudi.data.images import read_mask

                    mask = read_mask(existing, item.path, (rgb.shape[1], rgb.shape[0]))
            except MudiError as e:
                rows.append((ImageResult(subject.name, item.path.name, "error", note=str(e)), None, None))
            else:
                res = ImageResult(subject.name, item.path.name, "kept_user_mask", mask_path=str(existing),
                                  mask_fraction=round(float(mask.mean()), 5))
                rows.append((res, *_thumb(rgb, mask, None, config.preview_tile)))
                if group is not None:
                    references.append(_reference(rgb, mask))
            bar.update(1)
            continue
        todo.append(i)
    queries = subject_queries(subject)
    step = max(1, len(todo)) if group is not None else config.batch_size
    for start in range(0, len(todo), step):
        batch_idx = todo[start:start + step]
        loaded: list[tuple[int, np.ndarray]] = []
        for i in batch_idx:
            item = subject.images[i]
            try:
                rgb, alpha, _ = read_image(item.path)  # not subject.load: a replaced mask need not be readable
            except MudiError as e:
                rows.append((ImageResult(subject.name, item.path.name, "error", note=str(e)), None, None))
                bar.update(1)
                continue
            if alpha is not None and not config.overwrite:  # an RGBA reference carries its own mask
                res = ImageResult(subject.name, item.path.name, "kept_user_mask", mask_path="(alpha channel)",
                                  mask_fraction=round(float(alpha.mean()), 5))
                rows.append((res, *_thumb(rgb, alpha, None, config.preview_tile)))
                if group is not None:
                    references.append(_reference(rgb, alpha))
                bar.update(1)
                continue
            loaded.append((i, rgb))
        if not loaded:
            continue
        images = [rgb for _, rgb in loaded]
        try:
            if detector is not None:
                detections = detector.detect(images, [queries] * len(images), config.threshold)
            else:
                detections = [None] * len(images)
            chosen = [choose_detection(d)[0] if d is not None else None for d in detections]
            seg_idx = [k for k, d in enumerate(detections) if d is None or chosen[k] is not None]
            seg_images = [images[k] for k in seg_idx]
            seg_boxes = [chosen[k].box_xyxy if chosen[k] is not None else None for k in seg_idx]
            if group is not None:  # the user's own masks of this subject count as photos cut right
                masks = group(seg_images, seg_boxes, references=references)
            else:
                masks = segmenter.segment(seg_images, seg_boxes)
            mask_by_k = dict(zip(seg_idx, masks))
        except MudiError:
            raise
        except Exception as e:  # a model failure on this batch: report every image in it, go on
            for i, _ in loaded:
                rows.append((ImageResult(subject.name, subject.images[i].path.name, "error",
                                         note=f"{type(e).__name__}: {e}"), None, None))
                bar.update(1)
            continue
        for k, (i, rgb) in enumerate(loaded):
            item = subject.images[i]
            dets = detections[k]
            det = chosen[k]
            res = ImageResult(subject.name, item.path.name, "ok", num_detections=len(dets) if dets else 0)
            if det is not None:
                res.box_xyxy = [round(v, 2) for v in det.box_xyxy]
                res.score = round(det.score, 4)
            if k not in mask_by_k:
                res.status = "no_detection"
                res.note = (f"no {' / '.join(queries)} scored >= {config.threshold}; lower --threshold, draw the "
                            f"mask by hand, or use --backend grabcut")
                rows.append((res, *_thumb(rgb, None, None, config.preview_tile)))
                bar.update(1)
                continue
            mask = np.asarray(mask_by_k[k], dtype=bool)
            if mask.shape != rgb.shape[:2]:
                raise MudiError(f"segmenter returned a {mask.shape} mask for {item.path} of size {rgb.shape[:2]}")
            res.mask_fraction = round(float(mask.mean()), 5)
            res.status, res.note = judge(mask, dets, config.min_mask_fraction)
            if res.status != "tiny_mask":
                target = mask_path_for(subject, item.path)
                save_image_atomic(target, mask)
                item.mask_path = target
                res.mask_path = str(target)
            rows.append((res, *_thumb(rgb, mask, det.box_xyxy if det is not None else None, config.preview_tile)))
            bar.update(1)
    order = {item.path.name: n for n, item in enumerate(subject.images)}
    rows.sort(key=lambda r: order.get(r[0].image, 0))
    return rows


def _reference(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A user-masked photo and its mask for ``segment_group``, at longer side at most ``REFERENCE_SIDE``."""
    h, w = rgb.shape[:2]
    if max(h, w) <= REFERENCE_SIDE:
        return rgb, np.asarray(mask, dtype=bool)
    rgb_small, mask_small = _thumb(rgb, mask, None, REFERENCE_SIDE)
    return rgb_small, mask_small


def _thumb(rgb: np.ndarray, mask: np.ndarray | None, box: Any, tile: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Downscaled copies for the preview (the box is drawn later, so it is scaled here)."""
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    s = tile / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    small = Image.fromarray(rgb).resize(size, Image.BILINEAR)
    small_mask = None
    if mask is not None:
        small_mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.BILINEAR)) >= 128
    if box is not None:
        draw = ImageDraw.Draw(small)
        draw.rectangle([v * s for v in box], outline=(255, 40, 40), width=2)
    return np.asarray(small), small_mask


def _write_preview(path: Path, rows: list, tile: int) -> None:
    """One row per image: image (+ chosen box), mask overlay, cut-out on white, with the status above."""
    from PIL import Image, ImageDraw

    from mudi.io import save_image_atomic

    label_h = 14
    sheet = Image.new("RGB", (3 * tile, max(1, len(rows)) * (tile + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for n, (res, small, small_mask) in enumerate(rows):
        y = n * (tile + label_h)
        draw.text((2, y + 1), f"{res.subject}/{res.image}: {res.status}"
                  + (f" ({res.mask_fraction:.1%})" if res.mask_fraction is not None else ""), fill=(0, 0, 0))
        if small is None:
            draw.text((2, y + label_h + tile // 2), "unreadable", fill=(200, 0, 0))
            continue
        sh, sw = small.shape[:2]
        sheet.paste(Image.fromarray(small), (0, y + label_h))
        if small_mask is not None:
            overlay = small.astype(np.float32)
            overlay[small_mask] = 0.5 * overlay[small_mask] + 0.5 * np.array([40, 220, 40], np.float32)
            overlay[~small_mask] *= 0.5
            cut = np.where(small_mask[..., None], small, 255).astype(np.uint8)
            sheet.paste(Image.fromarray(overlay.astype(np.uint8)), (tile, y + label_h))
            sheet.paste(Image.fromarray(cut), (2 * tile, y + label_h))
        else:
            draw.text((tile + 4, y + label_h + tile // 2), "no mask", fill=(200, 0, 0))
    save_image_atomic(path, sheet)


def _write_report(path: Path, config: SegmentConfig, results: list[ImageResult]) -> None:
    from mudi.io import write_json_atomic

    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    write_json_atomic(path, {"backend": config.backend, "threshold": config.threshold,
                             "min_mask_fraction": config.min_mask_fraction, "counts": counts,
                             "images": [r.to_json() for r in results]})


def _update_metadata(root: Path, subjects: list[Any], results: list[ImageResult]) -> None:
    """Benchmark / prior folders: point each newly masked image's metadata line at its mask."""
    from mudi.data.subjects import BENCHMARK_FILE, PRIOR_FILE
    from mudi.io import write_text_atomic

    if not subjects or subjects[0].source == "native":
        return
    meta = root / (PRIOR_FILE if subjects[0].source == "prior" else BENCHMARK_FILE)
    written = {Path(r.image).name: Path(r.mask_path).name for r in results
               if r.mask_path and r.status not in ("kept_user_mask", "error", "tiny_mask", "no_detection")}
    if not written or not meta.is_file():
        return
    lines = meta.read_text(encoding="utf-8").splitlines()
    out = []
    for n, line in enumerate(lines):
        if n > 0 and line.strip():
            row = json.loads(line)
            if row.get("file_name") in written:
                row["mask_path"] = written[row["file_name"]]
                line = json.dumps(row)
        out.append(line)
    write_text_atomic(meta, "\n".join(out) + "\n")


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("subjects", nargs="+", metavar="SUBJECT",
                        help="subject folders, folders of them, or benchmark pair folders")
    parser.add_argument("--backend", help=SegmentConfig.__dataclass_fields__["backend"].metadata["help"])
    parser.add_argument("--threshold", type=float, help="detection score threshold (default 0.1)")
    parser.add_argument("--overwrite", action="store_true", default=None, help="replace existing (user) masks")
    parser.add_argument("--batch-size", type=int, help="images per model batch (default 4)")
    parser.add_argument("--device", help="torch device (default cpu)")
    parser.add_argument("--dtype", help="float32 | float16 | bfloat16 (default float32)")
    parser.add_argument("--detector-model", help="detector checkpoint: hub id or local folder")
    parser.add_argument("--segmenter-model", help="segmenter checkpoint: hub id or local folder")
    parser.add_argument("--config", help="YAML file with SegmentConfig keys")


def main(args: argparse.Namespace) -> int:
    from mudi.config import load_config

    values = {k: v for k, v in {
        "subjects": args.subjects, "backend": args.backend, "threshold": args.threshold,
        "overwrite": args.overwrite, "batch_size": args.batch_size, "device": args.device, "dtype": args.dtype,
        "detector_model": args.detector_model, "segmenter_model": args.segmenter_model}.items() if v is not None}
    config = load_config(SegmentConfig, args.config, args.overrides, values)
    result = run(config)
    print(format_summary(result))
    for p in result.preview_paths:
        print(f"review: {p}")
    if result.failures:
        print(f"{len(result.failures)} image(s) failed:")
        for r in result.failures:
            print(f"  {r.subject}/{r.image}: {r.note}")
        return 1
    return 0
