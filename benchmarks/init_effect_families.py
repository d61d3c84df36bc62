"""Effect of MuDI's mean-shifted init on the issue-26 tiny families (as ``generate_overhead.py`` part (a') does for
SD/SDXL/FLUX.1): the correlation, inside the subjects' mask, between ``E(x_init) ⊙ M`` and the initial and the
final (sampled) latents, for several γ, 8 seeds, 64x64 px.

    python benchmarks/init_effect_families.py [--steps 30] [--backbones tiny-sd3 ...]
"""

from __future__ import annotations

import argparse
from importlib.resources import files
from pathlib import Path

import torch

from mudi.adapters.registry import load_backbone, names
from mudi.core.init_latents import masked_correlation
from mudi.data.subjects import load_subjects
from mudi.sampling.images import _generators, _pipeline_call
from mudi.sampling.init import build_initial_latents, compose_init

SAMPLES = Path(str(files("mudi") / "samples"))
ISSUE_26 = ("tiny-sd3", "tiny-flux2", "tiny-flux2-dev", "tiny-qwen-image", "tiny-z-image")


def effect(name: str, subjects, steps: int, size: int = 64, n: int = 8) -> str:
    bb = load_backbone(name)
    seeds = list(range(n))
    comps = [compose_init(subjects, s, (size, size))[0] for s in seeds]
    _, ref = build_initial_latents(bb, comps, _generators(bb, seeds), 1.0, steps)
    E, M = ref["init_latents"], ref["latent_mask"]
    cells = []
    for gamma in (0.0, 2.0, 3.0, 4.0):
        z, _ = build_initial_latents(bb, comps, _generators(bb, seeds), gamma, steps)
        out = _pipeline_call(bb, ["a photo"] * n, _generators(bb, seeds), z, "sticker, collage.", steps, None,
                             size, size, output_type="latent")
        final = bb.from_pipeline_latents(out, size, size).float()
        cells.append(f"γ={gamma:g}: {masked_correlation(z, E * M, M):+.3f}→{masked_correlation(final, E * M, M):+.3f}")
    return (f"{name:16s} std(E)={float(E.std()):.3f} c={ref['signal_coefficient']:.4f}  corr(initial→final, E⊙M) "
            f"inside M  " + "  ".join(cells))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--backbones", nargs="+", default=[b for b in ISSUE_26 if b in names("backbone")])
    args = p.parse_args()
    torch.set_num_threads(1)
    subjects = load_subjects([SAMPLES / "dog6", SAMPLES / "cat2"])
    print(f"effect of the init, {args.steps} steps, 8 seeds, 64x64")
    for name in args.backbones:
        print(effect(name, subjects, args.steps), flush=True)


if __name__ == "__main__":
    main()
