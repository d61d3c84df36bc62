"""Qwen-Image as a :class:`~mudi.adapters.base.Backbone`.

A 20B MMDiT (``QwenImageTransformer2DModel``) conditioned on the last hidden layer of Qwen2.5-VL-7B (the prompt in a
chat template whose system prefix is dropped; its length varies per prompt, with a mask), over the latents of a
video VAE (``AutoencoderKLQwenImage``, one frame) normalized per channel with the VAE's ``latents_mean`` /
``latents_std``, packed 2x2 into tokens by the pipeline; rectified flow with a dynamically shifted schedule.

**Latent space.** This adapter's latents are the normalized ``(B, 16, H/8, W/8)`` of the one-frame video latents
``(B, 16, 1, H/8, W/8)``: ``(z - latents_mean) / latents_std``. The pipeline draws its noise as ``(B, 1, 16, h, w)``
(the same numbers in the same order) and packs it; ``latents=`` must come packed ``(B, h/2 * w/2, 64)`` and are
not rescaled, so :meth:`to_pipeline_latents` packs.

Training as diffusers' ``train_dreambooth_lora_qwen_image.py``: LoRA on ``to_q/k/v/out.0`` (the example's
default; preset ``joint`` adds the text stream's ``add_q/k/v_proj`` and ``to_add_out``), uniform σ over the
training sigmas, velocity target, ``timestep = σ``, ``img_shapes`` per sample, the prompt mask (prompts encoded
apart are zero-padded to the longest by the trainer, as the example pads them).

Seg-Mix preset ``flux``: a DiT with a flow objective, like the authors' only DiT recipe (FLUX.1). Mean-shifted
init: :mod:`mudi.adapters.flow` (the sampler starts at σ = 1). Generation uses the pipeline's real CFG
(``true_cfg_scale`` 4 with a negative prompt), so the family takes a negative prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from mudi.adapters.flow import FlowMatchingMembers, load_family_pipeline, to_comfy_keys
from mudi.adapters.sd import lora_preset

_ATTN = ["to_q", "to_k", "to_v", "to_out.0"]
#: ``diffusers``/``attention``: train_dreambooth_lora_qwen_image.py's default; ``joint`` adds the text stream.
QWEN_IMAGE_LORA_PRESETS = {"diffusers": _ATTN, "attention": _ATTN,
                           "joint": _ATTN + ["add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]}


class QwenImageBackbone(FlowMatchingMembers):
    """A ``QwenImagePipeline`` wrapped for MuDI (``family == "qwen-image"``)."""

    family = "qwen-image"
    pipeline_class_name = "QwenImagePipeline"
    default_checkpoint = "Qwen/Qwen-Image"
    default_resolution = 1024
    supports_negative_prompt = True  # real CFG (true_cfg_scale > 1 with a negative prompt), the pipeline's default
    frozen_components = ("vae", "text_encoder", "transformer")
    token_embedding_encoders = (("qwen25_7b", "tokenizer", "text_encoder"),)  # trained tokens (TI): ComfyUI's key
    default_num_inference_steps = 50  # QwenImagePipeline's default
    default_guidance_scale: float | None = None  # not guidance-distilled: CFG is true_cfg_scale (4.0)
    default_init = "mean_shifted"  # nothing is known for Qwen-Image: MuDI's init, as for the paper's SDXL
    segmix_preset = "flux"

    def __init__(self, pipeline: Any, default_resolution: int | None = None, max_sequence_length: int = 1024) -> None:
        self.pipeline = pipeline
        if default_resolution is not None:
            self.default_resolution = default_resolution
        self.vae_scale_factor = int(pipeline.vae_scale_factor)
        self.latent_channels = int(pipeline.transformer.config.in_channels) // 4
        self.max_sequence_length = max_sequence_length  # the pipeline's default
        self._init_training_scheduler(pipeline)

    @property
    def pixel_multiple(self) -> int:
        """The VAE factor times 2: latents are packed in 2x2 patches."""
        return 2 * self.vae_scale_factor

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | None = None, device: str | torch.device = "cpu",
                        dtype: Any = None, quantization: str | None = None) -> QwenImageBackbone:
        """Load a Qwen-Image checkpoint; ``quantization`` (int8, nf4) loads the transformer quantized."""
        from diffusers import QwenImagePipeline

        return cls(load_family_pipeline(cls, QwenImagePipeline, pretrained_model_name_or_path, device, dtype, quantization))

    # ----------------------------------------------------------------------------------------- LoRA
    def lora_target_modules(self, preset: str | None = None) -> list[str]:
        return list(lora_preset(QWEN_IMAGE_LORA_PRESETS, preset or "diffusers", self.family))

    def to_kohya(self, lora_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``lora_unet_<module>`` keys: ComfyUI's Qwen-Image model keeps diffusers' module names, which its
        generic kohya mapping reads as ``lora_unet_<name with _>`` (it also reads the diffusers file as it is)."""
        return to_comfy_keys(lora_state_dict, "lora_unet_")

    # ----------------------------------------------------------------------------------------- encoding
    def _normalization(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.pipeline.vae.config
        mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1).to(like.device, like.dtype)
        return mean, std

    def encode_images(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] → ``(B, 16, H/8, W/8)``: ``(z - latents_mean) / latents_std``."""
        return self.latents_from_distribution(self.encode_distribution(pixels), generator)

    def encode_distribution(self, pixels: torch.Tensor) -> torch.Tensor:
        """The posterior's mean and log-variance ``(B, 32, H/8, W/8)`` of the one-frame video."""
        vae = self.pipeline.vae
        w = next(vae.parameters())
        return vae.encode(pixels.to(device=w.device, dtype=w.dtype).unsqueeze(2)).latent_dist.parameters[:, :, 0]

    def latents_from_distribution(self, parameters: torch.Tensor, generator: torch.Generator | None = None
                                  ) -> torch.Tensor:
        dist = DiagonalGaussianDistribution(parameters)
        z = dist.mean if generator is None else dist.sample(generator=generator)
        mean, std = self._normalization(z)
        return (z - mean) / std

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipeline.vae
        w = next(vae.parameters())
        z = latents.to(device=w.device, dtype=w.dtype)
        mean, std = self._normalization(z)
        return vae.decode((z * std + mean).unsqueeze(2)).sample[:, :, 0].clamp(-1, 1)

    def encode_prompts(self, prompts: Sequence[str], grad: bool = False) -> dict[str, torch.Tensor]:
        """``{"prompt_embeds": (B, L, D), "prompt_embeds_mask": (B, L)}`` (``L``: the longest prompt's tokens)."""
        with torch.enable_grad() if grad else torch.no_grad():
            embeds, mask = self.pipeline.encode_prompt(list(prompts), device=self.device, num_images_per_prompt=1,
                                                       max_sequence_length=self.max_sequence_length)
        if mask is None:  # the pipeline drops an all-ones mask; the trainer's padding needs it
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return {"prompt_embeds": embeds, "prompt_embeds_mask": mask}

    # ----------------------------------------------------------------------------------------- sampling
    def _latent_hw(self, height: int, width: int) -> tuple[int, int]:
        f = self.vae_scale_factor
        return 2 * (int(height) // (f * 2)), 2 * (int(width) // (f * 2))

    def initial_noise(self, batch_size: int, height: int, width: int, generator: Any) -> torch.Tensor:
        """Same draw as ``QwenImagePipeline.prepare_latents``, ``(B, 1, C, h, w)``, seen as ``(B, C, h, w)``."""
        from diffusers.utils.torch_utils import randn_tensor

        h, w = self._latent_hw(height, width)
        te = getattr(self.pipeline, "text_encoder", None)
        dtype = te.dtype if te is not None else self.dtype
        noise = randn_tensor((batch_size, 1, self.latent_channels, h, w), generator=generator, device=self.device,
                             dtype=dtype)
        return noise.reshape(batch_size, self.latent_channels, h, w)

    def to_pipeline_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` → packed ``(B, h/2 * w/2, 4C)``; Qwen-Image does not rescale ``latents=``."""
        b, c, h, w = latents.shape
        return self.pipeline._pack_latents(latents, b, c, h, w)

    def from_pipeline_latents(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Inverse of :meth:`to_pipeline_latents` for a ``height x width`` (pixels) image."""
        return self.pipeline._unpack_latents(latents, height, width, self.vae_scale_factor)[:, :, 0]

    # ----------------------------------------------------------------------------------------- training
    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text: dict[str, torch.Tensor],
                denoiser: Any = None) -> torch.Tensor:
        """Pack, run the transformer with ``img_shapes`` and the prompt mask, unpack: ``(B, C, h, w)`` in and out."""
        model = denoiser if denoiser is not None else self.denoiser
        b, c, h, w = noisy_latents.shape
        packed = self.pipeline._pack_latents(noisy_latents, b, c, h, w)
        embeds = text["prompt_embeds"]
        mask = text["prompt_embeds_mask"].to(device=embeds.device) > 0.5
        out = model(hidden_states=packed, encoder_hidden_states=embeds, encoder_hidden_states_mask=mask.long(),
                    timestep=timesteps.to(device=packed.device, dtype=packed.dtype),
                    img_shapes=[(1, h // 2, w // 2)] * b, return_dict=False)[0]
        f = self.vae_scale_factor
        return self.pipeline._unpack_latents(out, h * f, w * f, f)[:, :, 0]
