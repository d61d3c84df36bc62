"""``mudi merge`` as a library call: LoRAs in, one LoRA folder out.

Outputs in ``output_dir``: ``pytorch_lora_weights.safetensors`` (the diffusers format of the backbone's family,
``pipe.load_lora_weights(OUTPUT_DIR)`` loads it), ``mudi_subjects.json`` (the inputs' subjects, in order, so
``mudi generate --lora OUTPUT_DIR`` names them), ``merge_report.json`` (method, weights, per-layer ranks and
factorisation residuals; for fusion each LoRA's output residual against the weighted sum's) and
``merge_config.yaml`` (the resolved config).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mudi.adapters import registry
from mudi.config import save_config
from mudi.data.manifests import LORA_FILE, SUBJECTS_FILE, entry_phrase, read_manifest
from mudi.devices import describe, dtype_name, place_config
from mudi.errors import MudiError
from mudi.io import OutputLock, atomic_path, prepare_output_dir, write_json_atomic
from mudi.merging.config import CONFIG_FILE, REPORT_FILE, MergeConfig
from mudi.merging.formats import load_lora_updates, peft_state_dict, remove_adapters
from mudi.merging.fusion import collect_grams, fuse, subject_prompts
from mudi.merging.methods import MergedLayer, concat_ranks, layer_names, total_relative_residual, weighted_sum
from mudi.sampling.loras import check_lora_family, lora_file

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone

log = logging.getLogger(__name__)


@dataclass
class MergeResult:
    """Where the merged LoRA went and what ``merge_report.json`` says."""

    output_dir: Path
    lora_path: Path
    report: dict


@dataclass
class _Input:
    path: str
    folder: Path
    manifest: dict | None
    prompts: list[str]


def merge_to_folder(config: MergeConfig, backbone: Backbone | None = None) -> MergeResult:
    """Check the inputs (paths, families, prompts, the output folder) before any model loads, load the backbone (or
    use ``backbone``, left without the merge's adapters afterwards), merge and write the outputs."""
    if not config.lora:
        raise MudiError("no LoRAs given; pass --lora PATH [PATH ...] (mudi runs or .safetensors files)")
    inputs = _inputs(config)
    config = dataclasses.replace(config, backbone=_backbone_name(config, inputs, backbone), lora_weights=config.weights)
    check_lora_family(config.lora, config.backbone)
    out = Path(config.output_dir)
    for item in inputs:
        if out.resolve() == item.folder.resolve():
            raise MudiError(f"--output_dir {out} is the folder of the input {item.path}; the merge would overwrite "
                            "it: choose another folder")
    if (out / LORA_FILE).is_file() and not (out / REPORT_FILE).is_file():
        raise MudiError(f"{out} already holds a LoRA that is not a merge; choose another --output_dir")
    out = prepare_output_dir(out, "merge output folder")
    with OutputLock(out, "merge"):
        return _merge(config, backbone, inputs, out)


def _inputs(config: MergeConfig) -> list[_Input]:
    items = []
    for k, p in enumerate(config.lora):
        folder, _ = lora_file(Path(p))  # a missing, ambiguous or non-safetensors path fails now
        manifest = read_manifest(folder)
        prompts = config.prompts_of(k)
        if not prompts and manifest and manifest.get("subjects"):
            prompts = subject_prompts([entry_phrase(r) for r in manifest["subjects"]], config.num_activation_samples)
        elif prompts:
            prompts = [prompts[i % len(prompts)] for i in range(config.num_activation_samples)]
        if config.method == "fusion" and not prompts:
            raise MudiError(f"{p}: fusion needs prompts of this LoRA's subject and it has no {SUBJECTS_FILE}; give "
                            "one --prompts entry per LoRA, e.g. --prompts 'a photo of sks dog' '' (''= from the "
                            "LoRA's own manifest)")
        items.append(_Input(str(p), Path(folder), manifest, prompts))
    made = {i.path: i.manifest["family"] for i in items if i.manifest and i.manifest.get("family")}
    if len(set(made.values())) > 1:
        listed = ", ".join(f"{p} ({f})" for p, f in made.items())
        raise MudiError(f"these LoRAs were made for different models: {listed}; a merge takes LoRAs of one model")
    return items


def _backbone_name(config: MergeConfig, inputs: list[_Input], backbone: Backbone) -> str:
    if config.backbone:
        return config.backbone
    recorded = list(dict.fromkeys(i.manifest["backbone"] for i in inputs if i.manifest and i.manifest.get("backbone")))
    if len(recorded) == 1:
        return recorded[0]
    if backbone is not None:
        return str(backbone.family)
    raise MudiError(f"which model are these LoRAs for? pass --backbone ({', '.join(registry.names('backbone'))})"
                    + (f"; their mudi_subjects.json record {recorded}" if recorded else ""))


def _merge(config: MergeConfig, backbone: Backbone, inputs: list[_Input], out: Path) -> MergeResult:
    if backbone is None:
        config, device, dtype = place_config(config)
        log.info("mudi merge: %s", describe(device, dtype))
        backbone = registry.load_backbone(config.backbone, config.pretrained_model_name_or_path, device, dtype)
    else:
        config = dataclasses.replace(config, device=str(backbone.device), dtype=dtype_name(backbone.dtype))
    names, updates = load_lora_updates(backbone, config.lora)
    try:
        weights = config.weights
        extra: dict = {}
        if config.method == "concat":
            layers = concat_ranks(updates, weights)
        elif config.method == "weighted_sum":
            layers = weighted_sum(updates, weights, config.rank)
        else:
            grams = []
            for k, (item, name) in enumerate(zip(inputs, names)):
                log.info("fusion: activations of %s (%d image(s), %d steps)", item.path, len(item.prompts),
                         config.num_inference_steps)
                grams.append(collect_grams(backbone, name, weights[k], item.prompts, list(updates[k]),
                                           config.num_inference_steps, config.seed))
            math_device = backbone.device if backbone.device.type == "cuda" else "cpu"
            fused = fuse(updates, weights, grams, config.rank, config.ridge, math_device)
            layers = fused.layers
            extra = {"output_residuals": fused.output_residuals, "output_norms": fused.output_norms,
                     "layers_merged_by_weighted_sum": fused.fallback_layers,
                     "prompts": [i.prompts for i in inputs]}
    finally:
        remove_adapters(backbone, names)
    report = _report(config, inputs, updates, layers, extra)
    lora_path = _write(backbone, out, layers)
    _write_manifest(out, config, backbone, inputs)
    write_json_atomic(out / REPORT_FILE, report)
    save_config(config, out / CONFIG_FILE)
    return MergeResult(out, lora_path, report)


def _report(config: MergeConfig, inputs: list[_Input], updates: list, layers: dict[str, MergedLayer],
            extra: dict) -> dict:
    ranks = {k: m.update.rank for k, m in layers.items()}
    return {
        "method": config.method, "rank": config.rank, "backbone": config.backbone,
        "loras": [{"path": i.path, "weight": w, "num_layers": len(u),
                   "ranks": sorted({x.rank for x in u.values()}), "scales": sorted({round(x.scale, 6)
                                                                                    for x in u.values()})}
                  for i, w, u in zip(inputs, config.weights, updates)],
        "num_layers": len(layer_names(updates)), "max_rank": max(ranks.values(), default=0),
        "residual": total_relative_residual(layers),
        "layers": {k: {"rank": m.update.rank, "norm": m.norm, "residual": m.residual,
                       "relative_residual": m.relative_residual} for k, m in layers.items()},
        **extra,
    }


def _write(backbone: Backbone, out: Path, layers: dict[str, MergedLayer]) -> Path:
    """The merged LoRA in the backbone's diffusers format, written atomically."""
    state, metadata = peft_state_dict({k: m.update for k, m in layers.items()})
    target = out / LORA_FILE
    tmp_dir = Path(tempfile.mkdtemp(prefix=".lora-", suffix=".tmp", dir=out))
    try:
        backbone.save_lora(str(tmp_dir), state, metadata)
        with atomic_path(target) as tmp:
            (tmp_dir / LORA_FILE).replace(tmp)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


def _write_manifest(out: Path, config: MergeConfig, backbone: Backbone, inputs: list[_Input]) -> None:
    """``mudi_subjects.json``: the subjects of every input that names them, in input order (the layout of
    :func:`mudi.data.manifests.write_subjects_manifest`), plus where they came from."""
    rows = [r for i in inputs if i.manifest for r in i.manifest.get("subjects", []) if isinstance(r, dict)]
    write_json_atomic(out / SUBJECTS_FILE, {
        "backbone": config.backbone, "family": backbone.family,
        "pretrained_model_name_or_path": config.pretrained_model_name_or_path,
        "merged_from": [i.path for i in inputs], "method": config.method, "subjects": rows})
