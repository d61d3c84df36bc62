"""The toy-world model's measured scores (as in src/mudi/toyworld/model/MODEL_CARD.md and docs/toyworld.md).

    OMP_NUM_THREADS=1 python benchmarks/toyworld_scores.py [--model DIR] [--num_images 128] [--cfg 3 4 5]

Prints (and with --json writes) three rows of numbers:
1. the checker on ground-truth renders (its calibration), 1 and 2 objects;
2. the checker on the same renders after a VAE round trip (the ceiling any sample can reach);
3. the base scores: fraction of generated images the checker calls correct, 1 and 2 objects, per CFG scale,
   prompts = captions of random scenes, one seeded generator per image, DDIM ``--steps`` steps.
``--sheet PNG`` saves a contact sheet of the first 32 two-object samples at the first CFG.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mudi.toyworld import MODEL_DIR
from mudi.toyworld.checker import calibrate, check_image, summarize
from mudi.toyworld.pretrain import base_scores, generate_scenes, load_toyworld_pipeline, to_pixels
from mudi.toyworld.world import render_scene, sample_scene


@torch.no_grad()
def vae_ceiling(pipe, num_images: int, seed: int = 0) -> dict:
    out = {}
    vae = pipe.vae
    for num_objects in (1, 2):
        rng = np.random.default_rng([seed, num_objects, 7])
        scenes = [sample_scene(rng, two_object_prob=float(num_objects == 2)) for _ in range(num_images)]
        images = np.stack([render_scene(s)[0] for s in scenes])
        x = to_pixels(images).to(vae.dtype)
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample.float().clamp(-1, 1)
        rec = ((rec + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        out[num_objects] = summarize([check_image(r, s.objects) for r, s in zip(rec, scenes)])
    return out


def contact_sheet(images: np.ndarray, path: Path, columns: int = 8, zoom: int = 4) -> None:
    from PIL import Image

    n = len(images) // columns * columns
    rows = images[:n].reshape(-1, columns, *images.shape[1:])
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    parser.add_argument("--num_images", type=int, default=128)
    parser.add_argument("--cfg", type=float, nargs="+", default=[3.0, 4.0, 5.0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibration_images", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--sheet", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe = load_toyworld_pipeline(args.model)
    result = {"model": str(args.model), "num_images": args.num_images, "steps": args.steps, "seed": args.seed}
    result["calibration"] = calibrate(args.calibration_images, seed=args.seed)
    print("checker on ground truth:", {k: v["accuracy"] for k, v in result["calibration"].items()})
    result["vae_ceiling"] = vae_ceiling(pipe, args.calibration_images // 2, seed=args.seed)
    print("checker after a VAE round trip:", {k: v["accuracy"] for k, v in result["vae_ceiling"].items()})
    result["base"] = {}
    for cfg in args.cfg:
        for num_objects in (1, 2):
            t0 = time.time()
            s = base_scores(pipe, num_objects, args.num_images, seed=args.seed, guidance_scale=cfg,
                            num_inference_steps=args.steps)
            result["base"][f"cfg{cfg:g}_{num_objects}obj"] = s
            print(f"base cfg={cfg:g} objects={num_objects}: {s['accuracy']:.3f} (n={s['n']}) {s['verdicts']} "
                  f"[{time.time() - t0:.0f} s]", flush=True)
    if args.sheet:
        _, images = generate_scenes(pipe, 2, 32, seed=args.seed, guidance_scale=args.cfg[0],
                                    num_inference_steps=args.steps)
        contact_sheet(images, args.sheet)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
