"""The "more than two subjects" study of ``mudi benchmark`` (paper Sec. 5.3, Appendix B.9, Fig. 29): the success
rate of each method by the number of subjects ``N`` composed in one image.

One LoRA per method is trained on the five-subject set (``pairs/count_ablation``: Seg-Mix composes pairs, as
the paper; ``pair_train`` / ``method_train`` change it) by the benchmark's own training cell (so it is
shared and resumable like the pair comparison's). For each ``N`` the prompt "[V1], [V2], …, [VN] are in the
jungle." is filled with ordered ``N``-subsets of the subjects drawn uniformly over all combinations and
orders (every ordered subset once per pass, in a seeded shuffle), prefixed "N objects: "; the mean-shifted
init composes exactly the image's subjects, with γ 2 for ``N ≤ 3`` and 3 above. Each image is scored by
Detect-and-Compare against the references of its own subjects.

**Success** (:func:`is_success`): exactly ``N`` detections, no ``mixed`` or ``duplicate`` flag, and a D&C of
at least ``study.min_dnc`` (0.7). The paper filtered by D&C and then judged by humans; this rule is an
automatic proxy for that judgement, not the paper's protocol (docs/benchmark.md says how the threshold was
chosen).

Layout: ``OUTPUT_DIR/study-num_subjects/<method>/n<N>/{images,meta}/iNNNN_seedS.*``, ``generate.json`` and
``scores.json`` (markers; the scores hold every image's detections, D&C and flags), the LoRAs under
``OUTPUT_DIR/<pair>/train/``, the table in ``OUTPUT_DIR/results/num_subjects.{md,csv,json,png}``.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mudi.benchmark.cells import (
    begin_generation,
    evaluation_done,
    finish_evaluation,
    finish_generation,
    generation_settings,
    train_cell,
)
from mudi.benchmark.context import BenchmarkRunner
from mudi.benchmark.tables import write_study_tables
from mudi.config import to_dict
from mudi.core.init_latents import appendix_b9_gamma
from mudi.core.methods import METHODS
from mudi.data.images import read_image
from mudi.data.manifests import read_marker
from mudi.data.subjects import load_subjects
from mudi.data.units import Unit
from mudi.errors import MudiError
from mudi.sampling.images import resolve_prompt
from mudi.sampling.sink import ImageJob, Sampler, pending, run_jobs
from mudi.scoring.evaluator import DncEvaluator

if TYPE_CHECKING:
    from mudi.benchmark.config import BenchmarkConfig

FAILURE_FLAGS = ("count", "mixed", "duplicate")


def subject_orders(num_total: int, n: int, num_images: int, seed: int) -> list[tuple[int, ...]]:
    """``num_images`` ordered ``n``-subsets of ``range(num_total)``: every ordered subset once per pass (all
    combinations and permutations, uniformly), each pass in a seeded random order."""
    if not 1 <= n <= num_total:
        raise MudiError(f"cannot compose {n} of {num_total} subjects; study.num_subjects must be within 1..{num_total}")
    every = list(itertools.permutations(range(num_total), n))
    rng = np.random.default_rng([seed, n])
    out: list[tuple[int, ...]] = []
    while len(out) < num_images:
        out.extend(every[i] for i in rng.permutation(len(every)))
    return out[:num_images]


def study_template(prompt: str, n: int) -> str:
    """``"{subjects} are in the jungle."`` → ``"[V1], [V2], [V3] are in the jungle."`` for ``n = 3``."""
    return prompt.replace("{subjects}", ", ".join(f"[V{k + 1}]" for k in range(n)))


def is_success(entry: dict, n: int, metric: str, min_dnc: float) -> bool:
    """Every subject present (exactly ``n`` detections), none mixed or duplicated (``mudi evaluate``'s flags),
    and a D&C of at least ``min_dnc``."""
    score = entry.get("dnc", {}).get(metric)
    flags = set(entry.get("failures", {}).get(metric, []))
    return entry.get("num_detections") == n and not flags & set(FAILURE_FLAGS) and score is not None \
        and score >= min_dnc


def pick_metric(requested: str, results: dict[tuple[str, int], dict]) -> str | None:
    """The D&C metric of the success rule: ``requested``, else ``dnc_ds`` when computed, else ``dnc_dino``,
    else the first computed one (``None``: no D&C metric could be computed)."""
    computed = list(dict.fromkeys(m for r in results.values() for m in r.get("metrics", [])))
    if requested:
        if computed and requested not in computed:
            raise MudiError(f"study.metric {requested!r} was not computed; the evaluation computed {computed}")
        return requested
    return next((m for m in ("dnc_ds", "dnc_dino") if m in computed), computed[0] if computed else None)


def build_study_table(config: BenchmarkConfig, results: dict[tuple[str, int], dict]) -> dict[str, Any]:
    """Per method and N: images, successes, success rate and why the others failed."""
    s = config.study
    metric = pick_metric(s.metric, results)
    rows = []
    for method in s.methods:
        for n in s.num_subjects:
            entries = results.get((method, n), {}).get("images", [])
            flags = [set(e.get("failures", {}).get(metric, [])) for e in entries] if metric else []
            scores = [e["dnc"][metric] for e in entries if metric and metric in e.get("dnc", {})]
            ok = sum(is_success(e, n, metric, s.min_dnc) for e in entries) if metric else None
            count = sum(e.get("num_detections") != n for e in entries)
            rows.append({"method": method, "label": METHODS[method].label, "num_subjects": n,
                         "num_images": len(entries), "successes": ok,
                         "success_rate": (ok / len(entries)) if entries and ok is not None else None,
                         "count_errors": count, "mixed": sum("mixed" in f for f in flags),
                         "duplicate": sum("duplicate" in f for f in flags),
                         "mean_dnc": float(np.mean(scores)) if scores else None})
    unavailable = {k: v for r in results.values() for k, v in r.get("unavailable", {}).items()}
    return {"study": "num_subjects", "pair": s.pair, "metric": metric, "min_dnc": s.min_dnc,
            "rule": f"exactly N detections, no {'/'.join(FAILURE_FLAGS[1:])} flag, {metric} >= {s.min_dnc}",
            "methods": list(s.methods), "num_subjects": list(s.num_subjects), "rows": rows,
            "unavailable": unavailable}


def run_study(runner: BenchmarkRunner, config: BenchmarkConfig, out: Path) -> dict[str, Any]:
    s = config.study
    pair_dir = Path(config.benchmark_dir) / "pairs" / s.pair
    if not pair_dir.is_dir():
        raise MudiError(f"study.pair {s.pair!r}: no folder {pair_dir}; the five-subject set of the benchmark is "
                        "pairs/count_ablation")
    references = load_subjects([str(pair_dir)])
    too_many = [n for n in s.num_subjects if n > len(references)]
    if too_many:
        raise MudiError(f"study.num_subjects {too_many}: {s.pair} has only {len(references)} subjects")
    runner.say(f"study num_subjects on {s.pair} ({len(references)} subjects): methods {', '.join(s.methods)}, "
               f"N = {', '.join(map(str, s.num_subjects))}, {s.num_images} image(s) each → {out}")
    results: dict[tuple[str, int], dict] = {}
    for i, method in enumerate(s.methods, 1):
        tag = f"[{i}/{len(s.methods)}] {s.pair} · {method}:"
        train_cfg, train_fp = train_cell(runner, s.pair, pair_dir, method, tag)
        subjects = load_subjects(train_cfg.subjects)
        for n in s.num_subjects:
            gen_fp, cell = _generate(runner, method, train_cfg, train_fp, subjects, n, f"{tag} N={n}")
            results[(method, n)] = _evaluate(runner, n, cell, gen_fp, references, pair_dir, f"{tag} N={n}")
    tables = build_study_table(config, results)
    if runner.state.is_main_process:
        path = write_study_tables(config, tables)
        runner.say(f"trained {runner.counts['train']}, generated {runner.counts['generate']}, evaluated "
                   f"{runner.counts['evaluate']} stage(s), skipped {runner.counts['skipped']}; table in "
                   f"{path / 'num_subjects.md'}")
        print((path / "num_subjects.md").read_text(encoding="utf-8"), flush=True)
    tables["counts"] = dict(runner.counts)
    return tables


def _generate(runner: BenchmarkRunner, method: str, train_cfg: Any, train_fp: str, subjects: list, n: int,
              tag: str) -> tuple[str, Path]:
    c, s, spec = runner.config, runner.config.study, METHODS[method]
    cell = runner.out / "study-num_subjects" / method / f"n{n}"
    template = study_template(s.prompt, n)
    jobs = []
    for i, order in enumerate(subject_orders(len(subjects), n, s.num_images, c.seed)):
        prompt = resolve_prompt(template, [subjects[j].phrase for j in order], s.use_count_prefix, s.count_noun)
        jobs.append((i, c.seed + i, order, prompt))
    settings = generation_settings(runner, method, train_fp, c.gamma, jobs=[(sd, list(o), p) for _, sd, o, p in jobs])
    negative = settings["negative_prompt"]
    unit, done = begin_generation(runner, cell, settings, tag)
    if done:
        return unit.fp, cell
    images = [ImageJob(cell / "images" / f"i{i:04d}_seed{sd}.png", cell / "meta" / f"i{i:04d}_seed{sd}.json",
                       f"images/i{i:04d}_seed{sd}.png", prompt, sd, tuple(subjects[k] for k in order),
                       {"method": method, "num_subjects": n, "subjects": [subjects[k].name for k in order],
                        "subject_indices": list(order), "lora": train_cfg.output_dir})
              for i, sd, order, prompt in jobs]
    with runner.state.split_between_processes(images) as mine:
        mine = pending(mine)
    runner.say(f"{tag} generate {len(jobs)} image(s), init {spec.init} ({len(mine)} to make here)")
    # the mean-shifted init composes the image's own subjects: one pipeline call per subject order
    gamma = c.gamma if c.gamma is not None else appendix_b9_gamma(n)
    sampler = Sampler(init=spec.init, gamma=gamma, negative_prompt=negative, num_inference_steps=c.sampler_steps(),
                      guidance_scale=c.guidance_scale, height=c.height, width=c.width, batch_size=c.batch_size,
                      region_control=spec.region_control)
    run_jobs(runner.generation_backbone, mine, [train_cfg.output_dir], sampler, f"{method} N={n}", progress=c.progress)
    finish_generation(runner, unit, settings, len(jobs))
    return unit.fp, cell


def _evaluate(runner: BenchmarkRunner, n: int, cell: Path, gen_fp: str, references: list, pair_dir: Path,
              tag: str) -> dict:
    c = runner.config
    device, _ = runner.placement()
    probe = c.evaluate_config("study", [str(pair_dir)], "", device=str(device))
    probe = dataclasses.replace(probe, text_scorers=[])  # the study needs detections and D&C only
    settings = {"generate": gen_fp, "evaluate": {k: v for k, v in to_dict(probe).items()
                                                 if k not in ("images", "output_dir", "device", "batch_size",
                                                              "cache_dir", "report", "text_scorers")}}
    unit = Unit.of(cell, settings, marker=cell / "scores.json", name=f"{tag} evaluate")
    done = evaluation_done(runner, unit, tag)
    if done is not None:
        return done
    detector, embedders, _, unavailable = runner.evaluation_models(probe)
    runner.say(f"{tag} evaluate with {probe.detector}; {', '.join(embedders) or 'no embedder'}")
    metas = [read_marker(p) or {} for p in sorted((cell / "meta").glob("*.json"))]
    by_set: dict[tuple, list[dict]] = {}
    for m in metas:  # D&C against the references of the image's own subjects (in the set's order)
        by_set.setdefault(tuple(sorted(m["subject_indices"])), []).append(m)
    entries: list[dict] = []
    for subset, group in sorted(by_set.items()):
        if not embedders:
            entries += [{**_entry(m), "dnc": {}, "failures": {}} for m in group]
            continue
        ev = DncEvaluator([references[k] for k in subset], detector, embedders, threshold=probe.threshold,
                          norm=probe.norm, matching=probe.matching, nms_iou=probe.nms_iou,
                          mixed_margin=probe.mixed_margin, reference_crop=probe.reference_crop,
                          reference_padding=probe.reference_padding, cache_dir=runner.out / "cache" / "embeddings",
                          batch_size=probe.batch_size)
        scored = ev.score_images([read_image(cell / m["image"])[0] for m in group])
        for m, r in zip(group, scored):
            entries.append({**_entry(m), "num_detections": len(r.detections),
                            "dnc": {k: float(v["score"]) for k, v in r.dnc.items()},
                            "failures": {k: list(v["failures"]) for k, v in r.dnc.items()}})
    entries.sort(key=lambda e: e["image"])
    return finish_evaluation(runner, unit, num_subjects=n, num_images=len(entries), metrics=list(embedders),
                             unavailable=unavailable, images=entries)


def _entry(meta: dict) -> dict:
    return {k: meta[k] for k in ("image", "prompt", "subjects", "seed")}
