"""``ModularConfig``: every option of ``mudi modular`` (modular customization with Seg-Mix, paper Sec. 5.4,
Appendix C.2, Fig. 35; docs/modular.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mudi.config import from_dict
from mudi.errors import MudiError
from mudi.merging.config import METHODS
from mudi.segmentation.config import SegmentConfig, parse_backend
from mudi.training.config import TrainConfig

CONFIG_FILE = "modular_config.yaml"
SUMMARY_FILE = "modular.json"
STAGE_FILE = "stage.json"
#: TrainConfig keys the chain sets itself (each has its own ModularConfig field, or is the chain's wiring).
OWNED_TRAIN_KEYS = ("backbone", "pretrained_model_name_or_path", "subjects", "output_dir", "composition",
                    "base_lora", "base_lora_weights", "kl_weight", "max_train_steps", "rank", "learning_rate",
                    "relative_sizes", "seed", "resume_from_checkpoint", "overwrite", "class_data_dir",
                    "with_prior_preservation")
OWNED_SEGMENT_KEYS = ("subjects", "backend", "overwrite", "device", "dtype")


@dataclass
class ModularConfig:
    lora: list[str] = field(default_factory=list, metadata={
        "help": "the single-subject LoRAs: mudi runs (folders) or .safetensors files of any format diffusers reads"})
    lora_weights: list[float] = field(default_factory=list, metadata={
        "help": "one weight per LoRA, for the reference images and the merge (default 1 each)"})
    identifiers: list[str] = field(default_factory=list, metadata={
        "help": "per LoRA, the subject's rare identifier (its trigger word, e.g. olis); '' = from the LoRA's "
                "mudi_subjects.json. Needed for LoRAs from elsewhere"})
    class_nouns: list[str] = field(default_factory=list, metadata={
        "help": "per LoRA, the subject's class noun (dog, toy); '' = from the LoRA's mudi_subjects.json"})
    descriptive_classes: list[str] = field(default_factory=list, metadata={
        "help": "per LoRA, an optional descriptive class (corgi, 'red monster plush'); '' = none"})
    backbone: str | None = field(default=None, metadata={
        "help": "registered backbone the LoRAs were made for (default: the one their mudi_subjects.json records)"})
    pretrained_model_name_or_path: str | None = field(default=None, metadata={
        "help": "hub id or local diffusers folder (default: the family's reference checkpoint)"})
    merge_method: Literal["weighted_sum", "concat", "fusion"] = field(default="fusion", metadata={
        "help": "how the LoRAs are merged first (mudi merge --method): fusion (Mix-of-Show gradient fusion, the "
                "paper's), weighted_sum or concat"})
    merge_rank: int = field(default=0, metadata={"help": "rank of the merged LoRA (0: exact, the sum of the ranks)"})
    num_activation_samples: int = field(default=4, metadata={"help": "fusion: images per LoRA for its activations"})
    num_reference_images: int = field(default=8, metadata={
        "help": "single-subject images generated per subject with its own LoRA: the subject's reference photos"})
    reference_prompt: str = field(default="a photo of {phrase}, simple background, full body shot.", metadata={
        "help": "prompt of the reference images; {phrase} = the subject's phrase (identifier + class)"})
    num_inference_steps: int | None = field(default=None, metadata={
        "help": "sampler steps of the reference images and the fusion activations (default: the backbone's)",
        "flags": ["--steps"]})
    guidance_scale: float | None = field(default=None, metadata={
        "help": "CFG scale of the reference images (default: the pipeline's)"})
    segmentation_backend: str = field(default="owlv2+sam", metadata={
        "help": "segments the reference images (mudi segment --backend): owlv2+sam (paper), grabcut (offline), "
                "tiny-owlv2+tiny-sam (tests)"})
    segment: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "other SegmentConfig keys, e.g. {threshold: 0.2, min_mask_fraction: 0.01}"})
    finetune_steps: int = field(default=250, metadata={
        "help": "Seg-Mix fine-tuning steps on top of the merged model (paper: 200-300)"})
    kl_weight: float = field(default=1.0, metadata={
        "help": "β of the KL regularizer towards the merged model (Appendix C.2 names the regularizer but no "
                "weight; 1.0 is the paper's weight for iterative training, C.3)"})
    rank: int = field(default=32, metadata={"help": "rank of the new LoRA trained on top (paper: 32)"})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate of the fine-tuning"})
    relative_sizes: list[float] = field(default_factory=list, metadata={
        "help": "fixed relative size per subject (in LoRA order) in every Seg-Mix composition (Appendix C.1), "
                "e.g. 1 2; default random sizes"})
    train: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "other TrainConfig keys of the fine-tuning, e.g. {composition_prob: 1.0, resolution: 1024, "
                "train_batch_size: 2, mixed_precision: bf16, report_to: none}; Seg-Mix probability 1 by default"})
    seed: int = field(default=0, metadata={"help": "seed of the reference images, the merge and the fine-tuning"})
    output_dir: str = field(default="mudi-modular", metadata={"help": "output folder", "flags": ["--out"]})
    device: str = field(default="auto", metadata={
        "help": "torch device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1 (training: auto or cpu)"})
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = field(default="auto", metadata={
        "help": "model dtype of generation and merging: auto (bfloat16/float16 on a GPU, float32 on the CPU)"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        n = len(self.lora)
        for name in ("lora_weights", "identifiers", "class_nouns", "descriptive_classes"):
            values = getattr(self, name)
            if values and len(values) != n:
                raise MudiError(f"{len(values)} --{name} for {n} --lora: give one per LoRA ('' = from its "
                                "mudi_subjects.json)")
        if self.merge_method not in METHODS:
            raise MudiError(f"merge_method {self.merge_method!r}: choose one of {', '.join(METHODS)}")
        for name in ("num_activation_samples", "num_reference_images", "finetune_steps", "rank"):
            if getattr(self, name) < 1:
                raise MudiError(f"{name} {getattr(self, name)} must be at least 1")
        if self.merge_rank < 0:
            raise MudiError(f"merge_rank {self.merge_rank}: give 0 (exact) or a positive rank")
        if self.num_inference_steps is not None and self.num_inference_steps < 1:
            raise MudiError(f"num_inference_steps {self.num_inference_steps}: give at least 1")
        if "{phrase}" not in self.reference_prompt:
            raise MudiError(f"reference_prompt {self.reference_prompt!r} must contain {{phrase}}, e.g. 'a photo of "
                            "{phrase}, simple background, full body shot.'")
        if self.kl_weight < 0 or self.learning_rate <= 0:
            raise MudiError("kl_weight must be >= 0 and learning_rate > 0")
        if any(r <= 0 for r in self.relative_sizes):
            raise MudiError(f"relative_sizes {self.relative_sizes} must all be positive, e.g. 1 2")
        parse_backend(self.segmentation_backend)
        owned = [k for k in self.train if k in OWNED_TRAIN_KEYS]
        if owned:
            raise MudiError(f"train.{owned[0]} is set by mudi modular (use its own option, e.g. --finetune_steps, "
                            "--kl_weight, --rank, --relative_sizes); remove it from train")
        from_dict(TrainConfig, dict(self.train), prefix="train.")  # unknown keys fail now, with a suggestion
        owned = [k for k in self.segment if k in OWNED_SEGMENT_KEYS]
        if owned:
            raise MudiError(f"segment.{owned[0]} is set by mudi modular (the backend is --segmentation_backend); "
                            "remove it from segment")
        from_dict(SegmentConfig, {**self.segment, "backend": self.segmentation_backend}, prefix="segment.")

    @property
    def weights(self) -> list[float]:
        return [float(w) for w in self.lora_weights] if self.lora_weights else [1.0] * len(self.lora)

    def given(self, name: str, k: int) -> str:
        """The ``identifiers`` / ``class_nouns`` / ``descriptive_classes`` entry of LoRA ``k`` ('' = none)."""
        values = getattr(self, name)
        return str(values[k]).strip() if values else ""
