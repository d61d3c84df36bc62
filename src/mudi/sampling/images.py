"""Generate images with (or without) MuDI's mean-shifted init: the library call behind ``mudi generate``,
the trainer's validation images and the benchmark runner.

Seeds are batched per pipeline call with one ``torch.Generator`` per seed, so image ``k`` depends only on its
seed and prompt, never on the batching; the diffusers pipeline is called unchanged with ``latents=``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mudi.adapters.base import check_image_size
from mudi.core.init_latents import default_gamma
from mudi.core.layout import NormBox
from mudi.core.prompts import (
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_REGION_PROMPT,
    count_prefix,
    fill_placeholders,
    join_subjects,
)
from mudi.core.segmix import SegMixParams
from mudi.core.types import Composition
from mudi.data.manifests import SUBJECTS_FILE
from mudi.errors import MudiError
from mudi.sampling.init import build_initial_latents, compose_init, resolve_init
from mudi.sampling.modifier_tokens import with_loaded_tokens
from mudi.sampling.prompt_length import warn_long_prompts
from mudi.sampling.regions import encode_region_prompts, make_regions, region_prompts, regions_applied

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone


@dataclass
class GeneratedImage:
    """One generated image and how it was made (``image``: ``(H, W, 3)`` uint8)."""

    image: np.ndarray
    prompt: str
    seed: int
    init: str
    gamma: float
    composition: Composition | None = None
    layout: str = "none"
    boxes_normalized: list[NormBox] | None = None
    source_images: list[str] = field(default_factory=list)
    region_control: bool = False


def _generators(backbone: Backbone, seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator(device=backbone.device).manual_seed(int(s)) for s in seeds]


def _pipeline_call(backbone: Backbone, prompts: list[str], generators: list, latents: Any, negative_prompt: str | None,
                   num_inference_steps: int, guidance_scale: float | None, height: int, width: int,
                   output_type: str = "np") -> Any:
    kwargs: dict = dict(prompt=with_loaded_tokens(backbone, prompts), num_inference_steps=num_inference_steps, generator=generators,
                        height=height, width=width, output_type=output_type)
    if negative_prompt and backbone.supports_negative_prompt:
        kwargs["negative_prompt"] = [negative_prompt] * len(prompts)
    if guidance_scale is not None:
        kwargs["guidance_scale"] = guidance_scale
    if latents is not None:
        kwargs["latents"] = backbone.to_pipeline_latents(latents)
    return backbone.pipeline(**kwargs).images


def generate_images(backbone: Backbone, prompts: str | Sequence[str], seeds: Sequence[int],
                    subjects: Sequence[Any] | None = None, gamma: float | None = None, init: str = "mean_shifted",
                    boxes: Sequence[NormBox] | None = None, relative_sizes: Sequence[float] | None = None,
                    segmix_params: SegMixParams = SegMixParams(), negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT,
                    num_inference_steps: int | None = None, guidance_scale: float | None = None,
                    height: int | None = None,
                    width: int | None = None, batch_size: int = 4, layout_name: str | None = None,
                    progress: bool = True, region_control: bool = False,
                    region_prompt: str = DEFAULT_REGION_PROMPT) -> list[GeneratedImage]:
    """Generate one image per seed (reusable by the trainer's validation and the benchmark runner).

    ``prompts``: one prompt, or one per seed, already filled in (see :func:`resolve_prompt`). ``subjects``
    (:class:`mudi.data.subjects.Subject`, in prompt order) are needed for ``init="mean_shifted"`` (``"auto"``: the
    backbone's ``default_init``, see :func:`mudi.sampling.init.resolve_init`); ``gamma``
    defaults to :func:`mudi.core.init_latents.default_gamma`; ``num_inference_steps`` and ``guidance_scale`` to
    the backbone's. Seeds are batched ``batch_size`` per pipeline call with one ``torch.Generator`` per seed, so
    image ``k`` depends only on its seed, not on the batching. ``region_control``: each subject's regional prompt
    (``region_prompt`` filled with its phrase) is confined to its box of the init's layout, the prompt rules
    elsewhere (:mod:`mudi.sampling.regions`); with ``init="none"`` the layout is composed for its boxes only.
    """
    init = resolve_init(init, backbone)
    seeds = [int(s) for s in seeds]
    prompt_list = [prompts] * len(seeds) if isinstance(prompts, str) else list(prompts)
    if len(prompt_list) != len(seeds):
        raise MudiError(f"{len(prompt_list)} prompts for {len(seeds)} seeds: give one prompt, or one per seed")
    warn_long_prompts(backbone.pipeline, prompt_list)
    use_init = init == "mean_shifted"
    if use_init and not subjects:
        raise MudiError("the mean-shifted init needs the subjects' segmented reference images: pass --subjects "
                        "(or use --init none)")
    if region_control and not subjects:
        raise MudiError("region control needs the subjects (their boxes come from a layout of their segmented "
                        "photos): pass --subjects, or a LoRA with its subjects file")
    use_layout = use_init or region_control
    g = float(default_gamma(len(subjects)) if gamma is None and use_init else (gamma or 0.0))
    H = int(height or backbone.default_resolution)
    W = int(width or backbone.default_resolution)
    check_image_size(backbone, H, W)
    steps = int(num_inference_steps or backbone.default_num_inference_steps)
    if guidance_scale is None:
        guidance_scale = backbone.default_guidance_scale
    if layout_name is None:
        layout_name = "boxes" if boxes is not None else "relative" if relative_sizes is not None else "random"
    region_embeds = encode_region_prompts(backbone, region_prompts(region_prompt, [s.phrase for s in subjects])) \
        if region_control else None
    out: list[GeneratedImage] = []
    starts = range(0, len(seeds), batch_size)
    for start in tqdm(starts, desc="generate", unit="batch", disable=not progress or len(starts) < 2):
        chunk = seeds[start:start + batch_size]
        gens = _generators(backbone, chunk)
        comps: list[Composition | None] = [None] * len(chunk)
        sources: list[list[str]] = [[] for _ in chunk]
        latents = None
        if use_layout:
            for k, s in enumerate(chunk):
                comps[k], sources[k] = compose_init(subjects, s, (H, W), boxes, relative_sizes, segmix_params)
        if use_init:
            latents, _ = build_initial_latents(backbone, comps, gens, g, steps)
        norms = [None if c is None else [(b[0] / W, b[1] / H, b[2] / W, b[3] / H) for b in c.boxes_xyxy]
                 for c in comps]
        regions = nullcontext() if region_embeds is None else \
            regions_applied(backbone, make_regions(backbone, region_embeds, norms, H, W))
        with regions:
            images = _pipeline_call(backbone, prompt_list[start:start + len(chunk)], gens, latents, negative_prompt,
                                    steps, guidance_scale, H, W)
        for k, s in enumerate(chunk):
            img = (np.asarray(images[k], dtype=np.float32) * 255).round().clip(0, 255).astype(np.uint8)
            out.append(GeneratedImage(img, prompt_list[start + k], s, init, g if use_init else 0.0, comps[k],
                                      layout_name if use_layout else "none", norms[k], sources[k], region_control))
    return out


def resolve_prompt(template: str, phrases: Sequence[str], use_count_prefix: bool = False,
                   count_noun: str = "objects") -> str:
    """Fill ``[V1]``, ``[V2]``… with the phrases; an empty template gives ``"A photo of [V1] and [V2]."``;
    ``use_count_prefix`` adds ``"N objects: "`` (Appendix B.9) unless the prompt already starts with it."""
    if not template.strip():
        if not phrases:
            raise MudiError("no prompt and no subjects: pass --prompt '...' (with [V1], [V2] for the subjects)")
        template = f"A photo of {join_subjects(phrases)}."
    try:
        prompt = fill_placeholders(template, phrases)
    except ValueError as e:
        raise MudiError(f"{e}; pass more --subjects or a LoRA with {SUBJECTS_FILE}") from None
    if use_count_prefix and phrases:
        prefix = count_prefix(len(phrases), count_noun)
        if not prompt.startswith(prefix):
            prompt = prefix + prompt
    return prompt
