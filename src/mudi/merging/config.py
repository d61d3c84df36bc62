"""``MergeConfig``: every option of ``mudi merge`` (single-subject LoRAs → one LoRA; docs/merge.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from mudi.errors import MudiError

CONFIG_FILE = "merge_config.yaml"
REPORT_FILE = "merge_report.json"
METHODS = ("weighted_sum", "concat", "fusion")


@dataclass
class MergeConfig:
    lora: list[str] = field(default_factory=list, metadata={
        "help": "the LoRAs to merge: mudi runs (folders with pytorch_lora_weights.safetensors) or .safetensors files "
                "in the diffusers, kohya, A1111 or ComfyUI format"})
    lora_weights: list[float] = field(default_factory=list, metadata={
        "help": "one weight per LoRA, as diffusers' set_adapters(adapter_weights=...) (default 1 each)"})
    method: Literal["weighted_sum", "concat", "fusion"] = field(default="weighted_sum", metadata={
        "help": "weighted_sum (Σ w·ΔW, as diffusers applies several adapters, at --rank by SVD), concat (the same "
                "sum exactly, ranks stacked) or fusion (Mix-of-Show gradient fusion: each LoRA's outputs on its own "
                "activations, least squares)"})
    rank: int = field(default=0, metadata={
        "help": "rank of the merged LoRA (0: the sum of the input ranks, which is exact for weighted_sum and "
                "concat); the factorisation's residual is reported"})
    backbone: str | None = field(default=None, metadata={
        "help": "registered backbone the LoRAs were made for (default: the one their mudi_subjects.json records)"})
    pretrained_model_name_or_path: str | None = field(default=None, metadata={
        "help": "hub id or local diffusers folder (default: the family's reference checkpoint)"})
    prompts: list[str] = field(default_factory=list, metadata={
        "help": "fusion: per LoRA, prompts of its subject separated by '|', e.g. 'a photo of sks dog|sks dog on "
                "a sofa'; '' = 'a photo of <phrase>'... from the LoRA's mudi_subjects.json"})
    num_activation_samples: int = field(default=4, metadata={
        "help": "fusion: images generated per LoRA to collect its layers' input activations"})
    num_inference_steps: int = field(default=10, metadata={
        "help": "fusion: sampler steps of each activation image (every step's denoiser call is collected)",
        "flags": ["--steps"]})
    ridge: float = field(default=1e-4, metadata={
        "help": "fusion: ridge ε of the least squares, relative to the mean activation energy (keeps W0 along "
                "input directions no LoRA's activations visit)"})
    seed: int = field(default=0, metadata={"help": "first seed of the activation images (image k: seed + k)"})
    output_dir: str = field(default="mudi-merge", metadata={"help": "output folder", "flags": ["--out"]})
    device: str = field(default="auto", metadata={
        "help": "torch device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps"})
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = field(default="auto", metadata={
        "help": "model dtype: auto (bfloat16/float16 on a GPU, float32 on the CPU); the merge itself is float64"})

    def __post_init__(self) -> None:
        if self.lora_weights and len(self.lora_weights) != len(self.lora):
            raise MudiError(f"{len(self.lora_weights)} --lora_weights for {len(self.lora)} --lora: give one per LoRA")
        if any(not math.isfinite(w) for w in self.lora_weights):
            raise MudiError(f"--lora_weights {list(self.lora_weights)}: every weight must be a finite number")
        if self.prompts and len(self.prompts) != len(self.lora):
            raise MudiError(f"{len(self.prompts)} --prompts for {len(self.lora)} --lora: give one per LoRA ('' = from "
                            "its mudi_subjects.json), several prompts of one LoRA separated by '|'")
        if self.rank < 0:
            raise MudiError(f"--rank {self.rank}: give 0 (the sum of the input ranks) or a positive rank")
        if self.method == "concat" and self.rank:
            raise MudiError(f"--method concat keeps every input rank (r1 + r2 + ...), so it takes no --rank "
                            f"{self.rank}; for a smaller rank use --method weighted_sum --rank {self.rank} "
                            "(truncated SVD, residual reported)")
        if self.num_activation_samples < 1:
            raise MudiError(f"--num_activation_samples {self.num_activation_samples}: give at least 1")
        if self.num_inference_steps < 1:
            raise MudiError(f"--num_inference_steps {self.num_inference_steps}: give at least 1")
        if not (math.isfinite(self.ridge) and self.ridge > 0):
            raise MudiError(f"--ridge {self.ridge}: give a small positive number, e.g. 1e-4")

    @property
    def weights(self) -> list[float]:
        """One weight per LoRA (1 where none was given)."""
        return [float(w) for w in self.lora_weights] if self.lora_weights else [1.0] * len(self.lora)

    def prompts_of(self, k: int) -> list[str]:
        """The prompts given for LoRA ``k`` (``[]``: none given, use its manifest)."""
        if not self.prompts:
            return []
        return [p.strip() for p in self.prompts[k].split("|") if p.strip()]
