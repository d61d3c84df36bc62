"""The three stages of one benchmark cell (pair × method): train its LoRA, generate its images, evaluate
them. Each stage is skipped when its marker says it finished with the same settings (:mod:`mudi.data.manifests`)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from mudi.benchmark.config import STAGE_FILE
from mudi.benchmark.context import BenchmarkRunner
from mudi.benchmark.methods import write_nodesc_subjects
from mudi.config import from_dict, to_dict
from mudi.core.init_latents import default_gamma
from mudi.core.methods import METHODS
from mudi.core.prompts import DEFAULT_REGION_PROMPT, fill_placeholders, placeholder_count
from mudi.data.manifests import fingerprint
from mudi.data.subjects import load_subjects
from mudi.data.units import DONE, PARTIAL, STALE, Unit
from mudi.errors import MudiError
from mudi.sampling.sink import ImageJob, Sampler, pending, run_jobs
from mudi.scoring.folder import evaluate_folder
from mudi.training.config import TrainConfig
from mudi.training.loop import train
from mudi.training.outputs import run_weight_outputs

log = logging.getLogger(__name__)

def cell_train_config(runner: BenchmarkRunner, pair: str, pair_dir: Path, method: str) -> tuple[Any, str]:
    """The resolved TrainConfig of (pair, method) and its recipe fingerprint."""
    c, spec = runner.config, METHODS[method]
    values = {**c.train, **spec.train, **c.pair_train.get(pair, {}), **c.method_train.get(method, {})}
    prior = Path(c.priors_dir or Path(c.benchmark_dir) / "priors") / pair
    prior_dir = str(prior) if c.use_priors and prior.is_dir() else None
    recipe = {"pair": pair, "descriptive_class": spec.descriptive_class, "composition": spec.composition,
              "backbone": c.backbone, "model": c.pretrained_model_name_or_path, "prior": prior_dir,
              "train": {k: v for k, v in sorted(values.items()) if k not in ("progress", "device")}}
    if not spec.descriptive_class:
        recipe["generic_classes"] = runner.generic_classes
    fp = fingerprint(recipe)
    name = f"{spec.composition}{'' if spec.descriptive_class else '-nodesc'}-{fp[:8]}"
    out_dir = runner.out / pair / "train" / name
    if spec.descriptive_class:
        subjects = [str(pair_dir)]
    else:
        subjects = [str(p) for p in nodesc_folders(runner, pair, pair_dir)]
    cfg = from_dict(TrainConfig, {"progress": c.progress, **values, "backbone": c.backbone,
                                  "pretrained_model_name_or_path": c.pretrained_model_name_or_path,
                                  "subjects": subjects, "composition": spec.composition,
                                  "class_data_dir": prior_dir, "output_dir": str(out_dir),
                                  "resume_from_checkpoint": "latest"}, prefix="train.")
    return cfg, fp


def nodesc_folders(runner: BenchmarkRunner, pair: str, pair_dir: Path) -> list[Path]:
    target = runner.out / "subjects" / f"{pair}-nodesc"
    if runner.state.is_main_process:
        folders = write_nodesc_subjects(pair_dir, target, runner.generic_classes)
    runner.state.wait_for_everyone()
    if not runner.state.is_main_process:
        folders = write_nodesc_subjects(pair_dir, target, runner.generic_classes)  # already done: just lists
    return folders


def train_cell(runner: BenchmarkRunner, pair: str, pair_dir: Path, method: str, tag: str) -> tuple[Any, str]:
    cfg, fp = cell_train_config(runner, pair, pair_dir, method)
    out_dir = Path(cfg.output_dir)
    unit = Unit(out_dir, fp, marker=out_dir / STAGE_FILE, outputs=run_weight_outputs(cfg), name=f"{tag} train")
    redo = "train" in runner.config.redo and fp not in runner.trained_recipes
    if unit.is_done() and not redo:
        runner.say(f"{tag} train: done already ({out_dir.name}), skipped")
        runner.counts["skipped"] += 1
        return cfg, fp
    main = runner.state.is_main_process
    if redo and main:
        shutil.rmtree(out_dir, ignore_errors=True)  # from scratch, not from its last checkpoint
    runner.state.wait_for_everyone()
    runner.release_generation_backbone()  # free the generation model before loading a training one
    runner.say(f"{tag} train {cfg.composition}, {cfg.max_train_steps} steps → {out_dir}")
    t0 = time.perf_counter()
    unit.start(write=main)
    train(cfg)
    runner.state.wait_for_everyone()
    unit.finish(write=main, seconds=time.perf_counter() - t0, steps=cfg.max_train_steps)
    runner.counts["train"] += 1
    runner.trained_recipes.add(fp)
    return cfg, fp


def generate_cell(runner: BenchmarkRunner, pair: str, method: str, train_cfg: Any, train_fp: str,
                  prompts: list[str], tag: str) -> tuple[str, Path]:
    c, spec = runner.config, METHODS[method]
    cell = runner.out / pair / method
    subjects = load_subjects(train_cfg.subjects)
    phrases = [s.phrase for s in subjects]
    for p in prompts:
        if placeholder_count(p) > len(subjects):
            raise MudiError(f"prompt {p!r} of pair {pair} names [V{placeholder_count(p)}] but the pair has "
                            f"{len(subjects)} subjects")
    filled = [fill_placeholders(p, phrases) for p in prompts]
    seeds = [c.seed + i for i in range(c.num_seeds)]
    gamma = c.gamma if c.gamma is not None else default_gamma(len(subjects))  # recorded: a new default re-generates
    settings = generation_settings(runner, method, train_fp, gamma, prompts=filled, seeds=seeds)
    negative = settings["negative_prompt"]
    unit, done = begin_generation(runner, cell, settings, tag)
    if done:
        return unit.fp, cell

    jobs = [ImageJob(cell / "images" / f"p{k:02d}" / f"p{k:02d}_seed{s}.png", cell / "meta" / f"p{k:02d}_seed{s}.json",
                     f"images/p{k:02d}/p{k:02d}_seed{s}.png", filled[k], s, tuple(subjects),
                     {"pair": pair, "method": method, "prompt_template": prompts[k], "negative_prompt": negative,
                      "lora": train_cfg.output_dir,
                      "num_inference_steps": c.sampler_steps()})
            for k in range(len(prompts)) for s in seeds]
    with runner.state.split_between_processes(jobs) as mine:
        mine = pending(mine)
    runner.say(f"{tag} generate {len(prompts)} prompt(s) × {len(seeds)} seed(s), init {spec.init} "
               f"({len(mine)} image(s) to make here, {runner.state.num_processes} process(es))")
    sampler = Sampler(init=spec.init, gamma=gamma, negative_prompt=negative, num_inference_steps=c.sampler_steps(),
                      guidance_scale=c.guidance_scale, height=c.height, width=c.width, batch_size=c.batch_size,
                      region_control=spec.region_control)
    run_jobs(runner.generation_backbone, mine, [train_cfg.output_dir], sampler, f"{pair}/{method} generate",
             progress=c.progress)
    finish_generation(runner, unit, settings, len(jobs))
    return unit.fp, cell


def generation_settings(runner: BenchmarkRunner, method: str, train_fp: str, gamma: float | None,
                        **images: Any) -> dict:
    """What a cell's images depend on: its LoRA, its ``images`` (prompts and seeds) and the sampler settings
    (``gamma``: the init's γ, or ``None`` for a per-image rule)."""
    c, spec = runner.config, METHODS[method]
    regions = {"region_control": True, "region_prompt": DEFAULT_REGION_PROMPT} if spec.region_control else {}
    return {"train": train_fp, "init": spec.init, **regions, **images,
            "num_inference_steps": c.sampler_steps(), "guidance_scale": c.guidance_scale,
            "gamma": gamma if spec.init != "none" else 0.0, "height": c.height, "width": c.width,
            "negative_prompt": c.negative_prompt if spec.use_negative_prompt else None, "backbone": c.backbone,
            "dtype": c.dtype}


def begin_generation(runner: BenchmarkRunner, cell: Path, settings: dict, tag: str) -> tuple[Unit, bool]:
    """The cell's generation unit, and whether its images are done with these ``settings`` (then it is skipped);
    otherwise the images of other settings are removed and ``cell/generate.json`` says it is running."""
    c = runner.config
    unit = Unit.of(cell, settings, marker=cell / "generate.json", name=f"{tag} generate")
    state = unit.state()
    if state == DONE and "generate" not in c.redo:
        runner.say(f"{tag} generate: done already, skipped")
        runner.counts["skipped"] += 1
        return unit, True
    if runner.state.is_main_process:
        if state in (STALE, DONE) or (state == PARTIAL and "generate" in c.redo):
            log.info("%s: generation settings changed; removing the previous images", cell)
            unit.clear("images", "meta")
        unit.start(settings=settings)
    runner.state.wait_for_everyone()
    return unit, False


def finish_generation(runner: BenchmarkRunner, unit: Unit, settings: dict, num_images: int) -> None:
    """Every process's images are written: the cell's marker says done."""
    runner.state.wait_for_everyone()
    unit.finish(write=runner.state.is_main_process, settings=settings, num_images=num_images)
    runner.counts["generate"] += 1


def evaluation_done(runner: BenchmarkRunner, unit: Unit, tag: str) -> dict | None:
    """The scores in the ``unit``'s marker when this process has no evaluation to do: they are there with its
    fingerprint (skipped), or another process computes them (read once it has). None: evaluate here (the main
    process writes the marker with :func:`finish_evaluation`, then waits for everyone)."""
    if unit.is_done() and "evaluate" not in runner.config.redo:
        runner.say(f"{tag} evaluate: done already, skipped")
        runner.counts["skipped"] += 1
        return unit.read() or {}
    if not runner.state.is_main_process:
        runner.state.wait_for_everyone()
        return unit.read() or {}
    return None


def finish_evaluation(runner: BenchmarkRunner, unit: Unit, **scores: Any) -> dict:
    """The main process's scores are in the marker (``{"status": "done", "fingerprint", **scores}``)."""
    unit.finish(**scores)
    runner.state.wait_for_everyone()
    runner.counts["evaluate"] += 1
    return {"status": "done", "fingerprint": unit.fp, **scores}


def evaluate_cell(runner: BenchmarkRunner, pair: str, pair_dir: Path, method: str, gen_fp: str, cell: Path,
                  prompts: list[str], tag: str) -> dict:
    c = runner.config
    device, _ = runner.placement()
    place = {"device": str(device)}  # scoring has its own dtype (float32 unless evaluate.dtype)
    probe = c.evaluate_config(str(cell / "images"), [str(pair_dir)], "", **place)
    settings = {"generate": gen_fp, "evaluate": {k: v for k, v in to_dict(probe).items()
                                                 if k not in ("images", "output_dir", "device", "batch_size",
                                                              "cache_dir", "report")}}
    unit = Unit.of(cell, settings, marker=cell / "evaluate.json", name=f"{tag} evaluate")
    done = evaluation_done(runner, unit, tag)
    if done is not None:
        return done
    runner.say(f"{tag} evaluate with {probe.detector}; {', '.join(probe.embedders)}; "
               f"{', '.join(probe.text_scorers) or 'no text scorer'}")
    detector, embedders, text_scorers, unavailable = runner.evaluation_models(probe)
    shutil.rmtree(cell / "evaluation", ignore_errors=True)
    per_prompt, totals, counts, failures = [], {}, {}, {}
    for k, template in enumerate(prompts):
        ecfg = c.evaluate_config(str(cell / "images" / f"p{k:02d}"), [str(pair_dir)],
                                 str(cell / "evaluation" / f"p{k:02d}"), prompt=template,
                                 cache_dir=str(runner.out / "cache" / "embeddings"), **place)
        summary = evaluate_folder(ecfg, detector=detector, embedders=embedders, text_scorers=text_scorers)
        n = int(summary["num_images"])
        per_prompt.append({"prompt": template, "num_images": n, "means": summary["means"],
                           "failure_counts": summary["failure_counts"]})
        for m, v in summary["means"].items():
            totals[m] = totals.get(m, 0.0) + v * n
            counts[m] = counts.get(m, 0) + n
        for f, v in summary["failure_counts"].items():
            failures[f] = failures.get(f, 0) + int(v)
    return finish_evaluation(runner, unit, pair=pair, method=method,
                             num_images=sum(p["num_images"] for p in per_prompt),
                             means={m: totals[m] / counts[m] for m in totals}, failure_counts=failures,
                             unavailable=unavailable, requested={"embedders": list(probe.embedders),
                                                                 "text_scorers": list(probe.text_scorers)},
                             per_prompt=per_prompt)
