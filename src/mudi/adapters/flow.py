"""What the flow-matching DiT families added by issue 26 (SD3.5, FLUX.2, Qwen-Image, Z-Image) share.

Training, as each family's diffusers DreamBooth-LoRA example (``train_dreambooth_lora_<family>.py``): a
training-scheduler index is drawn from the family's ``weighting_scheme`` density
(``diffusers.training_utils.compute_density_for_timestep_sampling``: ``logit_normal`` for SD3, ``none`` —
uniform — for the others), ``σ = scheduler.sigmas[index]``, ``x_σ = (1 - σ) x_0 + σ ε`` and the target is the
velocity ``ε - x_0``. The loss weighting of every scheme these examples default to is 1, so the trainer's plain
MSE is theirs. How ``σ`` enters the transformer differs (SD3: ``1000 σ``; FLUX.2, Qwen-Image: ``σ``;
Z-Image: ``1 - σ`` with the output negated): each adapter's ``predict``.

Mean-shifted init: every one of these samplers starts at σ = 1, where ``x_1`` holds no signal, so the
coefficient is FLUX.1's: SDXL's ``sqrt(ᾱ_{t0})`` at the same step count (0.076 at 50 steps), the same
first-step signal-to-noise ratio (see :mod:`mudi.adapters.flux` and docs/generate.md).

LoRA files: every one of these pipelines saves and loads ``transformer_lora_layers`` alone (diffusers keys
``transformer.<module>.lora_A/B.weight``), and ComfyUI reads that file as it is for each; :func:`to_comfy_keys`
writes the alternative ``<prefix><module_with_underscores>.lora_down/up.weight`` + ``alpha`` form.
"""

from __future__ import annotations

from typing import Any

import torch

from mudi.adapters.sd import SDXL_SCHEDULE, scheduler_first_step_signal
from mudi.adapters.weights import DenoiserPlacement, load_pipeline, missing_weights_error, quantization_config
from mudi.devices import parse_dtype
from mudi.errors import MudiError

WEIGHTING_SCHEMES = ("none", "logit_normal", "mode")


class FlowMatchingMembers(DenoiserPlacement):
    """The Backbone members that are the same for SD3, FLUX.2, Qwen-Image and Z-Image (rectified flow)."""

    prediction_type = "flow_matching"
    training_guidance_scale = 1.0
    train_vae_in_float32 = False
    weighting_scheme = "none"        # the family's diffusers example default
    logit_mean, logit_std, mode_scale = 0.0, 1.0, 1.29

    def _init_training_scheduler(self, pipeline: Any) -> None:
        # A private copy for training: set_timesteps on the pipeline's own scheduler must not change it.
        self.noise_scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config)

    @property
    def denoiser(self) -> Any:
        return self.pipeline.transformer

    # ------------------------------------------------------------------------------------- training
    def sample_timesteps(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``(B,)`` sigmas in (0, 1]: training-scheduler sigmas at indices drawn from ``weighting_scheme``'s density."""
        from diffusers.training_utils import compute_density_for_timestep_sampling

        if self.weighting_scheme not in WEIGHTING_SCHEMES:
            raise MudiError(f"weighting_scheme {self.weighting_scheme!r}: use one of {', '.join(WEIGHTING_SCHEMES)}")
        u = compute_density_for_timestep_sampling(self.weighting_scheme, batch_size, logit_mean=self.logit_mean,
                                                  logit_std=self.logit_std, mode_scale=self.mode_scale,
                                                  device=generator.device, generator=generator)
        n = int(self.noise_scheduler.config.num_train_timesteps)
        idx = (u * n).long().clamp(0, n - 1)
        return self.noise_scheduler.sigmas[idx.cpu()].to(torch.float32)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        s = timesteps.to(device=latents.device, dtype=latents.dtype).view(-1, *([1] * (latents.ndim - 1)))
        return (1.0 - s) * latents + s * noise

    def training_target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return noise - latents

    # ------------------------------------------------------------------------------------- sampling
    def first_step_signal_coefficient(self, num_inference_steps: int) -> float:
        """SDXL's ``sqrt(ᾱ_{t0})`` at the same step count (the module docstring), 0.076 at 50 steps."""
        from diffusers import EulerDiscreteScheduler

        return scheduler_first_step_signal(EulerDiscreteScheduler(**SDXL_SCHEDULE), num_inference_steps)

    # ------------------------------------------------------------------------------------- LoRA files
    def save_lora(self, output_dir: str, lora_state_dict: dict[str, torch.Tensor],
                  lora_metadata: dict | None = None) -> None:
        """``pytorch_lora_weights.safetensors`` with ``transformer.``-prefixed keys (the pipeline's own writer)."""
        type(self.pipeline).save_lora_weights(output_dir, transformer_lora_layers=lora_state_dict,
                                              transformer_lora_adapter_metadata=lora_metadata,
                                              safe_serialization=True)


def load_family_pipeline(cls: Any, pipeline_class: Any, pretrained_model_name_or_path: str | None,
                         device: str | torch.device, dtype: Any, quantization: str | None) -> Any:
    """The diffusers pipeline of an adapter ``cls`` (its ``default_checkpoint`` when no path is given), checked
    to be of the family's pipeline class, its transformer quantized (int8, nf4) on request, on ``device`` (a
    quantized one stays where bitsandbytes put it); a one-line error when the weights are missing."""
    from mudi.adapters.registry import check_pipeline_class

    path = pretrained_model_name_or_path or cls.default_checkpoint
    check_pipeline_class(path, cls.family, cls.pipeline_class_name)
    extra = {"quantization_config": quantization_config(quantization, "transformer", dtype)} if quantization else {}
    try:
        pipe = load_pipeline(pipeline_class, path, parse_dtype(dtype), **extra)
    except (OSError, ValueError) as e:
        raise missing_weights_error(cls.family, path, e, "--pretrained_model_name_or_path") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe if quantization else pipe.to(device)


class ShiftScaleVae:
    """The VAE members of the families whose latents are ``(z - shift_factor) * scaling_factor`` of a 2-D
    ``AutoencoderKL`` posterior (FLUX.1, SD3.5, Z-Image)."""

    pipeline: Any

    def encode_images(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] → ``(B, C, H/8, W/8)``: ``(z - shift_factor) * scaling_factor``."""
        return self.latents_from_distribution(self.encode_distribution(pixels), generator)

    def encode_distribution(self, pixels: torch.Tensor) -> torch.Tensor:
        """The VAE posterior's parameters ``(B, 2C, h, w)`` (mean and log-variance)."""
        vae = self.pipeline.vae
        w = next(vae.parameters())  # cheaper than vae.device / vae.dtype
        return vae.encode(pixels.to(device=w.device, dtype=w.dtype)).latent_dist.parameters

    def latents_from_distribution(self, parameters: torch.Tensor, generator: torch.Generator | None = None
                                  ) -> torch.Tensor:
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        dist = DiagonalGaussianDistribution(parameters)
        z = dist.mean if generator is None else dist.sample(generator=generator)
        cfg = self.pipeline.vae.config
        return (z - cfg.shift_factor) * cfg.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipeline.vae
        w = next(vae.parameters())
        z = latents.to(device=w.device, dtype=w.dtype) / vae.config.scaling_factor + vae.config.shift_factor
        return vae.decode(z).sample.clamp(-1, 1)


def to_comfy_keys(lora_state_dict: dict[str, torch.Tensor], prefix: str, rename: Any = None
                  ) -> dict[str, torch.Tensor]:
    """diffusers-format LoRA (``transformer.<module>.lora_A/B.weight``) → ``<prefix><module with _>.lora_down/up
    .weight`` and ``.alpha`` (= the rank: the saved weights already carry the scale), the kohya-style names
    ComfyUI's ``model_lora_keys_unet`` maps for these families. ``rename(module) -> module`` maps a diffusers
    module path to the name ComfyUI expects, where they differ."""
    out: dict[str, torch.Tensor] = {}
    for key, value in lora_state_dict.items():
        if not key.startswith("transformer."):
            raise MudiError(f"LoRA key {key!r} is not a transformer layer (only transformer LoRAs are exported)")
        module, _, kind = key[len("transformer."):].rpartition(".lora_")
        if kind not in ("A.weight", "B.weight"):
            raise MudiError(f"LoRA key {key!r} is not a lora_A/lora_B weight; cannot export it")
        name = prefix + (rename(module) if rename else module).replace(".", "_")
        out[f"{name}.lora_{'down' if kind == 'A.weight' else 'up'}.weight"] = value
        if kind == "A.weight":
            out[f"{name}.alpha"] = torch.tensor(float(value.shape[0]))
    return out

