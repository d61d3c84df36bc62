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

from mudi.adapters.flux2 import Flux2Backbone
from mudi.adapters.qwen_image import QwenImageBackbone
from mudi.adapters.sd3 import StableDiffusion3Backbone
from mudi.adapters.tiny_backbones import TINY_RESOLUTION, TINY_SEED, _clip_config, _finish, _tiny_vae
from mudi.adapters.tiny_tokenizer import (
    TINY_CLIP_VOCAB_SIZE,
    build_tiny_clip_tokenizer,
    build_tiny_clip_vocab,
)
from mudi.adapters.z_image import ZImageBackbone
from mudi.devices import parse_dtype


def _tiny_t5(d_model: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=TINY_CLIP_VOCAB_SIZE, d_model=d_model, d_kv=8, d_ff=37, num_layers=2,
                                   num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
                                   pad_token_id=TINY_CLIP_VOCAB_SIZE - 1, eos_token_id=TINY_CLIP_VOCAB_SIZE - 1,
                                   decoder_start_token_id=TINY_CLIP_VOCAB_SIZE - 1))


# Qwen's chat format, with Qwen3's ``enable_thinking=False`` (an empty think block), as the pipelines render it.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")
QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|vision_start|>",
                       "<|vision_end|>", "<|image_pad|>"]


def build_tiny_qwen_tokenizer():
    """A ``Qwen2Tokenizer`` (byte-level BPE) built offline from the tiny CLIP vocabulary's bytes and merges, with
    Qwen's special tokens and chat template (FLUX.2 klein, Qwen-Image and Z-Image tokenize through it)."""
    from transformers import Qwen2Tokenizer

    clip_vocab, merges = build_tiny_clip_vocab()
    vocab: dict[str, int] = {}
    for token in clip_vocab:
        token = token.removesuffix("</w>")
        if not token.startswith("<|"):
            vocab.setdefault(token, len(vocab))
    for token in QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[tuple(m.replace("</w>", "").split(" ")) for m in merges])
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS[1:]})
    tok.chat_template = QWEN_CHAT_TEMPLATE
    return tok


def _tiny_qwen3(vocab_size: int, num_hidden_layers: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return Qwen3ForCausalLM(Qwen3Config(vocab_size=vocab_size, hidden_size=16, intermediate_size=16,
                                        num_hidden_layers=num_hidden_layers, num_attention_heads=2,
                                        num_key_value_heads=2, head_dim=8, max_position_embeddings=1024))


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


def _tiny_flux2_vae():
    """FLUX.2's VAE with 4 latent channels (16 once patchified) and random batch-norm statistics."""
    from diffusers import AutoencoderKLFlux2

    vae = AutoencoderKLFlux2(in_channels=3, out_channels=3, latent_channels=4,
                             down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                             block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=2,
                             sample_size=TINY_RESOLUTION, use_quant_conv=False, use_post_quant_conv=False)
    vae.bn.running_mean.copy_(0.1 * torch.randn(16))
    vae.bn.running_var.copy_(0.5 + torch.rand(16))
    return vae


def build_tiny_flux2_pipeline(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """A ``Flux2KleinPipeline`` (the base, non-distilled kind): 1 double + 1 single block over 4 VAE channels
    patchified to 16, random batch-norm statistics in the VAE (so the normalization is not the identity), a
    27-layer Qwen3 of width 16 (the pipeline stacks its hidden layers 9, 18 and 27) and FLUX.2's dynamically
    shifted flow-matching scheduler."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )

    tok = build_tiny_qwen_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        transformer = Flux2Transformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                              attention_head_dim=16, num_attention_heads=2, joint_attention_dim=48,
                                              timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4],
                                              guidance_embeds=False)
        torch.manual_seed(TINY_SEED + 1)
        vae = _tiny_flux2_vae()
        torch.manual_seed(TINY_SEED + 2)
        text_encoder = _tiny_qwen3(len(tok), 27)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = Flux2KleinPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tok,
                              transformer=transformer, is_distilled=False)
    return _finish(pipe, device, dtype)


# Mistral's chat format for FLUX.2 [dev]'s messages (content given as a list of text parts).
MISTRAL_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{% for c in m['content'] %}{{ c['text'] }}"
    "{% endfor %}[/SYSTEM_PROMPT]{% else %}[INST]{% for c in m['content'] %}{{ c['text'] }}{% endfor %}[/INST]"
    "{% endif %}{% endfor %}")


def build_tiny_flux2_dev_pipeline(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """A ``Flux2Pipeline`` (FLUX.2 [dev]): klein's tiny transformer and VAE with a guidance embedding, a Mistral-3
    text encoder of width 16 with 30 layers (the pipeline stacks hidden layers 10, 20 and 30) and the offline
    tokenizer with Mistral's chat format (the real pipeline takes a Pixtral processor, which only tokenizes here)."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        Flux2Pipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    tok = build_tiny_qwen_tokenizer()
    tok.chat_template = MISTRAL_CHAT_TEMPLATE
    ids = tok.convert_tokens_to_ids
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        transformer = Flux2Transformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                              attention_head_dim=16, num_attention_heads=2, joint_attention_dim=48,
                                              timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4],
                                              guidance_embeds=True)
        torch.manual_seed(TINY_SEED + 1)
        vae = _tiny_flux2_vae()
        torch.manual_seed(TINY_SEED + 2)
        special = dict(bos_token_id=ids("<|im_start|>"), eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"))
        config = Mistral3Config(
            text_config={"model_type": "mistral", "vocab_size": len(tok), "hidden_size": 16, "intermediate_size": 16,
                         "max_position_embeddings": 1024, "num_attention_heads": 4, "num_hidden_layers": 30,
                         "num_key_value_heads": 2, "head_dim": 4, "rms_norm_eps": 1e-5, "rope_theta": 1e9,
                         "sliding_window": None, **special},
            vision_config={"model_type": "pixtral", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 4,
                           "intermediate_size": 16, "image_size": 30, "patch_size": 6, "num_channels": 3},
            image_token_index=ids("<|image_pad|>"), vision_feature_layer=-1)
        text_encoder = Mistral3ForConditionalGeneration(config)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = Flux2Pipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tok, transformer=transformer)
    return _finish(pipe, device, dtype)


def build_tiny_flux2_dev(device: str | torch.device = "cpu", dtype: Any = None) -> Any:
    """``tiny-flux2-dev``: the FLUX.2 adapter on a tiny [dev] pipeline (guidance-distilled, Mistral-3 text)."""
    return Flux2Backbone(build_tiny_flux2_dev_pipeline(device, parse_dtype(dtype)), default_resolution=TINY_RESOLUTION)


def build_tiny_flux2(device: str | torch.device = "cpu", dtype: Any = None) -> Any:
    """``tiny-flux2``: the FLUX.2 adapter on a tiny klein pipeline."""
    return Flux2Backbone(build_tiny_flux2_pipeline(device, parse_dtype(dtype)), default_resolution=TINY_RESOLUTION)


def build_tiny_qwen_image_pipeline(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """A ``QwenImagePipeline``: a 2-block MMDiT over 4 latent channels (packed to 16), a one-frame video VAE with
    the real 8x spatial downsampling and random per-channel ``latents_mean`` / ``latents_std`` (so the
    normalization is not the identity), a 2-layer Qwen2.5-VL of width 16 and a dynamically shifted flow-matching
    scheduler. The template's system prefix is measured in the tiny tokenizer's tokens, so it is dropped as the
    real pipeline drops its 34 tokens."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tok = build_tiny_qwen_tokenizer()
    ids = tok.convert_tokens_to_ids
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                                  attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                                                  guidance_embeds=False, axes_dims_rope=(8, 4, 4))
        torch.manual_seed(TINY_SEED + 1)
        stats = torch.randn(4), 0.5 + torch.rand(4)
        vae = AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                     temperal_downsample=[False, True, True],
                                     latents_mean=[round(0.1 * float(v), 4) for v in stats[0]],
                                     latents_std=[round(float(v), 4) for v in stats[1]])
        torch.manual_seed(TINY_SEED + 2)
        config = Qwen2_5_VLConfig(
            text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "num_key_value_heads": 2, "rope_theta": 1000000.0, "vocab_size": len(tok),
                         "bos_token_id": ids("<|endoftext|>"), "eos_token_id": ids("<|im_end|>"),
                         "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}},
            vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                           "out_hidden_size": 16},
            hidden_size=16, vocab_size=len(tok), bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
            vision_start_token_id=ids("<|vision_start|>"),
            vision_end_token_id=ids("<|vision_end|>"), image_token_id=ids("<|image_pad|>"))
        text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                                                base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02,
                                                time_shift_type="exponential")
    pipe = QwenImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tok,
                             transformer=transformer)
    prefix = pipe.prompt_template_encode.split("{}")[0]
    pipe.prompt_template_encode_start_idx = len(tok(prefix)["input_ids"])
    return _finish(pipe, device, dtype)


def build_tiny_qwen_image(device: str | torch.device = "cpu", dtype: Any = None) -> Any:
    """``tiny-qwen-image``: the Qwen-Image adapter on a tiny pipeline."""
    return QwenImageBackbone(build_tiny_qwen_image_pipeline(device, parse_dtype(dtype)),
                             default_resolution=TINY_RESOLUTION)


def build_tiny_z_image_pipeline(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """A ``ZImagePipeline``: a single-stream DiT (2 joint layers, 1 noise and 1 caption refiner, width 32) over FLUX.1's
    16-channel VAE layout and scaling, a 2-layer Qwen3 of width 16 (the pipeline reads its second-to-last hidden
    layer) and Z-Image's shift-3 flow-matching scheduler. The transformer's pad tokens, which diffusers allocates
    with ``torch.empty``, are drawn from the build's seed (so two builds are bit-identical)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    tok = build_tiny_qwen_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        transformer = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32,
                                               n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2, norm_eps=1e-5,
                                               qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
                                               axes_dims=[8, 4, 4], axes_lens=[256, 32, 32])
        with torch.no_grad():
            transformer.x_pad_token.copy_(torch.randn_like(transformer.x_pad_token))
            transformer.cap_pad_token.copy_(torch.randn_like(transformer.cap_pad_token))
        torch.manual_seed(TINY_SEED + 1)
        vae = _tiny_vae(16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                        use_post_quant_conv=False)
        torch.manual_seed(TINY_SEED + 2)
        text_encoder = Qwen3Model(Qwen3Config(vocab_size=len(tok), hidden_size=16, intermediate_size=16,
                                              num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                              head_dim=8, max_position_embeddings=1024))
    pipe = ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae, text_encoder=text_encoder,
                          tokenizer=tok, transformer=transformer)
    return _finish(pipe, device, dtype)


def build_tiny_z_image(device: str | torch.device = "cpu", dtype: Any = None) -> Any:
    """``tiny-z-image``: the Z-Image adapter on a tiny pipeline."""
    return ZImageBackbone(build_tiny_z_image_pipeline(device, parse_dtype(dtype)), default_resolution=TINY_RESOLUTION)


# The family label and adapter class of each build, readable without building it (registry.family_of,
# registry.backbone_default).
for _build, _cls in ((build_tiny_sd3, StableDiffusion3Backbone), (build_tiny_flux2, Flux2Backbone),
                     (build_tiny_flux2_dev, Flux2Backbone),
                     (build_tiny_qwen_image, QwenImageBackbone), (build_tiny_z_image, ZImageBackbone)):
    _build.family = _cls.family  # type: ignore[attr-defined]
    _build.backbone_class = _cls  # type: ignore[attr-defined]
