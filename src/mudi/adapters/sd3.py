"""Stable Diffusion 3.5 (Medium, Large; SD3 too) as a :class:`~mudi.adapters.base.Backbone`.

An MMDiT (``SD3Transformer2DModel``) over 16-channel latents, ``(z - shift_factor) * scaling_factor``, 2x2
patches made *inside* the transformer (so ``latents=`` stay unpacked ``(B, 16, H/8, W/8)``), three text
encoders (CLIP-L and CLIP-G: pooled ``(B, 2048)``; their token embeddings padded and concatenated with T5-XXL's
along the sequence) and rectified flow with a fixed shift of 3 (``FlowMatchEulerDiscreteScheduler``).

Training as diffusers' ``train_dreambooth_lora_sd3.py``: LoRA on the joint attention's image and text
projections (``attn.to_q/k/v/out.0`` and ``attn.add_q/k/v_proj, to_add_out``), σ drawn with the
``logit_normal`` density (mean 0, std 1; SD3 paper, Sec. 3.1), velocity target ``ε - x_0``, the transformer
fed ``timestep = 1000 σ`` as the pipeline does. The example's default ``--precondition_outputs 1`` regresses
``x_0`` from ``x_σ - σ v̂`` instead, which is the same objective weighted by ``σ²``; mudi keeps the SD3 paper's
unweighted velocity loss (the example's ``--precondition_outputs 0``), see docs/families.md.

Seg-Mix preset ``flux``: the authors published Seg-Mix for SDXL (UNet) and FLUX.1 (DiT); SD3.5 is a DiT trained
at 1024 px with a flow objective like FLUX.1, so it takes their FLUX geometry (scale, margins, black
backgrounds, caption), not the SDXL one. Mean-shifted init: see :mod:`mudi.adapters.flow`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mudi.adapters.flow import FlowMatchingMembers, ShiftScaleVae, load_family_pipeline, to_comfy_keys
from mudi.adapters.sd import lora_preset

_ATTN = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"]
#: ``diffusers``: train_dreambooth_lora_sd3.py's default; ``attention``: the image stream only (the authors' FLUX set).
SD3_LORA_PRESETS = {"diffusers": _ATTN + ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"],
                    "attention": _ATTN}


class StableDiffusion3Backbone(ShiftScaleVae, FlowMatchingMembers):
    """A ``StableDiffusion3Pipeline`` wrapped for MuDI (``family == "sd3"``)."""

    family = "sd3"
    pipeline_class_name = "StableDiffusion3Pipeline"
    default_checkpoint = "stabilityai/stable-diffusion-3.5-medium"
    default_resolution = 1024
    supports_negative_prompt = True  # real classifier-free guidance, as the pipeline's default
    frozen_components = ("vae", "text_encoder", "text_encoder_2", "text_encoder_3", "transformer")
    token_embedding_encoders = (("clip_l", "tokenizer", "text_encoder"), ("clip_g", "tokenizer_2", "text_encoder_2"),
                                ("t5xxl", "tokenizer_3", "text_encoder_3"))  # trained tokens (TI)
    default_num_inference_steps = 28  # StableDiffusion3Pipeline's default
    default_guidance_scale: float | None = None  # the pipeline's 7.0 (model cards: 3.5 Large, 4.5 Medium)
    default_init = "mean_shifted"  # no author statement for SD3: MuDI's init, as for the paper's SDXL
    segmix_preset = "flux"  # the authors' only DiT Seg-Mix (module docstring)
    weighting_scheme = "logit_normal"  # train_dreambooth_lora_sd3.py's default

    def __init__(self, pipeline: Any, default_resolution: int | None = None, max_sequence_length: int = 256) -> None:
        self.pipeline = pipeline
        if default_resolution is not None:
            self.default_resolution = default_resolution
        self.vae_scale_factor = int(pipeline.vae_scale_factor)
        self.latent_channels = int(pipeline.transformer.config.in_channels)
        self.max_sequence_length = max_sequence_length  # the pipeline's default T5 length
        self._init_training_scheduler(pipeline)

    @property
    def pixel_multiple(self) -> int:
        """The VAE factor times the transformer's patch size (the pipeline's own size check)."""
        return self.vae_scale_factor * int(self.pipeline.transformer.config.patch_size)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | None = None, device: str | torch.device = "cpu",
                        dtype: Any = None, quantization: str | None = None) -> StableDiffusion3Backbone:
        """Load an SD3/SD3.5 checkpoint (gated on the hub: accept the licence and log in first); ``quantization``
        (int8, nf4) loads the transformer quantized (bitsandbytes)."""
        from diffusers import StableDiffusion3Pipeline

        return cls(load_family_pipeline(cls, StableDiffusion3Pipeline, pretrained_model_name_or_path, device, dtype, quantization))

    # ----------------------------------------------------------------------------------------- LoRA
    def lora_target_modules(self, preset: str | None = None) -> list[str]:
        return list(lora_preset(SD3_LORA_PRESETS, preset or "diffusers", self.family))

    def to_kohya(self, lora_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``lora_transformer_<module>`` keys (OneTrainer's SD3 format, which ComfyUI maps for SD3; ComfyUI also
        reads the diffusers file as it is)."""
        return to_comfy_keys(lora_state_dict, "lora_transformer_")

    # ----------------------------------------------------------------------------------------- encoding
    def encode_prompts(self, prompts: Sequence[str], grad: bool = False) -> dict[str, torch.Tensor]:
        """``{"prompt_embeds": (B, 77 + L, D) CLIP-L|G ++ T5, "pooled_prompt_embeds": (B, P_L + P_G)}``."""
        with torch.enable_grad() if grad else torch.no_grad():
            embeds, _, pooled, _ = self.pipeline.encode_prompt(
                list(prompts), prompt_2=None, prompt_3=None, device=self.device, num_images_per_prompt=1,
                do_classifier_free_guidance=False, max_sequence_length=self.max_sequence_length)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    # ----------------------------------------------------------------------------------------- sampling
    def initial_noise(self, batch_size: int, height: int, width: int, generator: Any) -> torch.Tensor:
        """Same draw as ``StableDiffusion3Pipeline.prepare_latents``: ``(B, C, H/8, W/8)`` in the prompt dtype."""
        from diffusers.utils.torch_utils import randn_tensor

        f = self.vae_scale_factor
        te = self.pipeline.text_encoder_3 if self.pipeline.text_encoder_3 is not None else self.pipeline.text_encoder
        dtype = te.dtype if te is not None else self.dtype
        return randn_tensor((batch_size, self.latent_channels, int(height) // f, int(width) // f),
                            generator=generator, device=self.device, dtype=dtype)

    def to_pipeline_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """As is: SD3 patchifies inside the transformer and does not rescale ``latents=``."""
        return latents

    def from_pipeline_latents(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return latents

    # ----------------------------------------------------------------------------------------- training
    def repeated_blocks(self) -> list[Any]:
        """The MMDiT's joint blocks (``SD3Transformer2DModel`` declares no ``_repeated_blocks``)."""
        return list(self.denoiser.transformer_blocks)

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text: dict[str, torch.Tensor],
                denoiser: Any = None) -> torch.Tensor:
        """The velocity for ``(B, 16, h, w)`` noisy latents; the transformer takes ``timestep = 1000 σ``."""
        model = denoiser if denoiser is not None else self.denoiser
        t = (timesteps * 1000.0).to(device=noisy_latents.device, dtype=noisy_latents.dtype)
        return model(hidden_states=noisy_latents, timestep=t, encoder_hidden_states=text["prompt_embeds"],
                     pooled_projections=text["pooled_prompt_embeds"], return_dict=False)[0]
