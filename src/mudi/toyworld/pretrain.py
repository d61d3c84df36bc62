"""Pretrain the toy-world diffusion model on CPU; save it as a diffusers ``StableDiffusionPipeline`` folder.

    OMP_NUM_THREADS=1 python -m mudi.toyworld.pretrain --out runs/toyworld --seed 0

Three stages, each resumable from ``<out>/work/`` (atomic writes; rerun the same command after a crash):

1. **VAE** — ``AutoencoderKL`` with blocks (32, 64): scale factor 2, 4 latent channels (32 px ↔ 16×16);
   MSE + a small KL term. ``scaling_factor`` = 1 / std of the latents of the training set.
2. **Latents** — the VAE posterior (mean, std) of every training image, computed once.
3. **Text encoder + UNet, jointly** — a 3-layer 128-d ``CLIPTextModel`` over a word-level tokenizer
   (:mod:`mudi.toyworld.tokenizer`) and a ``UNet2DConditionModel`` with blocks (32, 64, 128), cross-attention
   at 8×8 and 4×4 only; ε-prediction on a cosine schedule, min-SNR-5 loss weights, 10 % caption dropout,
   AdamW with warm-up and cosine decay, EMA of the weights (the EMA is what is saved).

The batch and the noise of step ``k`` come from generators seeded by ``(seed, stage, k)``, so a resumed run
equals an uninterrupted one; with ``torch.set_num_threads(1)`` the result is deterministic given the seed.
The identifier words (``olis``, ``hta``, …) are in the vocabulary but never in a caption: their embedding
rows are set to random vectors at the mean norm of the trained word rows before saving.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mudi.cliargs import add_config_arguments, load_from_args
from mudi.io import atomic_dir, atomic_path
from mudi.toyworld.denoiser_step import DenoiserData, copy_weights, cosine_lr, denoiser_step, step_generators
from mudi.toyworld.tokenizer import build_word_tokenizer, word_token_ids, write_slow_tokenizer_files
from mudi.toyworld.world import IDENTIFIERS, RESOLUTION, caption_vocabulary, sample_dataset

log = logging.getLogger(__name__)
TEXT_LENGTH = 77  # the shipped model's tokens per prompt (CLIP's): no caption or prompt mudi writes is cut (v1: 32)


@dataclass
class PretrainConfig:
    """Every setting of a pretraining run (the defaults made v2, ``benchmarks/toyworld_pretrain_v2.yaml``, which the
    shipped v2.2 trains on; v1's are ``toyworld_pretrain_v1.yaml``; see model/MODEL_CARD.md)."""

    seed: int = 0  # data, initial weights, every batch and noise draw
    num_images: int = 60000  # training scenes (v1: 40 000)
    vae_steps: int = 1200
    vae_batch_size: int = 32
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-4  # weight of the per-element KL term next to the per-element MSE
    steps: int = 8000  # UNet + text encoder steps (v1: 5000)
    batch_size: int = 64  # (v1: 32)
    lr: float = 5e-4  # peak; warm-up, then cosine decay to 10 %
    warmup_steps: int = 400  # (v1: 200)
    weight_decay: float = 0.01
    caption_dropout_prob: float = 0.1  # empty caption, for classifier-free guidance
    text_length: int = TEXT_LENGTH  # tokenizer model_max_length and text positions
    text_layers: int = 3  # CLIPTextModel layers (128-d, 4 heads)
    full_resolution_attention: bool = False  # cross-attention at 16×16 too, not only at 8×8 and 4×4
    two_object_prob: float = 0.75  # share of training scenes with two objects (v1: 0.6)
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    checkpoint_every: int = 250  # steps between resumable checkpoints in <out>/work/
    save_dtype: str = "float16"  # UNet and VAE of <out>/pipeline; <out>/pipeline_fp32 is always written

    def __post_init__(self) -> None:
        from mudi.errors import MudiError

        counts = ("num_images", "vae_steps", "vae_batch_size", "steps", "batch_size", "checkpoint_every",
                  "text_length", "text_layers")
        for name in counts:
            if getattr(self, name) < 1:
                raise MudiError(f"pretrain: {name} must be >= 1, got {getattr(self, name)}")
        if self.save_dtype not in ("float16", "float32"):
            raise MudiError(f"pretrain: save_dtype must be float16 or float32, got {self.save_dtype!r}")
        if not 0 <= self.two_object_prob <= 1:
            raise MudiError(f"pretrain: two_object_prob must be in [0, 1], got {self.two_object_prob}")
        if not 0 <= self.caption_dropout_prob < 1:
            raise MudiError(f"pretrain: caption_dropout_prob must be in [0, 1), "
                            f"got {self.caption_dropout_prob}")


# ------------------------------------------------------------------------------------------------- models
def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
                         down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2,
                         layers_per_block=1, norm_num_groups=32, sample_size=RESOLUTION,
                         mid_block_add_attention=False)


def build_text_encoder(vocab_size: int, text_length: int = TEXT_LENGTH, layers: int = 3):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=128, intermediate_size=512, num_attention_heads=4,
                         num_hidden_layers=layers, max_position_embeddings=text_length, projection_dim=128,
                         bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                         pad_token_id=vocab_size - 1,
                         hidden_act="quick_gelu", layer_norm_eps=1e-5)
    return CLIPTextModel(cfg)


def build_unet(full_resolution_attention: bool = False):
    from diffusers import UNet2DConditionModel

    top = "CrossAttn" if full_resolution_attention else ""  # the 16×16 blocks
    return UNet2DConditionModel(sample_size=RESOLUTION // 2, in_channels=4, out_channels=4,
                                block_out_channels=(32, 64, 128), layers_per_block=1, norm_num_groups=16,
                                down_block_types=(f"{top}DownBlock2D", "CrossAttnDownBlock2D",
                                                  "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", f"{top}UpBlock2D"),
                                cross_attention_dim=128,
                                # diffusers reads this as the number of heads per block: 32-d heads
                                attention_head_dim=(1, 2, 4))


def build_schedulers():
    """``(training DDPMScheduler, sampling DDIMScheduler)`` on the same cosine schedule."""
    from diffusers import DDIMScheduler, DDPMScheduler

    common = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                  clip_sample=False)
    return DDPMScheduler(**common), DDIMScheduler(**common, set_alpha_to_one=False, steps_offset=1)


def build_denoiser(cfg: PretrainConfig, vocab_size: int):
    """``(unet, text_encoder)`` of ``cfg``'s architecture (the networks a run's denoiser checkpoint holds)."""
    return build_unet(cfg.full_resolution_attention), build_text_encoder(vocab_size, cfg.text_length, cfg.text_layers)


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------------- disk
def atomic_save(obj, path: Path) -> None:
    """``torch.save`` through :func:`mudi.io.atomic_path`: a crash never leaves a half-written checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def record(out: Path, **fields) -> None:
    """One line of ``<out>/work/log.jsonl`` (the run's progress, for plots), also logged."""
    line = json.dumps(fields)
    log.info("toyworld pretrain: %s", line)
    with open(out / "work" / "log.jsonl", "a", encoding="utf-8") as f:
        f.write(line + "\n")


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 → ``(B, 3, H, W)`` float in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


# ------------------------------------------------------------------------------------------- stage 1: VAE
def train_vae(cfg: PretrainConfig, images: np.ndarray, out: Path):
    path = out / "work" / "vae.pt"
    torch.manual_seed(cfg.seed)  # initial weights (script, not library: it owns the process)
    vae = build_vae()
    state = torch.load(path, weights_only=False) if path.exists() else None
    if state is not None and state["step"] >= cfg.vae_steps:
        vae.load_state_dict(state["model"])
        return vae
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    start = 0
    if state is not None:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    vae.train()
    bar = tqdm(range(start, cfg.vae_steps), desc="vae", initial=start, total=cfg.vae_steps, mininterval=10)
    for step in bar:
        rng, gen = step_generators(cfg.seed, 1, step)
        x = to_pixels(images[rng.integers(len(images), size=cfg.vae_batch_size)])
        lr = cfg.vae_lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / cfg.vae_steps))
        for g in opt.param_groups:
            g["lr"] = lr
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        mse = F.mse_loss(rec, x)
        kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).mean()
        loss = mse + cfg.vae_kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(mse=f"{mse.item():.5f}", kl=f"{kl.item():.3f}", refresh=False)
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == cfg.vae_steps:
            atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": done}, path)
            record(out, stage="vae", step=done, mse=mse.item(), kl=kl.item(), time=time.time())
    return vae


# --------------------------------------------------------------------------------------- stage 2: latents
@torch.no_grad()
def encode_latents(vae, images: np.ndarray, out: Path, batch_size: int = 500
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` of the posterior, each ``(N, 4, 16, 16)``; cached in ``work/latents.pt``."""
    path = out / "work" / "latents.pt"
    if path.exists():
        cached = torch.load(path)
        return cached["mean"], cached["std"]
    vae.eval()
    means, stds = [], []
    for i in tqdm(range(0, len(images), batch_size), desc="latents", mininterval=10):
        post = vae.encode(to_pixels(images[i:i + batch_size])).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    mean, std = torch.cat(means), torch.cat(stds)
    atomic_save({"mean": mean, "std": std}, path)
    return mean, std


# ----------------------------------------------------------------------------------- stage 3: UNet + text
def save_denoiser_checkpoint(path: Path, unet, text_encoder, opt, ema: list, step: int) -> None:
    """The denoiser's checkpoint (weights, optimizer, EMA, steps done): what a rerun resumes from and what
    ``benchmarks/toyworld_finetune.py --init`` starts from (its ``ema``)."""
    atomic_save({"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), "opt": opt.state_dict(),
                 "ema": ema, "step": step}, path)


def restore_denoiser_checkpoint(path: Path, unet, text_encoder, opt, ema: list) -> tuple[list, int]:
    """Load ``path``'s weights and optimizer state if it exists; its ``(ema, step)``, else ``(ema, 0)``."""
    if not path.exists():
        return ema, 0
    state = torch.load(path, weights_only=False)
    unet.load_state_dict(state["unet"])
    text_encoder.load_state_dict(state["text_encoder"])
    opt.load_state_dict(state["opt"])
    return state["ema"], state["step"]


def train_denoiser(cfg: PretrainConfig, data: DenoiserData, vocab_size: int, out: Path):
    path = out / "work" / "denoiser.pt"
    torch.manual_seed(cfg.seed + 1)  # initial weights
    unet, text_encoder = build_denoiser(cfg, vocab_size)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema, start = restore_denoiser_checkpoint(path, unet, text_encoder, opt, [p.detach().clone() for p in params])
    train_sched, _ = build_schedulers()
    unet.train()
    text_encoder.train()
    bar = tqdm(range(start, cfg.steps), desc="unet+text", initial=start, total=cfg.steps, mininterval=10)
    for step in bar:
        lr = cosine_lr(cfg.lr, step, cfg.steps, cfg.warmup_steps)
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        loss = denoiser_step(cfg, unet, text_encoder, params, opt, ema, data, train_sched,
                             stage=3, step=step, lr=lr, ema_decay=decay)
        done = step + 1
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.1e}", refresh=False)
        if done % 50 == 0:
            record(out, stage="denoiser", step=done, loss=loss, lr=lr, time=time.time())
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            save_denoiser_checkpoint(path, unet, text_encoder, opt, ema, done)
    copy_weights(params, ema)
    return unet.eval(), text_encoder.eval()


def set_identifier_rows(text_encoder, tokenizer, seed: int) -> dict:
    """Identifier rows ← random directions at the mean norm of the rows of the words captions use."""
    emb = text_encoder.get_input_embeddings().weight
    word_ids = word_token_ids(tokenizer, caption_vocabulary())
    ident_ids = word_token_ids(tokenizer, list(IDENTIFIERS))
    with torch.no_grad():
        norm = emb[word_ids].norm(dim=1).mean()
        g = torch.Generator().manual_seed(seed + 17)
        v = torch.randn(len(ident_ids), emb.shape[1], generator=g)
        emb[ident_ids] = v / v.norm(dim=1, keepdim=True) * norm
    return {"word_row_mean_norm": float(norm), "identifier_ids": ident_ids}


# ----------------------------------------------------------------------------------------------- assembly
def assemble_pipeline(vae, text_encoder, tokenizer, unet):
    from diffusers import StableDiffusionPipeline

    _, ddim = build_schedulers()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=ddim, safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_pipeline(pipe, folder: Path, dtype: torch.dtype) -> None:
    """``save_pretrained`` (UNet and VAE in ``dtype``, the text encoder always in float32) into a temporary
    folder that then replaces ``folder`` (:func:`mudi.io.atomic_dir`). A float32 text encoder keeps a plain
    ``from_pretrained(folder)`` working: diffusers upcasts its own models to float32 by default, transformers
    keeps the saved dtype."""
    pipe.unet.to(dtype=dtype)
    pipe.vae.to(dtype=dtype)
    pipe.text_encoder.to(dtype=torch.float32)
    with atomic_dir(folder) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        write_slow_tokenizer_files(caption_vocabulary() + list(IDENTIFIERS), tmp / "tokenizer")


VAE_FIELDS = ("seed", "num_images", "two_object_prob", "vae_steps", "vae_batch_size", "vae_lr", "vae_kl_weight")
UNUSED_BY_WEIGHTS = ("checkpoint_every", "save_dtype")  # the denoiser's checkpoint depends on every other setting


def check_resumable(cfg: PretrainConfig, work: Path) -> None:
    """Refuse to resume ``work`` under other settings than its checkpoints (``VAE_FIELDS`` for the VAE and latents)
    were made with: a changed step count would bend a half-trained model's schedule. A stage not yet checkpointed
    may change (one run's VAE and latents can seed another); keys an older config.json lacks read as defaults."""
    from mudi.errors import MudiError

    if not (work / "config.json").is_file():
        return
    saved = {f.name: f.default for f in fields(PretrainConfig)} | json.loads((work / "config.json").read_text())
    now = asdict(cfg)
    stages = {"vae.pt": VAE_FIELDS, "latents.pt": VAE_FIELDS,
              "denoiser.pt": tuple(k for k in now if k not in UNUSED_BY_WEIGHTS)}
    for name, keys in stages.items():
        if not (work / name).exists():
            continue
        changed = [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in keys if saved.get(k) != now[k]]
        if changed:
            raise MudiError(f"pretrain: {work / name} was made with other settings ({'; '.join(changed)}); "
                            "rerun with the settings of its config.json, or pass a new --out")


def run(cfg: PretrainConfig, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "work").mkdir(exist_ok=True)
    check_resumable(cfg, out / "work")
    (out / "work" / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    t0 = time.time()
    images, captions, _ = sample_dataset(cfg.num_images, cfg.seed, two_object_prob=cfg.two_object_prob)
    record(out, stage="data", num_images=len(images), seconds=time.time() - t0)
    vae = train_vae(cfg, images, out).eval().requires_grad_(False)
    mean, std = encode_latents(vae, images, out)
    scaling = float(1.0 / mean.std())
    vae.register_to_config(scaling_factor=scaling)
    tokenizer = build_word_tokenizer(caption_vocabulary() + list(IDENTIFIERS), model_max_length=cfg.text_length)
    data = DenoiserData.from_captions(mean, std, scaling, tokenizer, captions, cfg.text_length)
    unet, text_encoder = train_denoiser(cfg, data, len(tokenizer), out)
    rows = set_identifier_rows(text_encoder, tokenizer, cfg.seed)
    pipe = assemble_pipeline(vae, text_encoder, tokenizer, unet)
    save_pipeline(pipe, out / "pipeline_fp32", torch.float32)
    save_pipeline(pipe, out / "pipeline", getattr(torch, cfg.save_dtype))
    info = {"config": asdict(cfg), "scaling_factor": scaling, **rows, "seconds": time.time() - t0,
            "params": {"vae": count_params(vae), "text_encoder": count_params(text_encoder),
                       "unet": count_params(unet)}}
    (out / "pretrain_info.json").write_text(json.dumps(info, indent=2))
    return out / "pipeline"


# -------------------------------------------------------------------------------------------- base scores
def load_toyworld_pipeline(folder: str | Path | None = None, dtype: torch.dtype = torch.float32):
    """The pretrained toy-world ``StableDiffusionPipeline`` (default: the one shipped in
    ``mudi/toyworld/model``)."""
    from diffusers import StableDiffusionPipeline

    from mudi.errors import MudiError
    from mudi.toyworld import MODEL_DIR

    folder = Path(folder) if folder is not None else MODEL_DIR
    if not (folder / "model_index.json").is_file():
        raise MudiError(f"{folder}: no toy-world model (model_index.json missing); train one with "
                        "`python -m mudi.toyworld.pretrain --out DIR` and pass DIR/pipeline")
    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate_scenes(pipe, num_objects: int, num_images: int, seed: int = 0, guidance_scale: float = 4.0,
                    num_inference_steps: int = 30, batch_size: int = 32) -> tuple[list, np.ndarray]:
    """``(scenes, images (N, 32, 32, 3) uint8)``: the captions of ``num_images`` random scenes with
    ``num_objects`` objects (drawn from ``seed``), each generated from its own seeded ``torch.Generator``."""
    from mudi.toyworld.world import caption_scene, sample_scene

    rng = np.random.default_rng([seed, num_objects])
    scenes = [sample_scene(rng, two_object_prob=float(num_objects == 2)) for _ in range(num_images)]
    images = []
    for i in range(0, num_images, batch_size):
        chunk = scenes[i:i + batch_size]
        gens = [torch.Generator().manual_seed(seed * 100003 + i + j) for j in range(len(chunk))]
        out = pipe([caption_scene(s) for s in chunk], height=RESOLUTION, width=RESOLUTION,
                   num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, generator=gens,
                   output_type="np")
        images.append(np.clip(np.rint(out.images * 255), 0, 255).astype(np.uint8))
    return scenes, np.concatenate(images)


def base_scores(pipe, num_objects: int, num_images: int, seed: int = 0, guidance_scale: float = 4.0,
                num_inference_steps: int = 30, batch_size: int = 32) -> dict:
    """The checker's summary (:func:`mudi.toyworld.checker.summarize`) of :func:`generate_scenes`."""
    from mudi.toyworld.checker import check_image, summarize

    scenes, images = generate_scenes(pipe, num_objects, num_images, seed, guidance_scale, num_inference_steps,
                                     batch_size)
    return summarize([check_image(im, s.objects) for im, s in zip(images, scenes)])


def main(argv: list[str] | None = None) -> None:
    """``python -m mudi.toyworld.pretrain --out DIR [--<PretrainConfig field> VALUE ...] [--config FILE.yaml]``:
    the flags come from :class:`PretrainConfig` as for every ``mudi`` verb (:mod:`mudi.cliargs`)."""
    parser = argparse.ArgumentParser(prog="python -m mudi.toyworld.pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder (resumes from <out>/work/)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = deterministic)")
    parser.add_argument("--config", help="YAML file of PretrainConfig keys; flags win over it")
    add_config_arguments(parser, PretrainConfig)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(run(load_from_args(PretrainConfig, args), args.out))


if __name__ == "__main__":
    main()
