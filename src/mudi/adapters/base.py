"""The small Protocols every model family / detector / segmenter / embedder implements.

Each adapter has two constructors: ``__init__`` takes already-built objects (tests inject tiny models
built from configs) and ``from_pretrained(...)`` is the only place that reads weights. Devices and dtypes
are explicit; nothing defaults to CUDA.

Conventions: images crossing these interfaces are RGB ``uint8`` numpy arrays ``(H, W, 3)`` (or PIL RGB
images where noted); boxes are ``(x0, y0, x1, y1)`` floats in absolute pixels of the *original* image;
masks are ``bool`` ``(H, W)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One detected object: its box in original-image pixels, its score and which query matched."""

    box_xyxy: tuple[float, float, float, float]
    score: float
    query_index: int
    query: str


@runtime_checkable
class Detector(Protocol):
    """Open-vocabulary detector (OWLv2)."""

    def detect(self, images: Sequence[np.ndarray], queries: Sequence[Sequence[str]],
               threshold: float) -> list[list[Detection]]:
        """For each image, the detections of any of its text queries scoring >= ``threshold``,
        best first. ``queries[i]`` are the queries for ``images[i]``. Images are processed in batches."""
        ...


@runtime_checkable
class Segmenter(Protocol):
    """Box-prompted segmenter (SAM, GrabCut)."""

    def segment(self, images: Sequence[np.ndarray],
                boxes: Sequence[tuple[float, float, float, float] | None]) -> list[np.ndarray]:
        """One ``(H, W)`` bool mask per image, for the object in its box (``None``: no box known)."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Image embedder for subject fidelity (DINOv2, DreamSim, CLIP image features)."""

    name: str

    def embed(self, images: Sequence[np.ndarray]) -> Any:
        """``(N, D)`` float32 torch tensor of L2-normalised embeddings, one row per image."""
        ...


@runtime_checkable
class Backbone(Protocol):
    """One text-to-image model family (SD1.5, SD2.x, SDXL, FLUX) wrapped for training and inference.

    Latents in this interface are always *unpacked* ``(B, C, H/f, W/f)`` in the denoiser's space
    (VAE scaling factor and shift applied); only :meth:`to_pipeline_latents` produces the pipeline's
    own layout (FLUX packs 2x2 patches).
    """

    family: str            # "sd15" | "sd2" | "sdxl" | "flux"
    pipeline: Any          # the diffusers pipeline holding every component, on its device and dtype
    vae_scale_factor: int  # image pixels per latent cell (8 for every family here)
    latent_channels: int   # 4 for SD/SDXL, 16 for FLUX
    default_resolution: int  # native image size in pixels (512 / 768 / 1024; tiny backbones: 64)

    @property
    def device(self) -> Any:
        """The torch device the pipeline's components are on."""
        ...

    @property
    def dtype(self) -> Any:
        """The torch dtype of the pipeline's components."""
        ...

    @property
    def denoiser(self) -> Any:
        """The module LoRA is added to: the UNet, or the FLUX transformer."""
        ...

    def lora_target_modules(self) -> list[str]:
        """Module names for peft ``LoraConfig(target_modules=...)`` (the attention projections)."""
        ...

    def encode_images(self, pixels: Any) -> Any:
        """``(B, 3, H, W)`` float in [-1, 1] → ``(B, C, H/f, W/f)`` latents (scaled and shifted)."""
        ...

    def decode_latents(self, latents: Any) -> Any:
        """Inverse of :meth:`encode_images`: latents → ``(B, 3, H, W)`` float in [-1, 1]."""
        ...

    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, Any]:
        """Text-encoder outputs for a batch of prompts, as the keyword tensors the denoiser and the
        pipeline take (``prompt_embeds``, and ``pooled_prompt_embeds`` for SDXL/FLUX)."""
        ...

    def initial_noise(self, batch_size: int, height: int, width: int, generator: Any) -> Any:
        """Unit Gaussian ``(B, C, H/f, W/f)`` drawn exactly as the pipeline's own ``prepare_latents``
        would draw it from ``generator`` (same shape, dtype, device and order of draws), so that
        ``pipeline(latents=to_pipeline_latents(initial_noise(...)))`` equals ``pipeline(generator=...)``."""
        ...

    def first_step_signal_coefficient(self, num_inference_steps: int) -> float:
        """How much of a clean latent survives in the unit-variance initial latent at the sampler's first
        step (``sqrt(alphā_t0)`` for SD/SDXL schedulers; a documented equivalent for flow matching)."""
        ...

    def to_pipeline_latents(self, latents: Any) -> Any:
        """Unit-variance unpacked latents → what the pipeline takes as ``latents=`` (SD/SDXL: as is,
        the pipeline multiplies by ``scheduler.init_noise_sigma``; FLUX: packed)."""
        ...
