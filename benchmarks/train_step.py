"""Training step cost, measured side by side in one run.

(a) CPU, tiny backbone: seconds per step with Seg-Mix (p = 0.3, and p = 1 as the worst case) vs plain
    DreamBooth (``composition=none``), same model, batch, rank and seed; steps of the variants are
    interleaved so machine load hits all alike. Target: Seg-Mix costs <= 5% extra.
(b) GPU only (skipped without CUDA): full-size SDXL built from its architecture config with random weights
    (no download) at 1024², batch 2, LoRA rank 32, bf16 — with and without gradient checkpointing, and a
    plain loop that re-encodes the prompts every step (the diffusers example's behaviour with per-image
    captions) instead of using the text-embedding cache: seconds/step and peak memory.

    python benchmarks/train_step.py [--steps 30] [--threads 1] [--skip-gpu | --only-gpu] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fullsize import build_sdxl  # benchmarks/fullsize.py (scripts run from benchmarks/)

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "mudi" / "samples"
SUBJECTS = [str(SAMPLES / "dog6"), str(SAMPLES / "cat2"), str(SAMPLES / "dog2")]


def _trainer(out: str, backbone="tiny-sd", inject=None, **kw):
    from mudi.training.config import TrainConfig
    from mudi.training.trainer import LoraTrainer

    cfg = dict(backbone=backbone, subjects=SUBJECTS, output_dir=out, report_to="none", progress=False, seed=0)
    cfg.update(kw)
    return LoraTrainer(TrainConfig(**cfg), backbone=inject)


def _step(trainer) -> float:
    t0 = time.perf_counter()
    trainer.train_step(trainer.draw_batch())
    return time.perf_counter() - t0


def part_a(steps: int) -> None:
    print(f"(a) CPU, tiny-sd, 64 px, batch 2, rank 4, torch threads {torch.get_num_threads()}, {steps} steps each")
    with tempfile.TemporaryDirectory() as tmp:
        variants = {
            "dreambooth (none)": _trainer(tmp + "/a", composition="none", rank=4, device="cpu"),
            "segmix p=0.3": _trainer(tmp + "/b", composition="segmix", composition_prob=0.3, rank=4, device="cpu"),
            "segmix p=1.0": _trainer(tmp + "/c", composition="segmix", composition_prob=1.0, rank=4, device="cpu"),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(3):  # warm-up: text cache, cutout cache, allocator
            for tr in variants.values():
                _step(tr)
        for _ in range(steps):
            for k, tr in variants.items():
                times[k].append(_step(tr))
        # data-only cost per batch (drawing + composing), the part Seg-Mix adds
        data = {}
        for k, tr in variants.items():
            t0 = time.perf_counter()
            for _ in range(50):
                tr.draw_batch()
            data[k] = (time.perf_counter() - t0) / 50
    base = statistics.median(times["dreambooth (none)"])
    best = min(times["dreambooth (none)"])
    print(f"{'variant':<20} {'median s/step':>14} {'ratio':>7} {'min s/step':>11} {'ratio':>7} {'data ms/batch':>14}")
    for k, ts in times.items():
        med, lo = statistics.median(ts), min(ts)
        print(f"{k:<20} {med:>14.4f} {med / base:>7.3f} {lo:>11.4f} {lo / best:>7.3f} {data[k] * 1000:>14.2f}")
    # at SDXL's 1024 px only the data side can be timed on CPU: what Seg-Mix adds to each batch of 2
    import numpy as np

    from mudi.data.subjects import load_subjects
    from mudi.training.data import SampleSource

    subjects = load_subjects(SUBJECTS)
    print("data cost per batch of 2 at 1024 px (CPU, after the first draw of each image/cutout is cached):")
    for label, mode, p in [("dreambooth (none)", "none", 0.0), ("segmix p=0.3", "segmix", 0.3),
                           ("segmix p=1.0", "segmix", 1.0)]:
        src = SampleSource(subjects, 1024, mode=mode, composition_prob=p)
        rng = np.random.default_rng(0)
        for _ in range(150):
            src.draw(rng)
        t0 = time.perf_counter()
        for _ in range(100):
            src.draw(rng)
        print(f"  {label:<20} {(time.perf_counter() - t0) / 50 * 1000:>8.1f} ms/batch")


def part_b(steps: int, smoke: bool = False) -> None:
    """``smoke``: the same code on the CPU with tiny-sdxl at 64 px (checks the plumbing where no GPU is)."""
    if not smoke and not torch.cuda.is_available():
        print("(b) skipped: no CUDA GPU on this machine (full-size SDXL, 1024², batch 2, rank 32, bf16)")
        return
    cuda = not smoke
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        print(f"(b) {torch.cuda.get_device_name()}, full-size SDXL (random weights), 1024², batch 2, rank 32, "
              f"bf16, {steps} steps each (after 3 warm-up steps)")
        t0 = time.perf_counter()
        bb = build_sdxl("cuda", torch.bfloat16)
        sync()
        print(f"    built in {time.perf_counter() - t0:.1f} s; UNet "
              f"{sum(p.numel() for p in bb.pipeline.unet.parameters()) / 1e9:.2f} B parameters")
        res = 1024
    else:
        from mudi.adapters.registry import load_backbone

        print(f"(b, smoke) CPU, tiny-sdxl, 64 px, batch 2, rank 32, bf16, {steps} steps each")
        bb = load_backbone("tiny-sdxl", dtype=torch.bfloat16)
        res = 64
    with tempfile.TemporaryDirectory() as tmp:
        tr = _trainer(tmp, backbone="sdxl", inject=bb, rank=32, resolution=res, train_batch_size=2,
                      mixed_precision="bf16", composition_prob=0.3, device="auto" if cuda else "cpu")
        unet = tr.accelerator.unwrap_model(tr.model)
        rows = []
        for label, gc, reencode in [("cached prompts", False, False), ("cached prompts + grad ckpt", True, False),
                                    ("re-encode every step", False, True),
                                    ("re-encode every step + grad ckpt", True, True)]:
            (unet.enable_gradient_checkpointing if gc else unet.disable_gradient_checkpointing)()
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            ts = []
            try:
                for k in range(steps + 3):
                    if reencode:
                        tr._text_cache.clear()
                    sync()
                    t = _step(tr)
                    sync()
                    if k >= 3:
                        ts.append(t)
                peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
                rows.append((label, statistics.median(ts), peak))
            except torch.OutOfMemoryError:
                rows.append((label, float("nan"), float("nan")))
            print(f"    {label}: done", flush=True)
    base = rows[0][1]
    print(f"{'variant':<34} {'s/step':>8} {'ratio':>7} {'peak GiB':>9}")
    for label, s, mem in rows:
        print(f"{label:<34} {s:>8.3f} {s / base:>7.3f} {mem:>9.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--gpu-steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-gpu", action="store_true")
    ap.add_argument("--only-gpu", action="store_true", help="skip part (a)")
    ap.add_argument("--smoke", action="store_true", help="run part (b)'s code on the CPU with tiny-sdxl")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.only_gpu or args.smoke):
        part_a(args.steps)
    if not args.skip_gpu:
        part_b(args.gpu_steps, smoke=args.smoke)


if __name__ == "__main__":
    main()
