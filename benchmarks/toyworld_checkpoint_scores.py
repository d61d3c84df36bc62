"""Two-object score of a toy pretraining run's checkpoint, while it trains or after it stopped.

    OMP_NUM_THREADS=1 python benchmarks/toyworld_checkpoint_scores.py --work runs/toyworld-v3/work [--num_images 64]

Loads ``<work>/denoiser.pt`` (a copy: the trainer may replace it meanwhile), builds the UNet and text encoder
its ``config.json`` describes, puts the EMA weights in them (what the run would save) and scores two-object
prompts as ``benchmarks/toyworld_scores.py`` does (same prompts and seeds). The VAE, tokenizer and scheduler come
from ``--pipeline`` (default: the shipped model), which must share the run's stage-1 settings (v2 and the v3
candidate do: same data and VAE).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from mudi.toyworld import MODEL_DIR, pretrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a pretraining run's work folder")
    parser.add_argument("--pipeline", type=Path, default=MODEL_DIR)
    parser.add_argument("--num_images", type=int, default=64)
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = pretrain.PretrainConfig(**json.loads((args.work / "config.json").read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(args.work / "denoiser.pt", Path(tmp) / "denoiser.pt")
        state = torch.load(Path(tmp) / "denoiser.pt", weights_only=False)
    pipe = pretrain.load_toyworld_pipeline(args.pipeline)
    unet, text_encoder = pretrain.build_denoiser(cfg, len(pipe.tokenizer))
    params = list(unet.parameters()) + list(text_encoder.parameters())
    if len(params) != len(state["ema"]) or any(p.shape != e.shape for p, e in zip(params, state["ema"])):
        raise SystemExit(f"{args.work}: the checkpoint does not fit the networks its config.json describes")
    with torch.no_grad():
        for p, e in zip(params, state["ema"]):
            p.copy_(e)
    pipe.unet, pipe.text_encoder = unet.eval(), text_encoder.eval()
    t0 = time.time()
    s = pretrain.base_scores(pipe, 2, args.num_images, seed=0, guidance_scale=args.cfg,
                             num_inference_steps=args.steps)
    print(f"step {state['step']}: two objects {s['accuracy']:.3f} (n={s['n']}) {s['verdicts']} "
          f"[{time.time() - t0:.0f} s]")


if __name__ == "__main__":
    main()
