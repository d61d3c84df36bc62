"""``mudi generate``: sample personalized multi-subject images with MuDI's mean-shifted initial latents.

Paper Sec. 4.2, Algorithm 2, Appendix A.1, B.3–B.9, C.1. For each image: compose ``x_init`` from the subjects'
segmented reference images (random Seg-Mix layout, explicit boxes, relative sizes, or an LLM layout), encode
it with the family's VAE, mask it to the subjects, and shift the pipeline's own initial noise towards it:
``z = eps + gamma * c * E(x_init) ⊙ M`` (:mod:`mudi.core.init_latents`). The init is built once per image,
before sampling; the diffusers pipeline is then called unchanged with ``latents=``, several seeds per call.
``--init none`` (or ``--gamma 0``) gives exactly the plain pipeline's images.

Outputs in ``--output_dir``: ``NNNN_seedS.png`` images and a ``NNNN_seedS.json`` sidecar each (prompt, seed,
γ, layout boxes, LoRA, model, versions); ``init/NNNN_seedS.png`` (the composition ``x_init``) and
``init/NNNN_seedS_mask.png`` (label map: 0 = background, k = the k-th subject); ``grid/grid.png`` (images
over their inits); ``generate_config.yaml`` (the resolved config). Extras live in sub-folders so that
``mudi evaluate --images OUTPUT_DIR`` sees only the generated images.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mudi.adapters.weights import torch_dtype
from mudi.config import load_config, save_config
from mudi.core.layout import NormBox, compose_layout, load_layout
from mudi.core.prompts import DEFAULT_NEGATIVE_PROMPT, count_prefix, fill_placeholders, join_subjects
from mudi.core.segmix import SegMixParams
from mudi.core.types import Composition
from mudi.errors import MudiError

HELP = "generate images of personalized subjects with MuDI's mean-shifted initial latents"
log = logging.getLogger(__name__)

SUBJECTS_FILE = "mudi_subjects.json"
LORA_FILE = "pytorch_lora_weights.safetensors"
DTYPES = ("float32", "float16", "bfloat16")


# ------------------------------------------------------------------------------------------------ config
@dataclass
class GenerateConfig:
    backbone: str = field(default="sdxl", metadata={"help": "model family: sd15, sd2, sdxl, flux, tiny-sd, "
                                                             "tiny-sdxl, tiny-flux"})
    pretrained_model_name_or_path: str | None = field(default=None, metadata={
        "help": "hub id or local diffusers folder (default: the family's reference checkpoint)"})
    lora: list[str] = field(default_factory=list, metadata={
        "help": "LoRA folders (with pytorch_lora_weights.safetensors) or .safetensors files"})
    lora_weights: list[float] = field(default_factory=list, metadata={"help": "one weight per LoRA (default 1)"})
    subjects: list[str] = field(default_factory=list, metadata={
        "help": "subject sets the init is built from, in [V1], [V2]... order (default: the LoRA's mudi_subjects.json)"})
    prompt: str = field(default="", metadata={
        "help": "prompt; [V1], [V2]... stand for the subjects' phrases (default: 'A photo of [V1] and [V2].')"})
    negative_prompt: str = field(default=DEFAULT_NEGATIVE_PROMPT, metadata={
        "help": "negative prompt (Appendix A.1); ignored by FLUX"})
    init: Literal["mean_shifted", "none"] = field(default="mean_shifted", metadata={
        "help": "mean_shifted (MuDI, Sec. 4.2) or none (the plain pipeline)"})
    gamma: float | None = field(default=None, metadata={
        "help": "init strength γ (default: 2 for up to 3 subjects, 3 beyond; > 4 saturates)"})
    layout: str = field(default="random", metadata={"help": "random (Seg-Mix), llm, or a layout JSON file"})
    relative_sizes: list[float] | None = field(default=None, metadata={
        "help": "height ratio per subject for the random layout, e.g. 1,2 (Appendix C.1)"})
    use_count_prefix: bool = field(default=False, metadata={"help": "prefix the prompt with 'N objects: ' (B.9)"})
    count_noun: str = field(default="objects", metadata={"help": "noun of the count prefix (objects, animals)"})
    num_images: int = field(default=4, metadata={"help": "number of images; image k uses seed + k"})
    seed: int = field(default=0, metadata={"help": "first seed (noise generator and layout)"})
    batch_size: int = field(default=4, metadata={"help": "images (seeds) per pipeline call"})
    num_inference_steps: int = field(default=30, metadata={"help": "sampler steps"})
    guidance_scale: float | None = field(default=None, metadata={"help": "CFG scale (default: the pipeline's)"})
    height: int | None = field(default=None, metadata={"help": "image height (default: the model's resolution)"})
    width: int | None = field(default=None, metadata={"help": "image width (default: the model's resolution)"})
    scale_range: tuple[float, float] = field(default=(0.4, 0.8), metadata={
        "help": "random layout: subject height / image height"})
    max_margin_frac: float = field(default=0.3, metadata={"help": "random layout: largest inward margin / width"})
    llm_url: str | None = field(default=None, metadata={
        "help": "OpenAI-compatible endpoint for --layout llm, e.g. http://127.0.0.1:8000/v1"})
    llm_model: str = field(default="gpt-4o", metadata={"help": "model name sent to the LLM endpoint"})
    output_dir: str = field(default="mudi_generate", metadata={"help": "output folder"})
    device: str = field(default="cpu", metadata={"help": "torch device, e.g. cpu, cuda, cuda:1"})
    dtype: Literal["float32", "float16", "bfloat16"] = field(default="float32", metadata={"help": "model dtype"})

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise MudiError(f"--num_images {self.num_images}: give at least 1")
        if self.batch_size < 1:
            raise MudiError(f"--batch_size {self.batch_size}: give at least 1")
        if self.num_inference_steps < 1:
            raise MudiError(f"--num_inference_steps {self.num_inference_steps}: give at least 1")
        if self.gamma is not None and (not math.isfinite(self.gamma) or self.gamma < 0):
            raise MudiError(f"--gamma {self.gamma} must be >= 0 (the paper uses 2-3; 0 gives the plain pipeline)")
        if self.lora_weights and len(self.lora_weights) != len(self.lora):
            raise MudiError(f"{len(self.lora_weights)} --lora_weights for {len(self.lora)} --lora: give one per LoRA")
        for name in ("height", "width"):
            v = getattr(self, name)
            if v is not None and (v < 16 or v % 8):
                raise MudiError(f"--{name} {v} must be a multiple of 8 (16 for FLUX), at least 16")
        if self.relative_sizes is not None and any(r <= 0 for r in self.relative_sizes):
            raise MudiError(f"--relative-sizes {list(self.relative_sizes)} must all be positive, e.g. 1,2")
        if self.layout == "llm" and not self.llm_url:
            raise MudiError("--layout llm needs --llm_url, an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
        if self.layout not in ("random", "llm") and not self.layout.endswith(".json"):
            raise MudiError(f"--layout {self.layout!r}: use random, llm, or a .json file of boxes")
        if self.layout != "random" and self.relative_sizes is not None:
            raise MudiError("--relative-sizes applies to the random layout; a box layout already fixes the sizes")


# ------------------------------------------------------------------------------------------------ library API
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



def _generators(backbone: Any, seeds: Sequence[int]) -> list:
    import torch

    device = backbone.device if hasattr(backbone, "device") else "cpu"
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


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


def build_initial_latents(backbone: Any, compositions: Sequence[Composition], generators: Sequence[Any],
                          gamma: float, num_inference_steps: int) -> tuple[Any, dict]:
    """Unit-variance mean-shifted latents ``(B, C, h, w)`` for one pipeline call (Algorithm 2).

    The noise is ``backbone.initial_noise`` drawn from ``generators`` exactly as the pipeline would; the
    compositions are encoded in one VAE call. Returns the latents and ``{"init_latents": E(x_init),
    "latent_mask": M↓, "noise": eps, "signal_coefficient": c}`` for inspection. ``gamma = 0`` returns the
    noise itself.
    """
    import torch

    from mudi.core.init_latents import image_to_pixels, mask_to_latent_grid, mean_shifted_latents

    H, W = compositions[0].union_mask.shape
    noise = backbone.initial_noise(len(generators), H, W, list(generators))
    coef = float(backbone.first_step_signal_coefficient(num_inference_steps))
    info: dict = {"noise": noise, "signal_coefficient": coef}
    if gamma == 0:
        return noise, info
    device, dtype = backbone.device, backbone.dtype
    pixels = torch.cat([image_to_pixels(c.image, device=device, dtype=dtype) for c in compositions])
    with torch.no_grad():
        init = backbone.encode_images(pixels)
    if init.shape[2:] != noise.shape[2:]:
        raise MudiError(f"image size {W}x{H} gives {tuple(init.shape[2:])} VAE latents but {tuple(noise.shape[2:])} "
                        f"noise latents for {backbone.family}: use a height and width divisible by 16")
    mask = mask_to_latent_grid(np.stack([c.union_mask for c in compositions]), tuple(noise.shape[2:]),
                               device=noise.device, dtype=noise.dtype)
    info.update(init_latents=init, latent_mask=mask)
    return mean_shifted_latents(noise, init, mask, gamma, coef), info


def _pipeline_call(backbone: Any, prompts: list[str], generators: list, latents: Any, negative_prompt: str | None,
                   num_inference_steps: int, guidance_scale: float | None, height: int, width: int,
                   output_type: str = "np") -> Any:
    kwargs: dict = dict(prompt=prompts, num_inference_steps=num_inference_steps, generator=generators,
                        height=height, width=width, output_type=output_type)
    if negative_prompt and backbone.family != "flux":
        kwargs["negative_prompt"] = [negative_prompt] * len(prompts)
    if guidance_scale is not None:
        kwargs["guidance_scale"] = guidance_scale
    if latents is not None:
        kwargs["latents"] = backbone.to_pipeline_latents(latents)
    return backbone.pipeline(**kwargs).images


def generate_images(backbone: Any, prompts: str | Sequence[str], seeds: Sequence[int],
                    subjects: Sequence[Any] | None = None, gamma: float | None = None, init: str = "mean_shifted",
                    boxes: Sequence[NormBox] | None = None, relative_sizes: Sequence[float] | None = None,
                    segmix_params: SegMixParams = SegMixParams(), negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT,
                    num_inference_steps: int = 30, guidance_scale: float | None = None, height: int | None = None,
                    width: int | None = None, batch_size: int = 4, layout_name: str | None = None,
                    progress: bool = True) -> list[GeneratedImage]:
    """Generate one image per seed (reusable by the trainer's validation and the benchmark runner).

    ``prompts``: one prompt, or one per seed, already filled in (see :func:`resolve_prompt`). ``subjects``
    (:class:`mudi.data.subjects.Subject`, in prompt order) are needed for ``init="mean_shifted"``; ``gamma``
    defaults to :func:`mudi.core.init_latents.default_gamma`. Seeds are batched ``batch_size`` per pipeline
    call with one ``torch.Generator`` per seed, so image ``k`` depends only on its seed, not on the batching.
    """
    from mudi.core.init_latents import default_gamma

    if init not in ("mean_shifted", "none"):
        raise MudiError(f"init {init!r} must be 'mean_shifted' or 'none'")
    seeds = [int(s) for s in seeds]
    prompt_list = [prompts] * len(seeds) if isinstance(prompts, str) else list(prompts)
    if len(prompt_list) != len(seeds):
        raise MudiError(f"{len(prompt_list)} prompts for {len(seeds)} seeds: give one prompt, or one per seed")
    use_init = init == "mean_shifted"
    if use_init and not subjects:
        raise MudiError("the mean-shifted init needs the subjects' segmented reference images: pass --subjects "
                        "(or use --init none)")
    g = float(default_gamma(len(subjects)) if gamma is None and use_init else (gamma or 0.0))
    H = int(height or backbone.default_resolution)
    W = int(width or backbone.default_resolution)
    if layout_name is None:
        layout_name = "boxes" if boxes is not None else "relative" if relative_sizes is not None else "random"
    from tqdm.auto import tqdm

    out: list[GeneratedImage] = []
    starts = range(0, len(seeds), batch_size)
    for start in tqdm(starts, desc="generate", unit="batch", disable=not progress or len(starts) < 2):
        chunk = seeds[start:start + batch_size]
        gens = _generators(backbone, chunk)
        comps: list[Composition | None] = [None] * len(chunk)
        sources: list[list[str]] = [[] for _ in chunk]
        latents = None
        if use_init:
            for k, s in enumerate(chunk):
                comps[k], sources[k] = compose_init(subjects, s, (H, W), boxes, relative_sizes, segmix_params)
            latents, _ = build_initial_latents(backbone, comps, gens, g, num_inference_steps)
        images = _pipeline_call(backbone, prompt_list[start:start + len(chunk)], gens, latents, negative_prompt,
                                num_inference_steps, guidance_scale, H, W)
        for k, s in enumerate(chunk):
            img = (np.asarray(images[k], dtype=np.float32) * 255).round().clip(0, 255).astype(np.uint8)
            comp = comps[k]
            norm = None
            if comp is not None:
                norm = [(b[0] / W, b[1] / H, b[2] / W, b[3] / H) for b in comp.boxes_xyxy]
            out.append(GeneratedImage(img, prompt_list[start + k], s, init, g if use_init else 0.0, comp,
                                      layout_name if use_init else "none", norm, sources[k]))
    return out


# ------------------------------------------------------------------------------------------------ LoRA, subjects
def _lora_file(path: Path) -> tuple[str, str | None]:
    if path.is_file():
        if path.suffix != ".safetensors":
            raise MudiError(f"{path}: a LoRA file must be .safetensors (or give the folder holding {LORA_FILE})")
        return str(path.parent), path.name
    if not path.is_dir():
        raise MudiError(f"{path}: no such LoRA folder or file; give the output folder of `mudi train`")
    if (path / LORA_FILE).is_file():
        return str(path), None
    found = sorted(p.name for p in path.glob("*.safetensors"))
    if len(found) == 1:
        return str(path), found[0]
    raise MudiError(f"{path}: no {LORA_FILE}" + (f"; found {found}, give one of them as --lora {path}/<file>"
                                                   if found else "; is this the output folder of `mudi train`?"))


def apply_loras(backbone: Any, paths: Sequence[str], weights: Sequence[float] | None = None) -> list[str]:
    """Load each LoRA into the pipeline as its own adapter and activate all with their weights."""
    if not paths:
        return []
    weights = list(weights) if weights else [1.0] * len(paths)
    names = []
    for k, p in enumerate(paths):
        folder, weight_name = _lora_file(Path(p))
        name = f"mudi_lora_{k}"
        kwargs = {"weight_name": weight_name} if weight_name else {}
        try:
            backbone.pipeline.load_lora_weights(folder, adapter_name=name, **kwargs)
        except (ValueError, KeyError, RuntimeError, OSError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise MudiError(f"{p}: cannot load this LoRA into the {backbone.family} pipeline ({first}); was it "
                            f"trained for --backbone {backbone.family}?") from None
        names.append(name)
    backbone.pipeline.set_adapters(names, adapter_weights=weights)
    return names


def read_lora_subjects(paths: Sequence[str]) -> list[dict] | None:
    """The subjects a LoRA was trained on, from ``mudi_subjects.json`` beside its weights (first found).

    Accepts a list of objects or ``{"subjects": [...]}``; each object has at least ``identifier`` or
    ``phrase``, and optionally ``name``, ``class_name`` and the subject folder (``path``/``root``/``paths``).
    """
    for p in paths:
        folder = Path(p) if Path(p).is_dir() else Path(p).parent
        f = folder / SUBJECTS_FILE
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise MudiError(f"{f}: not valid JSON ({e.msg}); re-run `mudi train` or delete it") from None
        rows = data.get("subjects") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise MudiError(f"{f}: expected a list of subjects with 'identifier' and 'phrase'")
        return rows
    return None


def _entry_phrase(row: dict) -> str:
    if row.get("phrase"):
        return str(row["phrase"])
    from mudi.core.prompts import subject_phrase

    cls = row.get("class_name") or row.get("descriptive_class") or row.get("class_noun") or row.get("class") or ""
    return subject_phrase(str(row.get("identifier", "")), str(cls))


def _entry_paths(row: dict) -> list[str]:
    for key in ("path", "root", "subject_path"):
        if isinstance(row.get(key), str):
            return [row[key]]
    if isinstance(row.get("paths"), list):
        return [str(v) for v in row["paths"]][:1]
    return []


def _subjects_of_lora(rows: list[dict]) -> list:
    """The subjects listed in ``mudi_subjects.json``, loaded from their folders, in the file's order (a
    benchmark pair folder listed for two subjects is read once)."""
    from mudi.data.subjects import load_subjects

    paths = [p for r in rows for p in _entry_paths(r)]
    if len(paths) != len(rows) or not all(Path(p).exists() for p in paths):
        raise MudiError(f"the subject folders listed in the LoRA's {SUBJECTS_FILE} are not all present "
                        f"({paths}); pass --subjects PATH [PATH ...] for the init (or use --init none)")
    loaded = load_subjects(list(dict.fromkeys(paths)))
    by_key = {k: s for s in loaded for k in (s.identifier, s.name) if k}
    picked = []
    for r in rows:
        s = by_key.get(str(r.get("identifier") or "")) or by_key.get(str(r.get("name") or ""))
        if s is None:
            raise MudiError(f"subject {r.get('name') or r.get('identifier')!r} of the LoRA's {SUBJECTS_FILE} is not "
                            f"in {_entry_paths(r)[0]}; pass --subjects PATH [PATH ...] for the init")
        picked.append(s)
    return picked


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


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("mudi", "torch", "diffusers", "transformers", "peft"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _grid(images: Sequence[np.ndarray], inits: Sequence[np.ndarray | None], thumb: int = 256) -> np.ndarray:
    """Generated images in the top row, their ``x_init`` below (when any), ``thumb`` px tiles, 8 per row."""
    from PIL import Image

    def tile(a: np.ndarray | None) -> np.ndarray:
        if a is None:
            return np.full((thumb, thumb, 3), 255, dtype=np.uint8)
        im = Image.fromarray(a)
        s = thumb / max(im.size)  # fit the tile: shrink large images, enlarge small ones (pixel-exact)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))),
                       Image.LANCZOS if s < 1 else Image.NEAREST)
        canvas = np.full((thumb, thumb, 3), 255, dtype=np.uint8)
        arr = np.asarray(im)
        y, x = (thumb - arr.shape[0]) // 2, (thumb - arr.shape[1]) // 2
        canvas[y:y + arr.shape[0], x:x + arr.shape[1]] = arr
        return canvas

    per_row = min(8, len(images))
    rows = []
    has_init = any(i is not None for i in inits)
    for start in range(0, len(images), per_row):
        imgs = [tile(a) for a in images[start:start + per_row]]
        ins = [tile(a) for a in inits[start:start + per_row]]
        pad = per_row - len(imgs)
        imgs += [tile(None)] * pad
        ins += [tile(None)] * pad
        rows.append(np.concatenate(imgs, axis=1))
        if has_init:
            rows.append(np.concatenate(ins, axis=1))
    return np.concatenate(rows, axis=0)


# ------------------------------------------------------------------------------------------------ workflow
def run(config: GenerateConfig, backbone: Any = None) -> list[GeneratedImage]:
    """Load the model (or use ``backbone``), apply LoRAs, resolve subjects/prompt/layout, generate, write."""
    from mudi.core.init_latents import default_gamma
    from mudi.data.subjects import load_subjects
    from mudi.io import save_image_atomic, write_json_atomic

    lora_rows = read_lora_subjects(config.lora)
    if config.subjects:
        subjects = load_subjects(config.subjects)
    elif lora_rows and config.init == "mean_shifted":
        subjects = _subjects_of_lora(lora_rows)
    else:
        subjects = []
    if lora_rows and subjects:
        known = {str(r.get("identifier", "")) for r in lora_rows}
        strangers = [s.name for s in subjects if s.identifier not in known]
        if strangers:
            log.warning("subjects %s are not among the LoRA's (%s): was it trained on them?", strangers,
                        ", ".join(sorted(known)))
    phrases = [s.phrase for s in subjects] if subjects else [_entry_phrase(r) for r in (lora_rows or [])]
    if config.init == "mean_shifted" and not subjects:
        raise MudiError("the mean-shifted init needs the subjects' segmented reference images: pass --subjects "
                        "PATH [PATH ...] (or use --init none)")
    prompt = resolve_prompt(config.prompt, phrases, config.use_count_prefix, config.count_noun)
    if config.relative_sizes is not None and len(config.relative_sizes) != len(subjects):
        raise MudiError(f"--relative-sizes has {len(config.relative_sizes)} value(s) for {len(subjects)} subjects "
                        f"({', '.join(s.name for s in subjects)}): give one per subject")
    for s in subjects:  # decode and validate every reference image before loading a model
        s.cutouts(max_side=max(config.height or 1024, config.width or 1024))

    boxes, layout_name = None, "random" if config.relative_sizes is None else "relative"
    if config.init == "mean_shifted" and config.layout.endswith(".json"):
        boxes = load_layout(config.layout, [[s.identifier, s.name, s.phrase] for s in subjects])
        layout_name = "boxes"
    elif config.init == "mean_shifted" and config.layout == "llm":
        from mudi.layout_llm import llm_layout_or_none

        boxes = llm_layout_or_none(prompt, [s.phrase for s in subjects], config.llm_url or "", config.llm_model)
        layout_name = "llm" if boxes is not None else "random (llm failed)"

    if backbone is None:
        from mudi.adapters.registry import load_backbone

        backbone = load_backbone(config.backbone, config.pretrained_model_name_or_path, config.device,
                                 torch_dtype(config.dtype))
    adapters = apply_loras(backbone, config.lora, config.lora_weights)
    gamma = config.gamma if config.gamma is not None else (default_gamma(len(subjects)) if subjects else 0.0)
    params = SegMixParams(scale_range=tuple(config.scale_range), max_margin_frac=config.max_margin_frac)
    seeds = [config.seed + k for k in range(config.num_images)]
    how = f"init {config.init}, gamma {gamma}, layout {layout_name}" if config.init != "none" else "plain pipeline"
    log.info("generating %d image(s) of %r with %s (%s)", len(seeds), prompt, config.backbone, how)
    results = generate_images(backbone, prompt, seeds, subjects, gamma, config.init, boxes, config.relative_sizes,
                              params, config.negative_prompt, config.num_inference_steps, config.guidance_scale,
                              config.height, config.width, config.batch_size, layout_name)

    out = Path(config.output_dir)
    versions = _versions()
    lora_info = [{"path": p, "weight": w, "adapter_name": n} for p, w, n in
                 zip(config.lora, config.lora_weights or [1.0] * len(config.lora), adapters)]
    for k, r in enumerate(results):
        stem = f"{k:04d}_seed{r.seed}"
        save_image_atomic(out / f"{stem}.png", r.image)
        meta: dict = {
            "image": f"{stem}.png", "prompt": r.prompt, "negative_prompt": config.negative_prompt,
            "seed": r.seed, "init": r.init, "gamma": r.gamma, "layout": r.layout,
            "subjects": [s.name for s in subjects], "phrases": phrases,
            "num_inference_steps": config.num_inference_steps, "guidance_scale": config.guidance_scale,
            "height": int(r.image.shape[0]), "width": int(r.image.shape[1]),
            "backbone": config.backbone, "pretrained_model_name_or_path": config.pretrained_model_name_or_path,
            "lora": lora_info, "versions": versions,
        }
        if r.composition is not None:
            label = np.zeros(r.composition.union_mask.shape, dtype=np.uint8)
            for j, m in enumerate(r.composition.masks):
                label[m] = j + 1
            save_image_atomic(out / "init" / f"{stem}.png", r.composition.image)
            save_image_atomic(out / "init" / f"{stem}_mask.png", label)
            meta.update(boxes_xyxy=[list(b) for b in r.composition.boxes_xyxy], boxes_normalized=r.boxes_normalized,
                        relative_sizes=config.relative_sizes, source_images=r.source_images,
                        init_image=f"init/{stem}.png", init_mask=f"init/{stem}_mask.png")
        write_json_atomic(out / f"{stem}.json", meta)
    save_image_atomic(out / "grid" / "grid.png", _grid([r.image for r in results],
                                                       [r.composition.image if r.composition else None
                                                        for r in results]))
    save_config(config, out / "generate_config.yaml")
    return results


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(" ", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 1,2") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with GenerateConfig keys")
    p.add_argument("--backbone", help="sd15, sd2, sdxl, flux, tiny-sd, tiny-sdxl, tiny-flux")
    p.add_argument("--pretrained_model_name_or_path")
    p.add_argument("--lora", nargs="+", help="LoRA folder(s) from `mudi train` (or .safetensors files)")
    p.add_argument("--lora_weights", "--lora-weights", dest="lora_weights", nargs="+", type=float,
                   help="one weight per LoRA (default 1)")
    p.add_argument("--subjects", nargs="+", help="subject sets the init is built from, in [V1], [V2]... order")
    p.add_argument("--prompt", help="e.g. '[V1] and [V2] playing in the pool'")
    p.add_argument("--negative_prompt", "--negative-prompt", dest="negative_prompt",
                   help=f"default {DEFAULT_NEGATIVE_PROMPT!r}")
    p.add_argument("--init", choices=["mean_shifted", "none"], help="none: the plain pipeline")
    p.add_argument("--gamma", type=float, help="init strength (default 2 for 2-3 subjects, 3 beyond)")
    p.add_argument("--layout", help="random, llm, or PATH.json with one normalised xyxy box per subject")
    p.add_argument("--relative-sizes", "--relative_sizes", dest="relative_sizes", type=_floats, nargs="+",
                   help="height ratio per subject, e.g. 1,2 or 1 2")
    p.add_argument("--count-prefix", dest="use_count_prefix", action="store_const", const=True,
                   help="prefix the prompt with 'N objects: '")
    p.add_argument("--count_noun", "--count-noun", dest="count_noun", help="objects (default) or animals")
    p.add_argument("--num_images", "--num-images", dest="num_images", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int)
    p.add_argument("--num_inference_steps", "--steps", dest="num_inference_steps", type=int)
    p.add_argument("--guidance_scale", type=float)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--llm_url", "--llm-url", dest="llm_url")
    p.add_argument("--llm_model", "--llm-model", dest="llm_model")
    p.add_argument("--output_dir", "--out", dest="output_dir")
    p.add_argument("--device")
    p.add_argument("--dtype", choices=list(DTYPES))
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. max_margin_frac=0.4")


FLAG_KEYS = ("backbone", "pretrained_model_name_or_path", "lora", "lora_weights", "subjects", "prompt",
             "negative_prompt", "init", "gamma", "layout", "relative_sizes", "use_count_prefix", "count_noun",
             "num_images", "seed", "batch_size", "num_inference_steps", "guidance_scale", "height", "width",
             "llm_url", "llm_model", "output_dir", "device", "dtype")


def main(args: argparse.Namespace) -> int:
    values = {k: getattr(args, k) for k in FLAG_KEYS if getattr(args, k, None) is not None}
    if "relative_sizes" in values:  # "1,2" or "1 2"
        values["relative_sizes"] = [v for part in values["relative_sizes"] for v in part]
    cfg = load_config(GenerateConfig, args.config, args.overrides, values)
    results = run(cfg)
    print(f"wrote {len(results)} image(s) to {cfg.output_dir} (see {Path(cfg.output_dir) / 'grid' / 'grid.png'})")
    return 0
