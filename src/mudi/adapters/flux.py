"""FLUX.1 as a :class:`~mudi.adapters.base.Backbone` (rectified flow, packed latents, guidance embedding).

Training (flow matching, as diffusers' ``train_dreambooth_lora_flux.py`` with ``weighting_scheme="none"``):
``σ`` is one of the training scheduler's (shifted) sigmas drawn uniformly, ``x_σ = (1 - σ) x_0 + σ ε`` and
the target is the velocity ``ε - x_0``; the transformer gets ``timestep = σ`` (the pipeline's ``t / 1000``),
2x2-packed latents with their position ids, and — for guidance-distilled checkpoints (FLUX.1-dev) — a
guidance embedding of ``guidance_scale`` (1.0 by default for training, as in the diffusers example).

Mean-shifted initial latents: the first sampling sigma is 1, so a flow model's initial latent holds no
signal at all. :meth:`FluxBackbone.first_step_signal_coefficient` therefore returns the coefficient that
gives the *same first-step signal-to-noise ratio as SDXL* at the same number of steps: ``sqrt(ᾱ_{t0})`` of
SDXL's default scheduler (scaled-linear β from 0.00085 to 0.012, 1000 steps, "leading" spacing,
``steps_offset=1``): 0.076 at 50 steps (first timestep 981), 0.068 at t = 999. With ``z = ε + γ·c·E(x)·M`` the added signal then has the
same ratio ``(γ c)²`` to the unit noise as in SDXL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mudi.adapters.flow import ShiftScaleVae, load_family_pipeline, to_comfy_keys
from mudi.adapters.sd import SDXL_SCHEDULE, lora_preset, scheduler_first_step_signal
from mudi.adapters.weights import DenoiserPlacement

#: The authors' FLUX script trains the attention projections only; diffusers' example adds the text stream's.
FLUX_LORA_PRESETS = {"attention": ["to_k", "to_q", "to_v", "to_out.0"],
                     "diffusers": ["to_k", "to_q", "to_v", "to_out.0", "add_k_proj", "add_q_proj", "add_v_proj",
                                   "to_add_out"]}



class FluxBackbone(ShiftScaleVae, DenoiserPlacement):
    """A ``FluxPipeline`` wrapped for MuDI (``family == "flux"``)."""

    family = "flux"
    pipeline_class_name = "FluxPipeline"
    default_checkpoint = "black-forest-labs/FLUX.1-dev"
    default_resolution = 1024
    # FLUX.1-dev is guidance-distilled: a negative prompt acts only with true CFG (``true_cfg_scale > 1``, twice
    # the cost), which the paper's FLUX recipe does not use, so mudi passes none.
    supports_negative_prompt = False
    frozen_components = ("vae", "text_encoder", "text_encoder_2", "transformer")
    token_embedding_encoders = (("clip_l", "tokenizer", "text_encoder"),  # trained tokens (TI): ComfyUI's keys
                                ("t5xxl", "tokenizer_2", "text_encoder_2"))
    default_num_inference_steps = 28  # FluxPipeline's default (the authors' FLUX validation calls it so)
    default_guidance_scale: float | None = None
    # The authors' FLUX pipeline does without the init ("FLUX ... showing strong results even without our
    # initialization! (So, we exclude it in our pipeline with FLUX)", their README); `--init mean_shifted` opts in.
    default_init = "none"
    segmix_preset = "flux"  # the authors' FLUX Seg-Mix (scale, margins, black backgrounds, caption)
    train_vae_in_float32 = False

    def __init__(self, pipeline: Any, default_resolution: int | None = None, max_sequence_length: int = 512,
                 training_guidance_scale: float = 1.0) -> None:
        self.pipeline = pipeline
        if default_resolution is not None:
            self.default_resolution = default_resolution
        self.vae_scale_factor = int(pipeline.vae_scale_factor)
        self.latent_channels = int(pipeline.transformer.config.in_channels) // 4
        self.max_sequence_length = max_sequence_length
        self.training_guidance_scale = training_guidance_scale
        self.noise_scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config)

    @property
    def pixel_multiple(self) -> int:
        """The VAE factor times 2: latents are packed in 2x2 patches."""
        return 2 * self.vae_scale_factor

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | None = None, device: str | torch.device = "cpu",
                        dtype: Any = None, quantization: str | None = None) -> FluxBackbone:
        """Load a FLUX checkpoint; ``quantization`` (int8, nf4) loads the transformer quantized (bitsandbytes)."""
        from diffusers import FluxPipeline

        return cls(load_family_pipeline(cls, FluxPipeline, pretrained_model_name_or_path, device, dtype, quantization))

    # ----------------------------------------------------------------------------------------- protocol
    @property
    def denoiser(self) -> Any:
        return self.pipeline.transformer

    prediction_type = "flow_matching"

    def lora_target_modules(self, preset: str | None = None) -> list[str]:
        return list(lora_preset(FLUX_LORA_PRESETS, preset or "attention", self.family))

    def to_kohya(self, lora_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``lora_transformer_<module>`` keys (OneTrainer's FLUX names, which ComfyUI's FLUX LoRA loader maps onto
        its fused layers; ComfyUI also reads the diffusers file as it is)."""

        return to_comfy_keys(lora_state_dict, "lora_transformer_")

    def encode_prompts(self, prompts: Sequence[str], grad: bool = False) -> dict[str, torch.Tensor]:
        """``{"prompt_embeds": (B, L, D) T5, "pooled_prompt_embeds": (B, P) CLIP}`` (``L = max_sequence_length``)."""
        with torch.enable_grad() if grad else torch.no_grad():
            embeds, pooled, _ = self.pipeline.encode_prompt(list(prompts), prompt_2=None, device=self.device,
                                                            num_images_per_prompt=1,
                                                            max_sequence_length=self.max_sequence_length)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def _latent_hw(self, height: int, width: int) -> tuple[int, int]:
        f = self.vae_scale_factor
        return 2 * (int(height) // (f * 2)), 2 * (int(width) // (f * 2))

    def initial_noise(self, batch_size: int, height: int, width: int, generator: Any) -> torch.Tensor:
        """Same draw as ``FluxPipeline.prepare_latents`` before packing: ``(B, C, 2⌊H/16⌋, 2⌊W/16⌋)``."""
        from diffusers.utils.torch_utils import randn_tensor

        h, w = self._latent_hw(height, width)
        te = getattr(self.pipeline, "text_encoder_2", None)
        dtype = te.dtype if te is not None else self.dtype
        return randn_tensor((batch_size, self.latent_channels, h, w), generator=generator, device=self.device,
                            dtype=dtype)

    def first_step_signal_coefficient(self, num_inference_steps: int) -> float:
        """SDXL's ``sqrt(ᾱ_{t0})`` at the same step count (see the module docstring), 0.076 at 50 steps."""
        from diffusers import EulerDiscreteScheduler

        return scheduler_first_step_signal(EulerDiscreteScheduler(**SDXL_SCHEDULE), num_inference_steps)

    def to_pipeline_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` → packed ``(B, h/2 * w/2, 4C)``; FLUX does not rescale ``latents=``."""
        b, c, h, w = latents.shape
        return self.pipeline._pack_latents(latents, b, c, h, w)

    def from_pipeline_latents(self, packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Inverse of :meth:`to_pipeline_latents` for a ``height x width`` (pixels) image."""
        return self.pipeline._unpack_latents(packed, height, width, self.vae_scale_factor)

    # ----------------------------------------------------------------------------------------- training
    def sample_timesteps(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``(B,)`` sigmas in (0, 1]: the training scheduler's shifted sigmas, indices drawn uniformly."""
        sigmas = self.noise_scheduler.sigmas
        n = int(self.noise_scheduler.config.num_train_timesteps)
        idx = torch.randint(0, n, (batch_size,), generator=generator, device=generator.device)
        return sigmas[idx.cpu()].to(torch.float32)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        s = timesteps.to(device=latents.device, dtype=latents.dtype).view(-1, 1, 1, 1)
        return (1.0 - s) * latents + s * noise

    def training_target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return noise - latents

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text: dict[str, torch.Tensor],
                denoiser: Any = None) -> torch.Tensor:
        """Pack, run the transformer with position ids and guidance, unpack: ``(B, C, h, w)`` in and out."""
        model = denoiser if denoiser is not None else self.denoiser
        b, c, h, w = noisy_latents.shape
        packed = self.pipeline._pack_latents(noisy_latents, b, c, h, w)
        img_ids = self.pipeline._prepare_latent_image_ids(b, h // 2, w // 2, noisy_latents.device,
                                                          noisy_latents.dtype)
        embeds = text["prompt_embeds"]
        txt_ids = torch.zeros(embeds.shape[1], 3, device=embeds.device, dtype=embeds.dtype)
        guidance = None
        if self.pipeline.transformer.config.guidance_embeds:
            guidance = torch.full((b,), self.training_guidance_scale, device=noisy_latents.device,
                                  dtype=torch.float32)
        out = model(hidden_states=packed, timestep=timesteps.to(device=packed.device, dtype=packed.dtype),
                    guidance=guidance, pooled_projections=text["pooled_prompt_embeds"], encoder_hidden_states=embeds,
                    txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
        return self.pipeline._unpack_latents(out, h * self.vae_scale_factor, w * self.vae_scale_factor,
                                             self.vae_scale_factor)

    def save_lora(self, output_dir: str, lora_state_dict: dict[str, torch.Tensor],
                  lora_metadata: dict | None = None) -> None:
        type(self.pipeline).save_lora_weights(output_dir, transformer_lora_layers=lora_state_dict,
                                              transformer_lora_adapter_metadata=lora_metadata,
                                              safe_serialization=True)
