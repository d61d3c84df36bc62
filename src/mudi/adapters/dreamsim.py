"""DreamSim image embeddings (D&C-DS, the paper's main multi-subject fidelity metric), an optional extra.

Install with ``pip install 'mudi[dreamsim]'``. DreamSim's similarity is ``1 - distance`` where the
distance is the cosine distance of its (ensemble) embeddings, so the L2-normalised embedding is exactly
what :mod:`mudi.core.dnc` needs. The package downloads its weights into ``cache_dir`` on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mudi.errors import MudiError


def _import_dreamsim() -> Any:
    try:
        from dreamsim import dreamsim
    except ImportError:
        raise MudiError("the DreamSim embedder needs the optional 'dreamsim' package: "
                        "pip install 'mudi[dreamsim]' (or use --embedder dinov2)") from None
    return dreamsim


class DreamsimEmbedder:
    """:class:`mudi.adapters.base.Embedder` over a DreamSim model and its preprocessing function."""

    name = "dreamsim"

    def __init__(self, model: Any, preprocess: Any, device: Any = "cpu", batch_size: int = 16):
        import torch

        self.model, self.preprocess = model, preprocess
        self.device = torch.device(device)
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, dreamsim_type: str = "ensemble", cache_dir: str = "~/.cache/dreamsim",
                        device: Any = "cpu", dtype: Any = None, batch_size: int = 16,
                        **kwargs: Any) -> DreamsimEmbedder:
        """DreamSim's own loader (it downloads its weights on first use). It runs in float32: ``dtype`` is
        accepted for a uniform factory signature and ignored."""
        import os

        dreamsim = _import_dreamsim()
        try:
            model, preprocess = dreamsim(pretrained=True, dreamsim_type=dreamsim_type,
                                         cache_dir=os.path.expanduser(cache_dir), device=str(device), **kwargs)
        except OSError as e:
            raise MudiError(f"could not load DreamSim ({dreamsim_type}) into {cache_dir} ({e}); run it once with "
                            "network access to download the weights, then copy that folder here") from None
        return cls(model, preprocess, device=device, batch_size=batch_size)

    def embed(self, images: Sequence[np.ndarray]) -> Any:
        import torch
        from PIL import Image

        chunks = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = torch.cat([self.preprocess(Image.fromarray(np.asarray(im)))
                                   for im in images[start:start + self.batch_size]]).to(self.device)
                chunks.append(self.model.embed(batch).float().cpu())
        if not chunks:
            return torch.zeros((0, 1))
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)
