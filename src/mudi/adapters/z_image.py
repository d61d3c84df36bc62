"""Z-Image (and Z-Image-Turbo) as a :class:`~mudi.adapters.base.Backbone`.

A single-stream DiT (``ZImageTransformer2DModel``: noise and caption refiners, then joint layers over image and
text tokens) conditioned on the second-to-last hidden layer of Qwen3-4B (one variable-length embedding per
prompt, the pipeline passes lists), over FLUX.1's 16-channel VAE latents ``(z - shift_factor) * scaling_factor``;
rectified flow with a dynamically shifted schedule. The transformer patchifies internally, so ``latents=`` are
unpacked ``(B, 16, H/8, W/8)`` (float32, the pipeline's own noise dtype) and not rescaled.

Training as diffusers' ``train_dreambooth_lora_z_image.py``: LoRA on ``to_q/k/v/out.0`` (every attention: the
refiners' and the joint layers'), uniform σ over the training sigmas, the transformer fed ``t = 1 - σ`` (its
time runs from noise at 0 to data at 1) and its output negated (it predicts ``x_0 - ε``), so the regressed target
is the velocity ``ε - x_0`` of the other families. Prompt embeddings are padded by the trainer with a mask and
cut back into the transformer's per-sample list.

Seg-Mix preset ``flux``: a DiT with a flow objective, like the authors' only DiT recipe (FLUX.1). Mean-shifted
init: :mod:`mudi.adapters.flow` (the sampler starts at σ = 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mudi.adapters.flow import FlowMatchingMembers, ShiftScaleVae, load_family_pipeline, to_comfy_keys
from mudi.adapters.sd import lora_preset

_ATTN = ["to_q", "to_k", "to_v", "to_out.0"]
#: train_dreambooth_lora_z_image.py's default (every attention of the single-stream DiT).
Z_IMAGE_LORA_PRESETS = {"diffusers": _ATTN, "attention": _ATTN}


class ZImageBackbone(ShiftScaleVae, FlowMatchingMembers):
    """A ``ZImagePipeline`` wrapped for MuDI (``family == "z-image"``)."""

    family = "z-image"
    pipeline_class_name = "ZImagePipeline"
    default_checkpoint = "Tongyi-MAI/Z-Image"  # as diffusers' README_z_image.md (Turbo: Tongyi-MAI/Z-Image-Turbo)
    default_resolution = 1024
    supports_negative_prompt = True  # real CFG at the pipeline's guidance 5 (Turbo: guidance 0, no CFG)
    frozen_components = ("vae", "text_encoder", "transformer")
    token_embedding_encoders = (("qwen3_4b", "tokenizer", "text_encoder"),)  # trained tokens (TI): ComfyUI's key
    default_num_inference_steps = 50  # ZImagePipeline's default (Turbo: 8-9)
    default_guidance_scale: float | None = None
    default_init = "mean_shifted"  # nothing is known for Z-Image: MuDI's init, as for the paper's SDXL
    segmix_preset = "flux"

    def __init__(self, pipeline: Any, default_resolution: int | None = None, max_sequence_length: int = 512) -> None:
        self.pipeline = pipeline
        if default_resolution is not None:
            self.default_resolution = default_resolution
        self.vae_scale_factor = int(pipeline.vae_scale_factor)
        self.latent_channels = int(pipeline.transformer.config.in_channels)
        self.max_sequence_length = max_sequence_length  # the pipeline's default
        self._init_training_scheduler(pipeline)

    @property
    def pixel_multiple(self) -> int:
        """The VAE factor times the transformer's 2x2 patches (the pipeline's own size rule)."""
        return 2 * self.vae_scale_factor

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | None = None, device: str | torch.device = "cpu",
                        dtype: Any = None, quantization: str | None = None) -> ZImageBackbone:
        """Load a Z-Image or Z-Image-Turbo checkpoint; ``quantization`` (int8, nf4) loads the transformer quantized."""
        from diffusers import ZImagePipeline

        return cls(load_family_pipeline(cls, ZImagePipeline, pretrained_model_name_or_path, device, dtype, quantization))

    # ----------------------------------------------------------------------------------------- LoRA
    def lora_target_modules(self, preset: str | None = None) -> list[str]:
        return list(lora_preset(Z_IMAGE_LORA_PRESETS, preset or "diffusers", self.family))

    def to_kohya(self, lora_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``lycoris_<module>`` keys: ComfyUI maps diffusers' Z-Image names (``z_image_to_diffusers``, the fused
        ``qkv`` sliced for ``to_q/k/v``) under that prefix; it also reads the diffusers file as it is."""
        return to_comfy_keys(lora_state_dict, "lycoris_")

    # ----------------------------------------------------------------------------------------- encoding
    def encode_prompts(self, prompts: Sequence[str], grad: bool = False) -> dict[str, torch.Tensor]:
        """``{"prompt_embeds": (B, L, D), "prompt_embeds_mask": (B, L)}``: the pipeline's per-prompt embeddings,
        zero-padded to the longest (``L``) with their mask."""
        with torch.enable_grad() if grad else torch.no_grad():
            embeds, _ = self.pipeline.encode_prompt(list(prompts), device=self.device,
                                                    do_classifier_free_guidance=False,
                                                    max_sequence_length=self.max_sequence_length)
        n = max(e.shape[0] for e in embeds)
        padded = torch.stack([torch.cat([e, e.new_zeros(n - e.shape[0], e.shape[1])]) for e in embeds])
        mask = torch.stack([torch.arange(n, device=e.device) < e.shape[0] for e in embeds]).long()
        return {"prompt_embeds": padded, "prompt_embeds_mask": mask}

    # ----------------------------------------------------------------------------------------- sampling
    def initial_noise(self, batch_size: int, height: int, width: int, generator: Any) -> torch.Tensor:
        """Same draw as ``ZImagePipeline.prepare_latents``: ``(B, 16, 2⌊H/16⌋, 2⌊W/16⌋)`` in float32."""
        from diffusers.utils.torch_utils import randn_tensor

        f = 2 * self.vae_scale_factor
        shape = (batch_size, self.latent_channels, 2 * (int(height) // f), 2 * (int(width) // f))
        return randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)

    def to_pipeline_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """As is: Z-Image patchifies inside the transformer and does not rescale ``latents=``."""
        return latents

    def from_pipeline_latents(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return latents

    # ----------------------------------------------------------------------------------------- training
    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text: dict[str, torch.Tensor],
                denoiser: Any = None) -> torch.Tensor:
        """The velocity ``ε - x_0`` for ``(B, 16, h, w)``: the transformer takes a list of one-frame latents,
        ``t = 1 - σ`` and the unpadded caption features, and predicts ``x_0 - ε`` (negated here, as the pipeline)."""
        model = denoiser if denoiser is not None else self.denoiser
        mask = text["prompt_embeds_mask"] > 0.5
        caps = [e[m.to(e.device)] for e, m in zip(text["prompt_embeds"], mask)]
        x = list(noisy_latents.unsqueeze(2).unbind(dim=0))
        t = 1.0 - timesteps.to(device=noisy_latents.device, dtype=noisy_latents.dtype)
        out = model(x, t, caps, return_dict=False)[0]
        return -torch.stack(out, dim=0).squeeze(2)
