"""Generation and scoring from the UI: ``mudi generate`` with a trained run's LoRA into
``WORKSPACE/generations/<name>/``, then ``mudi evaluate`` (Detect-and-Compare) into its ``evaluation/``. Imports
no gradio; the page calls :func:`generate_and_score` through the worker."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mudi.adapters import registry
from mudi.adapters.pool import ModelPool
from mudi.config import load_config
from mudi.core.layout import NormBox
from mudi.data.images import list_images
from mudi.data.manifests import entry_paths, entry_phrase, read_manifest, weight_files
from mudi.devices import resolve_device, resolve_dtype
from mudi.errors import MudiError
from mudi.sampling.config import GenerateConfig
from mudi.sampling.folder import generate_to_folder
from mudi.scoring.config import EvaluateConfig
from mudi.scoring.folder import evaluate_folder
from mudi.toyworld.evaluate import check_folder
from mudi.ui.layouts import write_layout
from mudi.ui.state import Workspace, slugify, unique_name
from mudi.ui.toy import VERDICT_WORDS, is_toy_model, read_verdicts, toy_recipe

EVALUATION_DIR = "evaluation"
#: The offline scorers for the tiny backbones (random weights: the scores show the plumbing, not quality).
TINY_SCORERS = {"detector": "tiny-owlv2", "embedders": ["tiny-dinov2"], "text_scorers": ["tiny-clip"],
                "threshold": 0.0}
#: The toy model's images: D&C with the toy world's detector and embedder (offline, no weights; no text scorer),
#: and the toy checker's verdict per image.
TOY_SCORERS = {"detector": "toyworld", "embedders": ["toyworld"], "text_scorers": []}


def is_tiny(backbone: str) -> bool:
    return registry.is_tiny(backbone)


def lora_choices(ws: Workspace) -> list[tuple[str, str]]:
    """``(label, folder)`` of every LoRA in the workspace's runs: each run's final LoRA and its snapshots (or its
    token embeddings: Textual Inversion)."""
    out = []
    for run in ws.run_dirs():
        if weight_files(run):
            out.append((run.name, str(run)))
        snaps = [p for p in run.glob("snapshot-*") if weight_files(p) and p.name[9:].isdigit()]
        for snap in sorted(snaps, key=lambda p: int(p.name[9:]), reverse=True):
            out.append((f"{run.name} / {snap.name}", str(snap)))
    return out


@dataclass
class LoraInfo:
    """What a LoRA folder's ``mudi_subjects.json`` says: the model and the subjects, in ``[V1]``, ``[V2]`` order."""

    folder: Path
    backbone: str
    pretrained_model_name_or_path: str | None
    identifiers: list[str]
    phrases: list[str]
    subject_paths: list[str]

    @property
    def labels(self) -> list[str]:
        return [f"V{k + 1} {p}" for k, p in enumerate(self.phrases)]


def lora_info(folder: str | Path) -> LoraInfo:
    folder = Path(folder)
    manifest = read_manifest(folder)
    if not manifest or not manifest.get("backbone"):
        raise MudiError(f"{folder}: no mudi_subjects.json naming its backbone; pick a LoRA trained by mudi")
    rows = manifest.get("subjects") or []
    return LoraInfo(folder, str(manifest["backbone"]), manifest.get("pretrained_model_name_or_path"),
                    [str(r.get("identifier", "")) for r in rows], [entry_phrase(r) for r in rows],
                    [p for r in rows for p in entry_paths(r)])


def scorer_settings(backbone: str, pretrained_model_name_or_path: str | None = None) -> dict:
    """EvaluateConfig keys for scoring images of ``backbone``: the toy world's scorers for the toy model, the tiny
    offline scorers for a tiny backbone, else the paper's defaults (OWLv2, DINOv2, CLIP; their weights must be
    available)."""
    if is_toy_model(pretrained_model_name_or_path):
        return dict(TOY_SCORERS)
    return dict(TINY_SCORERS) if is_tiny(backbone) else {}


def generate_config(info: LoraInfo, **values: Any) -> GenerateConfig:
    """The GenerateConfig of a generation with ``info``'s LoRA: the form's ``values`` over the model's recipe (the
    toy model: `mudi demo`'s generate block — 32 px, sampler steps, guidance, the init's layouts)."""
    recipe = dict(toy_recipe().generate) if is_toy_model(info.pretrained_model_name_or_path) else {}
    if recipe and values.get("num_inference_steps") is None:
        values.pop("num_inference_steps", None)
    return load_config(GenerateConfig, values={**recipe, "backbone": info.backbone,
                                               "pretrained_model_name_or_path": info.pretrained_model_name_or_path,
                                               "lora": [str(info.folder)], **values})


_MODELS = ModelPool()  # the last generation model, kept between clicks (each call applies its own LoRA)


def generation_backbone(name: str, pretrained_model_name_or_path: str | None, device: str) -> Any:
    """The loaded model for (backbone, checkpoint, device): loaded on first use, then reused; a different
    one replaces it (one model in memory at a time)."""
    key = repr((name, pretrained_model_name_or_path, device))
    if not _MODELS.held(key):
        release_generation_backbone()
    dev = resolve_device(device)
    return _MODELS.get(key, lambda: registry.load_backbone(name, pretrained_model_name_or_path, dev,
                                                           resolve_dtype("auto", dev)))


def release_generation_backbone() -> None:
    """Drop the kept generation model (before a training run needs the GPU memory)."""
    _MODELS.release()


def generate_and_score(ws: Workspace, lora_folder: str | Path, prompt: str, gamma: float | None, seed: int,
                       num_images: int, num_inference_steps: int | None = None,
                       boxes: list[NormBox | None] | None = None, relative_sizes: list[float] | None = None,
                       score: bool = True, device: str = "auto", region_control: bool = False) -> Path:
    """Generate ``num_images`` images (seeds ``seed`` … ``seed + num_images - 1``) with the LoRA and the
    mean-shifted init (random layout, the drawn ``boxes`` or ``relative_sizes``; ``region_control``: each subject's
    prompt confined to its box of that layout), then score them. Returns the generation folder."""
    run = ws.contain(lora_folder, "LoRA folder")
    info = lora_info(run)
    base = slugify(run.name if not run.name.startswith("snapshot-") else f"{run.parent.name}-{run.name}", "gen")
    out = ws.generations_dir / unique_name(ws.generations_dir, base)
    layout = "random"
    if boxes is not None:
        layout = str(write_layout(ws.layouts_dir / f"{out.name}.json", boxes, info.identifiers))
    config = generate_config(info, prompt=prompt, gamma=gamma, layout=layout, relative_sizes=relative_sizes,
                             num_images=num_images, seed=seed, batch_size=min(4, num_images),
                             num_inference_steps=num_inference_steps, output_dir=str(out), device=device,
                             region_control=region_control)
    generate_to_folder(config, backbone=generation_backbone(info.backbone, info.pretrained_model_name_or_path, device))
    if score:
        score_folder(out, info, device)
    return out


def score_folder(out: Path, info: LoraInfo, device: str = "auto") -> None:
    """``mudi evaluate`` on a generation into its ``evaluation/``; the toy model's images are also judged by the toy
    world's checker (``evaluation/toyworld.json``, as ``mudi run``'s scorer ``toyworld`` writes it)."""
    evaluate_folder(EvaluateConfig(images=str(out), subjects=info.subject_paths, output_dir=str(out / EVALUATION_DIR),
                                   device=device, **scorer_settings(info.backbone, info.pretrained_model_name_or_path)))
    if is_toy_model(info.pretrained_model_name_or_path):
        check_folder(out, info.subject_paths, out / EVALUATION_DIR)


@dataclass
class GeneratedRow:
    """One generated image with what its sidecar and its evaluation say."""

    path: Path
    seed: int | None
    prompt: str
    scores: dict[str, float] = field(default_factory=dict)  # D&C per embedder, then text scores
    failures: list[str] = field(default_factory=list)
    num_detections: int | None = None
    verdict: str | None = None  # the toy world's checker (toy model only): correct, blend, missing, …

    @property
    def caption(self) -> str:
        parts = [f"seed {self.seed}"] + [f"{k} {v:.3f}" for k, v in self.scores.items()]
        if self.verdict:
            parts.insert(0, VERDICT_WORDS.get(self.verdict, self.verdict))
        return " · ".join(parts + ([", ".join(self.failures)] if self.failures else []))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def generated_rows(folder: str | Path) -> list[GeneratedRow]:
    """The images of a generation folder, each with its seed, prompt and (when scored) D&C and text scores."""
    folder = Path(folder)
    rows = []
    verdicts = (read_verdicts(folder / EVALUATION_DIR) or {}).get("images") or {}
    for img in list_images(folder) if folder.is_dir() else []:
        side = _read_json(img.with_suffix(".json"))
        ev = _read_json(folder / EVALUATION_DIR / f"{img.stem}.json")
        scores = {m: float(v["score"]) for m, v in (ev.get("metrics") or {}).items() if v.get("score") is not None}
        scores.update({k: float(v) for k, v in (ev.get("text") or {}).items() if isinstance(v, (int, float))})
        rows.append(GeneratedRow(img, side.get("seed"), str(side.get("prompt", "")), scores,
                                 list(ev.get("failures") or []), len(ev["detections"]) if "detections" in ev else None,
                                 verdicts.get(img.name)))
    return rows


def score_table(rows: list[GeneratedRow]) -> tuple[list[str], list[list]]:
    """Headers and rows of the per-image score table."""
    metrics = list(dict.fromkeys(k for r in rows for k in r.scores))
    judged = any(r.verdict for r in rows)  # the toy checker's column, for the toy model's images
    headers = ["image", "seed", *(["verdict"] if judged else []), *metrics, "detections", "failures"]
    table = [[r.path.name, r.seed, *([VERDICT_WORDS.get(r.verdict or "", r.verdict)] if judged else []),
              *[round(r.scores[m], 4) if m in r.scores else None for m in metrics],
              r.num_detections, ", ".join(r.failures)] for r in rows]
    return headers, table
