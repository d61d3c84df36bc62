"""``mudi evaluate``: Detect-and-Compare multi-subject fidelity and text fidelity of generated images.

For every generated image (paper Sec. 4.3, Algorithm 3, Appendix A.4):

1. detect the subjects with an open-vocabulary detector (OWLv2), the subjects' class nouns as queries,
   threshold 0.4 (the authors' value); overlapping boxes from different queries are merged (NMS);
2. crop each box, pad it to a white square and embed it (DINOv2, DreamSim or CLIP image features);
3. compare with the subjects' reference photos, embedded once per subject (and optionally cached on disk,
   keyed by file hash): ``S_GT``, ``S_DC`` and the D&C score of :mod:`mudi.core.dnc`;
4. text fidelity: the CLIP score (and optionally ImageReward) of the image with its prompt written with the
   subjects' descriptive classes, averaged over the subject orders in the prompt (the † of the paper).

Outputs in ``output_dir``: one ``<image stem>.json`` per image, ``summary.csv``, ``summary.json`` (means
and ``S_GT``), ``report.html`` (open it in a browser) and the resolved ``config.yaml``.

:func:`score_images` / :class:`DncEvaluator` are the reusable entry points for the benchmark runner and
iterative training.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mudi.config import field_help, load_config, save_config
from mudi.errors import MudiError

HELP = "Score generated images: Detect-and-Compare (multi-subject fidelity), CLIP score, HTML report."
log = logging.getLogger(__name__)


@dataclass
class EvaluateConfig:
    images: str = field(default="", metadata={"help": "folder of generated images (or one image file)"})
    subjects: list[str] = field(default_factory=list, metadata={
        "help": "subject folders (subject.yaml), a benchmark pair folder, or plain folders of reference photos "
                "(then give class_nouns)"})
    class_nouns: list[str] = field(default_factory=list, metadata={
        "help": "class noun per plain reference folder without subject.yaml, in order (e.g. 'toy,toy')"})
    output_dir: str = field(default="", metadata={"help": "where to write results (default: <images>/evaluation)"})
    prompt: str = field(default="", metadata={
        "help": "prompt for images without a <stem>.json sidecar; [V1], [V2]... stand for the subjects"})
    detector: str = field(default="owlv2", metadata={"help": "detector: owlv2 | tiny-owlv2"})
    detector_path: str = field(default="", metadata={"help": "hub id or local folder overriding the detector's default"})
    threshold: float = field(default=0.4, metadata={"help": "detection score threshold (the authors use 0.4)"})
    nms_iou: float = field(default=0.5, metadata={"help": "merge detections of different queries above this IoU"})
    embedders: list[str] = field(default_factory=lambda: ["dinov2"], metadata={
        "help": "subject-fidelity embedders: dinov2 (D&C-DINO), dreamsim (D&C-DS), clip, tiny-dinov2, tiny-clip"})
    text_scorers: list[str] = field(default_factory=lambda: ["clip"], metadata={
        "help": "text-fidelity scorers: clip (CLIP score), image_reward, tiny-clip; empty for none"})
    norm: Literal["spectral", "frobenius"] = field(default="spectral", metadata={
        "help": "norm of S_GT - S_DC: spectral (the authors' code) or frobenius (squared, the paper's text)"})
    matching: Literal["greedy", "hungarian"] = field(default="greedy", metadata={
        "help": "match detections to subjects: greedy (Algorithm 3) or hungarian (optimal)"})
    mixed_margin: float = field(default=0.1, metadata={
        "help": "flag 'mixed' when an off-diagonal S_DC entry exceeds S_GT's by more than this"})
    reference_crop: Literal["full", "mask_box"] = field(default="full", metadata={
        "help": "reference photos as whole photos (full) or cropped to their mask's box (mask_box)"})
    batch_size: int = field(default=8, metadata={"help": "generated images per detection/embedding batch"})
    cache_dir: str = field(default="", metadata={"help": "folder caching reference embeddings by file hash"})
    device: str = field(default="cpu", metadata={"help": "torch device, e.g. cpu or cuda:0"})
    dtype: Literal["float32", "float16", "bfloat16"] = field(default="float32", metadata={"help": "model dtype"})
    report: bool = field(default=True, metadata={"help": "write report.html"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise MudiError(f"threshold={self.threshold}: must be between 0 and 1 (the authors use 0.4)")
        if not 0.0 < self.nms_iou <= 1.0:
            raise MudiError(f"nms_iou={self.nms_iou}: must be in (0, 1]; use 1 to keep every box")
        if self.batch_size < 1:
            raise MudiError(f"batch_size={self.batch_size}: must be at least 1")
        if not self.embedders:
            raise MudiError("embedders is empty; give at least one, e.g. --embedders dinov2")
        if len(set(self.embedders)) != len(self.embedders):
            raise MudiError(f"embedders {self.embedders} lists a name twice")
        from mudi.adapters import eval_registry as reg

        reg.check_names(reg.DETECTORS, [self.detector], "detector")
        reg.check_names(reg.EMBEDDERS, self.embedders, "embedder")
        reg.check_names(reg.TEXT_SCORERS, self.text_scorers, "text scorer")


# ----------------------------------------------------------------------------------------------- helpers


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
    from mudi.core.geometry import box_iou

    kept: list[Any] = []
    for d in sorted(dets, key=lambda d: -d.score):
        if all(box_iou(d.box_xyxy, k.box_xyxy) <= iou for k in kept):
            kept.append(d)
    return kept


def detection_queries(subjects: Sequence[Any]) -> list[str]:
    """The detector's text queries: the subjects' class nouns (their supercategories), without repeats."""
    out: list[str] = []
    for s in subjects:
        if s.class_noun not in out:
            out.append(s.class_noun)
    return out


def prompt_template(prompt: str, subjects: Sequence[Any]) -> str | None:
    """Turn a prompt naming every subject (by phrase, descriptive class or ``[Vk]``) into a ``[Vk]``
    template; ``None`` when some subject is not found in it."""
    if all(f"[V{k + 1}]" in prompt for k in range(len(subjects))):
        return prompt
    text = prompt
    for k, s in enumerate(subjects):
        names = [s.phrase, s.phrase_without_descriptive_class(), s.class_name] if s.identifier else [s.class_name]
        for name in sorted(set(names), key=len, reverse=True):
            pattern = re.compile(rf"(?<![\w\]]){re.escape(name)}(?!\w)", re.IGNORECASE)
            if pattern.search(text):
                text = pattern.sub(f"[V{k + 1}]", text, count=1)
                break
        else:
            return None
    return text


def prompt_orders(template: str, class_names: Sequence[str], max_orders: int = 24) -> list[str]:
    """The prompt with the subjects (by descriptive class, no identifiers) in every order (the † of the
    paper's tables); beyond ``max_orders`` permutations, the cyclic rotations."""
    from mudi.core.prompts import fill_placeholders

    n = len(class_names)
    if math.factorial(n) <= max_orders:
        perms = list(itertools.permutations(range(n)))
    else:
        perms = [tuple((i + r) % n for i in range(n)) for r in range(n)]
    out = []
    for p in perms:
        text = fill_placeholders(template, [class_names[i] for i in p])
        if text not in out:
            out.append(text)
    return out


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- scoring


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
                 norm: str = "spectral", matching: str = "greedy", nms_iou: float = 0.5, mixed_margin: float = 0.1,
                 reference_crop: str = "full", cache_dir: str | Path | None = None, batch_size: int = 8):
        from mudi.core.dnc import gt_similarity

        if not subjects:
            raise MudiError("no subjects to evaluate against; pass --subjects")
        self.subjects, self.detector, self.embedders = list(subjects), detector, dict(embedders)
        self.threshold, self.norm, self.matching = threshold, norm, matching
        self.nms_iou, self.mixed_margin, self.batch_size = nms_iou, mixed_margin, batch_size
        self.reference_crop = reference_crop
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
                from mudi.core.geometry import mask_to_box

                rgb = crop_box(rgb, mask_to_box(mask))
            out.append(pad_to_white_square(rgb))
        return out

    def _reference_embeddings(self, subject: Any, embedder: Any) -> np.ndarray:
        cache_file = None
        if self.cache_dir is not None:
            key = hashlib.sha256()
            key.update(f"{embedder.name}|{getattr(embedder, 'cache_key', '')}|{self.reference_crop}".encode())
            for im in subject.images:
                key.update(_file_sha256(im.path).encode())
                if self.reference_crop == "mask_box" and im.mask_path is not None:
                    key.update(_file_sha256(im.mask_path).encode())
            cache_file = self.cache_dir / embedder.name / f"{key.hexdigest()[:32]}.npy"
            if cache_file.is_file():
                return np.load(cache_file)
        emb = np.asarray(embedder.embed(self._reference_images(subject)), dtype=np.float32)
        if cache_file is not None:
            from mudi.io import atomic_path

            with atomic_path(cache_file) as tmp, open(tmp, "wb") as f:
                np.save(f, emb)
        return emb

    def score_images(self, images: Sequence[np.ndarray], progress: bool = False) -> list[ImageScore]:
        """Score RGB uint8 ``(H, W, 3)`` images, ``batch_size`` at a time (one detector call and one
        embedder call per batch and metric)."""
        from tqdm.auto import tqdm

        from mudi.core.dnc import dc_similarity, dnc_details

        results: list[ImageScore] = []
        starts = range(0, len(images), self.batch_size)
        for start in tqdm(starts, desc="D&C", unit="batch", disable=not progress):
            batch = list(images[start:start + self.batch_size])
            raw = self.detector.detect(batch, [self.queries] * len(batch), self.threshold)
            dets = [merge_detections(d, self.nms_iou) for d in raw]
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


def text_scores(scorer: Any, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]) -> list[float]:
    """Mean score of each image over its prompts (its subject orders). Uses ``embed``/``embed_text`` when
    the scorer has them (CLIP: each image embedded once), else ``score`` per pair."""
    if not images:
        return []
    if hasattr(scorer, "embed_text"):
        img = np.asarray(scorer.embed(images), dtype=np.float64)
        flat = [p for ps in prompts for p in ps]
        txt = np.asarray(scorer.embed_text(flat), dtype=np.float64)
        out, k = [], 0
        for i, ps in enumerate(prompts):
            out.append(float((txt[k:k + len(ps)] @ img[i]).mean()))
            k += len(ps)
        return out
    out = []
    for im, ps in zip(images, prompts):
        out.append(float(np.mean(scorer.score([im] * len(ps), list(ps)))))
    return out


# ----------------------------------------------------------------------------------------------- workflow


def load_reference_subjects(paths: Sequence[str], class_nouns: Sequence[str] = ()) -> list[Any]:
    """Subjects from subject folders / a benchmark pair folder, or from plain folders of reference photos
    with one class noun each (``identifier`` empty; a multi-word noun is the descriptive class)."""
    from mudi.data.images import list_images
    from mudi.data.subjects import BENCHMARK_FILE, SUBJECT_FILE, Subject, SubjectImage, load_subjects

    plain = [Path(p) for p in paths if Path(p).is_dir() and not (Path(p) / SUBJECT_FILE).is_file()
             and not (Path(p) / BENCHMARK_FILE).is_file() and not any(
                 (c / SUBJECT_FILE).is_file() for c in Path(p).iterdir() if c.is_dir())]
    if not plain:
        if class_nouns:
            raise MudiError("class_nouns is only for plain reference folders without subject.yaml; "
                            "these subjects name their classes already")
        return load_subjects(list(paths))
    if len(plain) != len(paths) or len(class_nouns) != len(plain):
        raise MudiError(f"{len(plain)} plain reference folder(s) without subject.yaml "
                        f"({', '.join(str(p) for p in plain)}): give one class noun for each, in order, "
                        "e.g. --class-nouns toy toy, and do not mix them with subject folders")
    subjects = []
    for folder, noun in zip(plain, class_nouns):
        images = [SubjectImage(p) for p in list_images(folder)]
        if not images:
            raise MudiError(f"{folder}: no reference images (.jpg, .png, .webp) found")
        words = noun.split()
        subjects.append(Subject(name=folder.name, identifier="", class_noun=words[-1],
                                descriptive_class=noun if len(words) > 1 else None, images=images, root=folder))
    return subjects


def _image_paths(images: str) -> list[Path]:
    from mudi.data.images import IMAGE_SUFFIXES, list_images

    p = Path(images)
    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
        return [p]
    if not p.is_dir():
        raise MudiError(f"{p}: no such folder of generated images; pass --images DIR")
    paths = list_images(p)
    if not paths:
        raise MudiError(f"{p}: no images (.jpg, .png, .webp) to evaluate")
    return paths


def _image_prompt(path: Path, config: EvaluateConfig, subjects: Sequence[Any]) -> str:
    """The image's prompt: its ``<stem>.json`` sidecar's "prompt" (written by `mudi generate`), else
    ``config.prompt``, else the plain two-subject caption."""
    from mudi.core.prompts import join_subjects

    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise MudiError(f"{sidecar}: not valid JSON ({e.msg}); fix or delete it") from None
        if isinstance(meta, dict) and isinstance(meta.get("prompt"), str) and meta["prompt"].strip():
            return meta["prompt"]
    if config.prompt:
        return config.prompt
    return "A photo of " + join_subjects([f"[V{k + 1}]" for k in range(len(subjects))]) + "."


def build_detector(config: EvaluateConfig) -> Any:
    import torch

    from mudi.adapters import eval_registry as reg

    kw: dict[str, Any] = {"device": config.device, "batch_size": config.batch_size}
    if not config.detector.startswith("tiny-"):
        kw["dtype"] = getattr(torch, config.dtype)
        if config.detector_path:
            kw["pretrained_model_name_or_path"] = config.detector_path
    return reg.build(reg.DETECTORS, config.detector, "detector", **kw)


def build_embedders(config: EvaluateConfig) -> dict[str, Any]:
    import torch

    from mudi.adapters import eval_registry as reg

    out = {}
    for name in config.embedders:
        kw: dict[str, Any] = {"device": config.device, "batch_size": config.batch_size}
        if name in ("dinov2", "clip"):
            kw["dtype"] = getattr(torch, config.dtype)
        metric = reg.METRIC_NAMES.get(name, f"dnc_{name}")
        if metric in out:  # e.g. dinov2 and tiny-dinov2 together
            metric = f"dnc_{name.replace('-', '_')}"
        out[metric] = reg.build(reg.EMBEDDERS, name, "embedder", **kw)
    return out


def build_text_scorers(config: EvaluateConfig) -> dict[str, Any]:
    from mudi.adapters import eval_registry as reg

    out = {}
    for name in config.text_scorers:
        key = "clip_score" if name in ("clip", "tiny-clip") else name
        kw: dict[str, Any] = {"device": config.device}
        if name != "image_reward":
            kw["batch_size"] = config.batch_size
        out[key] = reg.build(reg.TEXT_SCORERS, name, "text scorer", **kw)
    return out


def _matrix(m: Any) -> Any:
    return None if m is None else np.round(np.asarray(m, dtype=np.float64), 6).tolist()


def run(config: EvaluateConfig, detector: Any = None, embedders: dict[str, Any] | None = None,
        text_scorers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``config.images`` against ``config.subjects``; write per-image JSON, ``summary.csv``,
    ``summary.json`` and ``report.html``. Models may be injected (tests, the benchmark runner); otherwise
    they are built from the registries. Returns the summary dict."""
    from mudi.data.images import read_image
    from mudi.io import write_json_atomic, write_text_atomic

    paths = _image_paths(config.images)
    subjects = load_reference_subjects(config.subjects, config.class_nouns)
    out_dir = Path(config.output_dir) if config.output_dir else (
        Path(config.images) / "evaluation" if Path(config.images).is_dir() else Path(config.images).parent / "evaluation")
    detector = detector if detector is not None else build_detector(config)
    embedders = embedders if embedders is not None else build_embedders(config)
    text_scorers = text_scorers if text_scorers is not None else build_text_scorers(config)
    evaluator = DncEvaluator(subjects, detector, embedders, threshold=config.threshold, norm=config.norm,
                             matching=config.matching, nms_iou=config.nms_iou, mixed_margin=config.mixed_margin,
                             reference_crop=config.reference_crop, cache_dir=config.cache_dir or None,
                             batch_size=config.batch_size)
    class_names = [s.class_name for s in subjects]
    rows: list[dict[str, Any]] = []
    cards: list[dict[str, Any]] = []
    from tqdm.auto import tqdm

    for start in tqdm(range(0, len(paths), config.batch_size), desc="evaluate", unit="batch"):
        batch_paths = paths[start:start + config.batch_size]
        images = [read_image(p)[0] for p in batch_paths]
        scores = evaluator.score_images(images)
        prompts = []
        for p in batch_paths:
            prompt = _image_prompt(p, config, subjects)
            template = prompt_template(prompt, subjects)
            prompts.append(prompt_orders(template, class_names) if template else [prompt])
        for key, scorer in text_scorers.items():
            for res, value in zip(scores, text_scores(scorer, images, prompts)):
                res.text[key] = value
        for p, img, res, ps in zip(batch_paths, images, scores, prompts):
            res.prompts = ps
            record = {
                "image": str(p), "prompts": ps,
                "detections": [{"box_xyxy": [round(float(v), 2) for v in d.box_xyxy], "score": round(float(d.score), 4),
                                "query": d.query} for d in res.detections],
                "metrics": {m: {"score": v["score"], "s_dc": _matrix(v["s_dc"]),
                                "s_dc_matched": _matrix(v["s_dc_matched"]), "assignment": v["assignment"],
                                "failures": v["failures"]} for m, v in res.dnc.items()},
                "text": res.text, "failures": res.failures,
            }
            write_json_atomic(out_dir / f"{p.stem}.json", record)
            rows.append({"image": p.name, "num_detections": len(res.detections),
                         **{m: v["score"] for m, v in res.dnc.items()}, **res.text,
                         "failures": " ".join(res.failures)})
            if config.report:
                from mudi.report import thumbnail_data_uri

                cards.append({"name": p.name, "thumb": thumbnail_data_uri(img, res.detections), "record": record})
    metrics = list(evaluator.embedders) + list(text_scorers)
    summary = {
        "num_images": len(rows), "subjects": [s.name for s in subjects], "queries": evaluator.queries,
        "means": {m: float(np.mean([r[m] for r in rows])) for m in metrics},
        "failure_counts": {f: sum(f in r["failures"].split() for r in rows) for f in ("count", "duplicate", "mixed")},
        "s_gt": {m: _matrix(v) for m, v in evaluator.s_gt.items()},
    }
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["image", "num_detections", *metrics, "failures"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    write_text_atomic(out_dir / "summary.csv", buf.getvalue())
    write_json_atomic(out_dir / "summary.json", summary)
    save_config(config, out_dir / "config.yaml")
    if config.report:
        from mudi.report import render_report, thumbnail_data_uri

        refs = [thumbnail_data_uri(s.load(0)[0], max_side=128) for s in subjects]
        write_text_atomic(out_dir / "report.html", render_report(cards, summary, subjects, refs))
    log.info("evaluated %d images → %s (%s)", len(rows), out_dir,
             ", ".join(f"{m} {v:.3f}" for m, v in summary["means"].items()))
    summary["output_dir"] = str(out_dir)
    return summary


# ----------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: Any) -> None:
    h = lambda name: field_help(EvaluateConfig, name)  # noqa: E731
    parser.add_argument("--images", help=h("images"))
    parser.add_argument("--subjects", nargs="+", help=h("subjects"))
    parser.add_argument("--class-nouns", nargs="+", dest="class_nouns", help=h("class_nouns"))
    parser.add_argument("--output-dir", "-o", dest="output_dir", help=h("output_dir"))
    parser.add_argument("--prompt", help=h("prompt"))
    parser.add_argument("--detector", help=h("detector"))
    parser.add_argument("--embedders", nargs="+", help=h("embedders"))
    parser.add_argument("--text-scorers", nargs="*", dest="text_scorers", help=h("text_scorers"))
    parser.add_argument("--threshold", type=float, help=h("threshold"))
    parser.add_argument("--device", help=h("device"))
    parser.add_argument("--batch-size", type=int, dest="batch_size", help=h("batch_size"))
    parser.add_argument("--config", help="YAML file of EvaluateConfig keys")


def main(args: Any) -> int:
    keys = ("images", "subjects", "class_nouns", "output_dir", "prompt", "detector", "embedders", "text_scorers",
            "threshold", "device", "batch_size")
    values = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    config = load_config(EvaluateConfig, args.config, args.overrides, values)
    if not config.images:
        raise MudiError("no generated images given; pass --images DIR")
    if not config.subjects:
        raise MudiError("no subjects given; pass --subjects PATH [PATH ...]")
    summary = run(config)
    means = ", ".join(f"{m}={v:.3f}" for m, v in summary["means"].items())
    print(f"{summary['num_images']} images: {means}; results in {summary['output_dir']}")
    return 0
