"""The mean-shifted initial latents of MuDI (paper Sec. 4.2, Algorithm 2), built for one pipeline call.

``x_init`` is a Seg-Mix composition of the subjects' segmented reference photos (random, in boxes, or with
relative sizes); its VAE latents, masked to the subjects, shift the pipeline's own initial noise:
``z = eps + gamma * c * E(x_init) ⊙ M`` (:mod:`mudi.core.init_latents`). How each family scales or packs
``latents=`` is the backbone's :meth:`~mudi.adapters.base.Backbone.to_pipeline_latents`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mudi.adapters.base import check_image_size
from mudi.core.init_latents import image_to_pixels, mask_to_latent_grid, mean_shifted_latents
from mudi.core.layout import NormBox, compose_layout
from mudi.core.segmix import SegMixParams
from mudi.core.types import Composition
from mudi.errors import MudiError

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone

INITS = ("auto", "mean_shifted", "none")


def resolve_init(init: str, backbone: Backbone | None = None, backbone_name: str = "") -> str:
    """``mean_shifted`` or ``none``: ``init`` itself, or for ``auto`` the family's ``default_init`` — the built
    ``backbone``'s when given, else the registered ``backbone_name``'s (MuDI's init for SD/SDXL; none for FLUX,
    whose authors' pipeline does without it). An adapter that does not say gets MuDI's init."""
    if init not in INITS:
        raise MudiError(f"init {init!r}: use auto, mean_shifted or none")
    if init != "auto":
        return init
    if backbone is not None:
        return getattr(backbone, "default_init", "mean_shifted")
    from mudi.adapters import registry

    return registry.backbone_default(backbone_name, "default_init", "mean_shifted")


def compose_init(subjects: Sequence[Any], seed: int, size_hw: tuple[int, int], boxes: Sequence[NormBox] | None = None,
                 relative_sizes: Sequence[float] | None = None,
                 params: SegMixParams = SegMixParams()) -> tuple[Composition, list[str]]:
    """``x_init`` for the image of ``seed``: one random reference image per subject (Algorithm 2's
    ``sample_img_mask``), composed in the given layout. Returns the composition and the source image paths."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 5]))
    picks = [int(rng.integers(len(s.images))) for s in subjects]
    cutouts = [s.cutouts(max_side=max(size_hw))[j] for s, j in zip(subjects, picks)]
    comp = compose_layout(cutouts, [s.phrase for s in subjects], size_hw, rng, boxes=boxes,
                          relative_sizes=relative_sizes, params=params)
    return comp, [str(s.images[j].path) for s, j in zip(subjects, picks)]


def build_initial_latents(backbone: Backbone, compositions: Sequence[Composition], generators: Sequence[Any],
                          gamma: float, num_inference_steps: int) -> tuple[Any, dict]:
    """Unit-variance mean-shifted latents ``(B, C, h, w)`` for one pipeline call (Algorithm 2).

    The noise is ``backbone.initial_noise`` drawn from ``generators`` exactly as the pipeline would; the
    compositions are encoded in one VAE call. Returns the latents and ``{"init_latents": E(x_init),
    "latent_mask": M↓, "noise": eps, "signal_coefficient": c}`` for inspection. ``gamma = 0`` returns the
    noise itself.
    """
    H, W = compositions[0].union_mask.shape
    noise = backbone.initial_noise(len(generators), H, W, list(generators))
    coef = float(backbone.first_step_signal_coefficient(num_inference_steps))
    info: dict = {"noise": noise, "signal_coefficient": coef}
    if gamma == 0:
        return noise, info
    check_image_size(backbone, H, W)
    device, dtype = backbone.device, backbone.dtype
    pixels = torch.cat([image_to_pixels(c.image, device=device, dtype=dtype) for c in compositions])
    with torch.no_grad():
        init = backbone.encode_images(pixels)
    if init.shape[2:] != noise.shape[2:]:  # an adapter whose pixel_multiple understates its layout's needs
        raise MudiError(f"image size {W}x{H} gives {tuple(init.shape[2:])} VAE latents but {tuple(noise.shape[2:])} "
                        f"noise latents for {backbone.family}: its adapter's pixel_multiple "
                        f"({backbone.pixel_multiple}) is too small")
    mask = mask_to_latent_grid(np.stack([c.union_mask for c in compositions]), tuple(noise.shape[2:]),
                               device=noise.device, dtype=noise.dtype)
    info.update(init_latents=init, latent_mask=mask)
    return mean_shifted_latents(noise, init, mask, gamma, coef), info
