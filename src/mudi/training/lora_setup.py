"""The LoRA the trainer adds to the denoiser: its target modules, and the base LoRAs fused underneath it
(modular customization and iterative training train on top of them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from peft import LoraConfig

from mudi.errors import MudiError
from mudi.sampling.loras import apply_loras

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone


def fuse_base_loras(backbone: Backbone, paths: list[str], weights: list[float]) -> None:
    """Fuse ``paths`` (with their weights) into the denoiser's base weights and drop them as adapters, so a new
    LoRA trains on top and "the LoRA disabled" (the KL reference) is the fused model."""
    names = apply_loras(backbone, paths, weights or None)
    backbone.pipeline.fuse_lora(adapter_names=names, lora_scale=1.0)
    backbone.pipeline.unload_lora_weights()


def lora_targets(backbone: Backbone, requested: list[str]) -> list[str]:
    """The LoRA's target modules: the backbone's default (empty), one of its presets (a single name), or the
    module names given."""
    if not requested:
        return backbone.lora_target_modules()
    if len(requested) == 1:
        try:
            return backbone.lora_target_modules(requested[0])
        except MudiError:
            pass  # not a preset: one module name
    return list(requested)


def add_lora(backbone: Backbone, config: Any) -> None:
    """The run's LoRA on the denoiser (its init drawn from the run's seed), kept in float32; nothing for Textual
    Inversion (``train_lora`` false). Every pipeline component is frozen first."""
    for name in backbone.frozen_components:
        getattr(backbone.pipeline, name).requires_grad_(False)
    if not config.train_lora:
        return
    denoiser = backbone.denoiser
    lora = LoraConfig(r=config.rank, lora_alpha=config.lora_alpha or config.rank, lora_dropout=config.lora_dropout,
                      init_lora_weights="gaussian", target_modules=lora_targets(backbone, config.lora_target_modules))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # the LoRA init draws from the global RNG: make it the run's seed
        denoiser.add_adapter(lora)
    for p in denoiser.parameters():
        if p.requires_grad:
            p.data = p.data.float()
