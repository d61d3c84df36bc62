"""Tiny random builds of the issue-26 families (``tiny-sd3``, ``tiny-flux2``, ``tiny-qwen-image``, ``tiny-z-image``).

The real diffusers pipelines and model classes with a few channels and layers (after diffusers'
``get_dummy_components`` for each pipeline), text encoders included at toy size, random weights and the
offline tokenizer of :mod:`mudi.adapters.tiny_tokenizer`. Each build seeds a forked default RNG
(``torch.random.fork_rng`` + ``manual_seed`` per component), so two builds are bit-identical and the caller's
RNG state is untouched. Images are ``TINY_RESOLUTION`` = 64 px, as the other tiny builds.
"""

from __future__ import annotations

from typing import Any

import torch

from mudi.adapters.sd3 import StableDiffusion3Backbone
from mudi.adapters.tiny_backbones import TINY_RESOLUTION, TINY_SEED, _clip_config, _finish, _tiny_vae
from mudi.adapters.tiny_tokenizer import TINY_CLIP_VOCAB_SIZE, build_tiny_clip_tokenizer
from mudi.devices import parse_dtype


def _tiny_t5(d_model: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=TINY_CLIP_VOCAB_SIZE, d_model=d_model, d_kv=8, d_ff=37, num_layers=2,
                                   num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
                                   pad_token_id=TINY_CLIP_VOCAB_SIZE - 1, eos_token_id=TINY_CLIP_VOCAB_SIZE - 1,
                                   decoder_start_token_id=TINY_CLIP_VOCAB_SIZE - 1))


def build_tiny_sd3_pipeline(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """A ``StableDiffusion3Pipeline``: a 2-block MMDiT with SD3.5's RMS q/k norm and patch size 2 over 16 latent
    channels (SD3's VAE scaling and shift), CLIP-L/CLIP-G (32 + 32 dims, pooled 64) and a T5 of 64 dims,
    SD3's flow-matching Euler scheduler (shift 3)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        transformer = SD3Transformer2DModel(sample_size=TINY_RESOLUTION // 8, patch_size=2, in_channels=16,
                                            num_layers=2, attention_head_dim=8, num_attention_heads=4,
                                            joint_attention_dim=64, caption_projection_dim=32,
                                            pooled_projection_dim=64, out_channels=16, pos_embed_max_size=32,
                                            qk_norm="rms_norm")
        torch.manual_seed(TINY_SEED + 1)
        vae = _tiny_vae(16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                        use_post_quant_conv=False)
        torch.manual_seed(TINY_SEED + 2)
        text_encoder = CLIPTextModelWithProjection(_clip_config())
        torch.manual_seed(TINY_SEED + 3)
        text_encoder_2 = CLIPTextModelWithProjection(_clip_config())
        torch.manual_seed(TINY_SEED + 4)
        text_encoder_3 = _tiny_t5(64)
    tok = build_tiny_clip_tokenizer()
    pipe = StableDiffusion3Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
                                    text_encoder=text_encoder, tokenizer=tok, text_encoder_2=text_encoder_2,
                                    tokenizer_2=tok, text_encoder_3=text_encoder_3,
                                    tokenizer_3=build_tiny_clip_tokenizer(model_max_length=256),
                                    transformer=transformer)
    return _finish(pipe, device, dtype)


def build_tiny_sd3(device: str | torch.device = "cpu", dtype: Any = None) -> Any:
    """``tiny-sd3``: the SD3.5 adapter on a tiny pipeline."""
    return StableDiffusion3Backbone(build_tiny_sd3_pipeline(device, parse_dtype(dtype)),
                                    default_resolution=TINY_RESOLUTION)


# The family label and adapter class of each build, readable without building it (registry.family_of,
# registry.backbone_default).
for _build, _cls in ((build_tiny_sd3, StableDiffusion3Backbone),):
    _build.family = _cls.family  # type: ignore[attr-defined]
    _build.backbone_class = _cls  # type: ignore[attr-defined]
