"""Stable Diffusion 1.5 and 2.x (epsilon or v-prediction) as a :class:`~mudi.adapters.base.Backbone`.

Training (DDPM objective, Ho et al.): ``x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε`` with ``t ~ U{0..T-1}``;
the target is ``ε`` (``prediction_type="epsilon"``, SD1.5, SD2-base) or the velocity
``v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0`` (``"v_prediction"``, SD2.x 768). The prediction type is read from
the scheduler config, never guessed from the name.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from mudi.adapters.registry import check_pipeline_class
from mudi.adapters.weights import DenoiserPlacement, load_pipeline, missing_weights_error, quantization_config
from mudi.devices import parse_dtype
from mudi.errors import unknown_name_error

SD_LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
#: LoRA target presets of the UNet families: the attention projections (the paper's and diffusers' default);
#: custom-diffusion: the cross-attention K/V projections only (Custom Diffusion as the paper's Appendix B.1 ran it).
SD_LORA_PRESETS = {"attention": SD_LORA_TARGETS, "custom-diffusion": ["attn2.to_k", "attn2.to_v"]}


class StableDiffusionBackbone(DenoiserPlacement):
    """A ``StableDiffusionPipeline`` (or a subclass's pipeline) wrapped for MuDI.

    ``__init__`` takes an already-built pipeline (tests pass a tiny one); :meth:`from_pretrained` loads
    weights. :class:`StableDiffusion15Backbone` / :class:`StableDiffusion2Backbone` fix the family's label and
    default checkpoint (SDXL subclasses this).
    """

    family = "sd15"
    pipeline_class_name = "StableDiffusionPipeline"
    pipeline_kwargs: dict = {"safety_checker": None, "requires_safety_checker": False}
    default_checkpoint = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    default_resolution = 512
    supports_negative_prompt = True
    frozen_components: tuple[str, ...] = ("vae", "text_encoder", "unet")
    #: (key in a textual-inversion file, tokenizer, text encoder): where modifier tokens live (Custom Diffusion)
    token_embedding_encoders: tuple[tuple[str, str, str], ...] = (("clip_l", "tokenizer", "text_encoder"),)
    # diffusers' StableDiffusion(XL)Pipeline default, which the authors' inference (utils/pipe.py) calls with
    default_num_inference_steps = 50
    default_guidance_scale: float | None = None
    default_init = "mean_shifted"  # MuDI's init (Sec. 4.2, Algorithm 2)
    training_guidance_scale = 1.0  # no guidance embedding: unused
    segmix_preset = "sdxl"  # the authors' Seg-Mix geometry of their SDXL code (SD1.5/2.x: the same code path)
    train_vae_in_float32 = False

    def __init__(self, pipeline: Any, family: str | None = None, default_resolution: int | None = None) -> None:
        self.pipeline = pipeline
        if family is not None:
            self.family = family
        if default_resolution is not None:
            self.default_resolution = default_resolution
        self.vae_scale_factor = int(pipeline.vae_scale_factor)
        self.latent_channels = int(pipeline.unet.config.in_channels)
        # A private copy for training: set_timesteps on the pipeline's own scheduler must not change it.
        self.noise_scheduler = _ddpm_from(pipeline.scheduler)

    @property
    def pixel_multiple(self) -> int:
        return self.vae_scale_factor

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | None = None, device: str | torch.device = "cpu",
                        dtype: Any = None, quantization: str | None = None) -> StableDiffusionBackbone:
        """Load a diffusers-format checkpoint (hub id or local folder; ``None``: the family's default); the
        only place weights are read. ``quantization`` (int8, nf4) loads the UNet quantized (bitsandbytes).
        Subclasses change only the class attributes."""
        import diffusers

        path = pretrained_model_name_or_path or cls.default_checkpoint
        check_pipeline_class(path, cls.family, cls.pipeline_class_name)
        pipeline_class = getattr(diffusers, cls.pipeline_class_name)
        extra = dict(cls.pipeline_kwargs)
        if quantization:
            extra["quantization_config"] = quantization_config(quantization, "unet", dtype)
        try:
            pipe = load_pipeline(pipeline_class, path, parse_dtype(dtype), **extra)
        except (OSError, ValueError) as e:
            raise missing_weights_error(cls.family, path, e, "--pretrained_model_name_or_path") from None
        pipe.set_progress_bar_config(disable=True)
        resolution = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        if not quantization:  # a quantized model is placed on the GPU when it loads
            pipe = pipe.to(device)
        return cls(pipe, default_resolution=resolution)

    # ----------------------------------------------------------------------------------------- protocol
    @property
    def denoiser(self) -> Any:
        return self.pipeline.unet

    @property
    def prediction_type(self) -> str:
        return str(self.noise_scheduler.config.prediction_type)

    def lora_target_modules(self, preset: str | None = None) -> list[str]:
        return list(lora_preset(SD_LORA_PRESETS, preset or "attention", self.family))

    def to_kohya(self, lora_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """diffusers → kohya keys (``lora_unet_…`` with ``alpha``), as A1111 and ComfyUI read them."""
        from diffusers.utils import convert_all_state_dict_to_peft, convert_state_dict_to_kohya

        return convert_state_dict_to_kohya(convert_all_state_dict_to_peft(lora_state_dict))

    def encode_images(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] → ``(B, 4, H/8, W/8)``: a sample of the VAE posterior (its mean when
        ``generator`` is None), times ``scaling_factor`` (minus ``shift_factor`` first where the VAE has one)."""
        return self.latents_from_distribution(self.encode_distribution(pixels), generator)

    def encode_distribution(self, pixels: torch.Tensor) -> torch.Tensor:
        """The VAE posterior's parameters ``(B, 2C, h, w)`` (mean and log-variance) of ``(B, 3, H, W)`` pixels:
        what a latent cache keeps, so a new sample can still be drawn every step."""
        vae = self.pipeline.vae
        w = next(vae.parameters())  # cheaper than vae.device / vae.dtype
        if w.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            vae.to(torch.float32)  # this VAE overflows in fp16 (SDXL's): encode in float32, as its pipeline decodes
            w = next(vae.parameters())
        return vae.encode(pixels.to(device=w.device, dtype=w.dtype)).latent_dist.parameters

    def latents_from_distribution(self, parameters: torch.Tensor, generator: torch.Generator | None = None
                                  ) -> torch.Tensor:
        """A posterior sample (drawn from ``generator`` as diffusers' ``DiagonalGaussianDistribution.sample``;
        the mean without one), scaled (and shifted) into the denoiser's latent space."""
        dist = DiagonalGaussianDistribution(parameters)
        z = dist.mean if generator is None else dist.sample(generator=generator)
        vae = self.pipeline.vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return (z - shift) * vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipeline.vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        w = next(vae.parameters())
        z = latents.to(device=w.device, dtype=w.dtype) / vae.config.scaling_factor + shift
        return vae.decode(z).sample.clamp(-1, 1)

    def encode_prompts(self, prompts: Sequence[str], grad: bool = False) -> dict[str, torch.Tensor]:
        """``{"prompt_embeds": (B, 77, D)}`` from the pipeline's own ``encode_prompt`` (``grad``: with gradients,
        for trained token embeddings)."""
        with torch.enable_grad() if grad else torch.no_grad():
            embeds, _ = self.pipeline.encode_prompt(list(prompts), device=self.device, num_images_per_prompt=1,
                                                    do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds}

    def initial_noise(self, batch_size: int, height: int, width: int, generator: Any) -> torch.Tensor:
        """Same draw as ``prepare_latents``: ``randn_tensor((B, C, H//f, W//f))`` in the text encoder's dtype."""
        from diffusers.utils.torch_utils import randn_tensor

        shape = (batch_size, self.latent_channels, int(height) // self.vae_scale_factor,
                 int(width) // self.vae_scale_factor)
        return randn_tensor(shape, generator=generator, device=self.device, dtype=self._prompt_dtype())

    def first_step_signal_coefficient(self, num_inference_steps: int) -> float:
        """``sqrt(ᾱ_{t0})`` for the first timestep of the pipeline's scheduler at ``num_inference_steps``."""
        return scheduler_first_step_signal(self.pipeline.scheduler, num_inference_steps)

    def to_pipeline_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """As is: the pipeline multiplies ``latents=`` by ``scheduler.init_noise_sigma`` itself."""
        return latents

    def from_pipeline_latents(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Inverse of :meth:`to_pipeline_latents` (the identity here)."""
        return latents

    # ----------------------------------------------------------------------------------------- training
    def sample_timesteps(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``(B,)`` long timesteps uniform over the training schedule, drawn on ``generator``'s device."""
        T = int(self.noise_scheduler.config.num_train_timesteps)
        return torch.randint(0, T, (batch_size,), generator=generator, device=generator.device)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.noise_scheduler.add_noise(latents, noise, timesteps.to(latents.device))

    def training_target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, timesteps.to(latents.device))
        raise ValueError(f"unsupported prediction_type {self.prediction_type!r}")

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text: dict[str, torch.Tensor],
                denoiser: Any = None) -> torch.Tensor:
        """The denoiser's output for ``(B, C, h, w)`` noisy latents (``denoiser``: e.g. the DDP-wrapped UNet)."""
        unet = denoiser if denoiser is not None else self.denoiser
        return unet(noisy_latents, timesteps, encoder_hidden_states=text["prompt_embeds"]).sample

    def save_lora(self, output_dir: str, lora_state_dict: dict[str, torch.Tensor],
                  lora_metadata: dict | None = None) -> None:
        """Write ``pytorch_lora_weights.safetensors`` in the diffusers format of this family."""
        type(self.pipeline).save_lora_weights(output_dir, unet_lora_layers=lora_state_dict,
                                              unet_lora_adapter_metadata=lora_metadata, safe_serialization=True)

    # ----------------------------------------------------------------------------------------- helpers
    def _prompt_dtype(self) -> torch.dtype:
        te = getattr(self.pipeline, "text_encoder", None)
        return te.dtype if te is not None else self.dtype


class StableDiffusion15Backbone(StableDiffusionBackbone):
    """Stable Diffusion 1.x (epsilon prediction, 512 px)."""


class StableDiffusion2Backbone(StableDiffusionBackbone):
    """Stable Diffusion 2.x (v-prediction at 768 px for 2.1; the prediction type is read from the scheduler)."""

    family = "sd2"
    default_checkpoint = "stabilityai/stable-diffusion-2-1"
    default_resolution = 768


def lora_preset(presets: dict[str, list[str]], name: str, family: str) -> list[str]:
    if name not in presets:
        raise unknown_name_error(f"{family} LoRA target preset", name, presets)
    return presets[name]


def _ddpm_from(scheduler: Any) -> Any:
    """A DDPMScheduler with the same noise schedule and prediction type (the training scheduler)."""
    from diffusers import DDPMScheduler

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
            "steps_offset", "timestep_spacing", "rescale_betas_zero_snr")
    cfg = {k: scheduler.config[k] for k in keys if k in scheduler.config}
    return DDPMScheduler(**cfg)


# SDXL's default (EulerDiscrete) noise schedule, used only to define the flow-matching families' (FLUX, flow.py)
# equivalent signal coefficient.
SDXL_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                     timestep_spacing="leading", steps_offset=1)


def scheduler_first_step_signal(scheduler: Any, num_inference_steps: int) -> float:
    """``sqrt(alphas_cumprod[t0])`` where ``t0`` is the first timestep after ``set_timesteps`` (on a copy)."""
    s = copy.deepcopy(scheduler)
    s.set_timesteps(num_inference_steps, device="cpu")
    t0 = int(round(float(s.timesteps[0])))
    t0 = min(max(t0, 0), len(s.alphas_cumprod) - 1)
    return math.sqrt(float(s.alphas_cumprod[t0]))
