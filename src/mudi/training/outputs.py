"""What a finished run writes besides the weights: the model card (``README.md``, a Hugging Face card)."""

from __future__ import annotations

from typing import Any

from mudi.core.prompts import segmix_prompt
from mudi.data.manifests import SUBJECTS_FILE
from mudi.training.config import CONFIG_FILE, TrainConfig


def model_card(config: TrainConfig, backbone: Any, subjects: list, steps: int) -> str:
    base = config.pretrained_model_name_or_path or config.backbone
    prior = f"on (λ = {config.prior_loss_weight:g})" if config.use_prior else "off"
    triggers = "\n".join(f"- `{s.identifier}` — {s.name} ({s.class_name}): say “{s.phrase}”" for s in subjects)
    example = segmix_prompt([s.phrase for s in subjects[:2]])
    return f"""---
library_name: diffusers
base_model: {base}
tags: [lora, text-to-image, dreambooth, mudi, {backbone.family}]
---
# MuDI LoRA: {', '.join(s.name for s in subjects)}

LoRA (rank {config.rank}) for **{base}** ({backbone.family}) trained with `mudi train` for {steps} steps,
composition `{config.composition}` (probability {config.composition_prob}), prior preservation
{prior}.

## Trigger words
{triggers}

## Use
```python
import torch
from diffusers import {backbone.pipeline_class_name}
pipe = {backbone.pipeline_class_name}.from_pretrained("{base}", torch_dtype=torch.float16).to("cuda")
pipe.load_lora_weights("{config.output_dir}")
image = pipe("{example}").images[0]
```
Or with MuDI's mean-shifted initialisation: `mudi generate --lora {config.output_dir} --prompt "A photo of [V1] and [V2]"`.
The resolved training config is in `{CONFIG_FILE}`, the subjects in `{SUBJECTS_FILE}`.
"""
