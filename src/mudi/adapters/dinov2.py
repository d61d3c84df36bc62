"""DINOv2 image embeddings for subject fidelity (D&C-DINO), via transformers' ``Dinov2Model``.

The embedding of an image is the mean of *all* output tokens of the last layer (class token and patch
tokens, after the final layer norm), L2-normalised, as in the authors' D&C-DINO. Images are resized so the
shorter side is ``resize_size`` (bicubic), centre-cropped to ``crop_size`` and normalised with the
ImageNet mean/std — the values of ``facebook/dinov2-base``'s ``preprocessor_config.json`` — in torch, so no
image-processor class (or torchvision) is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mudi.adapters.weights import missing_weights_error, place_model

DEFAULT_DINOV2 = "facebook/dinov2-base"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess_images(images: Sequence[np.ndarray], resize_size: int, crop_size: int,
                      mean: Sequence[float], std: Sequence[float], device: Any = "cpu",
                      dtype: Any = None) -> Any:
    """RGB uint8 ``(H, W, 3)`` arrays → ``(B, 3, crop, crop)`` normalised pixels: shorter side resized to
    ``resize_size`` (bicubic, antialiased, like the PIL resize of the HF processors), centre crop."""
    import torch
    import torch.nn.functional as F

    out = []
    for img in images:
        arr = np.asarray(img)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {arr.shape} {arr.dtype}")
        h, w = arr.shape[:2]
        s = resize_size / min(h, w)
        nh, nw = max(crop_size, round(h * s)), max(crop_size, round(w * s))
        t = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)[None].float() / 255.0
        t = F.interpolate(t, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        top, left = (nh - crop_size) // 2, (nw - crop_size) // 2
        out.append(t[0, :, top:top + crop_size, left:left + crop_size])
    pixels = torch.stack(out)
    m = torch.tensor(mean, dtype=pixels.dtype).view(1, 3, 1, 1)
    sd = torch.tensor(std, dtype=pixels.dtype).view(1, 3, 1, 1)
    pixels = (pixels - m) / sd
    return pixels.to(device=device, dtype=dtype or torch.float32)


class Dinov2Embedder:
    """:class:`mudi.adapters.base.Embedder` over a ``transformers.Dinov2Model``.

    ``embed(images)`` → ``(N, D)`` float32 CPU tensor of L2-normalised embeddings, computed in batches of
    ``batch_size`` on ``device`` in ``dtype``.
    """

    name = "dinov2"

    def __init__(self, model: Any, resize_size: int = 256, crop_size: int = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 device: Any = "cpu", dtype: Any = None, batch_size: int = 16):
        self.device, self.dtype, self.model = place_model(model, device, dtype)
        self.resize_size, self.crop_size = resize_size, crop_size
        self.mean, self.std = tuple(mean), tuple(std)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str = DEFAULT_DINOV2, device: Any = "cpu",
                        dtype: Any = None, batch_size: int = 16, **kwargs: Any) -> Dinov2Embedder:
        from transformers import Dinov2Model

        try:
            model = Dinov2Model.from_pretrained(pretrained_model_name_or_path, **kwargs)
        except OSError as e:
            raise missing_weights_error("DINOv2", str(pretrained_model_name_or_path), e) from None
        return cls(model, device=device, dtype=dtype, batch_size=batch_size)

    @classmethod
    def build_tiny(cls, device: Any = "cpu", dtype: Any = None, batch_size: int = 16, seed: int = 0) -> Dinov2Embedder:
        """A random 2-layer DINOv2 (hidden size 32, 28 px input) built from a config; bit-identical per seed."""
        import torch
        from transformers import Dinov2Config, Dinov2Model

        config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2,
                              image_size=28, patch_size=7, initializer_range=0.02)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Dinov2Model(config).eval()
        return cls(model, resize_size=32, crop_size=28, device=device, dtype=dtype, batch_size=batch_size)

    def embed(self, images: Sequence[np.ndarray]) -> Any:
        import torch

        chunks = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                pixels = preprocess_images(images[start:start + self.batch_size], self.resize_size,
                                           self.crop_size, self.mean, self.std, self.device, self.dtype)
                tokens = self.model(pixel_values=pixels).last_hidden_state  # (B, 1 + patches, D)
                chunks.append(tokens.mean(dim=1).float().cpu())
        if not chunks:
            return torch.zeros((0, self.model.config.hidden_size))
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)
