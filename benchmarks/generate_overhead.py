"""Wall time of MuDI's mean-shifted init against plain generation, side by side in one run.

Part (a), CPU, tiny backbones (64x64 px, the same seeds, steps and batch): ``generate_images(init="none")``
(the plain pipeline) vs ``generate_images(gamma=2)`` (compose x_init per image + one batched VAE encode +
the mean shift, then the same pipeline). Runs alternate A/B/A/B…; the best (and median) of each is
reported, and the init's own parts are timed separately (best of N: the machine is shared, so minima are
the least noisy estimate). Target: overhead <= 5 % (paper: 1.1x for its init vs 1.6x for region control).

Part (a) also prints the init's *effect*: the correlation, inside the subjects' mask, between the sampler's
final latents and ``E(x_init) ⊙ M`` for several γ — for FLUX this shows that the SNR-matched coefficient
carries the composition through flow-matching sampling although the first sigma is 1.

Part (b), only when CUDA is available: full-size SDXL built from its config (random weights, fp16) at
1024x1024, 30 steps, batch 1, plain vs init. Without a GPU it prints "skipped".

    python benchmarks/generate_overhead.py [--threads 1] [--steps 30] [--repeats 5] [--batch 4] [--only-gpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from importlib.resources import files
from pathlib import Path

import torch

from fullsize import build_sd15, build_sdxl  # benchmarks/fullsize.py (scripts run from benchmarks/)
from mudi.adapters.registry import load_backbone
from mudi.core.init_latents import masked_correlation
from mudi.data.subjects import load_subjects
from mudi.sampling.images import _generators, _pipeline_call, generate_images
from mudi.sampling.init import build_initial_latents, compose_init

SAMPLES = Path(str(files("mudi") / "samples"))


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def overhead_tiny(name: str, subjects, steps: int, repeats: int, batch: int, size: int = 64) -> None:
    bb = load_backbone(name)
    seeds = list(range(batch))
    kw = dict(num_inference_steps=steps, height=size, width=size, batch_size=batch, progress=False)
    plain = lambda: generate_images(bb, "a photo of a dog and a cat", seeds, init="none", **kw)  # noqa: E731
    init = lambda: generate_images(bb, "a photo of a dog and a cat", seeds, subjects, gamma=2.0, **kw)  # noqa: E731
    plain(), init()  # warm-up
    a, b = [], []
    for _ in range(repeats):
        a.append(_time(plain))
        b.append(_time(init))
    comps: list = []
    t_comp = min(_time(lambda: comps.__setitem__(slice(None), [compose_init(subjects, s, (size, size))[0]
                                                                 for s in seeds])) for _ in range(repeats))
    t_lat = min(_time(lambda: build_initial_latents(bb, comps, _generators(bb, seeds), 2.0, steps))
                for _ in range(repeats))
    ma, mb = min(a), min(b)
    parts = t_comp + t_lat
    print(f"{name:10s} plain {ma * 1000:7.1f} ms  init {mb * 1000:7.1f} ms  end-to-end ratio {mb / ma:5.3f} "
          f"(medians {statistics.median(a) * 1000:.0f}/{statistics.median(b) * 1000:.0f} ms)  init parts: "
          f"compose {t_comp * 1000:.1f} ms + encode/shift {t_lat * 1000:.1f} ms = {parts / ma * 100:.1f} % of plain")


def effect_tiny(name: str, subjects, steps: int, size: int = 64, n: int = 8) -> None:
    bb = load_backbone(name)
    seeds = list(range(n))
    comps = [compose_init(subjects, s, (size, size))[0] for s in seeds]
    _, ref = build_initial_latents(bb, comps, _generators(bb, seeds), 1.0, steps)
    E, M = ref["init_latents"], ref["latent_mask"]
    row = []
    for gamma in (0.0, 1.0, 2.0, 3.0, 4.0):
        z, _ = build_initial_latents(bb, comps, _generators(bb, seeds), gamma, steps)
        out = _pipeline_call(bb, ["a photo"] * n, _generators(bb, seeds), z, "sticker, collage.", steps, None,
                             size, size, output_type="latent")
        if bb.family == "flux":
            out = bb.from_pipeline_latents(out, size, size)
        row.append((gamma, masked_correlation(z, E * M, M), masked_correlation(out.float(), E * M, M)))
    cells = "  ".join(f"γ={g:g}: {c0:+.3f}→{c1:+.3f}" for g, c0, c1 in row)
    print(f"{name:10s} std(E)={float(E.std()):.3f} c={ref['signal_coefficient']:.4f}  corr(initial→final "
          f"latents, E⊙M) inside M  {cells}")


def sdxl_full_gpu(steps: int, repeats: int = 3, smoke: bool = False) -> None:
    """``smoke``: the same code on the CPU with tiny-sdxl at 64 px (checks the plumbing where no GPU is)."""
    if not smoke and not torch.cuda.is_available():
        print("full-size SDXL (1024x1024, 30 steps, fp16): skipped (no CUDA device)")
        return
    if smoke:
        bb, size, sync, where = load_backbone("tiny-sdxl"), 64, (lambda: None), "CPU (smoke, tiny-sdxl)"
    else:
        bb, size, sync = build_sdxl("cuda", torch.float16, upcast_vae=False), 1024, torch.cuda.synchronize
        where = torch.cuda.get_device_name()
    subjects = load_subjects([SAMPLES / "dog6", SAMPLES / "cat2"])
    kw = dict(num_inference_steps=steps, height=size, width=size, batch_size=1, progress=False)

    def run(init: bool) -> float:
        sync()
        t = time.perf_counter()
        if init:
            generate_images(bb, "a photo", [0], subjects, gamma=2.0, **kw)
        else:
            generate_images(bb, "a photo", [0], init="none", **kw)
        sync()
        return time.perf_counter() - t

    def parts() -> tuple[float, float]:
        sync()
        t = time.perf_counter()
        comps = [compose_init(subjects, 0, (size, size))[0]]
        t_comp = time.perf_counter() - t
        build_initial_latents(bb, comps, _generators(bb, [0]), 2.0, steps)
        sync()
        return t_comp, time.perf_counter() - t - t_comp

    run(False), run(True)
    a, b = [], []
    for _ in range(repeats):
        a.append(run(False))
        b.append(run(True))
    t_comp, t_lat = min(parts() for _ in range(3))
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"full-size SDXL {size}x{size} {steps} steps fp16 on {where}: plain {ma:.2f} s, init {mb:.2f} s "
          f"(medians of {repeats} alternating runs; best {min(a):.2f} / {min(b):.2f} s), ratio {mb / ma:.3f}; init parts: compose {t_comp * 1000:.0f} ms + "
          f"encode/shift {t_lat * 1000:.0f} ms = {(t_comp + t_lat) / ma * 100:.1f} % of plain")


def sd15_full_cpu(steps: int, size: int, repeats: int) -> None:
    """Full-size SD1.5 architecture (860M-parameter UNet, SD VAE, CLIP ViT-L text encoder) built from its
    config with random weights, on the CPU at ``size``²: the tiny backbones are dominated by per-op overhead
    (a tiny VAE encode costs as much as ~2 tiny UNet calls), full-size models by FLOPs, as on a GPU."""
    bb = build_sd15("cpu", torch.float32)
    subjects = load_subjects([SAMPLES / "dog6", SAMPLES / "cat2"])
    kw = dict(num_inference_steps=steps, height=size, width=size, batch_size=1, progress=False)
    plain = lambda: generate_images(bb, "a photo of a dog and a cat", [0], init="none", **kw)  # noqa: E731
    init = lambda: generate_images(bb, "a photo of a dog and a cat", [0], subjects, gamma=2.0, **kw)  # noqa: E731
    with torch.no_grad():
        generate_images(bb, "warm-up", [0], subjects, gamma=2.0, **{**kw, "num_inference_steps": 2})
    a, b = [], []
    for _ in range(repeats):
        a.append(_time(plain))
        b.append(_time(init))
    comps = [compose_init(subjects, 0, (size, size))[0]]
    t_lat = min(_time(lambda: build_initial_latents(bb, comps, _generators(bb, [0]), 2.0, steps)) for _ in range(3))
    ma, mb = min(a), min(b)
    print(f"sd15 (full size, from config) {size}x{size}, {steps} steps, batch 1: plain {ma:.2f} s  init {mb:.2f} s  "
          f"end-to-end ratio {mb / ma:.3f}  init parts (encode/shift) {t_lat * 1000:.0f} ms = "
          f"{t_lat / ma * 100:.1f} % of plain")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--full-cpu", action="store_true",
                   help="also time the full-size SD1.5 architecture on the CPU (several minutes)")
    p.add_argument("--full-cpu-size", type=int, default=256)
    p.add_argument("--full-cpu-repeats", type=int, default=2)
    p.add_argument("--only-full-cpu", action="store_true", help="skip the tiny backbones")
    p.add_argument("--only-gpu", action="store_true", help="only part (b)")
    p.add_argument("--smoke", action="store_true", help="run part (b)'s code on the CPU with tiny-sdxl")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    subjects = load_subjects([SAMPLES / "dog6", SAMPLES / "cat2"])
    for s in subjects:
        s.cutouts(max_side=64)
    if args.only_gpu or args.smoke:
        print("(b) GPU")
        sdxl_full_gpu(args.steps if args.smoke else 30, args.repeats, smoke=args.smoke)
        return
    if not args.only_full_cpu:
        print(f"(a) tiny backbones, 64x64, {args.steps} steps, batch {args.batch}, {args.threads} thread(s), "
              f"best of {args.repeats} alternating runs")
        for name in ("tiny-sd", "tiny-sdxl", "tiny-flux"):
            overhead_tiny(name, subjects, args.steps, args.repeats, args.batch)
        print(f"(a') effect of the init, {args.steps} steps, 8 seeds")
        for name in ("tiny-sd", "tiny-sdxl", "tiny-flux"):
            effect_tiny(name, subjects, args.steps)
    args.full_cpu = args.full_cpu or args.only_full_cpu
    if args.full_cpu:
        print(f"(a'') full-size SD1.5 architecture on the CPU, {args.full_cpu_size}x{args.full_cpu_size}, "
              f"{args.steps} steps, best of {args.full_cpu_repeats} alternating runs")
        sd15_full_cpu(args.steps, args.full_cpu_size, args.full_cpu_repeats)
    print("(b) GPU")
    sdxl_full_gpu(30, args.repeats)


if __name__ == "__main__":
    main()
