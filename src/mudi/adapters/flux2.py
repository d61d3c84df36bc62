"""FLUX.2 (klein 4B/9B and dev) as a :class:`~mudi.adapters.base.Backbone`.

``Flux2KleinPipeline`` (Qwen3 text encoder, real classifier-free guidance on the base models) and
``Flux2Pipeline`` (dev: Mistral-Small-3.1 text encoder, guidance-distilled with a guidance embedding) share the
transformer (``Flux2Transformer2DModel``), the VAE (``AutoencoderKLFlux2``) and the latent layout, so one adapter
serves both; :meth:`Flux2Backbone.from_pretrained` picks the pipeline class the checkpoint declares.

**Latent space.** The VAE gives ``(B, 32, H/8, W/8)``; the pipeline patchifies 2x2 into ``(B, 128, H/16, W/16)``
and normalizes every one of those channels with the VAE's batch-norm statistics, ``(z - bn.running_mean) /
sqrt(bn.running_var + eps)`` — there is no scaling factor. That patchified, normalized tensor is this adapter's
latent (``latent_channels = 128``, ``vae_scale_factor = 16``): it is what the pipeline draws its noise in and what
diffusers' ``train_dreambooth_lora_flux2*.py`` trains on. The posterior's mean and log-variance are patchified
the same way (:meth:`encode_distribution`), so a latent cache keeps ``(B, 256, H/16, W/16)``.

**Pipeline latents.** ``prepare_latents`` takes ``latents=`` *unpacked* ``(B, 128, h, w)`` and packs them itself,
so :meth:`to_pipeline_latents` is the identity; ``output_type="latent"`` returns the packed ``(B, h*w, 128)``
tokens (dev) or the raw VAE latents (klein), both of which :meth:`from_pipeline_latents` turns back into these.

Training as the diffusers examples: uniform σ (``weighting_scheme="none"``) over the training scheduler's sigmas,
velocity target, the transformer fed ``timestep = σ``, position ids ``(t, h, w, l)`` for image and text tokens, a
guidance embedding only where the transformer has one (dev). LoRA: the examples' set — every ``to_q/k/v/out.0``,
the single blocks' fused ``attn.to_qkv_mlp_proj`` and their ``attn.to_out`` (preset ``diffusers``, the default);
``attention`` is the double blocks' image attention only (the authors' FLUX.1 choice).

Seg-Mix preset ``flux``: FLUX.2 is FLUX.1's successor (a DiT with the same flow objective), the closest model
to the authors' only DiT recipe. Mean-shifted init: :mod:`mudi.adapters.flow` (the sampler starts at σ = 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from mudi.adapters.flow import FlowMatchingMembers
from mudi.adapters.registry import check_pipeline_class, read_model_index
from mudi.adapters.sd import lora_preset
from mudi.adapters.weights import load_pipeline, missing_weights_error, quantization_config
from mudi.devices import parse_dtype
from mudi.errors import MudiError

_DOUBLE = ["to_q", "to_k", "to_v", "to_out.0"]
PIPELINE_CLASSES = ("Flux2KleinPipeline", "Flux2Pipeline")


def patchify(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, 4C, H/2, W/2)``, as ``Flux2Pipeline._patchify_latents``."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def unpatchify(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`patchify`, as ``Flux2Pipeline._unpatchify_latents``."""
    b, c, h, w = x.shape
    return x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, h * 2, w * 2)


class Flux2Backbone(FlowMatchingMembers):
    """A ``Flux2KleinPipeline`` or ``Flux2Pipeline`` wrapped for MuDI (``family == "flux2"``)."""

    family = "flux2"
    pipeline_class_name = "Flux2KleinPipeline"  # this instance's pipeline class replaces it (dev: Flux2Pipeline)
    pipeline_class_names = PIPELINE_CLASSES  # the checkpoints this family loads (registry.pipeline_families)
    default_checkpoint = "black-forest-labs/FLUX.2-klein-4B"  # as diffusers' README_flux2.md
    default_resolution = 1024
    supports_negative_prompt = False  # neither pipeline takes one (klein's CFG uses the empty prompt)
    frozen_components = ("vae", "text_encoder", "transformer")
    default_num_inference_steps = 50  # both pipelines' default (the step-distilled klein models: 4)
    default_guidance_scale: float | None = None  # the pipelines' 4.0
    default_init = "mean_shifted"  # the authors' "FLUX needs no init" is about FLUX.1; nothing is known for FLUX.2
    segmix_preset = "flux"

    def __init__(self, pipeline: Any, default_resolution: int | None = None, max_sequence_length: int = 512) -> None:
        self.pipeline = pipeline
        self.pipeline_class_name = type(pipeline).__name__
        if default_resolution is not None:
            self.default_resolution = default_resolution
        self.vae_scale_factor = 2 * int(pipeline.vae_scale_factor)  # the VAE's 8 times the 2x2 patches
        self.latent_channels = int(pipeline.transformer.config.in_channels)
        self.max_sequence_length = max_sequence_length  # the pipelines' default
        self._init_training_scheduler(pipeline)

    @property
    def pixel_multiple(self) -> int:
        return self.vae_scale_factor

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | None = None, device: str | torch.device = "cpu",
                        dtype: Any = None, quantization: str | None = None) -> Flux2Backbone:
        """Load a FLUX.2 klein or dev checkpoint (the pipeline class its ``model_index.json`` names);
        ``quantization`` (int8, nf4) loads the transformer quantized (bitsandbytes)."""
        import diffusers

        path = pretrained_model_name_or_path or cls.default_checkpoint
        index = read_model_index(path) or {}
        name = str(index.get("_class_name", cls.pipeline_class_name))
        check_pipeline_class(path, cls.family, name if name in PIPELINE_CLASSES else cls.pipeline_class_name)
        extra = {"quantization_config": quantization_config(quantization, "transformer", dtype)} if quantization else {}
        try:
            pipe = load_pipeline(getattr(diffusers, name), path, parse_dtype(dtype), **extra)
        except (OSError, ValueError) as e:
            raise missing_weights_error(cls.family, path, e, "--pretrained_model_name_or_path") from None
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe if quantization else pipe.to(device))

    # ----------------------------------------------------------------------------------------- LoRA
    def lora_target_modules(self, preset: str | None = None) -> list[str]:
        singles = [f"single_transformer_blocks.{i}.attn.to_out"
                   for i in range(len(self.denoiser.single_transformer_blocks))]
        presets = {"diffusers": _DOUBLE + ["to_qkv_mlp_proj"] + singles, "attention": _DOUBLE}
        return list(lora_preset(presets, preset or "diffusers", self.family))

    def to_kohya(self, lora_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise MudiError("--export kohya is not available for flux2: no ComfyUI key mapping for FLUX.2 LoRAs could be "
                        "checked here; use pytorch_lora_weights.safetensors (diffusers' format, which "
                        "Flux2(Klein)Pipeline.load_lora_weights reads) and drop --export kohya")

    # ----------------------------------------------------------------------------------------- encoding
    def _bn(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vae = self.pipeline.vae
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(like.device, like.dtype)
        return mean, std

    def encode_images(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] → ``(B, 128, H/16, W/16)``: patchified, batch-norm normalized."""
        return self.latents_from_distribution(self.encode_distribution(pixels), generator)

    def encode_distribution(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 2·128, H/16, W/16)``: the posterior's mean and log-variance, each patchified."""
        vae = self.pipeline.vae
        w = next(vae.parameters())
        params = vae.encode(pixels.to(device=w.device, dtype=w.dtype)).latent_dist.parameters
        mean, logvar = params.chunk(2, dim=1)
        return torch.cat([patchify(mean), patchify(logvar)], dim=1)

    def latents_from_distribution(self, parameters: torch.Tensor, generator: torch.Generator | None = None
                                  ) -> torch.Tensor:
        dist = DiagonalGaussianDistribution(parameters)
        z = dist.mean if generator is None else dist.sample(generator=generator)
        mean, std = self._bn(z)
        return (z - mean) / std

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipeline.vae
        w = next(vae.parameters())
        z = latents.to(device=w.device, dtype=w.dtype)
        mean, std = self._bn(z)
        return vae.decode(unpatchify(z * std + mean)).sample.clamp(-1, 1)

    @property
    def token_embedding_encoders(self) -> tuple[tuple[str, str, str], ...]:
        """Where trained tokens (Textual Inversion) live, under ComfyUI's key for this checkpoint's text encoder:
        dev's Mistral-3 ``mistral3_24b``, klein's Qwen3 ``qwen3_4b`` (hidden 2560 and the tiny builds) or ``qwen3_8b``."""
        encoder = getattr(self.pipeline, "text_encoder", None)
        config = getattr(encoder, "config", None)
        if "Mistral" in type(encoder).__name__:
            key = "mistral3_24b"
        else:
            key = "qwen3_8b" if getattr(config, "hidden_size", 0) == 4096 else "qwen3_4b"
        return ((key, "tokenizer", "text_encoder"),)

    def encode_prompts(self, prompts: Sequence[str], grad: bool = False) -> dict[str, torch.Tensor]:
        """``{"prompt_embeds": (B, L, 3·D)}``: three hidden layers of the text encoder, stacked per token."""
        with torch.enable_grad() if grad else torch.no_grad():
            embeds, _ = self.pipeline.encode_prompt(list(prompts), device=self.device, num_images_per_prompt=1,
                                                    max_sequence_length=self.max_sequence_length)
        return {"prompt_embeds": embeds}

    # ----------------------------------------------------------------------------------------- sampling
    def initial_noise(self, batch_size: int, height: int, width: int, generator: Any) -> torch.Tensor:
        """Same draw as ``prepare_latents``: ``(B, 128, H/16, W/16)`` in the text encoder's dtype."""
        from diffusers.utils.torch_utils import randn_tensor

        f = self.vae_scale_factor
        te = getattr(self.pipeline, "text_encoder", None)
        dtype = te.dtype if te is not None else self.dtype
        return randn_tensor((batch_size, self.latent_channels, int(height) // f, int(width) // f),
                            generator=generator, device=self.device, dtype=dtype)

    def to_pipeline_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """As is: FLUX.2's ``prepare_latents`` packs ``latents=`` itself and does not rescale them."""
        return latents

    def from_pipeline_latents(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Inverse of :meth:`to_pipeline_latents` (unpacked latents as they are), and this adapter's latents from
        what ``output_type="latent"`` returns: packed ``(B, h*w, 128)`` tokens (``Flux2Pipeline``), or the raw
        VAE latents ``(B, 32, H/8, W/8)``, denormalized and unpatchified (``Flux2KleinPipeline``)."""
        f = self.vae_scale_factor
        if latents.ndim == 3:
            b, _, c = latents.shape
            return latents.permute(0, 2, 1).reshape(b, c, int(height) // f, int(width) // f)
        if latents.shape[1] == self.latent_channels:
            return latents
        z = patchify(latents)
        mean, std = self._bn(z)
        return (z - mean) / std

    # ----------------------------------------------------------------------------------------- training
    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text: dict[str, torch.Tensor],
                denoiser: Any = None) -> torch.Tensor:
        """Pack, run the transformer with its 4-axis position ids (and guidance where it has an embedding),
        unpack: ``(B, 128, h, w)`` in and out."""
        model = denoiser if denoiser is not None else self.denoiser
        b, c, h, w = noisy_latents.shape
        packed = noisy_latents.reshape(b, c, h * w).permute(0, 2, 1)
        img_ids = self.pipeline._prepare_latent_ids(noisy_latents).to(noisy_latents.device)
        embeds = text["prompt_embeds"]
        txt_ids = self.pipeline._prepare_text_ids(embeds).to(embeds.device)
        guidance = None
        if self.pipeline.transformer.config.guidance_embeds:
            guidance = torch.full((b,), self.training_guidance_scale, device=packed.device, dtype=torch.float32)
        out = model(hidden_states=packed, timestep=timesteps.to(device=packed.device, dtype=packed.dtype),
                    guidance=guidance, encoder_hidden_states=embeds, txt_ids=txt_ids, img_ids=img_ids,
                    return_dict=False)[0]
        return out[:, : h * w].permute(0, 2, 1).reshape(b, c, h, w)
