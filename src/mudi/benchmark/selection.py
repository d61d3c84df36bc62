"""The benchmark's step selection (``step_selection:``, off by default: the paper fixed the step): per pair and
method, every snapshot of the cell's LoRA is rendered on the validation prompts and seeds (apart from the
evaluation seeds) and judged by the chosen scorer (:mod:`mudi.scoring.step_selection`); the cell then generates
with the best. Folder: ``<pair>/<method>/step-selection/``; ``per_pair.md`` shows the curves."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mudi.adapters import registry
from mudi.adapters.pool import ModelPool
from mudi.benchmark.context import BenchmarkRunner
from mudi.core.init_latents import default_gamma
from mudi.core.methods import METHODS
from mudi.core.prompts import fill_placeholders
from mudi.data.manifests import fingerprint
from mudi.data.subjects import load_subjects
from mudi.errors import MudiError
from mudi.sampling.sink import ImageJob, Sampler, pending, run_jobs
from mudi.scoring.step_selection import SELECTION_DIR, ScoringContext, select_step


def select_cell_step(runner: BenchmarkRunner, pair: str, pair_dir: Path, method: str, train_cfg: Any,
                     train_fp: str, tag: str) -> tuple[Any, str, dict]:
    """``(train_cfg, train_fp, record)`` of the cell's chosen snapshot: ``train_cfg.output_dir`` is the chosen
    LoRA folder and ``train_fp`` also names the choice, so the cell's images follow it."""
    c, spec = runner.config, METHODS[method]
    if runner.state.num_processes > 1:
        raise MudiError("step_selection runs in one process: run the benchmark without accelerate launch, or "
                        "turn step_selection off")
    subjects = load_subjects(train_cfg.subjects)
    gamma = c.gamma if c.gamma is not None else default_gamma(len(subjects))
    sampler = Sampler(init=spec.init, gamma=gamma, negative_prompt=c.negative_prompt if spec.use_negative_prompt
                      else "", num_inference_steps=c.sampler_steps(), guidance_scale=c.guidance_scale,
                      height=c.height, width=c.width, batch_size=c.batch_size,
                      region_control=spec.region_control)

    def render(lora: Path, prompt: str, seeds: list[int], folder: Path) -> None:
        text = fill_placeholders(prompt, [s.phrase for s in subjects])
        jobs = [ImageJob(folder / f"{s:04d}_seed{s}.png", folder / f"{s:04d}_seed{s}.json", f"{s:04d}_seed{s}.png",
                         text, s, tuple(subjects), {"pair": pair, "method": method, "lora": str(lora)})
                for s in seeds]
        run_jobs(runner.generation_backbone, pending(jobs), [str(lora)], sampler, f"{tag} step selection",
                 progress=False)

    device, _ = runner.placement()
    scoring = ScoringContext(models=ModelPool(), names=[s.name for s in subjects], say=runner.say)

    def score(images: Path, folder: Path, label: str) -> float | None:
        k = int(images.name[1:])
        cfg = c.evaluate_config(str(images), [str(pair_dir)], str(folder), prompt=c.step_selection.prompts[k],
                                cache_dir=str(runner.out / "cache" / "embeddings"), device=str(device))
        if c.step_selection.scorer == "dnc":  # the benchmark's models, built once for every cell
            scoring.models.put("evaluation", runner.evaluation_models(cfg)[:3])
        return registry.resolve("scorer", c.step_selection.scorer)(scoring, cfg, images, folder, f"{tag} {label}")

    settings = {"sampler": dataclasses.asdict(sampler), "evaluate": c.evaluate, "backbone": c.backbone}
    record = select_step(train_cfg.output_dir, runner.out / pair / method / SELECTION_DIR, c.step_selection,
                         train_cfg.max_train_steps, evaluation_seeds=[c.seed + i for i in range(c.num_seeds)],
                         render=render, score=score, settings=settings, say=runner.say)
    chosen = dataclasses.replace(train_cfg, output_dir=record["best_lora"])
    fp = fingerprint({"train": train_fp, "selection": record["fingerprint"], "best_step": record["best_step"]})
    return chosen, fp, record
