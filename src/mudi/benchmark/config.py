"""``BenchmarkConfig``: every option of ``mudi benchmark`` (paper Sec. 5.1, Appendix A.1, A.4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mudi.config import from_dict
from mudi.core.methods import METHODS
from mudi.core.prompts import DEFAULT_NEGATIVE_PROMPT
from mudi.errors import MudiError, unknown_name_error
from mudi.sampling.config import check_region_family
from mudi.scoring.config import EvaluateConfig
from mudi.scoring.step_selection import StepSelectionConfig, check_disjoint_seeds
from mudi.training.config import TrainConfig

CONFIG_FILE = "benchmark_config.yaml"
STAGE_FILE = "stage.json"
PROMPTS_FILE = "eval_prompts.json"

# (metric key written by `mudi evaluate`, column of the paper's Fig. 6 table)
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (("dnc_ds", "D&C-DS ↑"), ("dnc_dino", "D&C-DINO ↑"),
                                              ("image_reward", "ImageReward† ↑"), ("clip_score", "CLIPs† ↑"))
# The paper's evaluation models; `evaluate:` in the config overrides single keys.
PAPER_EVALUATE: dict[str, Any] = {"detector": "owlv2", "embedders": ["dreamsim", "dinov2"],
                                  "text_scorers": ["image_reward", "clip"]}
_OWNED_TRAIN_KEYS = ("subjects", "output_dir", "composition", "backbone", "pretrained_model_name_or_path",
                     "class_data_dir", "with_prior_preservation", "resume_from_checkpoint")
_OWNED_EVAL_KEYS = ("images", "subjects", "class_nouns", "output_dir", "prompt")
STAGES = ("train", "generate", "evaluate")


@dataclass
class StudySettings:
    """The "more than two subjects" study (paper Sec. 5.3, Appendix B.9, Fig. 29): success rate by number of
    subjects on a five-subject set, run by ``mudi benchmark`` when ``kind`` is ``num_subjects`` (docs/benchmark.md)."""

    kind: Literal["none", "num_subjects"] = field(default="none", metadata={
        "help": "none (the pair comparison) or num_subjects (success rate by number of subjects, B.9)"})
    pair: str = field(default="count_ablation", metadata={"help": "the benchmark folder with the subjects (a-e)"})
    methods: list[str] = field(default_factory=lambda: ["mudi", "dreambooth"], metadata={
        "help": "methods compared (paper Fig. 29: MuDI and DreamBooth)"})
    num_subjects: list[int] = field(default_factory=lambda: [2, 3, 4, 5], metadata={
        "help": "the numbers of subjects N composed per image"})
    num_images: int = field(default=150, metadata={
        "help": "images per N and method (the paper generated 600 per category over N = 2..5)"})
    prompt: str = field(default="{subjects} are in the jungle.", metadata={
        "help": "prompt; {subjects} = '[V1], [V2], ..., [VN]' of the image's subjects (paper: objects in the "
                "jungle; animals: '{subjects} are playing together in the pool.')"})
    use_count_prefix: bool = field(default=True, metadata={"help": "prefix 'N objects: ' (B.9: higher success)"})
    count_noun: str = field(default="objects", metadata={"help": "noun of the count prefix (objects, animals)"})
    metric: str = field(default="", metadata={
        "help": "D&C metric of the success threshold (default: dnc_ds when computed, else dnc_dino, else the first)"})
    min_dnc: float = field(default=0.7, metadata={
        "help": "success needs this D&C or more, besides N detections and no mixed/duplicate flag (a proxy for the "
                "paper's D&C filter + human judgement; docs/benchmark.md)"})

    def __post_init__(self) -> None:
        for m in self.methods:
            if m not in METHODS:
                raise unknown_name_error("study method", m, METHODS)
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise MudiError(f"study.methods {self.methods}: give each method once")
        if not self.num_subjects or any(n < 1 for n in self.num_subjects):
            raise MudiError(f"study.num_subjects {self.num_subjects}: give numbers of subjects >= 1, e.g. 2 3 4 5")
        if self.num_images < 1:
            raise MudiError(f"study.num_images {self.num_images} must be at least 1")
        if "{subjects}" not in self.prompt:
            raise MudiError(f"study.prompt {self.prompt!r} must contain {{subjects}}, e.g. '{{subjects}} are in the "
                            "jungle.'")


@dataclass
class BenchmarkConfig:
    benchmark_dir: str = field(default="", metadata={
        "help": "benchmark folder with pairs/<pair>/ and eval_prompts.json, e.g. ../shared/data/mudi-benchmark"})
    prompts_file: str = field(default="", metadata={
        "help": "JSON {pair: [prompts with [V1], [V2]]} (default: BENCHMARK_DIR/eval_prompts.json)"})
    pairs: list[str] = field(default_factory=list, metadata={
        "help": "pairs to run (default: every pair folder that has prompts)"})
    methods: list[str] = field(default_factory=lambda: list(METHODS), metadata={
        "help": f"methods, in table order: {', '.join(METHODS)}"})
    output_dir: str = field(default="mudi-benchmark-out", metadata={"help": "where every cell and the tables go"})
    backbone: str = field(default="sdxl", metadata={"help": "model family (paper: sdxl); tiny-sd for a smoke run"})
    pretrained_model_name_or_path: str | None = field(default=None, metadata={
        "help": "hub id or local diffusers folder (default: the family's base checkpoint)"})
    train: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "TrainConfig keys shared by every method, e.g. {max_train_steps: 1400, rank: 32}"})
    pair_train: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={
        "help": "per-pair TrainConfig keys over `train`, e.g. {can_and_monster_toy: {max_train_steps: 1600}}"})
    method_train: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={
        "help": "per-method TrainConfig keys over both, e.g. {dreambooth: {max_train_steps: 1000}}"})
    use_priors: bool = field(default=True, metadata={
        "help": "prior preservation with PRIORS_DIR/<pair> when that prior set exists"})
    priors_dir: str = field(default="", metadata={"help": "folder of prior sets per pair (default: BENCHMARK_DIR/priors)"})
    num_prompts: int | None = field(default=None, metadata={"help": "use the first N prompts per pair (default: all)"})
    num_seeds: int = field(default=10, metadata={"help": "images per prompt, seeds seed..seed+N-1 (paper: 10)"})
    seed: int = field(default=0, metadata={"help": "first seed"})
    num_inference_steps: int | None = field(default=None, metadata={
        "help": "sampler steps (default: the backbone's, the pipeline's own: 50 for SDXL as the authors sampled)"})
    guidance_scale: float | None = field(default=None, metadata={"help": "CFG scale (default: the pipeline's)"})
    gamma: float | None = field(default=None, metadata={"help": "init strength γ (default: 1 for two subjects, Algorithm 2; 2 for three, 3 beyond)"})
    height: int | None = field(default=None, metadata={"help": "image height (default: the model's)"})
    width: int | None = field(default=None, metadata={"help": "image width (default: the model's)"})
    negative_prompt: str = field(default=DEFAULT_NEGATIVE_PROMPT, metadata={
        "help": "negative prompt of the MuDI methods; DreamBooth and Cut-Mix use none (Appendix A.1)"})
    batch_size: int = field(default=4, metadata={"help": "images per pipeline call"})
    device: str = field(default="auto", metadata={
        "help": "generation and evaluation device: auto (this process's accelerate device: its GPU when there is "
                "one), cpu, cuda:1, ..."})
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = field(default="auto", metadata={
        "help": "generation dtype: auto (bfloat16/float16 on a GPU, float32 on the CPU); scoring runs in float32 "
                "(evaluate.dtype to change it)"})
    evaluate: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "EvaluateConfig keys over the paper's models (owlv2; dreamsim, dinov2; image_reward, clip)"})
    generic_classes: dict[str, str] = field(default_factory=dict, metadata={
        "help": "descriptive class -> plain class for mudi-no-desc, over the built-in table"})
    study: StudySettings = field(default_factory=StudySettings, metadata={
        "help": "instead of the pair comparison, a study: num_subjects = success rate by number of subjects (B.9)"})
    step_selection: StepSelectionConfig = field(default_factory=StepSelectionConfig, metadata={
        "help": "choose each cell's training step by score (off: the last step, as the paper's fixed step): the "
                "snapshots (train.save_steps) rendered on validation prompts and seeds apart from the evaluation "
                "seeds, judged by a scorer; per_pair.md shows the curves"})
    redo: list[str] = field(default_factory=list, metadata={
        "help": "stages to redo even when finished: train, generate, evaluate"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        for m in self.methods:
            if m not in METHODS:
                raise unknown_name_error("method", m, METHODS)
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise MudiError(f"methods {self.methods}: give each method once, e.g. methods=mudi,dreambooth,cutmix")
        for m in self.methods:
            if METHODS[m].region_control:
                check_region_family(self.backbone, f"method {m}")
        for s in self.redo:
            if s not in STAGES:
                raise MudiError(f"redo stage {s!r} is not one of {', '.join(STAGES)}")
        for name in ("num_seeds", "num_inference_steps", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise MudiError(f"{name} {getattr(self, name)} must be at least 1")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise MudiError(f"num_prompts {self.num_prompts} must be at least 1 (or unset for all)")
        if self.gamma is not None and self.gamma < 0:
            raise MudiError(f"gamma {self.gamma} must be >= 0 (the paper uses 1 for two subjects)")
        for m in self.method_train:
            if m not in METHODS:
                raise MudiError(f"method_train.{m}: unknown method; choose from {', '.join(METHODS)}")
        blocks = [("train", self.train)] + [(f"pair_train.{k}", v) for k, v in self.pair_train.items()] + \
                 [(f"method_train.{k}", v) for k, v in self.method_train.items()]
        for where, values in blocks:
            if not isinstance(values, dict):
                raise MudiError(f"{where}: expected a mapping of TrainConfig keys, got {values!r}")
            owned = [k for k in values if k in _OWNED_TRAIN_KEYS]
            if owned:
                raise MudiError(f"{where}.{owned[0]} is set by the benchmark (per pair and method); remove it")
            from_dict(TrainConfig, values, prefix=f"{where}.")
        owned = [k for k in self.evaluate if k in _OWNED_EVAL_KEYS]
        if owned:
            raise MudiError(f"evaluate.{owned[0]} is set by the benchmark for each cell; remove it")
        self.evaluate_config("check", [], "")  # validates keys and model names
        if self.step_selection.use:
            check_disjoint_seeds(self.step_selection.seeds, [self.seed + i for i in range(self.num_seeds)])

    def sampler_steps(self) -> int:
        """``num_inference_steps``, or the backbone's default (SD/SDXL 50, FLUX 28)."""
        from mudi.adapters import registry

        return self.num_inference_steps or int(registry.backbone_default(self.backbone, "default_num_inference_steps",
                                                                         50))

    def evaluate_config(self, images: str, subjects: list[str], output_dir: str, prompt: str = "",
                        cache_dir: str = "", device: str = "auto") -> EvaluateConfig:
        """The :class:`~mudi.evaluate.EvaluateConfig` of one evaluation (the paper's models + ``evaluate``); its
        dtype is EvaluateConfig's (float32, as the authors score) unless ``evaluate.dtype`` says otherwise."""
        values = {**PAPER_EVALUATE, "cache_dir": cache_dir, "device": device, **self.evaluate,
                  "images": images,
                  "subjects": subjects, "output_dir": output_dir, "prompt": prompt}
        return from_dict(EvaluateConfig, values, prefix="evaluate.")
