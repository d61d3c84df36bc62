"""CLIP image embeddings (an :class:`~mudi.adapters.base.Embedder`) and the CLIP score (text fidelity).

The CLIP score reported by the paper (``CLIPs``, Fig. 6, ~0.26 for MuDI) is the plain cosine similarity
between CLIP's image and text embeddings (not the ×100, clipped-at-0 variant of torchmetrics). The paper
does not name its CLIP model; the default here is ``openai/clip-vit-large-patch14``. Images are resized
(shorter side, bicubic), centre-cropped and normalised with CLIP's mean/std in torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mudi.adapters.dinov2 import preprocess_images
from mudi.adapters.tiny_tokenizer import TINY_CLIP_VOCAB_SIZE, build_tiny_clip_tokenizer
from mudi.adapters.weights import missing_weights_error, place_model

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _features(out: Any) -> Any:
    """``get_*_features`` return a tensor in transformers 4 and an output with ``pooler_output`` in 5."""
    return out if hasattr(out, "shape") else out.pooler_output


def _load_clip(pretrained_model_name_or_path: str, **kwargs: Any) -> tuple[Any, Any]:
    from transformers import CLIPModel, CLIPTokenizer

    try:
        model = CLIPModel.from_pretrained(pretrained_model_name_or_path, **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(pretrained_model_name_or_path)
    except OSError as e:
        raise missing_weights_error("CLIP", str(pretrained_model_name_or_path), e) from None
    return model, tokenizer


def build_tiny_clip(seed: int = 0) -> tuple[Any, Any]:
    """A random tiny ``CLIPModel`` (2 layers, width 32, 32 px images) and the offline tiny tokenizer."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    text = dict(vocab_size=TINY_CLIP_VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, projection_dim=16,
                bos_token_id=TINY_CLIP_VOCAB_SIZE - 2, eos_token_id=TINY_CLIP_VOCAB_SIZE - 1,
                pad_token_id=TINY_CLIP_VOCAB_SIZE - 1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8, projection_dim=16)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    return model, build_tiny_clip_tokenizer()


class _ClipImages:
    def __init__(self, model: Any, image_size: int | None, device: Any, dtype: Any, batch_size: int):
        self.device, self.dtype, self.model = place_model(model, device, dtype)
        self.image_size = image_size or int(model.config.vision_config.image_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    def embed(self, images: Sequence[np.ndarray]) -> Any:
        """``(N, D)`` float32 CPU tensor of L2-normalised CLIP image embeddings."""
        import torch

        chunks = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                pixels = preprocess_images(images[start:start + self.batch_size], self.image_size,
                                           self.image_size, CLIP_MEAN, CLIP_STD, self.device, self.dtype)
                chunks.append(_features(self.model.get_image_features(pixel_values=pixels)).float().cpu())
        if not chunks:
            return torch.zeros((0, self.model.config.projection_dim))
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)


class ClipEmbedder(_ClipImages):
    """:class:`mudi.adapters.base.Embedder` with CLIP image features (CLIP-I)."""

    name = "clip"

    def __init__(self, model: Any, image_size: int | None = None, device: Any = "cpu", dtype: Any = None,
                 batch_size: int = 16):
        super().__init__(model, image_size, device, dtype, batch_size)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str = DEFAULT_CLIP, device: Any = "cpu",
                        dtype: Any = None, batch_size: int = 16, **kwargs: Any) -> ClipEmbedder:
        model, _ = _load_clip(pretrained_model_name_or_path, **kwargs)
        return cls(model, device=device, dtype=dtype, batch_size=batch_size)

    @classmethod
    def build_tiny(cls, device: Any = "cpu", dtype: Any = None, batch_size: int = 16, seed: int = 0) -> ClipEmbedder:
        return cls(build_tiny_clip(seed)[0], device=device, dtype=dtype, batch_size=batch_size)


class ClipScorer(_ClipImages):
    """CLIP score: cosine similarity between an image's and a prompt's CLIP embeddings."""

    name = "clip_score"

    def __init__(self, model: Any, tokenizer: Any, image_size: int | None = None, device: Any = "cpu",
                 dtype: Any = None, batch_size: int = 16):
        super().__init__(model, image_size, device, dtype, batch_size)
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str = DEFAULT_CLIP, device: Any = "cpu",
                        dtype: Any = None, batch_size: int = 16, **kwargs: Any) -> ClipScorer:
        model, tokenizer = _load_clip(pretrained_model_name_or_path, **kwargs)
        return cls(model, tokenizer, device=device, dtype=dtype, batch_size=batch_size)

    @classmethod
    def build_tiny(cls, device: Any = "cpu", dtype: Any = None, batch_size: int = 16, seed: int = 0) -> ClipScorer:
        model, tokenizer = build_tiny_clip(seed)
        return cls(model, tokenizer, device=device, dtype=dtype, batch_size=batch_size)

    def embed_text(self, prompts: Sequence[str]) -> Any:
        """``(N, D)`` float32 CPU tensor of L2-normalised CLIP text embeddings (truncated to 77 tokens)."""
        import torch

        chunks = []
        with torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                tok = self.tokenizer(list(prompts[start:start + self.batch_size]), padding=True, truncation=True,
                                     max_length=self.tokenizer.model_max_length, return_tensors="pt")
                feats = self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                     attention_mask=tok["attention_mask"].to(self.device))
                chunks.append(_features(feats).float().cpu())
        if not chunks:
            return torch.zeros((0, self.model.config.projection_dim))
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    def score(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> list[float]:
        """CLIP score of each ``(images[i], prompts[i])`` pair (cosine similarity, in [-1, 1])."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        if not images:
            return []
        return (self.embed(images) * self.embed_text(prompts)).sum(-1).tolist()
