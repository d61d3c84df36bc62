"""``mudi iterate`` as a library call: iterative training (paper Sec. 5.5, Appendix C.3, Fig. 36).

Each round ``r`` (``OUTPUT_DIR/round-r/``), starting from the current LoRA (round 1: ``config.lora``):

1. ``images/`` — M multi-subject images with the current LoRA and the mean-shifted init, from simple prompts
   (:mod:`mudi.iterative.templates`), each with a JSON sidecar (prompt, seed, init); marker ``images.json``;
2. ``scores.json`` — each image's score by the scorer (D&C-DS by default), with the round's statistics;
3. ``kept/`` — the top K images as a native subject folder whose captions are their generation prompts (so the
   trainer trains on them as they are, composition ``none``); ``kept.json`` lists them with their scores;
4. ``train/`` — a new LoRA trained on the kept images on top of the current LoRA fused into the base weights,
   with the KL regularizer towards it (weight 1.0); a killed run resumes from its last checkpoint;
5. ``lora/`` — current + new LoRA concatenated exactly into one LoRA: the round's model, and the next round's
   starting point (its ``mudi_subjects.json`` names the subjects, so ``mudi generate --lora`` works on it).

With ``final_evaluation`` the last model generates round 1's prompts and seeds again (``final/``), a paired
comparison with the starting model. ``report.html`` / ``report.json`` show every round's score distribution
(histogram PNGs) and kept images. Every stage has a marker with the fingerprint of its settings, upstream
stages included: a re-run skips what is finished and redoes what changed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mudi.adapters import registry
from mudi.adapters.pool import ModelPool
from mudi.config import from_dict, save_config, to_dict
from mudi.core.init_latents import default_gamma
from mudi.data.images import read_image
from mudi.data.manifests import (
    LORA_FILE,
    fingerprint,
    read_lora_subjects,
    read_manifest,
    read_marker,
    subjects_of_manifest,
    write_subjects_manifest,
)
from mudi.data.subjects import SUBJECT_FILE, create_subject_folder, load_subjects
from mudi.data.units import DONE, PARTIAL, STALE, Unit, file_digest
from mudi.devices import describe, dtype_name, resolve_device, resolve_dtype
from mudi.errors import MudiError
from mudi.io import (
    OutputLock,
    atomic_dir,
    prepare_output_dir,
    write_text_atomic,
)
from mudi.iterative.config import CONFIG_FILE, IterateConfig
from mudi.iterative.report import write_report
from mudi.iterative.scores import DncScorer, score_stats, scorer_fingerprint, top_k
from mudi.iterative.templates import Transport, llm_templates, shipped_prompts_file, templates_for
from mudi.merging.config import MergeConfig
from mudi.merging.folder import merge_to_folder
from mudi.sampling.images import resolve_prompt
from mudi.sampling.init import resolve_init
from mudi.sampling.layout_llm import InsecureEndpoint
from mudi.sampling.loras import check_lora_family, lora_file, lora_path
from mudi.sampling.sink import ImageJob, Sampler, pending, run_jobs
from mudi.training.config import TrainConfig
from mudi.training.loop import train
from mudi.training.runs import run_files

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone

log = logging.getLogger(__name__)
STAGE_FILE = "stage.json"
PROMPTS_FILE = "prompts.json"
_RUN_ONLY = ("output_dir", "resume_from_checkpoint", "overwrite", "progress", "device", "report_to",
             "checkpointing_steps", "checkpoints_total_limit")


@dataclass
class IterateResult:
    """The last round's LoRA, and per round its statistics and kept images (``report.json``'s rounds)."""

    output_dir: Path
    lora_dir: Path
    rounds: list[dict] = field(default_factory=list)
    final: dict | None = None
    ran: list[str] = field(default_factory=list)  # the stages that ran (the others were finished before)


class _Models:
    """The generation backbone (loaded when needed, released before each training) and the scorer."""

    def __init__(self, config: IterateConfig, backbone_name: str, subjects: list, scorer: Any, cache_dir: Path):
        self.config, self.name, self.subjects = config, backbone_name, subjects
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.pool = ModelPool()
        self.cache_dir, self._injected = cache_dir, scorer is not None
        if scorer is not None:
            self.pool.put("scorer", scorer)

    def backbone(self) -> Backbone:
        return self.pool.get("generation", self._load_backbone)

    def _load_backbone(self) -> Backbone:
        log.info("mudi iterate: %s on %s", self.name, describe(self.device, self.dtype))
        return registry.load_backbone(self.name, self.config.pretrained_model_name_or_path, self.device, self.dtype)

    def scorer(self) -> Any:
        return self.pool.get("scorer", self._build_scorer)

    def _build_scorer(self) -> Any:
        ecfg = self.config.evaluate_config([str(s.root) for s in self.subjects])
        ecfg = dataclasses.replace(ecfg, device=str(self.device))  # dtype: the scoring's own (float32)
        return DncScorer(self.subjects, ecfg, self.config.metric, cache_dir=str(self.cache_dir))

    def scorer_fingerprint(self) -> str:
        if self._injected:
            return scorer_fingerprint(self.scorer())
        # the default D&C scorer, named by its settings (without building its models)
        return fingerprint({"scorer": "dnc", "metric": self.config.metric,
                            "evaluate": {k: v for k, v in to_dict(self.config.evaluate_config()).items()
                                         if k not in ("device", "batch_size", "subjects", "report")}})

    def release_backbone(self) -> None:
        self.pool.release("generation")


def run_iterations(config: IterateConfig, scorer: Any = None, llm_transport: Transport | None = None) -> IterateResult:
    """Run (or finish) ``config.rounds`` rounds; ``scorer`` replaces the D&C scorer (see
    :mod:`mudi.iterative.scores`), ``llm_transport`` the HTTP call of the LLM prompt provider."""
    if not config.lora:
        raise MudiError("no LoRA given; pass --lora PATH (a mudi run, a `mudi modular` folder or a .safetensors file)")
    folder, _ = lora_file(Path(config.lora))
    manifest = read_manifest(folder) or {}
    backbone_name = config.backbone or manifest.get("backbone")
    if not backbone_name:
        raise MudiError(f"{config.lora} records no backbone (no mudi_subjects.json): pass --backbone")
    config = dataclasses.replace(config, init=resolve_init(config.init, backbone_name=backbone_name))
    check_lora_family([config.lora], backbone_name)
    if config.subjects:
        subjects = load_subjects(config.subjects)
    else:
        rows = read_lora_subjects([config.lora])
        if not rows:
            raise MudiError(f"{config.lora} names no subjects (no mudi_subjects.json): pass --subjects PATH [PATH ...]")
        subjects = subjects_of_manifest(rows)
    if config.init == "mean_shifted":
        for s in subjects:  # every reference photo decoded and masked before a model loads
            s.cutouts(max_side=1024)
    out = prepare_output_dir(config.output_dir, "iterate output folder")
    with OutputLock(out, "iterate run"):
        save_config(config, out / CONFIG_FILE)
        templates = _templates(config, len(subjects), out, llm_transport)
        models = _Models(config, backbone_name, subjects, scorer, out / "cache" / "embeddings")
        return _run(config, backbone_name, subjects, templates, models, out)


def _templates(config: IterateConfig, n: int, out: Path, transport: Transport | None) -> list[str]:
    """The prompt templates of the run, chosen once and kept in ``prompts.json`` (an LLM's answer is not
    reproducible: a resumed run keeps the prompts it started with)."""
    from_file = templates_for(config.prompts_file or shipped_prompts_file(), n)
    unit = Unit.of(out, {"provider": config.prompt_provider, "file": from_file, "url": config.llm_url,
                         "model": config.llm_model, "num": config.num_llm_prompts}, marker=out / PROMPTS_FILE,
                   name="prompts")
    marker = unit.read()
    if unit.state() in (DONE, PARTIAL) and marker and marker.get("templates"):  # kept once chosen
        return list(marker["templates"])
    templates, source = from_file, "templates"
    if config.prompt_provider == "llm":
        try:
            templates = llm_templates(n, config.num_llm_prompts, str(config.llm_url), config.llm_model,
                                      os.environ.get("MUDI_LLM_API_KEY"), from_file, transport=transport)
            source = "llm"
        except InsecureEndpoint:
            raise
        except MudiError as e:
            log.warning("LLM prompts failed, using the prompt templates instead: %s", e)
            source = "templates (llm failed)"
    unit.finish(source=source, templates=templates)
    return templates


def _lora_fp(path: str) -> str:
    """The LoRA file by content (a LoRA rewritten in place is another input)."""
    return fingerprint({"lora": file_digest(lora_path(path))})


def _jobs(config: IterateConfig, templates: list[str], phrases: list[str], first: int) -> list[dict]:
    """Image ``k`` of a round whose first global index is ``first``: seed and template of index ``first + k``."""
    jobs = []
    for k in range(config.num_images):
        g = first + k
        t = templates[g % len(templates)]
        jobs.append({"index": k, "seed": config.seed + g, "template": t,
                     "prompt": resolve_prompt(t, phrases, config.use_count_prefix, config.count_noun)})
    return jobs


def _run(config: IterateConfig, backbone_name: str, subjects: list, templates: list[str], models: _Models,
         out: Path) -> IterateResult:
    phrases = [s.phrase for s in subjects]
    current, current_fp = config.lora, _lora_fp(config.lora)
    result = IterateResult(out, Path(config.lora))
    for r in range(1, config.rounds + 1):
        rd = out / f"round-{r}"
        jobs = _jobs(config, templates, phrases, (r - 1) * config.num_images)
        images_fp = _generate(config, models, subjects, current, current_fp, jobs, rd, result)
        scores_fp, entries = _score(models, rd, images_fp, result)
        kept_fp, kept = _keep(config, rd, r, scores_fp, entries, result)
        train_dir, train_fp = _train(config, models, backbone_name, rd, r, current, current_fp, kept_fp, result)
        lora_dir, lora_fp = _concat(config, models, backbone_name, subjects, current, current_fp, train_dir, train_fp,
                                    rd / "lora", r, result)
        m = read_marker(rd / "scores.json") or {}
        result.rounds.append({"round": r, "model": str(current), "lora": str(lora_dir), "metric": m.get("metric"),
                              "stats": m.get("stats", {}), "kept": kept, "folder": str(rd)})
        print(f"mudi iterate: round {r}: D&C mean {m.get('stats', {}).get('mean', float('nan')):.3f} over "
              f"{len(entries)} images, kept {len(kept)}; model {lora_dir}")
        current, current_fp = str(lora_dir), lora_fp
    result.lora_dir = Path(current)
    if config.final_evaluation:
        fd = out / "final"
        images_fp = _generate(config, models, subjects, current, current_fp, _jobs(config, templates, phrases, 0),
                              fd, result)
        _score(models, fd, images_fp, result)
        m = read_marker(fd / "scores.json") or {}
        result.final = {"model": current, "metric": m.get("metric"), "stats": m.get("stats", {}), "folder": str(fd)}
    models.release_backbone()
    write_report(out, config, result.rounds, result.final, [s.name for s in subjects])
    return result


def _generate(config: IterateConfig, models: _Models, subjects: list, lora: str, lora_fp: str, jobs: list[dict],
              folder: Path, result: IterateResult) -> str:
    """The round's images and sidecars in ``folder/images`` (marker ``folder/images.json``); an interrupted
    generation keeps the images written (image k depends only on its seed and prompt)."""
    use_init = config.init == "mean_shifted"
    settings = {"lora": lora_fp, "jobs": [(j["seed"], j["prompt"]) for j in jobs], "init": config.init,
                "gamma": config.gamma if config.gamma is not None or not use_init else default_gamma(len(subjects)),
                "steps": config.num_inference_steps, "guidance": config.guidance_scale,
                "negative_prompt": config.negative_prompt, "subjects": [str(s.root) for s in subjects],
                "backbone": models.name, "model": config.pretrained_model_name_or_path}
    unit = Unit.of(folder, settings, marker=folder / "images.json", name=f"{folder.name}/images")
    if unit.is_done():
        return unit.fp
    if unit.state() == STALE:
        unit.clear("images")
    unit.start()
    images, names = folder / "images", [s.name for s in subjects]
    todo = [ImageJob(images / f"{j['index']:04d}_seed{j['seed']}.png", images / f"{j['index']:04d}_seed{j['seed']}.json",
                     f"{j['index']:04d}_seed{j['seed']}.png", j["prompt"], j["seed"], tuple(subjects) if use_init else None,
                     {"template": j["template"], "subjects": names, "lora": lora}) for j in jobs]
    sampler = Sampler(init=config.init, gamma=config.gamma, negative_prompt=config.negative_prompt,
                      num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
                      batch_size=config.batch_size)
    run_jobs(models.backbone, pending(todo), [lora], sampler)
    unit.finish(num_images=len(jobs))
    result.ran.append(f"{folder.name}/images")
    return unit.fp


def _score(models: _Models, folder: Path, images_fp: str, result: IterateResult) -> tuple[str, list[dict]]:
    """``folder/scores.json``: every image's score (and failures), the statistics; skipped when finished."""
    unit = Unit.of(folder, {"images": images_fp, "scorer": models.scorer_fingerprint()}, marker=folder / "scores.json",
                   name=f"{folder.name}/scores")
    if unit.is_done():
        return unit.fp, list((unit.read() or {}).get("images", []))
    scorer = models.scorer()
    sidecars = sorted((folder / "images").glob("*.json"))
    entries: list[dict] = []
    for start in range(0, len(sidecars), 16):  # a few images in memory at a time
        chunk = sidecars[start:start + 16]
        records = [json.loads(p.read_text(encoding="utf-8")) for p in chunk]
        imgs = [read_image(folder / "images" / rec["image"])[0] for rec in records]
        scored = scorer(imgs, records)
        if len(scored) != len(records):
            raise MudiError(f"the scorer returned {len(scored)} results for {len(records)} images")
        for rec, s in zip(records, scored):
            entries.append({"image": f"images/{rec['image']}", "prompt": rec["prompt"], "seed": rec["seed"],
                            "score": float(s["score"]), "failures": list(s.get("failures", [])),
                            **{k: s[k] for k in ("num_detections", "metrics") if k in s}})
    metric = getattr(scorer, "metric", None) or "score"
    stats = score_stats([e["score"] for e in entries], [e["failures"] for e in entries])
    unit.finish(metric=metric, stats=stats, images=entries)
    result.ran.append(f"{folder.name}/scores")
    return unit.fp, entries


def _keep(config: IterateConfig, folder: Path, r: int, scores_fp: str, entries: list[dict],
          result: IterateResult) -> tuple[str, list[dict]]:
    """The top ``keep`` images into ``folder/kept/``, a subject folder captioned with their prompts."""
    unit = Unit.of(folder, {"scores": scores_fp, "keep": config.keep}, marker=folder / "kept.json",
                   outputs=(f"kept/{SUBJECT_FILE}",), name=f"{folder.name}/kept")
    if unit.is_done():
        return unit.fp, list((unit.read() or {}).get("kept", []))
    order = top_k([e["score"] for e in entries], config.keep)
    kept = [{**entries[i], "rank": n + 1, "file": f"{n:02d}.png"} for n, i in enumerate(order)]
    with atomic_dir(folder / "kept") as tmp:
        subject = create_subject_folder(tmp, [folder / e["image"] for e in kept], "kept", "scene",
                                        name=f"round-{r}-kept")
        captions = {e["file"]: e["prompt"] for e in kept}
        for item in subject.images:
            item.caption = captions[item.path.name]
        write_text_atomic(tmp / SUBJECT_FILE, yaml.safe_dump(subject.to_metadata(), sort_keys=False,
                                                             allow_unicode=True))
    unit.finish(kept=kept)
    result.ran.append(f"{folder.name}/kept")
    return unit.fp, kept


def _train(config: IterateConfig, models: _Models, backbone_name: str, folder: Path, r: int, current: str,
           current_fp: str, kept_fp: str, result: IterateResult) -> tuple[Path, str]:
    """A new LoRA on the kept images, on top of the current one fused, with the KL regularizer."""
    td = folder / "train"
    values = {"progress": config.progress, "device": "cpu" if config.device == "cpu" else "auto", **config.train,
              "backbone": backbone_name, "pretrained_model_name_or_path": config.pretrained_model_name_or_path,
              "subjects": [str(folder / "kept")], "output_dir": str(td), "composition": "none",
              "base_lora": [str(current)], "base_lora_weights": [1.0], "kl_weight": config.kl_weight,
              "max_train_steps": config.max_train_steps, "rank": config.rank, "learning_rate": config.learning_rate,
              "seed": config.seed + r}
    cfg = from_dict(TrainConfig, values, prefix="train.")
    unit = Unit.of(td, {"train": {k: v for k, v in to_dict(cfg).items() if k not in _RUN_ONLY}, "kept": kept_fp,
                        "base": current_fp}, marker=td / STAGE_FILE, outputs=(LORA_FILE,), name=f"round {r}: train")
    state = unit.state()
    if state == DONE:
        return td, unit.fp
    resume = state == PARTIAL
    holds_run = td.is_dir() and bool(run_files(td))
    cfg = dataclasses.replace(cfg, resume_from_checkpoint="latest" if resume else None,
                              overwrite=holds_run and not resume)
    models.release_backbone()  # the training loads its own model
    print(f"mudi iterate: round {r}: fine-tuning on {config.keep} kept images, {cfg.max_train_steps} steps, KL "
          f"weight {cfg.kl_weight}" + (" (resuming)" if resume else ""))
    unit.start()
    trainer = train(cfg)
    unit.finish(steps=trainer.global_step)
    result.ran.append(f"{folder.name}/train")
    return td, unit.fp


def _concat(config: IterateConfig, models: _Models, backbone_name: str, subjects: list, current: str,
            current_fp: str, train_dir: Path, train_fp: str, folder: Path, r: int,
            result: IterateResult) -> tuple[Path, str]:
    """The round's model: current + new LoRA concatenated exactly, naming the subjects."""
    unit = Unit.of(folder, {"base": current_fp, "train": train_fp}, marker=folder / STAGE_FILE, outputs=(LORA_FILE,),
                   name=f"round {r}: lora")
    if unit.is_done():
        return folder, unit.fp
    shutil.rmtree(folder, ignore_errors=True)
    bb = models.backbone()
    merge_to_folder(MergeConfig(lora=[str(current), str(train_dir)], method="concat", backbone=backbone_name,
                                pretrained_model_name_or_path=config.pretrained_model_name_or_path,
                                output_dir=str(folder), device=str(bb.device), dtype=dtype_name(bb.dtype)), backbone=bb)
    extra = {k: v for k, v in (read_manifest(folder) or {}).items() if k != "subjects"}
    write_subjects_manifest(folder, subjects, **extra, iterate_round=r)
    unit.finish()
    result.ran.append(f"round-{r}/lora")
    return folder, unit.fp


def read_scores(folder: str | Path) -> list[float]:
    """The scores of a round folder's ``scores.json``, in image order (for scripts and tests)."""
    data = read_marker(Path(folder) / "scores.json") or {}
    return [float(e["score"]) for e in data.get("images", [])]

