"""ImageReward (Xu et al. 2023) text-fidelity scores, an optional extra.

Install with ``pip install 'mudi[image-reward]'``. The package downloads ``ImageReward-v1.0`` on first use.
Like the CLIP score, MuDI reports it averaged over both subject orders in the prompt (the † of its tables).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mudi.errors import MudiError


class ImageRewardScorer:
    """``score(images, prompts)`` → one ImageReward score per ``(image, prompt)`` pair."""

    name = "image_reward"

    def __init__(self, model: Any):
        self.model = model

    @classmethod
    def from_pretrained(cls, name: str = "ImageReward-v1.0", device: Any = "cpu",
                        download_root: str | None = None) -> ImageRewardScorer:
        try:
            import ImageReward as reward
        except ImportError:
            raise MudiError("ImageReward needs the optional 'image-reward' package: "
                            "pip install 'mudi[image-reward]' (or drop image_reward from the metrics)") from None
        try:
            model = reward.load(name, device=str(device), download_root=download_root)
        except (OSError, RuntimeError) as e:
            raise MudiError(f"could not load {name} ({e}); run it once with network access to download "
                            "the weights (download_root), then copy that folder here") from None
        return cls(model)

    def score(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> list[float]:
        import torch
        from PIL import Image

        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        out = []
        with torch.inference_mode():
            for im, p in zip(images, prompts):
                s = self.model.score(p, [Image.fromarray(np.asarray(im))])
                out.append(float(s[0] if isinstance(s, (list, tuple)) else s))
        return out
