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

from mudi.errors import MudiError


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
class GroupSegmenter(Segmenter, Protocol):
    """A segmenter that cuts one subject's photos together (GrabCut's joint choice): it sees every photo of
    the subject at once, and the user's own masks of it as ``references`` (``(rgb, mask)`` pairs)."""

    def segment_group(self, images: Sequence[np.ndarray],
                      boxes: Sequence[tuple[float, float, float, float] | None],
                      references: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> list[np.ndarray]:
        """Like :meth:`Segmenter.segment`, for the photos of one subject."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Image embedder for subject fidelity (DINOv2, DreamSim, CLIP image features)."""

    name: str

    def embed(self, images: Sequence[np.ndarray]) -> Any:
        """``(N, D)`` float32 torch tensor of L2-normalised embeddings, one row per image."""
        ...


@runtime_checkable
class TextScorer(Protocol):
    """Text fidelity of an image (CLIP score, ImageReward)."""

    def score(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> list[float]:
        """One score per (image, prompt) pair."""
        ...


@runtime_checkable
class Backbone(Protocol):
    """One text-to-image model family wrapped for training and inference: **every** difference between
    families lives behind these members, so no workflow ever branches on a family name.

    Latents in this interface are always *unpacked* ``(B, C, H/f, W/f)`` in the denoiser's space (VAE scaling
    factor and shift applied); only :meth:`to_pipeline_latents` produces the pipeline's own layout (FLUX
    packs 2x2 patches). Random draws take an explicit ``torch.Generator``.
    """

    family: str                     # e.g. "sd15", "sd2", "sdxl", "flux": a label for files and messages only
    pipeline: Any                   # the diffusers pipeline holding every component, on its device and dtype
    pipeline_class_name: str        # the diffusers class a checkpoint of this family declares (model cards)
    vae_scale_factor: int           # image pixels per latent cell
    latent_channels: int            # channels of the unpacked latents
    default_resolution: int         # native image size in pixels
    pixel_multiple: int             # image sides must be multiples of this (VAE factor, x2 where latents pack)
    supports_negative_prompt: bool  # whether the pipeline takes ``negative_prompt``
    frozen_components: tuple[str, ...]  # pipeline components frozen while the LoRA trains
    default_num_inference_steps: int
    default_guidance_scale: float | None  # None: the pipeline's own default
    default_init: str               # the generation init of `init: auto`: "mean_shifted" (MuDI) or "none"
    prediction_type: str            # "epsilon" | "v_prediction" | "flow_matching"
    training_guidance_scale: float  # the guidance-embedding value while training (distilled models)
    segmix_preset: str              # the Seg-Mix geometry of the authors' code for this family (core.segmix)
    train_vae_in_float32: bool      # encode training images with the VAE in float32 (SDXL's overflows in fp16)

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

    # ------------------------------------------------------------------------------------- LoRA
    def lora_target_modules(self, preset: str | None = None) -> list[str]:
        """Module names for peft ``LoraConfig(target_modules=...)``; ``preset`` picks a documented set
        (``None``: the family's default, the attention projections)."""
        ...

    def save_lora(self, output_dir: str, lora_state_dict: dict[str, Any], lora_metadata: dict | None = None) -> None:
        """Write ``output_dir/pytorch_lora_weights.safetensors`` that this family's pipeline loads with
        ``load_lora_weights``; ``lora_state_dict`` is in peft key format (no ``unet.`` prefix)."""
        ...

    def to_kohya(self, lora_state_dict: dict[str, Any]) -> dict[str, Any]:
        """The saved diffusers-format LoRA in kohya / A1111 keys (raises :class:`MudiError` where the family
        has no such format or needs none)."""
        ...

    # ------------------------------------------------------------------------------------- encoding
    def encode_images(self, pixels: Any, generator: Any = None) -> Any:
        """``(B, 3, H, W)`` float in [-1, 1] → ``(B, C, H/f, W/f)`` latents (scaled and shifted): a sample of
        the VAE posterior drawn from ``generator``, or its mean when ``generator`` is None."""
        ...

    def encode_distribution(self, pixels: Any) -> Any:
        """The VAE posterior's parameters ``(B, 2C, h, w)`` of ``(B, 3, H, W)`` pixels (what a latent cache keeps)."""
        ...

    def latents_from_distribution(self, parameters: Any, generator: Any = None) -> Any:
        """A posterior sample drawn from ``generator`` (the mean without one), scaled/shifted:
        ``encode_images(x, g) == latents_from_distribution(encode_distribution(x), g)``."""
        ...

    def decode_latents(self, latents: Any) -> Any:
        """Inverse of :meth:`encode_images`: latents → ``(B, 3, H, W)`` float in [-1, 1]."""
        ...

    def encode_prompts(self, prompts: Sequence[str], grad: bool = False) -> dict[str, Any]:
        """Text-encoder outputs for a batch of prompts, as the keyword tensors the denoiser and the pipeline take
        (``prompt_embeds``, and ``pooled_prompt_embeds`` for SDXL/FLUX); ``grad``: with gradients (trained token
        embeddings). Each tensor is ``(B, L, ...)``; where ``L`` varies per prompt (Qwen-Image, Z-Image) the trainer
        zero-pads prompts encoded apart to the longest, so such a family also returns a ``(B, L)`` mask (1 = token,
        0 = padding)."""
        ...

    # ------------------------------------------------------------------------------------- sampling
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
        the pipeline multiplies by ``scheduler.init_noise_sigma``; FLUX: packed, not scaled)."""
        ...

    def from_pipeline_latents(self, latents: Any, height: int, width: int) -> Any:
        """Inverse of :meth:`to_pipeline_latents` for a ``height x width`` (pixels) image."""
        ...

    # ------------------------------------------------------------------------------------- training
    def sample_timesteps(self, batch_size: int, generator: Any) -> Any:
        """``(B,)`` training timesteps (SD/SDXL: long in ``[0, T)``; FLUX: sigmas in ``(0, 1]``)."""
        ...

    def add_noise(self, latents: Any, noise: Any, timesteps: Any) -> Any:
        """The noisy latents ``x_t`` of the family's forward process (unpacked ``(B, C, h, w)``)."""
        ...

    def training_target(self, latents: Any, noise: Any, timesteps: Any) -> Any:
        """What the denoiser regresses: ``ε``, ``v = sqrt(ᾱ)ε - sqrt(1-ᾱ)x_0``, or ``ε - x_0`` (flow)."""
        ...

    def predict(self, noisy_latents: Any, timesteps: Any, text: dict[str, Any], denoiser: Any = None) -> Any:
        """Denoiser output in the unpacked latent layout (adds SDXL's time ids, FLUX's packing/ids/guidance).
        ``denoiser`` overrides :attr:`denoiser` (e.g. the accelerate/DDP-wrapped module)."""
        ...

    def repeated_blocks(self) -> list[Any]:
        """The denoiser's repeated transformer blocks (what regional ``torch.compile`` compiles one by one)."""
        ...


def check_image_size(backbone: Backbone, height: int, width: int, what: str = "image size") -> None:
    """The one pixel-size rule: both sides positive multiples of ``backbone.pixel_multiple``."""
    m = int(backbone.pixel_multiple)
    for side, value in (("height", height), ("width", width)):
        if int(value) < m or int(value) % m:
            fix = max(m, int(value) // m * m)
            raise MudiError(f"{what}: {side} {value} is not a multiple of {m} (the {backbone.family} VAE and "
                            f"latent layout need it); use e.g. {fix}")
