"""``GenerateConfig``: every option of ``mudi generate`` (paper Sec. 4.2, Algorithm 2, Appendix B.3–B.9, C.1)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from mudi.adapters import registry
from mudi.config import to_dict
from mudi.core.prompts import DEFAULT_NEGATIVE_PROMPT, DEFAULT_REGION_PROMPT
from mudi.core.segmix import SegMixSettings
from mudi.errors import MudiError

CONFIG_FILE = "generate_config.yaml"
#: region control's options: left out of the stage pipelines' fingerprints while it is off (older runs stay done)
REGION_KEYS = ("region_control", "region_prompt")
#: what a generation's images do not depend on (where they go, the batching, the device) or what is fingerprinted by
#: content apart (the LoRA files, the subjects)
PLACEMENT_KEYS = ("output_dir", "lora", "subjects", "skip_existing", "device", "batch_size")
#: the families whose denoisers region control has attention processors for (:mod:`mudi.sampling.regions`)
REGION_FAMILIES = ("sd15", "sd2", "sdxl", "flux", "sd3")
SUPPORTED_REGION_FAMILIES = "UNet families (sd15, sd2, sdxl) and the MMDiT families FLUX.1 and SD3"


def check_region_family(backbone: str, what: str = "--region_control") -> None:
    """Before any model loads: region control on a family it has no attention processor for is one line."""
    family = registry.family_of(backbone)
    if family is not None and family not in REGION_FAMILIES:
        raise MudiError(f"{what}: region control is implemented for {SUPPORTED_REGION_FAMILIES}; {backbone} is "
                        f"{family}: leave it out, or use one of those backbones")


def generation_settings(config: GenerateConfig, *ignored: str) -> dict:
    """The settings of ``config`` its images depend on, for fingerprints: all but :data:`PLACEMENT_KEYS` and
    ``ignored``; region control's options only while it is on (runs made before it existed stay done)."""
    return {k: v for k, v in to_dict(config).items()
            if k not in PLACEMENT_KEYS + ignored and (config.region_control or k not in REGION_KEYS)}


@dataclass
class GenerateConfig:
    backbone: str = field(default="sdxl", metadata={
        "help": f"registered backbone: {', '.join(registry.names('backbone'))} (tiny-*: offline, random weights)"})
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
        "help": "negative prompt (Appendix A.1); ignored by backbones without one (FLUX)"})
    init: Literal["auto", "mean_shifted", "none"] = field(default="auto", metadata={
        "help": "mean_shifted (MuDI, Sec. 4.2), none (the plain pipeline), or auto: the backbone's (mean_shifted; "
                "FLUX none, as the authors' FLUX pipeline)"})
    gamma: float | None = field(default=None, metadata={
        "help": "init strength γ (default: 1 for two subjects as Algorithm 2, 2 for three and 3 beyond as Appendix B.9; > 4 saturates)"})
    layout: str = field(default="random", metadata={"help": "random (Seg-Mix), llm, or a layout JSON file"})
    relative_sizes: list[float] | None = field(default=None, metadata={
        "help": "height ratio per subject for the random layout, e.g. 1,2 (Appendix C.1)"})
    region_control: bool = field(default=False, metadata={
        "help": "Mix-of-Show's regionally controllable sampling (DB+Region, Fig. 6): each subject's regional prompt "
                "rules inside its box of the layout (random, --layout JSON/llm, --relative-sizes), the prompt "
                "elsewhere; any LoRA; with --init none the layout is composed for its boxes only"})
    region_prompt: str = field(default=DEFAULT_REGION_PROMPT, metadata={
        "help": "template of each subject's regional prompt for --region_control; {subject} stands for its phrase"})
    use_count_prefix: bool = field(default=False, metadata={
        "help": "prefix the prompt with 'N objects: ' (B.9)", "flags": ["--count-prefix"]})
    count_noun: str = field(default="objects", metadata={"help": "noun of the count prefix (objects, animals)"})
    num_images: int = field(default=4, metadata={"help": "number of images; image k uses seed + k"})
    seed: int = field(default=0, metadata={"help": "first seed (noise generator and layout)"})
    batch_size: int = field(default=4, metadata={"help": "images (seeds) per pipeline call"})
    num_inference_steps: int | None = field(default=None, metadata={
        "help": "sampler steps (default: the backbone's, 30)", "flags": ["--steps"]})
    guidance_scale: float | None = field(default=None, metadata={"help": "CFG scale (default: the pipeline's)"})
    height: int | None = field(default=None, metadata={"help": "image height (default: the model's resolution)"})
    width: int | None = field(default=None, metadata={"help": "image width (default: the model's resolution)"})
    segmix: SegMixSettings = field(default_factory=SegMixSettings, metadata={
        "help": "Seg-Mix geometry of the random layout: a preset (auto: the backbone's, as in training) and any "
                "field to change"})
    vae: str | None = field(default=None, metadata={
        "help": "VAE folder or hub id replacing the pipeline's, e.g. madebyollin/sdxl-vae-fp16-fix for SDXL in fp16"})
    llm_url: str | None = field(default=None, metadata={
        "help": "OpenAI-compatible endpoint for --layout llm, e.g. http://127.0.0.1:8000/v1"})
    llm_model: str = field(default="gpt-4o", metadata={"help": "model name sent to the LLM endpoint"})
    output_dir: str = field(default="mudi_generate", metadata={"help": "output folder", "flags": ["--out"]})
    skip_existing: bool = field(default=False, metadata={
        "help": "keep the images a previous run already wrote in output_dir (same names), make only the others"})
    device: str = field(default="auto", metadata={
        "help": "torch device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps"})
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = field(default="auto", metadata={
        "help": "model dtype: auto (bfloat16/float16 on a GPU, float32 on the CPU)"})

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise MudiError(f"--num_images {self.num_images}: give at least 1")
        if self.batch_size < 1:
            raise MudiError(f"--batch_size {self.batch_size}: give at least 1")
        if self.num_inference_steps is not None and self.num_inference_steps < 1:
            raise MudiError(f"--num_inference_steps {self.num_inference_steps}: give at least 1")
        if self.gamma is not None and (not math.isfinite(self.gamma) or self.gamma < 0):
            raise MudiError(f"--gamma {self.gamma} must be >= 0 (the paper uses 1-3; 0 gives the plain pipeline)")
        if self.lora_weights and len(self.lora_weights) != len(self.lora):
            raise MudiError(f"{len(self.lora_weights)} --lora_weights for {len(self.lora)} --lora: give one per LoRA")
        for name in ("height", "width"):
            v = getattr(self, name)
            if v is not None and v < 16:
                raise MudiError(f"--{name} {v} is too small; use at least the backbone's pixel multiple, e.g. 512")
        if self.relative_sizes is not None and any(r <= 0 for r in self.relative_sizes):
            raise MudiError(f"--relative-sizes {list(self.relative_sizes)} must all be positive, e.g. 1,2")
        if self.region_control and not self.region_prompt.strip():
            raise MudiError("--region_prompt is empty: give a template such as 'a photo of {subject}'")
        if self.region_control:
            check_region_family(self.backbone)
        if self.layout == "llm" and not self.llm_url:
            raise MudiError("--layout llm needs --llm_url, an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
        if self.layout not in ("random", "llm") and not self.layout.endswith(".json"):
            raise MudiError(f"--layout {self.layout!r}: use random, llm, or a .json file of boxes")
        if self.layout != "random" and self.relative_sizes is not None:
            raise MudiError("--relative-sizes applies to the random layout; a box layout already fixes the sizes")
