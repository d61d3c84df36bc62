"""Training step cost, measured side by side in one run.

(a) CPU, tiny backbone: seconds per step with Seg-Mix (p = 0.3, and p = 1 as the worst case) vs plain
    DreamBooth (``composition=none``), same model, batch, rank and seed; steps of the variants are
    interleaved so machine load hits all alike. Target: Seg-Mix costs <= 5% extra.
(b) GPU only (skipped without CUDA): full-size SDXL (1024², effective batch 2) and FLUX.1-dev (512², batch 1 x 4)
    built from their configs with random weights (no download), LoRA rank 32, bf16: every speed option of
    `mudi train` side by side with the default loop (the baseline), each on a fresh model — seconds/step, the wait
    for data, the model FLOPs of one step (torch.utils.flop_counter on the real module graph), the achieved
    fraction of the GPU's dense bf16 peak (MFU), peak memory, and the loss deviation from the baseline on the
    same batches. `--smoke` runs the same code on the CPU with the tiny models.

    python benchmarks/train_step.py [--steps 30] [--threads 1] [--skip-gpu | --only-gpu] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fullsize import build_flux, build_sdxl  # benchmarks/fullsize.py (scripts run from benchmarks/)
from mudi.errors import MudiError

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


# Dense bf16 peak TFLOP/s (no sparsity) by GPU name, for the model FLOPs utilisation (MFU).
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0,
                    "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "4090": 165.2,
                    "3090": 71.0}

# (label, TrainConfig changes) measured side by side, each on a freshly built model; the first is the baseline.
FAST = {"cache_latents": True, "dataloader_num_workers": 2, "fused_optimizer": True}
SDXL_VARIANTS = [
    ("baseline (default loop)", {}),
    ("+ gradient checkpointing", {"gradient_checkpointing": True}),
    ("+ latent cache, 2 workers, fused AdamW", FAST),
    ("  + channels-last", {**FAST, "channels_last": True}),
    ("  + regional compile", {**FAST, "compile": "regional"}),
    ("  + regional compile + grad ckpt", {**FAST, "compile": "regional", "gradient_checkpointing": True}),
    ("  + compile + fp8 base weights (opt-in)", {**FAST, "compile": "regional", "fp8_base_weights": True}),
    ("24/16 GiB: compile + grad ckpt + 8-bit Adam", {**FAST, "compile": "regional", "gradient_checkpointing": True,
                                                     "use_8bit_adam": True, "fused_optimizer": False}),
]
FLUX_VARIANTS = [
    ("baseline (default loop)", {}),
    ("+ latent cache, 2 workers, fused AdamW", FAST),
    ("  + regional compile + grad ckpt", {**FAST, "compile": "regional", "gradient_checkpointing": True}),
    ("24 GiB: compile + grad ckpt + 8-bit Adam", {**FAST, "compile": "regional", "gradient_checkpointing": True,
                                                 "use_8bit_adam": True, "fused_optimizer": False}),
]


def peak_tflops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def step_flops(trainer) -> float:
    """Model FLOPs of one optimizer step, counted on the real module graph (torch.utils.flop_counter): the
    denoiser's forward and backward (through the frozen weights, LoRA gradients included) and the VAE encode
    of what is not cached; prompts are cached (the text encoders ran before)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        trainer.step()
    return float(counter.get_total_flops())


def sdpa_backend(backbone) -> str:
    """Which fused attention kernel the denoiser's attention can use here: flash, cuDNN, efficient or math."""
    if not torch.cuda.is_available():
        return "math (CPU)"
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(2, 8, 1024, 64, device="cuda", dtype=backbone.dtype)
    for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                     ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        try:
            with sdpa_kernel(be):
                torch.nn.functional.scaled_dot_product_attention(q, q, q)
            return name
        except RuntimeError:
            continue
    return "math"


def measure(build, family: str, resolution: int, steps: int, extra: dict, variants: list, cuda: bool) -> None:
    """Every variant on a fresh model: s/step (median of ``steps`` after warm-up), data wait, model FLOPs, MFU,
    peak memory; then the loss of every variant on the same batches against the baseline's."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    peak = peak_tflops()
    rows = []
    for label, change in variants:
        try:
            bb = build()
        except torch.OutOfMemoryError:
            rows.append((label, "OOM building the model"))
            continue
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                cfg = dict(rank=32, resolution=resolution, mixed_precision="bf16",
                           composition_prob=0.3, device="auto" if cuda else "cpu", center_crop=True, **extra)
                cfg.update(change)
                tr = _trainer(tmp, backbone=family, inject=bb, **cfg)
                if tr.config.cache_latents:
                    tr.fill_latent_cache()
                loader = None
                if tr.config.dataloader_num_workers:
                    from mudi.training.trainer import batch_loader

                    loader = batch_loader(tr)
                waits, times, losses = [], [], []
                for k in range(steps + 3):
                    sync()
                    t0 = time.perf_counter()
                    batches = [next(loader) for _ in range(tr.config.gradient_accumulation_steps)] if loader else None
                    t1 = time.perf_counter()
                    _, out = tr.step(batches)
                    tr.global_step += 1
                    sync()
                    if k >= 3:
                        times.append(time.perf_counter() - t0)
                        waits.append(t1 - t0)
                    losses.append(out["loss"])
                flops = step_flops(tr)
                s = statistics.median(times)
                mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
                mfu = flops / s / (peak * 1e12) if peak else float("nan")
                rows.append((label, s, statistics.median(waits), flops / 1e12, mfu, mem, losses))
            except MudiError as e:
                rows.append((label, f"not available here: {e}"))
            except torch.OutOfMemoryError:
                rows.append((label, "OOM"))
        del bb
        if cuda:
            torch.cuda.empty_cache()
        print(f"    {label}: done", flush=True)
    base = next((r for r in rows if len(r) > 2), None)
    print(f"{'variant':<40} {'s/step':>7} {'ratio':>6} {'data wait':>9} {'TFLOP':>7} {'MFU':>6} {'peak GiB':>8} "
          f"{'loss Δ vs base':>14}")
    for r in rows:
        if len(r) == 2:
            print(f"{r[0]:<40} {r[1]}")
            continue
        label, s, wait, tflop, mfu, mem, losses = r
        dev = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, base[6]))
        print(f"{label:<40} {s:>7.3f} {s / base[1]:>6.2f} {wait * 1000:>7.1f}ms {tflop:>7.3g} {mfu:>6.1%} {mem:>8.2f} "
              f"{dev:>14.2e}")


def part_b(steps: int, smoke: bool = False, families: tuple[str, ...] = ("sdxl", "flux")) -> None:
    """GPU: full-size SDXL (1024², effective batch 2) and FLUX.1-dev (512², the authors' batch 1 × 4), random
    weights built from their configs. ``smoke``: the same code on the CPU with tiny-sdxl / tiny-flux at 64 px."""
    if not smoke and not torch.cuda.is_available():
        print("(b) skipped: no CUDA GPU on this machine (full-size SDXL and FLUX variants: s/step, FLOPs, MFU, memory)")
        return
    cuda = not smoke
    from mudi.adapters.registry import load_backbone

    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        print(f"(b) {torch.cuda.get_device_name()}, dense bf16 peak {peak_tflops()} TFLOP/s, torch {torch.__version__}")
    def runnable(variants: list) -> list:  # the CPU smoke skips what needs CUDA or minutes of compiling
        return variants if cuda else [v for v in variants if not any(k in v[1] for k in
                                                                     ("fp8_base_weights", "use_8bit_adam", "compile"))]

    for family in families:
        variants = runnable(SDXL_VARIANTS if family == "sdxl" else FLUX_VARIANTS)
        if family == "sdxl":
            build = (lambda: build_sdxl("cuda", torch.bfloat16)) if cuda else (lambda: load_backbone("tiny-sdxl"))
            res, extra = (1024 if cuda else 64), {"train_batch_size": 2}
        else:
            build = (lambda: build_flux("cuda", torch.bfloat16)) if cuda else (lambda: load_backbone("tiny-flux"))
            res, extra = (512 if cuda else 64), {"train_batch_size": 1, "gradient_accumulation_steps": 4}
        probe = build()
        print(f"  {family}: {sum(p.numel() for p in probe.denoiser.parameters()) / 1e9:.2f} B-parameter denoiser, "
              f"{res}², attention kernel {sdpa_backend(probe)}, {steps} timed steps per variant")
        del probe
        measure(build, family, res, steps, extra, variants, cuda)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--gpu-steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-gpu", action="store_true")
    ap.add_argument("--only-gpu", action="store_true", help="skip part (a)")
    ap.add_argument("--smoke", action="store_true", help="run part (b)'s code on the CPU with tiny models")
    ap.add_argument("--families", default="sdxl,flux", help="part (b): sdxl, flux or both")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.only_gpu or args.smoke):
        part_a(args.steps)
    if not args.skip_gpu:
        part_b(args.gpu_steps, smoke=args.smoke, families=tuple(args.families.split(",")))


if __name__ == "__main__":
    main()
