"""What a finished run writes besides the weights: the model card (``README.md``, a Hugging Face card).

The card names the base model by its hub id (a local copy in the hub cache is traced back to its id; any other
local folder is never written into the card), its licence, the trigger words, the validation images of the
last validation step, the generation recipe (γ, negative prompt, init) and how to load the LoRA in diffusers
and ComfyUI.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mudi.adapters import registry
from mudi.adapters.weights import is_hub_id
from mudi.core.init_latents import default_gamma
from mudi.core.prompts import DEFAULT_NEGATIVE_PROMPT, segmix_prompt
from mudi.data.manifests import KOHYA_FILE, LORA_FILE, SUBJECTS_FILE, weight_outputs
from mudi.data.subjects import load_subjects
from mudi.training.config import CONFIG_FILE, TrainConfig

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone

#: The licence of each base model mudi knows, by hub id: ``(license, license_name or None)``.
LICENCES = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": ("creativeml-openrail-m", None),
    "runwayml/stable-diffusion-v1-5": ("creativeml-openrail-m", None),
    "stabilityai/stable-diffusion-2-1": ("openrail++", None),
    "stabilityai/stable-diffusion-2-1-base": ("openrail++", None),
    "stabilityai/stable-diffusion-xl-base-1.0": ("openrail++", None),
    "black-forest-labs/FLUX.1-dev": ("other", "flux-1-dev-non-commercial-license"),
    "black-forest-labs/FLUX.1-schnell": ("apache-2.0", None),
}
_CACHE = re.compile(r"models--([^/]+)--([^/]+)/snapshots/[^/]+/?$")
VALIDATION_DIR = "validation"


def base_model_id(config: TrainConfig, backbone: Backbone) -> str | None:
    """The base model's hub id, or None when it is a local folder that does not say (never a local path)."""
    value = config.pretrained_model_name_or_path
    if not value:  # the family's default checkpoint; a tiny build (random weights, made offline) has none
        return None if registry.is_tiny(config.backbone) else getattr(backbone, "default_checkpoint", None)
    path = Path(value).expanduser()
    if path.exists():
        found = _CACHE.search(path.resolve().as_posix())
        return f"{found.group(1)}/{found.group(2)}" if found else None
    return value if is_hub_id(value) else None


def run_weight_outputs(config: TrainConfig) -> tuple[str, ...]:
    """The weight files the run of ``config`` writes into its output folder (what a unit of `mudi run` or the
    benchmark verifies): its LoRA and/or one token file per subject."""
    tokens = [s.identifier for s in load_subjects(config.subjects)] if config.train_modifier_tokens else []
    return weight_outputs(config.train_lora, tokens)


def last_validation_images(output_dir: str | Path) -> list[str]:
    """The images of the last validation step, as paths relative to the LoRA folder."""
    found = sorted((Path(output_dir) / VALIDATION_DIR).glob("step-*-*.png"))
    if not found:
        return []
    last = found[-1].name.split("-")[1]
    return [f"{VALIDATION_DIR}/{p.name}" for p in found if p.name.split("-")[1] == last]


def card_metadata(config: TrainConfig, backbone: Backbone, subjects: list, base: str | None,
                  images: list[str], prompts: list[str]) -> dict:
    meta: dict[str, Any] = {"library_name": "diffusers"}
    if base:
        meta["base_model"] = base
        licence, name = LICENCES.get(base, (None, None))
        if licence:
            meta["license"] = licence
        if name:
            meta["license_name"] = name
    meta["tags"] = ["lora", "text-to-image", "dreambooth", "mudi", backbone.family]
    meta["instance_prompt"] = segmix_prompt([s.phrase for s in subjects[:2]])
    if images:
        meta["widget"] = [{"text": prompts[k % len(prompts)] if prompts else meta["instance_prompt"],
                           "output": {"url": img}} for k, img in enumerate(images)]
    return meta


def _steps_and_guidance(backbone: Backbone) -> str:
    steps, guidance = backbone.default_num_inference_steps, backbone.default_guidance_scale
    return (f"{steps if steps is not None else 'the pipeline’s default number of'} steps, guidance "
            f"{f'{guidance:g}' if guidance is not None else 'the pipeline’s default'}")


def _load_lines(config: TrainConfig, backbone: Backbone, subjects: list) -> str:
    """The diffusers lines that load this folder: the LoRA, and each subject's token embedding."""
    lines = [f'pipe.load_lora_weights(".", weight_name="{LORA_FILE}")  # this folder'] if config.train_lora else []
    if config.train_modifier_tokens:
        lines.append("from safetensors.torch import load_file")
        for s in subjects:
            lines.append(f'state = load_file("modifier_token_{s.identifier}.safetensors")')
            for key, tok, enc in getattr(backbone, "token_embedding_encoders", ()):
                lines.append(f'pipe.load_textual_inversion(state["{key}"], token="<{s.identifier}>", '
                             f"text_encoder=pipe.{enc}, tokenizer=pipe.{tok})")
    return "\n".join(lines)


def _token_note(config: TrainConfig) -> str:
    if not config.train_modifier_tokens:
        return ""
    return ("Prompts name each subject by its token, `<identifier>` (mudi writes it for you); in ComfyUI copy the "
            "`modifier_token_*.safetensors` files into `ComfyUI/models/embeddings/` and write "
            "`embedding:modifier_token_<identifier>` in the prompt.\n")


def model_card(config: TrainConfig, backbone: Backbone, subjects: list, steps: int) -> str:
    base = base_model_id(config, backbone)
    shown = base or "your local copy of the base model"
    images = last_validation_images(config.output_dir)
    prompts = [p for p in config.validation_prompts]
    prior = f"on (λ = {config.prior_loss_weight:g})" if config.use_prior else "off"
    triggers = "\n".join(f"- `{s.identifier}` — {s.name} ({s.class_name}): say “{s.phrase}”" for s in subjects)
    example = segmix_prompt([s.phrase for s in subjects[:2]])
    init = getattr(backbone, "default_init", "mean_shifted")
    gamma = default_gamma(max(1, len(subjects)))
    negative = DEFAULT_NEGATIVE_PROMPT if backbone.supports_negative_prompt else ""
    recipe = (f"mean-shifted initial latents, γ = {gamma:g} for {len(subjects)} subjects" if init == "mean_shifted"
              else "plain noise (mudi's default for this family; `--init mean_shifted` turns MuDI's init on)")
    gallery = "\n".join(f"![validation image {k}]({img})" for k, img in enumerate(images))
    front = yaml.safe_dump(card_metadata(config, backbone, subjects, base, images, prompts), sort_keys=False,
                           allow_unicode=True)
    weights = KOHYA_FILE if config.export == "kohya" else LORA_FILE
    load = _load_lines(config, backbone, subjects)
    comfy = "" if not config.train_lora else (f"In ComfyUI: copy `{weights}` into `ComfyUI/models/loras/` and put a *LoraLoader* node (strength 1.0) "
             "between the checkpoint loader and the sampler" + ("" if config.export == "kohya" else
                                                               " (for A1111/kohya tools, train with `--export kohya`)") + ".")
    return f"""---
{front}---
# MuDI {"LoRA" if config.train_lora else "Textual Inversion"}: {', '.join(s.name for s in subjects)}

{f"LoRA (rank {config.rank})" if config.train_lora else "Token embeddings"} for **{shown}** ({backbone.family}) trained with `mudi train` for {steps} steps,
composition `{config.composition}` (probability {config.composition_prob}), prior preservation
{prior}.

## Trigger words
{triggers}

## Validation images (step of the last validation)
{gallery or "(none: training ran without validation prompts)"}

## Generation recipe
mudi's defaults for this family: {recipe}; negative prompt: “{negative or '(none)'}”;
{_steps_and_guidance(backbone)}.

## Use
```python
import torch
from diffusers import {backbone.pipeline_class_name}

pipe = {backbone.pipeline_class_name}.from_pretrained("{base or 'PATH/TO/BASE/MODEL'}", torch_dtype=torch.float16).to("cuda")
{load}
image = pipe("{example}").images[0]
```
With MuDI's mean-shifted initialisation: `mudi generate --lora . --prompt "A photo of [V1] and [V2]"`.
{comfy}
{_token_note(config)}The resolved training config is in `{CONFIG_FILE}`, the subjects in `{SUBJECTS_FILE}`.
"""
