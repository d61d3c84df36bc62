"""``IterateConfig``: every option of ``mudi iterate`` (iterative training, paper Sec. 5.5, Appendix C.3;
docs/iterate.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mudi.config import from_dict
from mudi.core.prompts import DEFAULT_NEGATIVE_PROMPT
from mudi.errors import MudiError
from mudi.scoring.config import EvaluateConfig
from mudi.training.config import TrainConfig

CONFIG_FILE = "iterate_config.yaml"
#: The paper ranks the images by D&C-DS (DreamSim embeddings, OWLv2 detections); `evaluate:` overrides keys.
PAPER_EVALUATE: dict[str, Any] = {"detector": "owlv2", "embedders": ["dreamsim"], "text_scorers": []}
OWNED_TRAIN_KEYS = ("backbone", "pretrained_model_name_or_path", "subjects", "output_dir", "composition",
                    "base_lora", "base_lora_weights", "kl_weight", "max_train_steps", "rank", "learning_rate", "seed",
                    "resume_from_checkpoint", "overwrite", "class_data_dir", "with_prior_preservation")
OWNED_EVAL_KEYS = ("images", "subjects", "class_nouns", "output_dir", "prompt", "report")


@dataclass
class IterateConfig:
    lora: str = field(default="", metadata={
        "help": "the personalized LoRA to improve (a mudi run or `mudi modular` folder, or a .safetensors file)"})
    subjects: list[str] = field(default_factory=list, metadata={
        "help": "subject folders in [V1], [V2]... order: the mean-shifted init and the D&C references (default: "
                "the LoRA's mudi_subjects.json)"})
    backbone: str | None = field(default=None, metadata={
        "help": "registered backbone (default: the one the LoRA's mudi_subjects.json records)"})
    pretrained_model_name_or_path: str | None = field(default=None, metadata={
        "help": "hub id or local diffusers folder (default: the family's reference checkpoint)"})
    rounds: int = field(default=1, metadata={"help": "rounds R of generate → score → keep → fine-tune"})
    num_images: int = field(default=200, metadata={"help": "images M generated per round (paper: 200)"})
    keep: int = field(default=50, metadata={"help": "top-K images by D&C kept for fine-tuning per round (paper: 50)"})
    kl_weight: float = field(default=1.0, metadata={
        "help": "β of the KL regularizer towards the round's starting model (paper: 1.0)"})
    max_train_steps: int = field(default=300, metadata={
        "help": "fine-tuning steps per round (the paper does not give its number; 300 = 12 passes over 50 images "
                "at batch 2)"})
    rank: int = field(default=32, metadata={"help": "rank of each round's new LoRA (paper: 32)"})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate of the fine-tuning"})
    prompts_file: str = field(default="", metadata={
        "help": "one prompt per line with [V1], [V2]... (default: the simple prompts shipped with mudi)"})
    prompt_provider: Literal["templates", "llm"] = field(default="templates", metadata={
        "help": "templates (the prompts file) or llm (ask an OpenAI-compatible endpoint, as the paper's ChatGPT "
                "prompts; falls back to the templates on failure)"})
    llm_url: str | None = field(default=None, metadata={
        "help": "OpenAI-compatible endpoint for --prompt_provider llm, e.g. http://127.0.0.1:8000/v1 (the key, if "
                "any, comes from MUDI_LLM_API_KEY)"})
    llm_model: str = field(default="gpt-4o", metadata={"help": "model name sent to the LLM endpoint"})
    num_llm_prompts: int = field(default=20, metadata={"help": "prompts asked of the LLM (used in turn)"})
    use_count_prefix: bool = field(default=False, metadata={
        "help": "prefix each prompt with 'N objects: ' (B.9; helps with more than two subjects)",
        "flags": ["--count-prefix"]})
    count_noun: str = field(default="objects", metadata={"help": "noun of the count prefix (objects, animals)"})
    init: Literal["auto", "mean_shifted", "none"] = field(default="auto", metadata={
        "help": "initial latents of the generated images: mean_shifted (MuDI), none (the plain pipeline), or auto: "
                "the backbone's (mean_shifted; FLUX none, as the authors' FLUX pipeline)"})
    gamma: float | None = field(default=None, metadata={"help": "init strength γ (default: 1 for two subjects, 2 for three, 3 above)"})
    num_inference_steps: int | None = field(default=None, metadata={
        "help": "sampler steps (default: the backbone's)", "flags": ["--steps"]})
    guidance_scale: float | None = field(default=None, metadata={"help": "CFG scale (default: the pipeline's)"})
    negative_prompt: str = field(default=DEFAULT_NEGATIVE_PROMPT, metadata={"help": "negative prompt (Appendix A.1)"})
    batch_size: int = field(default=4, metadata={"help": "images per pipeline call"})
    metric: str = field(default="", metadata={
        "help": "D&C metric that ranks the images, e.g. dnc_ds (default: the first embedder's)"})
    evaluate: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "EvaluateConfig keys over the paper's models (owlv2; dreamsim), e.g. {embedders: [dinov2], "
                "threshold: 0.3}"})
    train: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "other TrainConfig keys of the fine-tuning, e.g. {train_batch_size: 2, mixed_precision: bf16}"})
    final_evaluation: bool = field(default=True, metadata={
        "help": "also generate and score the last round's model on round 1's prompts and seeds (a paired "
                "comparison with the starting model)"})
    seed: int = field(default=0, metadata={"help": "first seed; image k of round r uses seed + (r-1)·M + k"})
    output_dir: str = field(default="mudi-iterate", metadata={"help": "output folder", "flags": ["--out"]})
    device: str = field(default="auto", metadata={
        "help": "torch device of generation and scoring: auto (CUDA, then MPS, then CPU), cpu, cuda:1 "
                "(training: auto or cpu)"})
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = field(default="auto", metadata={
        "help": "model dtype of generation: auto (bfloat16/float16 on a GPU, float32 on the CPU); D&C scoring runs "
                "in float32 unless evaluate.dtype says otherwise"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        for name in ("rounds", "num_images", "keep", "max_train_steps", "rank", "batch_size", "num_llm_prompts"):
            if getattr(self, name) < 1:
                raise MudiError(f"{name} {getattr(self, name)} must be at least 1")
        if self.keep > self.num_images:
            raise MudiError(f"keep {self.keep} is more than the {self.num_images} images of a round; lower --keep or "
                            "raise --num_images")
        if self.kl_weight < 0 or self.learning_rate <= 0:
            raise MudiError("kl_weight must be >= 0 and learning_rate > 0")
        if self.gamma is not None and self.gamma < 0:
            raise MudiError(f"gamma {self.gamma} must be >= 0")
        if self.num_inference_steps is not None and self.num_inference_steps < 1:
            raise MudiError(f"num_inference_steps {self.num_inference_steps}: give at least 1")
        if self.prompt_provider == "llm" and not self.llm_url:
            raise MudiError("--prompt_provider llm needs --llm_url, an OpenAI-compatible endpoint, e.g. "
                            "http://127.0.0.1:8000/v1")
        owned = [k for k in self.train if k in OWNED_TRAIN_KEYS]
        if owned:
            raise MudiError(f"train.{owned[0]} is set by mudi iterate (use its own option: --max_train_steps, "
                            "--kl_weight, --rank, ...); remove it from train")
        from_dict(TrainConfig, dict(self.train), prefix="train.")
        owned = [k for k in self.evaluate if k in OWNED_EVAL_KEYS]
        if owned:
            raise MudiError(f"evaluate.{owned[0]} is set by mudi iterate; remove it")
        self.evaluate_config()

    def evaluate_config(self, subjects: list[str] | None = None) -> EvaluateConfig:
        """The EvaluateConfig of the D&C scoring (the paper's models, ``evaluate`` over them)."""
        values = {**PAPER_EVALUATE, "device": self.device, **self.evaluate,
                  "subjects": list(subjects or []), "report": False}
        return from_dict(EvaluateConfig, values, prefix="evaluate.")
