"""Full-size model architectures built from their configs with random weights (no download), shared by the
benchmarks: honest speed and memory figures without pretrained weights."""

from __future__ import annotations

import torch


def build_sdxl(device: str, dtype: torch.dtype, upcast_vae: bool = True):
    """SDXL base (2.57 B-parameter UNet, SDXL VAE, CLIP-L + bigG text encoders) as a ``StableDiffusionXLBackbone``.

    ``upcast_vae``: keep the VAE in float32 (SDXL's VAE overflows in half precision); ``False`` runs it in
    ``dtype`` too, as fp16-fixed VAEs do.
    """
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from mudi.adapters.sdxl import StableDiffusionXLBackbone
    from mudi.adapters.tiny_tokenizer import build_tiny_clip_tokenizer

    torch.manual_seed(0)
    # random init on the device itself: seconds, where 3.5 B parameters take about a minute on the CPU
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(5, 10, 20),
            transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
            norm_num_groups=32)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=2, norm_num_groups=32, sample_size=1024, scaling_factor=0.13025,
                            force_upcast=upcast_vae)
        te1 = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                           num_attention_heads=12, num_hidden_layers=12, projection_dim=768,
                                           hidden_act="quick_gelu"))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=49408, hidden_size=1280, intermediate_size=5120,
                                                         num_attention_heads=20, num_hidden_layers=32,
                                                         projection_dim=1280, hidden_act="gelu"))
    # the scheduler's tables stay on the CPU, as from_pretrained leaves them
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   steps_offset=1, timestep_spacing="leading")
    tok = build_tiny_clip_tokenizer()
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok,
                                     unet=unet, scheduler=sched)
    for m in (unet, vae, te1, te2):
        m.eval().requires_grad_(False)
    pipe = pipe.to(device, dtype)
    if upcast_vae:
        pipe.vae.to(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return StableDiffusionXLBackbone(pipe, default_resolution=1024)


def build_sd15(device: str = "cpu", dtype: torch.dtype = torch.float32):
    """SD1.5 (860 M-parameter UNet, SD VAE, CLIP ViT-L text encoder) as a ``StableDiffusionBackbone``."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from mudi.adapters.sd import StableDiffusion15Backbone
    from mudi.adapters.tiny_tokenizer import build_tiny_clip_tokenizer

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=768, attention_head_dim=8)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=2, sample_size=512, scaling_factor=0.18215)
        te = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                          num_hidden_layers=12, vocab_size=49408, hidden_act="quick_gelu"))
    sched = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                          skip_prk_steps=True, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=build_tiny_clip_tokenizer(), unet=unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    for m in (unet, vae, te):
        m.eval().requires_grad_(False)
    pipe = pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return StableDiffusion15Backbone(pipe, default_resolution=512)


def build_flux(device: str, dtype: torch.dtype, t5_layers: int = 24):
    """FLUX.1-dev (a 12 B-parameter transformer: 19 double + 38 single blocks, 16-channel VAE, CLIP-L, T5-XXL)
    as a ``FluxBackbone``. ``t5_layers``: T5-XXL has 24; prompts are encoded once and cached while training,
    so fewer layers change nothing in the step being measured."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from mudi.adapters.flux import FluxBackbone
    from mudi.adapters.tiny_tokenizer import build_tiny_clip_tokenizer

    torch.manual_seed(0)
    with torch.device(device):
        transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                                             attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                                             pooled_projection_dim=768, guidance_embeds=True,
                                             axes_dims_rope=(16, 56, 56))
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=2, norm_num_groups=32, sample_size=1024, scaling_factor=0.3611,
                            shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
        clip = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                            num_attention_heads=12, num_hidden_layers=12, projection_dim=768,
                                            hidden_act="quick_gelu"))
        t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=t5_layers,
                                     num_heads=64, feed_forward_proj="gated-gelu", dropout_rate=0.0))
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                            base_image_seq_len=256, max_image_seq_len=4096)
    tok = build_tiny_clip_tokenizer()
    pipe = FluxPipeline(scheduler=sched, vae=vae, text_encoder=clip, tokenizer=tok, text_encoder_2=t5,
                        tokenizer_2=build_tiny_clip_tokenizer(model_max_length=512), transformer=transformer)
    for m in (transformer, vae, clip, t5):
        m.eval().requires_grad_(False)
    pipe = pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return FluxBackbone(pipe, default_resolution=1024)
