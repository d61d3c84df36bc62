"""``mudi run``: (describe) → segment → (prior) → train → generate → evaluate → report, skipped when done, resumed
when partial.

Every unit of work (describing, segmenting, the prior set, one LoRA per composition mode, one image folder per method and
prompt, one evaluation per method) has a marker ``stage.json`` (:mod:`mudi.data.manifests`) with the
fingerprint of its settings *and of the outputs it reads*, so changing a setting redoes that unit and every unit
after it, and nothing else. A unit whose marker says ``running`` with the same fingerprint is resumed: training
from its latest checkpoint, generation keeping the images already written.

Run folder::

    run.yaml                 the resolved run config          report.html   the report (rewritten at the end)
    subjects/<name>/         copies of the subjects, segmented in place (the originals are never written)
    describe/                describe_report.json, subjects/<name>/ (with use_describe: the copies, described)
    segment/                 segment_report.json, segment_preview.png
    prior/                   the prior set (with use_prior)
    segmix/                  Seg-Mix compositions of the subjects, as training draws them
    train/<composition>/     a LoRA per composition mode (segmix, cutmix, none), with checkpoints, metrics.jsonl
    generate/<method>/pNN/   images, init/ compositions, grid/
    evaluate/<method>/pNN/   D&C and CLIP scores of those images
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mudi.adapters import registry
from mudi.compositions import SegmixConfig, write_compositions
from mudi.config import save_config, to_dict
from mudi.core.methods import METHODS, training_key
from mudi.data.descriptions import DESCRIBE_HISTORY, DESCRIBE_REPORT, write_describe_report
from mudi.data.manifests import fingerprint
from mudi.data.run_folder import claim_run_folder
from mudi.data.subjects import find_subjects, load_subjects
from mudi.data.units import Unit, files_fingerprint, subjects_fingerprint
from mudi.describing.describe import build_describer, describe_subjects, describer_model
from mudi.devices import describe, resolve_device, resolve_dtype
from mudi.errors import MudiError
from mudi.io import OutputLock, prepare_output_dir
from mudi.pipeline.config import RUN_STAGES, RunConfig, switched_on
from mudi.pipeline.report import write_report
from mudi.pipeline.selection import choose_training_step
from mudi.pipeline.state import RUN_ENTRIES, RUN_FILE, RunState
from mudi.sampling.config import generation_settings
from mudi.sampling.folder import generate_to_folder
from mudi.segmentation.folder import segment_subjects
from mudi.segmentation.prior import make_prior_set
from mudi.training.loop import train
from mudi.training.outputs import run_weight_outputs

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone

log = logging.getLogger(__name__)


def source_fingerprint(paths: list[str]) -> tuple[str, list[Any]]:
    """The fingerprint of the subjects (what their subject.yaml says, the content of every photo and mask) and
    the subjects."""
    subjects = load_subjects(paths)
    return fingerprint(subjects_fingerprint(subjects)), subjects


def copy_subjects(paths: list[str], target: Path) -> None:
    """Copy every subject into ``target/<name>/`` as a native folder (a benchmark pair is converted): exactly the
    files mudi reads (subject.yaml, the photos, their masks), every photo and mask decoded first, so a bad one
    (a link to a text file, say) is named at its source and nothing is written."""
    from mudi.data.convert import convert

    found = [(path, find_subjects(path)) for path in paths]
    for _, subjects in found:
        for s in subjects:
            for i in range(len(s.images)):
                s.load(i)
    target.mkdir(parents=True, exist_ok=True)
    for path, subjects in found:
        if all(s.source == "native" for s in subjects):
            for s in subjects:
                copy_native_subject(s, target / s.name)
        else:
            convert(path, target, overwrite=True)


def copy_native_subject(s: Any, dest: Path) -> None:
    """``s``'s subject.yaml, photos and masks into ``dest`` (file contents: links are followed, never copied), and
    its ``describe_history.jsonl`` when it has one (how ``mudi describe`` tells its own values from yours)."""
    from mudi.data.convert import subject_files
    from mudi.io import write_bytes_atomic

    for rel, src in subject_files(s).items():
        write_bytes_atomic(dest / rel, src.read_bytes())
    history = Path(s.root) / DESCRIBE_HISTORY
    if history.is_file():
        write_bytes_atomic(dest / DESCRIBE_HISTORY, history.read_bytes())


def stage_describe(st: RunState) -> None:
    """Copy the subjects into ``describe/subjects/`` and describe the copies together (``mudi describe``'s rules:
    hand-written values kept); segmentation copies them on. Rejected values are reported, not fatal; a describer
    that accepted nothing at all (an endpoint down, a wrong model) stops the run."""
    c = st.config
    src_fp, subjects = source_fingerprint(c.subjects)
    cfg = c.stage_config("describe", subjects=st.described_paths())
    histories = [Path(s.root) / DESCRIBE_HISTORY for s in subjects if s.root is not None]
    fp = fingerprint({"sources": src_fp, "histories": files_fingerprint(h for h in histories if h.is_file()),
                      "describe": {k: v for k, v in to_dict(cfg).items() if k not in ("subjects", "device")}})
    st.fps["describe"] = fp
    unit = Unit(st.out / "describe", fp, name="describe",
                outputs=(DESCRIBE_REPORT, *(f"subjects/{n}/subject.yaml" for n in st.names)))
    if not st.begin("describe", unit):
        return
    t0 = time.perf_counter()
    if st.described_dir.exists():
        shutil.rmtree(st.described_dir)
    copy_subjects(c.subjects, st.described_dir)
    st.say(f"  describing {len(subjects)} subjects with {cfg.provider}")
    try:
        result = describe_subjects(cfg, st.models.get("describer", lambda: build_describer(cfg)))
    finally:
        st.models.release("describer")
    write_describe_report(unit.folder, {"provider": cfg.provider, "model": describer_model(cfg), **result.to_dict()})
    counts = result.counts()
    st.say("  " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    answered = [i for i in result.items if i.status in ("written", "unchanged")]  # the describer's, accepted
    if result.rejected and not answered:
        why = result.errors[-1] if result.errors else result.rejected[0].note
        raise MudiError(f"describe: the {cfg.provider} describer gave nothing usable ({why}); fix the describe "
                        "block (describe/describe_report.json has every reason) and rerun")
    if result.rejected:
        st.say(f"  {len(result.rejected)} value(s) rejected (the report lists why): those keep what subject.yaml "
               "says; `--from describe` asks again")
    st.end(unit, t0, counts=counts)


def stage_segment(st: RunState) -> None:
    c = st.config
    sources = st.described_paths() if c.use_describe else c.subjects  # described: the describe stage's copies
    src_fp, subjects = source_fingerprint(sources)
    if len(subjects) < 2:
        raise MudiError(f"a run needs at least two subjects; {', '.join(s.name for s in subjects)} given")
    seg = c.stage_config("segment", subjects=["check"])
    fp = fingerprint({"sources": src_fp, "segment": {k: v for k, v in to_dict(seg).items()
                                                     if k not in ("subjects", "device", "batch_size")},
                      **({"describe": st.fps["describe"]} if c.use_describe else {})})
    st.fps["segment"] = fp
    unit = Unit(st.out / "segment", fp, name="segment")
    folder = unit.folder
    if not st.begin("segment", unit):
        return
    t0 = time.perf_counter()
    if st.subjects_dir.exists():
        shutil.rmtree(st.subjects_dir)
    copy_subjects(sources, st.subjects_dir)
    st.say(f"  segmenting {len(subjects)} subjects with {seg.backend}")
    result = segment_subjects(c.stage_config("segment", subjects=st.subject_paths()))
    for p in result.report_paths + result.preview_paths:  # one report of the whole run, beside the subjects
        shutil.copy2(p, folder / f"{Path(p).parent.parent.name}-{Path(p).name}")
    if result.failures:
        raise MudiError(f"segmentation failed for {len(result.failures)} image(s) "
                        f"({result.failures[0].image}: {result.failures[0].note}); fix or remove them, or give "
                        f"a mask by hand in the subject's masks/ folder, then rerun")
    st.end(unit, t0, counts=result.counts())


def stage_prior(st: RunState) -> None:
    c = st.config
    cfg = c.stage_config("prior", output_dir=str(st.out / "prior"), subjects=st.subject_paths(), backbone=c.backbone,
                         pretrained_model_name_or_path=c.pretrained_model_name_or_path)
    fp = fingerprint({"classes": [s.class_name for s in load_subjects(st.subject_paths())],
                      "prior": {k: v for k, v in to_dict(cfg).items() if k not in ("output_dir", "subjects", "device")}})
    st.fps["prior"] = fp
    unit = Unit(st.out / "prior", fp, name="prior")
    if not st.begin("prior", unit):
        return
    t0 = time.perf_counter()
    make_prior_set(cfg)
    st.end(unit, t0)


def training_runs(config: RunConfig) -> dict[str, str]:
    """``{training key: a method it serves}`` in the order of methods: one LoRA per composition mode (two methods
    with one mode share it), one per method with its own recipe (``ti``, ``custom-diffusion``)."""
    runs: dict[str, str] = {}
    for m in config.methods:
        runs.setdefault(training_key(m), m)
    return runs


def stage_train(st: RunState) -> None:
    c = st.config
    folder = st.out / "segmix"  # the report's Seg-Mix samples: what training draws for this pair
    fp = fingerprint({"segment": st.fps["segment"], "n": c.segmix_preview, "seed": c.seed,
                      "resolution": c.train.get("resolution"),
                      "segmix": c.train.get("segmix", {}), "relative_sizes": c.train.get("relative_sizes")})
    unit = Unit(folder, fp, name="segmix preview")
    if c.segmix_preview and st.begin("train", unit):
        t0 = time.perf_counter()
        tcfg = c.stage_config("train", subjects=st.subject_paths(), output_dir=str(folder))
        write_compositions(SegmixConfig(subjects=st.subject_paths(), output_dir=str(folder),
                                        num_images=c.segmix_preview, resolution=tcfg.resolution or 512,
                                        seed=c.seed, relative_sizes=tcfg.relative_sizes or None, segmix=tcfg.segmix))
        st.end(unit, t0)
    for comp, method in training_runs(c).items():  # comp: the training key (a composition mode, or the method)
        out_dir = st.out / "train" / comp
        spec = METHODS[method]
        cfg = c.stage_config("train", subjects=st.subject_paths(), output_dir=str(out_dir), backbone=c.backbone,
                             pretrained_model_name_or_path=c.pretrained_model_name_or_path, **spec.train,
                             composition=spec.composition,
                             class_data_dir=str(st.out / "prior") if c.use_prior else None,
                             resume_from_checkpoint="latest")
        recipe = {k: v for k, v in to_dict(cfg).items() if k not in ("progress", "device", "output_dir", "subjects",
                                                                    "class_data_dir", "resume_from_checkpoint")}
        fp = fingerprint({"segment": st.fps["segment"], "prior": st.fps["prior"], "train": recipe,
                          "base_lora": files_fingerprint(cfg.base_lora)})
        st.fps[f"train/{comp}"] = fp
        st.train_dirs[comp] = out_dir
        unit = Unit(out_dir, fp, name=f"train {comp}", outputs=run_weight_outputs(cfg))
        if st.begin("train", unit):
            t0 = time.perf_counter()
            st.say(f"  training the {comp} {'LoRA' if cfg.train_lora else 'embeddings'} on {cfg.backbone}, {cfg.max_train_steps} steps → {out_dir}")
            if c.train_launch:
                launch_training(c.train_launch, cfg, out_dir)
            else:
                train(cfg)
            st.end(unit, t0, steps=cfg.max_train_steps)
        if c.step_selection.use:
            choose_training_step(st, comp, out_dir, cfg.max_train_steps, lambda: generation_backbone(st))


def launch_training(launcher: str, cfg: Any, out_dir: Path) -> None:
    """``<launcher> -m mudi.cli train --config REQUEST`` (e.g. under ``accelerate launch`` on several GPUs)."""
    request = out_dir / "run_train_request.yaml"
    save_config(cfg, request)
    argv = [*shlex.split(launcher), "-m", "mudi.cli", "train", "--config", str(request)]
    try:
        code = subprocess.run(argv, check=False).returncode
    except FileNotFoundError:
        raise MudiError(f"train_launch {launcher!r}: {argv[0]} not found; give a launcher on PATH, e.g. "
                        "'accelerate launch --num_processes 2' or the path of a python") from None
    if code != 0:
        raise MudiError(f"the training process ({' '.join(argv)}) exited with code {code}; its output is above. "
                        "Rerun `mudi run` to resume from its latest checkpoint")


def generation_backbone(st: RunState) -> Backbone:
    """One generation model for every method (each call applies and removes its own LoRA)."""
    c = st.config
    device = resolve_device(c.device)
    dtype = resolve_dtype(c.dtype, device)
    log.info("mudi run, generation: %s", describe(device, dtype))
    return registry.load_backbone(c.backbone, c.pretrained_model_name_or_path, device, dtype)


def stage_generate(st: RunState) -> None:
    c = st.config
    try:
        for method in c.methods:
            lora = st.train_dirs[training_key(method)]
            for k, prompt in enumerate(c.prompts):
                folder = st.out / "generate" / method / f"p{k:02d}"
                cfg = c.stage_config("generate", **c.method_generation(method), backbone=c.backbone,
                                     pretrained_model_name_or_path=c.pretrained_model_name_or_path,
                                     lora=[str(lora)], subjects=st.subject_paths(), prompt=prompt,
                                     output_dir=str(folder), num_images=c.num_images, seed=c.seed,
                                     skip_existing=True)
                fp = fingerprint({"train": st.fps[f"train/{training_key(method)}"],
                                  "generate": generation_settings(cfg),
                                  "layout": files_fingerprint([cfg.layout]) if cfg.layout.endswith(".json") else []})
                st.fps[f"generate/{method}/{k}"] = fp
                unit = Unit(folder, fp, name=f"generate {method} p{k:02d}")
                if not st.begin("generate", unit):
                    continue
                t0 = time.perf_counter()
                generate_to_folder(cfg, backbone=st.models.get("generation", lambda: generation_backbone(st)))
                st.end(unit, t0)
    finally:
        st.models.release("generation")


def stage_evaluate(st: RunState) -> None:
    c = st.config
    for method in c.methods:
        for k, prompt in enumerate(c.prompts):
            images = st.out / "generate" / method / f"p{k:02d}"
            folder = st.out / "evaluate" / method / f"p{k:02d}"
            cfg = c.stage_config("evaluate", images=str(images), subjects=st.subject_paths(), output_dir=str(folder),
                                 prompt=prompt)
            fp = fingerprint({"generate": st.fps[f"generate/{method}/{k}"], "scorers": c.scorers,
                              "evaluate": {k2: v for k2, v in to_dict(cfg).items()
                                           if k2 not in ("images", "output_dir", "subjects", "device", "batch_size",
                                                         "cache_dir")}})
            st.fps[f"evaluate/{method}/{k}"] = fp
            unit = Unit(folder, fp, name=f"evaluate {method} p{k:02d}")
            if not st.begin("evaluate", unit):
                continue
            t0 = time.perf_counter()
            for name in registry.names("scorer"):  # in the registry's order: D&C first, then the checker
                if name in c.scorers:
                    registry.resolve("scorer", name)(st, cfg, images, folder, f"{method} p{k:02d}")
            st.end(unit, t0)


#: what each stage of :data:`mudi.pipeline.config.RUN_STAGES` does (the report: :func:`write_report`)
WORK: dict[str, Callable[[RunState], None]] = {"describe": stage_describe, "segment": stage_segment,
                                              "prior": stage_prior, "train": stage_train,
                                              "generate": stage_generate, "evaluate": stage_evaluate}


def check_scorers(config: RunConfig, subjects: list[Any]) -> None:
    """A scorer that can tell before the run whether it can judge these subjects says so now (its optional
    ``check_subjects`` hook), not after training."""
    from mudi.adapters import registry

    for name in config.scorers:
        check = getattr(registry.resolve("scorer", name), "check_subjects", None)
        if check is not None:
            check(subjects)


def check_layout(config: RunConfig, subjects: list[Any]) -> None:
    """A layout file of the generate block is read and checked now, not after training."""
    from mudi.data.layouts import load_layout

    layout = config.generate.get("layout")
    if isinstance(layout, str) and layout.endswith(".json"):
        load_layout(layout, [[s.identifier, s.name, s.phrase] for s in subjects])


def run_inputs(config: RunConfig) -> list[str]:
    """Every file or folder the run reads (subject folders, local model folders, the stage blocks' paths)."""
    found = [*config.subjects, config.pretrained_model_name_or_path or ""]
    for stage in RUN_STAGES:
        block = getattr(config, stage.name) if stage.config is not None else {}
        for k in stage.path_keys:
            v = block.get(k)
            found += [str(x) for x in v] if isinstance(v, list) else [str(v)] if v else []
    return found


def run_pipeline(config: RunConfig, say: Callable[[str], None] = print) -> Path:
    """Run every stage that is not done; return the report's path."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise MudiError("mudi run coordinates the stages in one process; for several GPUs, run it plainly and set "
                        "train_launch='accelerate launch --multi_gpu --num_processes N' (docs/run.md)")
    _, subjects = source_fingerprint(config.subjects)  # every subject readable before anything is written
    check_layout(config, subjects)
    check_scorers(config, subjects)
    claim_run_folder(Path(config.output_dir), RUN_ENTRIES, run_inputs(config), config.force, write=False)
    out = prepare_output_dir(config.output_dir, "run folder")
    with OutputLock(out, "run"):
        claim_run_folder(out, RUN_ENTRIES, run_inputs(config), force=config.force)
        save_config(config, out / RUN_FILE)
        st = RunState(config, out, say, names=[s.name for s in subjects])
        steps = [(stage.name, WORK[stage.name]) for stage in switched_on(config)]
        st.fps["prior"] = st.fps["describe"] = ""
        for n, (name, fn) in enumerate(steps, 1):
            say(f"[{n}/{len(steps) + 1}] {name}")
            fn(st)
        say(f"[{len(steps) + 1}/{len(steps) + 1}] report")
        return write_report(st)
