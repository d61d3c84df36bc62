"""The trainer's speed options (docs/train.md says which are exact): channels-last memory, regional
``torch.compile`` of the denoiser's repeated blocks, FP8 matmuls of the frozen base weights (torchao)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from mudi.errors import MudiError
from mudi.training.config import TrainConfig

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone


def apply_speed_options(backbone: Backbone, config: TrainConfig) -> None:
    """channels-last memory, regional ``torch.compile`` of the repeated blocks, FP8 matmuls of the frozen base
    weights (torchao): each an explicit option (docs/train.md says which are exact)."""
    denoiser = backbone.denoiser
    if config.channels_last:
        denoiser.to(memory_format=torch.channels_last)
    if config.fp8_base_weights:
        enable_fp8_base_weights(denoiser)
    if config.compile == "regional":
        blocks = backbone.repeated_blocks()
        if not blocks:
            raise MudiError(f"compile: regional found no repeated blocks in the {backbone.family} denoiser; use "
                            "--compile none")
        for block in blocks:
            block.compile(dynamic=False)


def enable_fp8_base_weights(denoiser: Any) -> None:
    """Run the frozen base linear layers' matmuls in FP8 (torchao float8 training; H100-class GPUs); the LoRA
    weights and their gradients stay in higher precision."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
        raise MudiError("fp8_base_weights needs an FP8 GPU (compute capability 8.9+: L4, L40, H100, H200); drop it")
    try:
        from torchao.float8 import convert_to_float8_training
    except ImportError:
        raise MudiError("fp8_base_weights needs torchao: pip install torchao") from None

    def frozen_linear(module: Any, name: str) -> bool:
        return isinstance(module, torch.nn.Linear) and "lora_" not in name and not module.weight.requires_grad

    convert_to_float8_training(denoiser, module_filter_fn=frozen_linear)
