"""Stable Diffusion XL as a :class:`~mudi.adapters.base.Backbone` (the paper's main model, Appendix A.1).

Differs from SD1.5 in two text encoders (prompt embeddings concatenated, pooled embedding of the second)
and the *added time ids* ``(orig_h, orig_w, crop_top, crop_left, target_h, target_w)`` conditioning the
UNet; for training we use the uncropped training resolution for both sizes, as the diffusers example does
for centre-cropped images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mudi.adapters.sd import StableDiffusionBackbone


class StableDiffusionXLBackbone(StableDiffusionBackbone):
    """A ``StableDiffusionXLPipeline`` wrapped for MuDI (``family == "sdxl"``)."""

    family = "sdxl"
    pipeline_class_name = "StableDiffusionXLPipeline"
    default_checkpoint = "stabilityai/stable-diffusion-xl-base-1.0"
    default_resolution = 1024
    pipeline_kwargs: dict = {}
    frozen_components = ("vae", "text_encoder", "text_encoder_2", "unet")
    token_embedding_encoders = (("clip_l", "tokenizer", "text_encoder"), ("clip_g", "tokenizer_2", "text_encoder_2"))
    train_vae_in_float32 = True  # as diffusers' SDXL scripts: the fp16 SDXL VAE gives NaN latents

    def encode_prompts(self, prompts: Sequence[str], grad: bool = False) -> dict[str, torch.Tensor]:
        """``{"prompt_embeds": (B, 77, D1+D2), "pooled_prompt_embeds": (B, P)}`` (``grad``: with gradients)."""
        with torch.enable_grad() if grad else torch.no_grad():
            embeds, _, pooled, _ = self.pipeline.encode_prompt(list(prompts), device=self.device,
                                                               num_images_per_prompt=1,
                                                               do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def _prompt_dtype(self) -> torch.dtype:
        te = getattr(self.pipeline, "text_encoder_2", None) or getattr(self.pipeline, "text_encoder", None)
        return te.dtype if te is not None else self.dtype

    def add_time_ids(self, batch_size: int, height: int, width: int) -> torch.Tensor:
        """``(B, 6)`` added time ids for an uncropped ``height x width`` (pixels) training image."""
        ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32, device=self.device)
        return ids.repeat(batch_size, 1)

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text: dict[str, torch.Tensor],
                denoiser: Any = None) -> torch.Tensor:
        unet = denoiser if denoiser is not None else self.denoiser
        b, _, h, w = noisy_latents.shape
        time_ids = self.add_time_ids(b, h * self.vae_scale_factor, w * self.vae_scale_factor)
        added = {"text_embeds": text["pooled_prompt_embeds"], "time_ids": time_ids.to(text["prompt_embeds"].dtype)}
        return unet(noisy_latents, timesteps, encoder_hidden_states=text["prompt_embeds"],
                    added_cond_kwargs=added).sample
