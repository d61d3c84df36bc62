"""The training half of a backbone: what the trainer needs beyond the inference :class:`Backbone` Protocol.

Every adapter in this package (``sd.py``, ``sdxl.py``, ``flux.py``) implements both. Random draws take an
explicit ``torch.Generator`` so a run is reproducible and resumable bit for bit.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class TrainableBackbone(Protocol):
    prediction_type: str      # "epsilon" | "v_prediction" | "flow_matching"
    default_resolution: int   # the family's native training resolution (64 for the tiny models)

    def sample_timesteps(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``(B,)`` training timesteps (SD/SDXL: long in ``[0, T)``; FLUX: sigmas in ``(0, 1]``)."""
        ...

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The noisy latents ``x_t`` of the family's forward process (unpacked ``(B, C, h, w)``)."""
        ...

    def training_target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the denoiser regresses: ``ε``, ``v = sqrt(ᾱ)ε - sqrt(1-ᾱ)x_0``, or ``ε - x_0`` (flow)."""
        ...

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text: dict[str, torch.Tensor],
                denoiser: Any = None) -> torch.Tensor:
        """Denoiser output in the unpacked latent layout; adds SDXL's time ids, FLUX's packing/ids/guidance.
        ``denoiser`` overrides :attr:`Backbone.denoiser` (e.g. the accelerate/DDP-wrapped module)."""
        ...

    def save_lora(self, output_dir: str, lora_state_dict: dict[str, torch.Tensor],
                  lora_metadata: dict | None = None) -> None:
        """Write ``output_dir/pytorch_lora_weights.safetensors`` that this family's pipeline loads with
        ``load_lora_weights``; ``lora_state_dict`` is in diffusers key format (no ``unet.`` prefix)."""
        ...
