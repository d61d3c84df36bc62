"""Tiny random backbones built from configs in memory: ``tiny-sd``, ``tiny-sdxl``, ``tiny-flux``.

Same architectures and the real diffusers pipelines as the full models, with a few channels and layers
(after diffusers' ``get_dummy_components``), random weights and offline tokenizers, so the whole trainer
and generator run on CPU in seconds. Every build seeds its own ``torch.Generator``-free default RNG
scope (``torch.random.fork_rng`` + ``manual_seed``), so two builds are bit-identical and the caller's
global RNG state is untouched.

The VAE keeps the real 8x downsampling (4 blocks): images are ``TINY_RESOLUTION`` = 64 px, latents 8x8
(FLUX: packed to 4x4 = 16 tokens).
"""

from __future__ import annotations

from typing import Any

import torch

from mudi.adapters.flux import FluxBackbone
from mudi.adapters.sd import StableDiffusion2Backbone, StableDiffusion15Backbone
from mudi.adapters.sdxl import StableDiffusionXLBackbone
from mudi.adapters.tiny_tokenizer import TINY_CLIP_VOCAB_SIZE, build_tiny_clip_tokenizer
from mudi.devices import parse_dtype

TINY_RESOLUTION = 64
TINY_SEED = 0


def _tiny_vae(latent_channels: int, **extra: Any):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                         down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                         block_out_channels=[8, 8, 8, 8], layers_per_block=1, norm_num_groups=2,
                         sample_size=TINY_RESOLUTION, **extra)


def _clip_config(hidden_size: int = 32, projection_dim: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=TINY_CLIP_VOCAB_SIZE, hidden_size=hidden_size, intermediate_size=37,
                          num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
                          projection_dim=projection_dim, bos_token_id=TINY_CLIP_VOCAB_SIZE - 2,
                          eos_token_id=TINY_CLIP_VOCAB_SIZE - 1, pad_token_id=TINY_CLIP_VOCAB_SIZE - 1,
                          hidden_act="gelu", layer_norm_eps=1e-5)


def _finish(pipe: Any, device: str | torch.device, dtype: torch.dtype) -> Any:
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
            module.requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    if torch.device(device).type != "cpu":
        pipe = pipe.to(device=device)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


# The two-block UNet shared by tiny-sd / tiny-sd2 / tiny-sdxl (each adds its conditioning).
_TINY_UNET_LAYOUT = dict(block_out_channels=(8, 16), layers_per_block=1, sample_size=TINY_RESOLUTION // 8,
                         in_channels=4, out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                         up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=4)


def build_tiny_sd_pipeline(prediction_type: str = "epsilon", device: str | torch.device = "cpu",
                           dtype: torch.dtype = torch.float32) -> Any:
    """A ``StableDiffusionPipeline`` with a 2-block UNet; ``prediction_type="v_prediction"`` gives an SD2.x-like
    model (DDIM scheduler, as stable-diffusion-2-1), else SD1.5's PNDM scheduler."""
    from diffusers import DDIMScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        unet = UNet2DConditionModel(**_TINY_UNET_LAYOUT, cross_attention_dim=32, attention_head_dim=4)
        torch.manual_seed(TINY_SEED + 1)
        vae = _tiny_vae(4, scaling_factor=0.18215)
        torch.manual_seed(TINY_SEED + 2)
        text_encoder = CLIPTextModel(_clip_config())
    common = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                  steps_offset=1, set_alpha_to_one=False)
    if prediction_type == "v_prediction":
        scheduler = DDIMScheduler(clip_sample=False, prediction_type="v_prediction", **common)
    elif prediction_type == "epsilon":
        scheduler = PNDMScheduler(skip_prk_steps=True, prediction_type="epsilon", **common)
    else:
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=build_tiny_clip_tokenizer(),
                                   unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)
    return _finish(pipe, device, dtype)


def build_tiny_sdxl_pipeline(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """A ``StableDiffusionXLPipeline``: two CLIP text encoders (32 + 32 dims), added time ids, Euler scheduler."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        unet = UNet2DConditionModel(**_TINY_UNET_LAYOUT, attention_head_dim=(2, 4), use_linear_projection=True,
                                    addition_embed_type="text_time", addition_time_embed_dim=8,
                                    transformer_layers_per_block=(1, 1),
                                    projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64)
        torch.manual_seed(TINY_SEED + 1)
        vae = _tiny_vae(4, scaling_factor=0.13025)
        torch.manual_seed(TINY_SEED + 2)
        text_encoder = CLIPTextModel(_clip_config())
        torch.manual_seed(TINY_SEED + 3)
        text_encoder_2 = CLIPTextModelWithProjection(_clip_config())
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading",
                                       prediction_type="epsilon")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=build_tiny_clip_tokenizer(), tokenizer_2=build_tiny_clip_tokenizer(),
                                     unet=unet, scheduler=scheduler,
                                     image_encoder=None, feature_extractor=None, force_zeros_for_empty_prompt=True)
    return _finish(pipe, device, dtype)


def build_tiny_flux_pipeline(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """A ``FluxPipeline``: 1 double + 1 single block, guidance embedding (like FLUX.1-dev), a tiny T5 encoder
    that reuses the offline CLIP tokenizer, 4 latent channels (packed to 16), flow-matching Euler scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                             attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                             pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
                                             guidance_embeds=True)
        torch.manual_seed(TINY_SEED + 1)
        vae = _tiny_vae(4, scaling_factor=1.5035, shift_factor=0.0609, use_quant_conv=False,
                        use_post_quant_conv=False)
        torch.manual_seed(TINY_SEED + 2)
        text_encoder = CLIPTextModel(_clip_config())
        torch.manual_seed(TINY_SEED + 3)
        t5 = T5EncoderModel(T5Config(vocab_size=TINY_CLIP_VOCAB_SIZE, d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                     num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
                                     pad_token_id=TINY_CLIP_VOCAB_SIZE - 1, eos_token_id=TINY_CLIP_VOCAB_SIZE - 1,
                                     decoder_start_token_id=TINY_CLIP_VOCAB_SIZE - 1))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    tok = build_tiny_clip_tokenizer()
    tok_2 = build_tiny_clip_tokenizer(model_max_length=512)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tok,
                        text_encoder_2=t5, tokenizer_2=tok_2, transformer=transformer)
    return _finish(pipe, device, dtype)


def build_tiny_sd(device: str | torch.device = "cpu", dtype: Any = None) -> Any:
    """``tiny-sd``: the SD1.5 adapter (epsilon prediction) on a tiny pipeline."""
    return StableDiffusion15Backbone(build_tiny_sd_pipeline("epsilon", device, parse_dtype(dtype)),
                                     default_resolution=TINY_RESOLUTION)


def build_tiny_sd2(device: str | torch.device = "cpu", dtype: Any = None) -> Any:
    """``tiny-sd2``: the SD2.x adapter (v-prediction, DDIM) on a tiny pipeline."""
    return StableDiffusion2Backbone(build_tiny_sd_pipeline("v_prediction", device, parse_dtype(dtype)),
                                    default_resolution=TINY_RESOLUTION)


def build_tiny_sdxl(device: str | torch.device = "cpu", dtype: Any = None) -> Any:
    """``tiny-sdxl``: the SDXL adapter on a tiny pipeline."""
    return StableDiffusionXLBackbone(build_tiny_sdxl_pipeline(device, parse_dtype(dtype)),
                                     default_resolution=TINY_RESOLUTION)


def build_tiny_flux(device: str | torch.device = "cpu", dtype: Any = None) -> Any:
    """``tiny-flux``: the FLUX adapter on a tiny pipeline."""
    return FluxBackbone(build_tiny_flux_pipeline(device, parse_dtype(dtype)), default_resolution=TINY_RESOLUTION)


# The family label of each tiny build, readable without building it (registry.family_of).
build_tiny_sd.family = StableDiffusion15Backbone.family  # type: ignore[attr-defined]
build_tiny_sd2.family = StableDiffusion2Backbone.family  # type: ignore[attr-defined]
build_tiny_sdxl.family = StableDiffusionXLBackbone.family  # type: ignore[attr-defined]
build_tiny_flux.family = FluxBackbone.family  # type: ignore[attr-defined]
# The adapter class of each tiny build, for its other class-level defaults (registry.backbone_default).
build_tiny_sd.backbone_class = StableDiffusion15Backbone  # type: ignore[attr-defined]
build_tiny_sd2.backbone_class = StableDiffusion2Backbone  # type: ignore[attr-defined]
build_tiny_sdxl.backbone_class = StableDiffusionXLBackbone  # type: ignore[attr-defined]
build_tiny_flux.backbone_class = FluxBackbone  # type: ignore[attr-defined]
