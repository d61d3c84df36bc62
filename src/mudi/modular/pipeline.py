"""``mudi modular`` as a library call: single-subject LoRAs → one multi-subject LoRA without identity mixing
(paper Sec. 5.4, Appendix C.2, Fig. 35).

Stages, each in its own folder of ``OUTPUT_DIR`` with a marker (``stage.json``: status and the fingerprint of
every setting it depends on, upstream stages included); a finished stage is skipped on a re-run, a changed
one is redone with everything after it:

1. ``references/<subject>/`` — single-subject images generated with each LoRA alone, segmented: the subject's
   reference photos (:mod:`mudi.modular.references`);
2. ``merged/`` — the LoRAs merged into one (``mudi merge``, gradient fusion by default);
3. ``finetune/`` — a new LoRA trained on top of the merged model (fused into the base weights) with Seg-Mix on
   the reference photos, composition probability 1 and the KL regularizer towards the merged model
   (``mudi train``; a killed run resumes from its last checkpoint);
4. ``final/`` — merged + fine-tuned LoRA concatenated into one LoRA, exactly (``mudi merge --method concat``),
   whose ``mudi_subjects.json`` lists the subjects with their reference folders, so ``mudi generate --lora
   OUTPUT_DIR/final`` builds the mean-shifted init by itself.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mudi.adapters import registry
from mudi.adapters.pool import ModelPool
from mudi.config import from_dict, save_config, to_dict
from mudi.data.manifests import (
    LORA_FILE,
    read_manifest,
    write_subjects_manifest,
)
from mudi.data.subjects import load_subjects
from mudi.data.units import DONE, PARTIAL, Unit
from mudi.devices import describe, dtype_name, resolve_device, resolve_dtype
from mudi.errors import MudiError
from mudi.io import OutputLock, prepare_output_dir, write_json_atomic, write_text_atomic
from mudi.merging.config import MergeConfig
from mudi.merging.folder import merge_to_folder
from mudi.merging.fusion import subject_prompts
from mudi.modular.config import CONFIG_FILE, STAGE_FILE, SUMMARY_FILE, ModularConfig
from mudi.modular.references import SubjectSpec, lora_signature, make_references, subject_specs
from mudi.sampling.loras import check_lora_family
from mudi.segmentation.detect import load_models
from mudi.training.config import TrainConfig
from mudi.training.loop import train
from mudi.training.runs import run_files

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone

log = logging.getLogger(__name__)
#: TrainConfig fields that do not change what the fine-tuning learns (left out of its fingerprint).
_RUN_ONLY = ("output_dir", "resume_from_checkpoint", "overwrite", "progress", "device", "report_to",
             "checkpointing_steps", "checkpoints_total_limit")


@dataclass
class ModularResult:
    """Where the chain wrote its LoRA, which stages ran (``ran``) or were skipped (``skipped``)."""

    output_dir: Path
    lora_dir: Path
    subjects: list[str]
    stages: dict[str, str] = field(default_factory=dict)


class _Models:
    """The generation backbone and the segmentation models, loaded when first needed and released before
    training (which loads its own model in its own precision)."""

    def __init__(self, config: ModularConfig, backbone_name: str) -> None:
        self.config, self.name = config, backbone_name
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.pool = ModelPool()

    def backbone(self) -> Backbone:
        return self.pool.get("generation", self._load_backbone)

    def _load_backbone(self) -> Backbone:
        log.info("mudi modular: %s on %s", self.name, describe(self.device, self.dtype))
        return registry.load_backbone(self.name, self.config.pretrained_model_name_or_path, self.device, self.dtype)

    def segmentation(self) -> tuple[Any, Any]:
        seg = self.config.segment
        return self.pool.get("segmentation", lambda: load_models(
            self.config.segmentation_backend, seg.get("detector_model"), seg.get("segmenter_model"), self.device,
            self.dtype, int(seg.get("batch_size", 4))))

    def release(self) -> None:
        self.pool.release()


def run_modular(config: ModularConfig) -> ModularResult:
    """Run (or finish) the chain; everything a person could get wrong is checked before a model loads."""
    if len(config.lora) < 2:
        raise MudiError(f"mudi modular combines single-subject LoRAs: give at least two --lora (got {len(config.lora)})")
    specs = subject_specs(config)
    if config.relative_sizes and len(config.relative_sizes) != len(specs):
        raise MudiError(f"{len(config.relative_sizes)} --relative_sizes for {len(specs)} subjects "
                        f"({', '.join(s.name for s in specs)}): give one per subject, in LoRA order")
    backbone_name = _backbone_name(config)
    check_lora_family(config.lora, backbone_name)
    out = prepare_output_dir(config.output_dir, "modular output folder")
    with OutputLock(out, "modular run"):
        save_config(config, out / CONFIG_FILE)
        return _run(config, specs, backbone_name, out)


def _backbone_name(config: ModularConfig) -> str:
    if config.backbone:
        return config.backbone
    recorded = []
    for p in config.lora:
        folder = Path(p) if Path(p).is_dir() else Path(p).parent
        b = (read_manifest(folder) or {}).get("backbone")
        if b and b not in recorded:
            recorded.append(b)
    if len(recorded) == 1:
        return recorded[0]
    raise MudiError(f"which model are these LoRAs for? pass --backbone ({', '.join(registry.names('backbone'))})"
                    + (f"; their mudi_subjects.json record {recorded}" if recorded else ""))


def _run(config: ModularConfig, specs: list[SubjectSpec], backbone_name: str, out: Path) -> ModularResult:
    models = _Models(config, backbone_name)
    stages: dict[str, str] = {}
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    ref_dirs, ref_fps = [], []
    for j, spec in enumerate(specs):
        folder = out / "references" / spec.name
        fp, ran = make_references(config, spec, backbone_name, folder, config.seed + j * config.num_reference_images,
                                  models.backbone, models.segmentation)
        ref_dirs.append(folder)
        ref_fps.append(fp)
        stages[f"references/{spec.name}"] = "ran" if ran else "skipped"
        print(f"mudi modular: references of {spec.name} ({spec.phrase}): {'done' if ran else 'done already, skipped'}")
    seconds["references"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    merged, merged_fp, ran = _merge_stage(config, specs, backbone_name, out / "merged", models)
    stages["merged"] = "ran" if ran else "skipped"
    seconds["merged"] = time.perf_counter() - t0
    print(f"mudi modular: merged ({config.merge_method}): {'done' if ran else 'done already, skipped'}")

    t0 = time.perf_counter()
    finetune, finetune_fp, ran = _finetune_stage(config, backbone_name, ref_dirs, ref_fps, merged, merged_fp,
                                                 out / "finetune", models)
    stages["finetune"] = "ran" if ran else "skipped"
    seconds["finetune"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    final, ran = _final_stage(config, backbone_name, merged, merged_fp, finetune, finetune_fp, ref_dirs,
                              out / "final", models)
    stages["final"] = "ran" if ran else "skipped"
    seconds["final"] = time.perf_counter() - t0
    models.release()
    write_json_atomic(out / SUMMARY_FILE, {
        "backbone": backbone_name, "final_lora": str(final), "stages": stages, "seconds": seconds,
        "subjects": [{"name": s.name, "phrase": s.phrase, "lora": config.lora[s.lora_index],
                      "references": str(d)} for s, d in zip(specs, ref_dirs)]})
    return ModularResult(out, final, [s.name for s in specs], stages)


def _merge_stage(config: ModularConfig, specs: list[SubjectSpec], backbone_name: str, folder: Path,
                 models: _Models) -> tuple[Path, str, bool]:
    prompts = []
    for k in range(len(config.lora)):
        mine = [s for s in specs if s.lora_index == k]
        prompts.append("" if all(s.from_manifest for s in mine)
                       else "|".join(subject_prompts([s.phrase for s in mine], config.num_activation_samples)))
    mc = MergeConfig(lora=list(config.lora), lora_weights=config.weights, method=config.merge_method,
                     rank=config.merge_rank, backbone=backbone_name,
                     pretrained_model_name_or_path=config.pretrained_model_name_or_path, prompts=prompts,
                     num_activation_samples=config.num_activation_samples,
                     num_inference_steps=config.num_inference_steps or 10, seed=config.seed, output_dir=str(folder))
    settings = {k: v for k, v in to_dict(mc).items() if k not in ("lora", "output_dir", "device", "dtype")}
    unit = Unit.of(folder, {**settings, "loras": [lora_signature(p) for p in config.lora]},
                   marker=folder / STAGE_FILE, outputs=(LORA_FILE,), name="merged")
    if unit.is_done():
        return folder, unit.fp, False
    shutil.rmtree(folder, ignore_errors=True)
    bb = models.backbone()
    merge_to_folder(dataclasses.replace(mc, device=str(bb.device), dtype=dtype_name(bb.dtype)), backbone=bb)
    unit.finish()
    return folder, unit.fp, True


def finetune_config(config: ModularConfig, backbone_name: str, ref_dirs: list[Path], merged: Path,
                    folder: Path) -> TrainConfig:
    """The fine-tuning's TrainConfig: Seg-Mix (probability 1 unless ``train`` says otherwise) on the reference
    photos, on top of the merged LoRA fused into the base weights, with the KL regularizer."""
    values = {"composition_prob": 1.0, "progress": config.progress,
              "device": "cpu" if config.device == "cpu" else "auto", **config.train,
              "backbone": backbone_name, "pretrained_model_name_or_path": config.pretrained_model_name_or_path,
              "subjects": [str(d) for d in ref_dirs], "output_dir": str(folder), "composition": "segmix",
              "base_lora": [str(merged)], "base_lora_weights": [1.0], "kl_weight": config.kl_weight,
              "max_train_steps": config.finetune_steps, "rank": config.rank, "learning_rate": config.learning_rate,
              "relative_sizes": list(config.relative_sizes), "seed": config.seed}
    return from_dict(TrainConfig, values, prefix="train.")


def _finetune_stage(config: ModularConfig, backbone_name: str, ref_dirs: list[Path], ref_fps: list[str],
                    merged: Path, merged_fp: str, folder: Path, models: _Models) -> tuple[Path, str, bool]:
    cfg = finetune_config(config, backbone_name, ref_dirs, merged, folder)
    unit = Unit.of(folder, {"train": {k: v for k, v in to_dict(cfg).items() if k not in _RUN_ONLY},
                            "references": ref_fps, "merged": merged_fp},
                   marker=folder / STAGE_FILE, outputs=(LORA_FILE,), name="finetune")
    state = unit.state()
    if state == DONE:
        print("mudi modular: finetune: done already, skipped")
        return folder, unit.fp, False
    resume = state == PARTIAL
    holds_run = folder.is_dir() and bool(run_files(folder))
    cfg = dataclasses.replace(cfg, resume_from_checkpoint="latest" if resume else None,
                              overwrite=holds_run and not resume)
    if holds_run and not resume:
        log.info("%s: its settings changed; training it again from the start", folder)
    models.release()  # the training loads its own model: free the generation one first
    print(f"mudi modular: finetune: Seg-Mix (p = {cfg.composition_prob}) on top of the merged model, "
          f"{cfg.max_train_steps} steps, KL weight {cfg.kl_weight}" + (" (resuming)" if resume else ""))
    unit.start()
    trainer = train(cfg)
    unit.finish(steps=trainer.global_step)
    return folder, unit.fp, True


def _final_stage(config: ModularConfig, backbone_name: str, merged: Path, merged_fp: str, finetune: Path,
                 finetune_fp: str, ref_dirs: list[Path], folder: Path, models: _Models) -> tuple[Path, bool]:
    unit = Unit.of(folder, {"merged": merged_fp, "finetune": finetune_fp}, marker=folder / STAGE_FILE,
                   outputs=(LORA_FILE,), name="final")
    if unit.is_done():
        print("mudi modular: final: done already, skipped")
        return folder, False
    shutil.rmtree(folder, ignore_errors=True)
    bb = models.backbone()
    result = merge_to_folder(MergeConfig(lora=[str(merged), str(finetune)], method="concat", backbone=backbone_name,
                                         pretrained_model_name_or_path=config.pretrained_model_name_or_path,
                                         output_dir=str(folder), device=str(bb.device), dtype=dtype_name(bb.dtype)),
                             backbone=bb)
    subjects = load_subjects([str(d.resolve()) for d in ref_dirs])  # absolute: the manifest works from anywhere
    extra = {k: v for k, v in (read_manifest(folder) or {}).items() if k != "subjects"}
    write_subjects_manifest(folder, subjects, **extra, modular=str(folder.parent))
    write_text_atomic(folder / "README.md", _model_card(backbone_name, subjects, config, result.report))
    unit.finish()
    print(f"mudi modular: final: one LoRA (rank up to {result.report['max_rank']}) in {folder}")
    return folder, True


def _model_card(backbone_name: str, subjects: list, config: ModularConfig, report: dict) -> str:
    triggers = "\n".join(f"- `{s.identifier}`: say “{s.phrase}” (reference photos: {s.root})" for s in subjects)
    return (f"# MuDI modular LoRA: {', '.join(s.name for s in subjects)}\n\n"
            f"Made by `mudi modular` for {backbone_name}: the LoRAs {', '.join(config.lora)} merged by "
            f"{config.merge_method}, then {config.finetune_steps} steps of Seg-Mix fine-tuning with KL weight "
            f"{config.kl_weight}; both LoRAs concatenated here exactly (rank up to {report['max_rank']}).\n\n"
            f"## Trigger words\n{triggers}\n\n## Use\n"
            f"`pipe.load_lora_weights(\"{config.output_dir}/final\")`, or with MuDI's mean-shifted init: "
            f"`mudi generate --backbone {backbone_name} --lora {config.output_dir}/final --prompt \"[V1] and [V2] ...\"`.\n")
