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

import argparse
from pathlib import Path

from mudi.compose import SegmixConfig
from mudi.compose import run as run_segmix
from mudi.samples import sample_subject_dirs

HELP = "run the whole pipeline on the bundled sample subjects with tiny offline models"
DEMO_PROMPT = "[V1] and [V2] playing together in the pool."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="mudi-demo", help="output folder (default: ./mudi-demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=30, help="training steps of the tiny LoRA")
    p.add_argument("--num-images", dest="num_images", type=int, default=4, help="images per generation method")
    p.add_argument("--backbone", default="tiny-sd", help="tiny-sd, tiny-sdxl or tiny-flux")


def run(out: str | Path, seed: int = 0, steps: int = 30, num_images: int = 4,
        backbone: str = "tiny-sd") -> dict[str, Path]:
    from mudi.evaluate import EvaluateConfig
    from mudi.evaluate import run as run_evaluate
    from mudi.generate import GenerateConfig
    from mudi.generate import run as run_generate
    from mudi.train import TrainConfig
    from mudi.train import run as run_train

    out = Path(out)
    all_subjects = [str(p) for p in sample_subject_dirs()]
    pair = [str(p) for p in sample_subject_dirs() if p.name in ("dog6", "dog2")]
    results: dict[str, Path] = {}

    print("[1/4] Seg-Mix compositions of the bundled subjects")
    run_segmix(SegmixConfig(subjects=all_subjects, out=str(out / "segmix"), num=8, size=512, seed=seed,
                            num_subjects=2))
    run_segmix(SegmixConfig(subjects=all_subjects, out=str(out / "segmix3"), num=4, size=512, seed=seed,
                            num_subjects=3))
    results["segmix_grid"] = out / "segmix" / "grid.png"
    results["segmix3_grid"] = out / "segmix3" / "grid.png"

    print(f"[2/4] Seg-Mix DreamBooth-LoRA on {backbone} ({steps} steps)")
    lora_dir = out / "lora"
    run_train(TrainConfig(backbone=backbone, subjects=pair, output_dir=str(lora_dir), max_train_steps=steps,
                          rank=4, train_batch_size=2, composition="segmix", composition_prob=0.5,
                          learning_rate=1e-3, seed=seed, checkpointing_steps=max(steps, 1), report_to="none",
                          device="cpu"))
    results["lora"] = lora_dir

    print("[3/4] generation: mean-shifted initial latents vs the plain pipeline (same seeds)")
    for name, init in (("generate_mudi", "mean_shifted"), ("generate_plain", "none")):
        run_generate(GenerateConfig(backbone=backbone, lora=[str(lora_dir)], subjects=pair, prompt=DEMO_PROMPT,
                                    init=init, num_images=num_images, seed=seed, batch_size=num_images,
                                    num_inference_steps=10, output_dir=str(out / name)))
        results[f"{name}_dir"] = out / name

    print("[4/4] evaluation: Detect-and-Compare and CLIP score (tiny models)")
    for name in ("generate_mudi", "generate_plain"):
        summary = run_evaluate(EvaluateConfig(images=str(out / name), subjects=pair, detector="tiny-owlv2",
                                              embedders=["tiny-dinov2"], text_scorers=["tiny-clip"],
                                              threshold=0.0, output_dir=str(out / name / "evaluation")))
        results[f"{name}_report"] = Path(summary["output_dir"]) / "report.html"
    return results


def main(args: argparse.Namespace) -> int:
    results = run(args.out, args.seed, args.steps, args.num_images, args.backbone)
    print("mudi demo finished; look at:")
    for k, v in results.items():
        print(f"  {k:22s} {v}")
    return 0
