"""``mudi demo``: the main job on its embedded default — the bundled sample subjects, offline.

Stages (each writes something a person can look at, under ``--out``):

1. ``segmix/``, ``segmix3/`` — Seg-Mix compositions of two and of three subjects, with contact sheets.
2. ``lora/`` — a Seg-Mix DreamBooth-LoRA trained on two subjects (tiny SD backbone built in memory).
3. ``generate_mudi/``, ``generate_plain/`` — images from the LoRA with the mean-shifted initial latents and
   with the plain pipeline (same seeds), with grids and per-image JSON.
4. ``generate_*/evaluation/report.html`` — Detect-and-Compare and CLIP scores of both (tiny OWLv2, DINOv2 and
   CLIP built in memory).

The tiny models have random weights, so the generated pictures are noise-like: the demo shows the whole
plumbing offline in about a minute; the same commands with ``--backbone sdxl`` and real weights give real images
(see README.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mudi.compositions import SegmixConfig, write_compositions
from mudi.samples import sample_subject_dirs
from mudi.sampling.config import GenerateConfig
from mudi.sampling.folder import generate_to_folder
from mudi.scoring.config import EvaluateConfig
from mudi.scoring.folder import evaluate_folder
from mudi.training.config import TrainConfig
from mudi.training.loop import train

HELP = "run the whole pipeline on the bundled sample subjects with tiny offline models"
DEMO_PROMPT = "[V1] and [V2] playing together in the pool."


@dataclass
class DemoConfig:
    output_dir: str = field(default="mudi-demo", metadata={"help": "output folder", "flags": ["--out"]})
    seed: int = field(default=0, metadata={"help": "seed of every stage"})
    steps: int = field(default=30, metadata={"help": "training steps of the tiny LoRA"})
    num_images: int = field(default=4, metadata={"help": "images per generation method"})
    backbone: str = field(default="tiny-sd", metadata={"help": "tiny-sd, tiny-sd2, tiny-sdxl or tiny-flux"})


CONFIG = DemoConfig


def run(out: str | Path, seed: int = 0, steps: int = 30, num_images: int = 4,
        backbone: str = "tiny-sd") -> dict[str, Path]:
    out = Path(out)
    all_subjects = [str(p) for p in sample_subject_dirs()]
    pair = [str(p) for p in sample_subject_dirs() if p.name in ("dog6", "dog2")]
    results: dict[str, Path] = {}

    print("[1/4] Seg-Mix compositions of the bundled subjects")
    write_compositions(SegmixConfig(subjects=all_subjects, output_dir=str(out / "segmix"), num_images=8,
                                    resolution=512, seed=seed, num_subjects=2))
    write_compositions(SegmixConfig(subjects=all_subjects, output_dir=str(out / "segmix3"), num_images=4,
                                    resolution=512, seed=seed, num_subjects=3))
    results["segmix_grid"] = out / "segmix" / "grid.png"
    results["segmix3_grid"] = out / "segmix3" / "grid.png"

    print(f"[2/4] Seg-Mix DreamBooth-LoRA on {backbone} ({steps} steps)")
    lora_dir = out / "lora"
    train(TrainConfig(backbone=backbone, subjects=pair, output_dir=str(lora_dir), max_train_steps=steps,
                          rank=4, train_batch_size=2, composition="segmix", composition_prob=0.5,
                          learning_rate=1e-3, seed=seed, checkpointing_steps=max(steps, 1), report_to="none",
                          device="cpu"))
    results["lora"] = lora_dir

    print("[3/4] generation: mean-shifted initial latents vs the plain pipeline (same seeds)")
    for name, init in (("generate_mudi", "mean_shifted"), ("generate_plain", "none")):
        generate_to_folder(GenerateConfig(backbone=backbone, lora=[str(lora_dir)], subjects=pair, prompt=DEMO_PROMPT,
                                    init=init, num_images=num_images, seed=seed, batch_size=num_images,
                                    num_inference_steps=10, output_dir=str(out / name), device="cpu"))
        results[f"{name}_dir"] = out / name

    print("[4/4] evaluation: Detect-and-Compare and CLIP score (tiny models)")
    for name in ("generate_mudi", "generate_plain"):
        summary = evaluate_folder(EvaluateConfig(images=str(out / name), subjects=pair, detector="tiny-owlv2",
                                              embedders=["tiny-dinov2"], text_scorers=["tiny-clip"],
                                              threshold=0.0, output_dir=str(out / name / "evaluation"),
                                              device="cpu"))
        results[f"{name}_report"] = Path(summary["output_dir"]) / "report.html"
    return results


def main(config: DemoConfig) -> int:
    results = run(config.output_dir, config.seed, config.steps, config.num_images, config.backbone)
    print("mudi demo finished; look at:")
    for k, v in results.items():
        print(f"  {k:22s} {v}")
    return 0
