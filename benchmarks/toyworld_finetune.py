"""Continue training a pretrained toy model's denoiser (issue 24, item 1: two objects all-correct >= 0.70).

    OMP_NUM_THREADS=1 python benchmarks/toyworld_finetune.py --work runs/toyworld-v2/work \
        --pipeline runs/toyworld-v2/pipeline_fp32 --out runs/toyworld-v2ft --steps 2000 --two_object_only

Starts from the EMA weights of ``<work>/denoiser.pt`` (what the run saved) or of ``--init``, with a fresh AdamW,
a short warm-up and a cosine decay to 10 % of ``--lr``, on the run's own scenes and latents (only the two-object
ones with ``--two_object_only``). Deterministic and resumable like the pretraining (per-step generators of stage
``--stage``, 4 by default: a further phase takes a stage of its own, so that it draws fresh batches and noise; a
checkpoint every ``--checkpoint_every`` steps in ``<out>/work``). Every ``--score_every`` steps the EMA weights are
scored on one- and two-object prompts drawn from seed 1 (not the base-score set, seed 0, which judges the result).
The result is a pipeline folder in ``<out>/pipeline`` (float16) and ``<out>/pipeline_fp32``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from mudi.toyworld import pretrain
from mudi.toyworld.denoiser_step import DenoiserData, copy_weights, cosine_lr, denoiser_step
from mudi.toyworld.tokenizer import build_word_tokenizer
from mudi.toyworld.world import IDENTIFIERS, caption_vocabulary, sample_dataset


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="the source pretraining run's work folder")
    p.add_argument("--pipeline", type=Path, required=True, help="the source run's pipeline (tokenizer, VAE)")
    p.add_argument("--init", type=Path, default=None,
                   help="a checkpoint whose EMA weights start the run (default: <work>/denoiser.pt; a finetune's "
                        "<out>/work/denoiser.pt continues it)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--two_object_only", action="store_true")
    p.add_argument("--stage", type=int, default=4,
                   help="the stage number of the per-step generators (phases 1 and 2 of v2.1: 4; a phase that "
                        "continues another one on the same scenes should take a new one, or it replays its batches)")
    p.add_argument("--score_every", type=int, default=500)
    p.add_argument("--score_images", type=int, default=64)
    p.add_argument("--checkpoint_every", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def fresh_components(pipe, text_length: int):
    """The source's VAE and tokenizer built as the pretraining builds them (a loaded one's config would carry its
    local path into the saved folder), checked equal to the loaded ones."""
    vae = pretrain.build_vae()
    vae.load_state_dict(pipe.vae.state_dict())
    vae.register_to_config(scaling_factor=pipe.vae.config.scaling_factor)
    tok = build_word_tokenizer(caption_vocabulary() + list(IDENTIFIERS), model_max_length=text_length)
    if tok.get_vocab() != pipe.tokenizer.get_vocab():
        raise SystemExit("the source pipeline's tokenizer is not the toy world's: pass the run's own --pipeline")
    return vae.eval(), tok


def training_pool(scenes, two_object_only: bool) -> torch.Tensor:
    """Indices of the scenes a batch draws from: all, or the two-object ones."""
    return torch.tensor([i for i, s in enumerate(scenes) if len(s.objects) == 2 or not two_object_only])


def score(pipe, unet, text_encoder, ema, n: int) -> dict:
    """One- and two-object accuracy of the EMA weights on prompts drawn from seed 1 (``n`` images each)."""
    u, t = copy.deepcopy(unet), copy.deepcopy(text_encoder)
    copy_weights(list(u.parameters()) + list(t.parameters()), ema)
    probe = copy.copy(pipe)
    probe.unet, probe.text_encoder = u.eval(), t.eval()
    out = {}
    for k in (1, 2):
        s = pretrain.base_scores(probe, k, n, seed=1)
        out[f"{k}"] = {"accuracy": s["accuracy"], "n": s["n"], "verdicts": s["verdicts"]}
    return out


def main(argv=None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("threads", "checkpoint_every")}
    if (work / "settings.json").exists() and json.loads((work / "settings.json").read_text()) != settings:
        raise SystemExit(f"{work} was made with other settings: pass a new --out")
    (work / "settings.json").write_text(json.dumps(settings, indent=2))
    cfg = pretrain.PretrainConfig(**json.loads((args.work / "config.json").read_text()))
    pipe = pretrain.load_toyworld_pipeline(args.pipeline)
    tok = pipe.tokenizer
    unet, text_encoder = pretrain.build_denoiser(cfg, len(tok))
    params = list(unet.parameters()) + list(text_encoder.parameters())
    copy_weights(params, torch.load(args.init or args.work / "denoiser.pt", weights_only=False)["ema"])
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=cfg.weight_decay)
    path = work / "denoiser.pt"
    ema = [p.detach().clone() for p in params]
    ema, start = pretrain.restore_denoiser_checkpoint(path, unet, text_encoder, opt, ema)
    lat = torch.load(args.work / "latents.pt", weights_only=False)
    _, captions, scenes = sample_dataset(cfg.num_images, cfg.seed, two_object_prob=cfg.two_object_prob)
    data = DenoiserData.from_captions(lat["mean"], lat["std"], float(pipe.vae.config.scaling_factor), tok, captions,
                                      cfg.text_length, pool=training_pool(scenes, args.two_object_only))
    train_sched, _ = pretrain.build_schedulers()
    if start == 0:
        pretrain.record(args.out, stage="finetune", step=0,
                        scores_seed1=score(pipe, unet, text_encoder, ema, args.score_images))
    unet.train()
    text_encoder.train()
    for step in tqdm(range(start, args.steps), initial=start, total=args.steps, mininterval=30, desc="finetune"):
        lr = cosine_lr(args.lr, step, args.steps, args.warmup)
        loss = denoiser_step(cfg, unet, text_encoder, params, opt, ema, data, train_sched,
                             stage=args.stage, step=step, lr=lr, ema_decay=cfg.ema_decay)
        done = step + 1
        fields = {"step": done, "loss": loss, "lr": lr, "time": time.time()}
        if done % args.score_every == 0 or done == args.steps:
            fields["scores_seed1"] = score(pipe, unet, text_encoder, ema, args.score_images)
        if done % 50 == 0 or "scores_seed1" in fields:
            pretrain.record(args.out, stage="finetune", **fields)
        if done % args.checkpoint_every == 0 or done == args.steps:
            pretrain.save_denoiser_checkpoint(path, unet, text_encoder, opt, ema, done)
    copy_weights(params, ema)
    pretrain.set_identifier_rows(text_encoder, tok, cfg.seed)
    vae, fresh_tok = fresh_components(pipe, cfg.text_length)
    out_pipe = pretrain.assemble_pipeline(vae, text_encoder.eval(), fresh_tok, unet.eval())
    pretrain.save_pipeline(out_pipe, args.out / "pipeline_fp32", torch.float32)
    pretrain.save_pipeline(out_pipe, args.out / "pipeline", torch.float16)
    print(f"saved {args.out / 'pipeline'}")


if __name__ == "__main__":
    main()
