"""``mudi evaluate`` as a library call: score a folder of generated images and write the results.

Per image (paper Sec. 4.3, Algorithm 3, Appendix A.4): D&C (:mod:`mudi.scoring.evaluator`) and text fidelity
(:mod:`mudi.scoring.text`). Outputs in ``output_dir``: one ``<image stem>.json`` per image, ``summary.csv``,
``summary.json`` (means and ``S_GT``), ``report.html`` (open it in a browser) and the resolved ``config.yaml``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mudi.config import save_config
from mudi.core.prompts import join_subjects
from mudi.data.images import IMAGE_SUFFIXES, list_images, read_image
from mudi.data.subjects import BENCHMARK_FILE, SUBJECT_FILE, Subject, SubjectImage, load_subjects
from mudi.devices import describe, dtype_name
from mudi.errors import MudiError
from mudi.io import OutputLock, prepare_output_dir, write_json_atomic, write_text_atomic
from mudi.scoring.config import CONFIG_FILE, EvaluateConfig
from mudi.scoring.evaluator import DncEvaluator
from mudi.scoring.models import build_detector, build_embedders, build_text_scorers, placement
from mudi.scoring.report import render_report, thumbnail_data_uri
from mudi.scoring.text import prompt_orders, prompt_template, text_scores

log = logging.getLogger(__name__)


def load_reference_subjects(paths: Sequence[str], class_nouns: Sequence[str] = ()) -> list[Any]:
    """Subjects from subject folders / a benchmark pair folder, or from plain folders of reference photos
    with one class noun each (``identifier`` empty; a multi-word noun is the descriptive class)."""
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


def _matrix(m: Any) -> Any:
    return None if m is None else np.round(np.asarray(m, dtype=np.float64), 6).tolist()


def evaluate_folder(config: EvaluateConfig, detector: Any = None, embedders: dict[str, Any] | None = None,
                    text_scorers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``config.images`` against ``config.subjects``; write per-image JSON, ``summary.csv``,
    ``summary.json`` and ``report.html``. Models may be injected (tests, the benchmark runner); otherwise
    they are built from the registries. Returns the summary dict."""
    paths = _image_paths(config.images)
    subjects = load_reference_subjects(config.subjects, config.class_nouns)
    out_dir = Path(config.output_dir) if config.output_dir else (
        Path(config.images) / "evaluation" if Path(config.images).is_dir() else Path(config.images).parent / "evaluation")
    prepare_output_dir(out_dir, "evaluation output folder")
    with OutputLock(out_dir, "evaluation"):
        return _evaluate(config, paths, subjects, out_dir, detector, embedders, text_scorers)


def _evaluate(config: EvaluateConfig, paths: list[Path], subjects: list, out_dir: Path, detector: Any,
              embedders: dict[str, Any] | None, text_scorers: dict[str, Any] | None) -> dict[str, Any]:
    device, dtype = placement(config)
    config = dataclasses.replace(config, device=str(device), dtype=dtype_name(dtype))
    if detector is None or embedders is None or text_scorers is None:
        log.info("mudi evaluate: %s", describe(device, dtype))
    detector = detector if detector is not None else build_detector(config)
    embedders = embedders if embedders is not None else build_embedders(config)
    text_scorers = text_scorers if text_scorers is not None else build_text_scorers(config)
    evaluator = DncEvaluator(subjects, detector, embedders, threshold=config.threshold, norm=config.norm,
                             matching=config.matching, nms_iou=config.nms_iou, mixed_margin=config.mixed_margin,
                             reference_crop=config.reference_crop, reference_padding=config.reference_padding,
                             cache_dir=config.cache_dir or None,
                             batch_size=config.batch_size)
    class_names = [s.class_name for s in subjects]
    rows: list[dict[str, Any]] = []
    cards: list[dict[str, Any]] = []
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
    save_config(config, out_dir / CONFIG_FILE)
    if config.report:
        refs = [thumbnail_data_uri(s.load(0)[0], max_side=128) for s in subjects]
        write_text_atomic(out_dir / "report.html", render_report(cards, summary, subjects, refs))
    log.info("evaluated %d images → %s (%s)", len(rows), out_dir,
             ", ".join(f"{m} {v:.3f}" for m, v in summary["means"].items()))
    summary["output_dir"] = str(out_dir)
    return summary
