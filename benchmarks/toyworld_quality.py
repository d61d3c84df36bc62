"""Toy-world quality benchmark: does MuDI avoid identity mixing where DreamBooth does not? (docs/toyworld.md)

The shipped toy model (src/mudi/toyworld/model) is personalized on the two shipped toy subjects (squares sharing a
yellow bottom half, red vs blue top) by mudi's own trainer, once per composition mode and LoRA seed, with plain
classes ("olis square") and with descriptive classes ("olis red yellow square"). Each LoRA draws the same images
("a photo of a olis square and a hta square.", image seeds 0..N-1) with the plain pipeline and with the
mean-shifted init; the toy world's checker judges every image (success: both subjects, each itself, nothing
else). Printed and written: success rate per method (pooled over LoRA seeds, Wilson 95 % interval, the per-seed
rates), a γ sweep of the init, and the failure kinds.

    OMP_NUM_THREADS=1 python benchmarks/toyworld_quality.py --out toyworld-quality   # the full run (about an hour)
    python benchmarks/toyworld_quality.py --quick --out /tmp/tq                        # plumbing: 1 seed, 8 images

Resumable: every LoRA and every cell's verdicts are kept under --out; a rerun skips what is there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from mudi.adapters import registry
from mudi.core.segmix import SegMixParams
from mudi.data.subjects import load_subjects
from mudi.sampling.images import generate_images
from mudi.sampling.loras import apply_loras
from mudi.toyworld import MODEL_DIR, SUBJECTS_DIR
from mudi.toyworld.evaluate import judge_images, summarize_verdicts
from mudi.toyworld.world import DEMO_SUBJECTS
from mudi.training.config import TrainConfig
from mudi.training.loop import train

# (label, composition the LoRA was trained with, init); the init's γ is --gamma, the sweep varies it
METHODS = [("DreamBooth", "none", "none"), ("DreamBooth + init", "none", "mean_shifted"),
           ("Cut-Mix", "cutmix", "none"), ("Seg-Mix", "segmix", "none"), ("MuDI (Seg-Mix + init)", "segmix", "mean_shifted")]
# The init's compositions: the authors' (mudi's default; the same geometry as training) and two that keep the
# subjects apart, to test why the init fuses subjects at 32 px (docs/toyworld.md): name -> (cell key suffix, params)
LAYOUTS = {"authors'": ("", SegMixParams()), "no overlap": ("-apart", SegMixParams(allow_overlap=False)),
           "no overlap, 50–75 %": ("-apart-small", SegMixParams(allow_overlap=False, scale_range=(0.5, 0.75)))}


def subject_folders(out: Path, classes: str) -> list[str]:
    """The shipped toy subjects with plain ("square") or descriptive ("red yellow square") classes."""
    folders = []
    for s in DEMO_SUBJECTS:
        dst = out / "subjects" / classes / s.name
        if not (dst / "subject.yaml").is_file():
            shutil.copytree(SUBJECTS_DIR / s.name, dst, dirs_exist_ok=True)
            meta = yaml.safe_load((dst / "subject.yaml").read_text())
            meta["descriptive_class"] = s.descriptive_class if classes == "descriptive" else meta["class_noun"]
            (dst / "subject.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        folders.append(str(dst))
    return folders


def train_lora(args, out: Path, subjects: list[str], classes: str, composition: str, seed: int) -> Path:
    folder = out / "lora" / f"{classes}-{composition}-s{seed}"
    if (folder / "pytorch_lora_weights.safetensors").is_file():
        return folder
    t0 = time.perf_counter()
    train(TrainConfig(backbone="sd15", pretrained_model_name_or_path=str(args.model), subjects=subjects,
                      output_dir=str(folder), composition=composition, composition_prob=args.composition_prob,
                      resolution=32, rank=args.rank, learning_rate=args.lr, train_batch_size=args.batch_size,
                      max_train_steps=args.steps, checkpointing_steps=max(args.steps // 2, 1), report_to="none",
                      progress=False, device="cpu", mixed_precision="no", seed=seed, overwrite=True))
    print(f"  trained {folder.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return folder


def run_cell(args, out: Path, backbone, lora: Path, subjects: list, prompt: str, init: str, gamma: float,
             key: str, layout: SegMixParams = LAYOUTS["authors'"][1]) -> list[str]:
    path = out / "cells" / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())["verdicts"]
    names = apply_loras(backbone, [str(lora)])
    try:
        results = generate_images(backbone, prompt, list(range(args.images)),
                                  subjects=subjects if init != "none" else None, gamma=gamma, init=init,
                                  segmix_params=layout, negative_prompt=None, num_inference_steps=30, guidance_scale=args.guidance,
                                  height=32, width=32, batch_size=32, progress=False)
    finally:
        backbone.pipeline.delete_adapters(names)
    images = [r.image for r in results]
    verdicts = judge_images(images, DEMO_SUBJECTS)  # copies made before the toyworld key lack it
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"prompt": prompt, "init": init, "gamma": gamma, "verdicts": verdicts}))
    sheet = np.concatenate([np.concatenate(images[r * 8:(r + 1) * 8], 1) for r in range(min(2, len(images) // 8))], 0) \
        if len(images) >= 8 else np.concatenate(images, 1)
    (out / "sheets").mkdir(exist_ok=True)
    Image.fromarray(sheet).resize((sheet.shape[1] * 3, sheet.shape[0] * 3), Image.NEAREST).save(
        out / "sheets" / f"{key}.png")
    return verdicts


def pooled(verdict_lists: list[list[str]]) -> dict:
    summary = summarize_verdicts([v for vs in verdict_lists for v in vs])
    summary["per_seed"] = [summarize_verdicts(vs)["success_rate"] for vs in verdict_lists]
    return summary


def fmt(s: dict) -> str:
    lo, hi = s["interval95"]
    seeds = "/".join(f"{r:.2f}" for r in s["per_seed"])
    return f"**{s['success_rate']:.3f}** [{lo:.2f}, {hi:.2f}] ({s['successes']}/{s['n']}; seeds {seeds})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=MODEL_DIR)
    p.add_argument("--out", type=Path, default=Path("toyworld-quality"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--composition_prob", type=float, default=0.3)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--gamma", type=float, default=2.0)
    p.add_argument("--gammas", type=float, nargs="+", default=[0.5, 1.0, 2.0, 3.0])
    p.add_argument("--layout_gammas", type=float, nargs="+", default=[1.0, 2.0],
                   help="the γ values the init's layouts are compared at")
    p.add_argument("--classes", nargs="+", default=["plain", "descriptive"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="1 seed, 8 images, 100 steps: the plumbing only")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.images, args.steps, args.gammas, args.layout_gammas = [0], 8, 100, [args.gamma], [args.gamma]
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print(f"toy-world quality: model {args.model}, seeds {args.seeds}, {args.images} images, {args.steps} steps, "
          f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}")
    folders = {c: subject_folders(args.out, c) for c in args.classes}
    for classes in args.classes:  # every LoRA first: training loads its own copy of the model
        for comp in dict.fromkeys(m[1] for m in METHODS):
            for seed in args.seeds:
                train_lora(args, args.out, folders[classes], classes, comp, seed)
    backbone = registry.load_backbone("sd15", str(args.model), "cpu", torch.float32)
    backbone.pipeline.set_progress_bar_config(disable=True)
    results: dict = {"methods": {}, "gamma_sweep": {}, "layouts": {}}
    for classes in args.classes:
        subjects = load_subjects(folders[classes])
        prompt = f"a photo of a {subjects[0].phrase} and a {subjects[1].phrase}."
        for label, comp, init in METHODS:
            lists = [run_cell(args, args.out, backbone, args.out / "lora" / f"{classes}-{comp}-s{seed}", subjects,
                              prompt, init, args.gamma if init != "none" else 0.0,
                              f"{classes}-{comp}-{init}-g{args.gamma if init != 'none' else 0}-s{seed}")
                     for seed in args.seeds]
            results["methods"].setdefault(label, {})[classes] = pooled(lists)
            print(f"  {classes:11s} {label:24s} {fmt(results['methods'][label][classes])}", flush=True)
        for gamma in args.gammas:
            lists = [run_cell(args, args.out, backbone, args.out / "lora" / f"{classes}-segmix-s{seed}", subjects,
                              prompt, "mean_shifted", gamma, f"{classes}-segmix-mean_shifted-g{gamma}-s{seed}")
                     for seed in args.seeds]
            results["gamma_sweep"].setdefault(f"{gamma:g}", {})[classes] = pooled(lists)
        for gamma in args.layout_gammas:
            for name, (suffix, layout) in LAYOUTS.items():
                lists = [run_cell(args, args.out, backbone, args.out / "lora" / f"{classes}-segmix-s{seed}", subjects,
                                  prompt, "mean_shifted", gamma,
                                  f"{classes}-segmix-mean_shifted-g{gamma}{suffix}-s{seed}", layout)
                         for seed in args.seeds]
                results["layouts"].setdefault(f"{name}, γ {gamma:g}", {})[classes] = pooled(lists)
    results["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    results["versions"] = {"torch": torch.__version__, "python": sys.version.split()[0]}
    results["model_sha256"] = {p.relative_to(args.model).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
                               for p in sorted(args.model.rglob("*.safetensors"))}
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text(markdown(results, args))
    print(markdown(results, args))
    return 0


def markdown(results: dict, args) -> str:
    cls = args.classes
    lines = [f"Success rate (both subjects, each itself, nothing else) over {len(args.seeds)} LoRA seed(s) × "
             f"{args.images} images; [Wilson 95 % interval]; γ = {args.gamma:g} for the init.", "",
             "| method | " + " | ".join(f"{c} classes" for c in cls) + " |", "|---|" + "---|" * len(cls)]
    for label, by in results["methods"].items():
        lines.append(f"| {label} | " + " | ".join(fmt(by[c]) for c in cls) + " |")
    lines += ["", "γ sweep (Seg-Mix LoRAs, mean-shifted init):", "",
              "| γ | " + " | ".join(f"{c} classes" for c in cls) + " |", "|---|" + "---|" * len(cls)]
    for gamma, by in results["gamma_sweep"].items():
        lines.append(f"| {gamma} | " + " | ".join(fmt(by[c]) for c in cls) + " |")
    lines += ["", "The init's compositions (Seg-Mix LoRAs): the authors' geometry vs subjects kept apart:", "",
              "| layout | " + " | ".join(f"{c} classes" for c in cls) + " |", "|---|" + "---|" * len(cls)]
    for name, by in results.get("layouts", {}).items():
        lines.append(f"| {name} | " + " | ".join(fmt(by[c]) for c in cls) + " |")
    kinds = ["correct", "missing", "extra", "duplicate", "blend", "wrong_shape", "wrong_colour"]
    lines += ["", "Verdicts (counts over all seeds):", "", "| method | classes | " + " | ".join(kinds) + " |",
              "|---|---|" + "---|" * len(kinds)]
    for label, by in [*results["methods"].items(), *((f"init: {k}", v) for k, v in results.get("layouts", {}).items())]:
        for c in cls:
            lines.append(f"| {label} | {c} | " + " | ".join(str(by[c]["verdicts"].get(k, 0)) for k in kinds) + " |")
    lines += ["", f"{results['seconds'] / 60:.0f} min in all."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
