"""One training step of the toy model's denoiser (text encoder + UNet, jointly), shared by the pretraining's
stage 3 (:func:`mudi.toyworld.pretrain.train_denoiser`) and the continued training of
``benchmarks/toyworld_finetune.py``.

The batch and the noise of step ``k`` come from generators seeded by ``(seed, stage, k)``, so a resumed run equals
an uninterrupted one. The float operations are in the order the pretraining has always used: a toy model rebuilt
with its recorded commands is bit-identical on the same CPU type and thread count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class DenoiserData:
    """What a step draws from: the VAE posterior of every training image (``latent_mean``, ``latent_std``), the
    latents' ``scaling`` factor, the captions' token ids, the empty caption's, and optionally a ``pool`` of the
    image indices a batch may take (all images when ``None``)."""

    latent_mean: torch.Tensor
    latent_std: torch.Tensor
    scaling: float
    input_ids: torch.Tensor
    empty_ids: torch.Tensor
    pool: torch.Tensor | None = None

    @classmethod
    def from_captions(cls, latent_mean, latent_std, scaling: float, tokenizer, captions: list[str], text_length: int,
                      pool: torch.Tensor | None = None) -> DenoiserData:
        """The captions and the empty caption tokenized to ``text_length`` positions (padded), with the latents."""
        def ids(texts):
            return torch.tensor(tokenizer(texts, padding="max_length", max_length=text_length)["input_ids"])

        return cls(latent_mean, latent_std, scaling, ids(captions), ids([""])[0], pool)


def step_generators(seed: int, stage: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """Stateless per-step randomness: the same ``(seed, stage, step)`` gives the same batch and noise."""
    rng = np.random.default_rng([seed, stage, step])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return rng, gen


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ loss weights for ε-prediction (Hang et al. 2023): ``min(SNR, γ) / SNR``."""
    ac = scheduler.alphas_cumprod[timesteps]
    snr = ac / (1 - ac)
    return torch.clamp(snr, max=gamma) / snr


def cosine_lr(peak: float, step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine decay from ``peak`` to 10 % of it at ``steps``."""
    return peak * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))


def draw_batch(cfg, data: DenoiserData, num_train_timesteps: int, stage: int, step: int):
    """Step ``step``'s batch: token ids (captions dropped to empty with ``cfg.caption_dropout_prob``), clean
    latents sampled from the posteriors, noise and timesteps."""
    rng, gen = step_generators(cfg.seed, stage, step)
    n = len(data.latent_mean) if data.pool is None else len(data.pool)
    idx = torch.from_numpy(rng.integers(n, size=cfg.batch_size))
    if data.pool is not None:
        idx = data.pool[idx]
    drop = torch.from_numpy(rng.random(cfg.batch_size) < cfg.caption_dropout_prob)
    ids = torch.where(drop[:, None], data.empty_ids[None, :], data.input_ids[idx])
    eps_post = torch.randn(data.latent_mean[idx].shape, generator=gen)
    x0 = (data.latent_mean[idx] + data.latent_std[idx] * eps_post) * data.scaling
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, num_train_timesteps, (cfg.batch_size,), generator=gen)
    return ids, x0, noise, t


def denoiser_step(cfg, unet, text_encoder, params: list, opt, ema: list, data: DenoiserData, train_sched, *,
                  stage: int, step: int, lr: float, ema_decay: float) -> float:
    """One optimizer step at learning rate ``lr``: ε-prediction with min-SNR weights (``cfg.min_snr_gamma``),
    gradients clipped to norm 1, then ``ema`` ← lerp towards ``params`` by ``1 - ema_decay``. Returns the loss."""
    ids, x0, noise, t = draw_batch(cfg, data, train_sched.config.num_train_timesteps, stage, step)
    xt = train_sched.add_noise(x0, noise, t)
    for g in opt.param_groups:
        g["lr"] = lr
    text = text_encoder(ids)[0]
    pred = unet(xt, t, encoder_hidden_states=text).sample
    per = (pred - noise).pow(2).mean(dim=(1, 2, 3))
    loss = (per * min_snr_weights(train_sched, t, cfg.min_snr_gamma)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    with torch.no_grad():
        torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - ema_decay)
    return loss.item()


def copy_weights(params: list, values: list) -> None:
    """``params`` ← ``values`` in place (the EMA weights into a model's parameters)."""
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            p.copy_(v)
