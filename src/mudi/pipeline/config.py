"""``RunConfig``: the whole pipeline — (describe) → segment → (prior) → train → generate → evaluate → report — in one
file.

Each stage's own options go in a block of that stage's config keys (``describe:``, ``segment:``, ``prior:``,
``train:``, ``generate:``, ``evaluate:``), checked against the stage's dataclass when the run is loaded; the keys the run sets
itself (subjects, folders, backbone, seeds) are refused there. Relative paths in a run file are relative to the
file, so a run folder with its config is reproducible from anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mudi.adapters import registry
from mudi.config import from_dict
from mudi.core.methods import METHODS
from mudi.describing.config import DescribeConfig
from mudi.devices import check_dtype_name
from mudi.errors import MudiError, unknown_name_error
from mudi.sampling.config import GenerateConfig, check_region_family
from mudi.scoring.config import EvaluateConfig
from mudi.scoring.step_selection import StepSelectionConfig
from mudi.segmentation.config import SegmentConfig
from mudi.segmentation.prior import PriorConfig
from mudi.training.config import TrainConfig


@dataclass(frozen=True)
class Stage:
    """One stage of a run: its name (``--from`` / ``--only``, the run file's block), the config dataclass its
    block fills, the keys the run sets itself (refused in the block), the block's keys that are paths (relative to
    the run file), whether it places itself (training: accelerate) rather than on the run's device, whether it
    takes the run's dtype, and the run's switch that turns it on (``use_prior``; none: it always runs)."""

    name: str
    config: type | None = None
    owned: tuple[str, ...] = ()
    path_keys: tuple[str, ...] = ()
    places_itself: bool = False
    takes_run_dtype: bool = True  # evaluate: float32 unless evaluate.dtype (issue 23)
    switch: str = ""


RUN_STAGES = (
    Stage("describe", DescribeConfig, ("subjects", "dry_run"), ("pretrained_model_name_or_path",),
          switch="use_describe"),
    Stage("segment", SegmentConfig, ("subjects",), ("detector_model", "segmenter_model")),
    Stage("prior", PriorConfig, ("output_dir", "subjects", "backbone", "pretrained_model_name_or_path"),
          switch="use_prior"),
    Stage("train", TrainConfig, ("subjects", "output_dir", "backbone", "pretrained_model_name_or_path",
                                 "class_data_dir", "resume_from_checkpoint", "overwrite", "composition"),
          ("base_lora", "vae"), places_itself=True),
    Stage("generate", GenerateConfig, ("backbone", "pretrained_model_name_or_path", "lora", "subjects", "prompt",
                                       "init", "output_dir", "num_images", "seed", "skip_existing"), ("layout", "vae")),
    Stage("evaluate", EvaluateConfig, ("images", "subjects", "output_dir", "prompt"), ("cache_dir", "detector_model"),
          takes_run_dtype=False),
    Stage("report"),
)
STAGES = tuple(s.name for s in RUN_STAGES)
BLOCKS = {s.name: s for s in RUN_STAGES if s.config is not None}  # the stages with a block in the run file
STAGE_CHOICES = ("", *STAGES)


def switched_on(config: RunConfig) -> list[Stage]:
    """The stages with a block that this run runs, in order (a stage with a switch only when it is on)."""
    return [s for s in RUN_STAGES if s.config is not None and (not s.switch or getattr(config, s.switch))]


@dataclass
class RunConfig:
    output_dir: str = field(default="mudi-run", metadata={"help": "the run folder (every stage's outputs, the report)"})
    subjects: list[str] = field(default_factory=list, metadata={
        "help": "subject folders or benchmark pair folders (copied into the run, then segmented there)"})
    backbone: str = field(default="sdxl", metadata={"help": "registered backbone, e.g. sdxl, flux, tiny-sd"})
    pretrained_model_name_or_path: str | None = field(default=None, metadata={
        "help": "hub id or local diffusers folder (default: the backbone's)"})
    methods: list[str] = field(default_factory=lambda: ["mudi"], metadata={
        "help": f"what to train and compare: {', '.join(METHODS)} (e.g. mudi,dreambooth)"})
    prompts: list[str] = field(default_factory=lambda: ["[V1] and [V2] playing together in a park."], metadata={
        "help": "generation prompts; [V1], [V2]... are the subjects"})
    num_images: int = field(default=4, metadata={"help": "images per prompt and method (seeds seed..seed+N-1)"})
    seed: int = field(default=0, metadata={"help": "first generation seed"})
    scorers: list[str] = field(default_factory=lambda: ["dnc"], metadata={
        "help": f"how generated images are judged: {', '.join(registry.names('scorer'))} (dnc: Detect-and-Compare + "
                "CLIP, the evaluate block; toyworld: the toy world's checker, toy subjects only)"})
    use_describe: bool = field(default=False, metadata={
        "help": "ask a vision-language model (the describe block, as mudi describe) for the subjects' descriptive "
                "classes and captions, written into the run's copies before segmenting (hand-written values kept)"})
    use_prior: bool = field(default=False, metadata={
        "help": "make a prior set of the subjects' classes (mudi prior) and train with prior preservation"})
    segmix_preview: int = field(default=8, metadata={"help": "Seg-Mix compositions shown in the report"})
    device: str = field(default="auto", metadata={"help": "device of every stage: auto, cpu, cuda, cuda:1, ..."})
    dtype: str = field(default="auto", metadata={
        "help": "dtype of the generation, segmentation and prior models (evaluation: float32 unless evaluate.dtype)"})
    train_launch: str = field(default="", metadata={
        "help": "run each training as `<this> -m mudi.cli train` in its own process, e.g. 'accelerate launch "
                "--multi_gpu --num_processes 4' for several GPUs (default: in this process)"})
    describe: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "DescribeConfig keys (with use_describe), e.g. {provider: openai, url: http://127.0.0.1:8000/v1, "
                "model: Qwen/Qwen2.5-VL-7B-Instruct}"})
    segment: dict[str, Any] = field(default_factory=dict, metadata={"help": "SegmentConfig keys, e.g. {backend: grabcut}"})
    prior: dict[str, Any] = field(default_factory=dict, metadata={"help": "PriorConfig keys, e.g. {num_images: 50}"})
    train: dict[str, Any] = field(default_factory=dict, metadata={"help": "TrainConfig keys, e.g. {max_train_steps: 1400}"})
    generate: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "GenerateConfig keys, e.g. {gamma: 2, num_inference_steps: 30}"})
    evaluate: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "EvaluateConfig keys, e.g. {embedders: [dreamsim, dinov2]}"})
    step_selection: StepSelectionConfig = field(default_factory=StepSelectionConfig, metadata={
        "help": "choose each LoRA's training step by score: snapshots (train.save_steps) rendered on validation "
                "prompts and seeds (apart from the evaluation seeds), judged by a scorer; the report shows the curve"})
    notice: str = field(default="", metadata={"help": "a paragraph shown at the top of the report"})
    from_stage: Literal[STAGE_CHOICES] = field(  # type: ignore[valid-type]
        default="", metadata={"help": "redo this stage and every later one", "flags": ["--from"]})
    only: Literal[STAGE_CHOICES] = field(  # type: ignore[valid-type]
        default="", metadata={"help": "run only this stage (the earlier ones must be done)"})
    force: bool = field(default=False, metadata={
        "help": "use an output_dir that holds other files (mudi run then adds only its own entries and never "
                "replaces or deletes what it did not write)"})

    def __post_init__(self) -> None:
        for m in self.methods:
            if m not in METHODS:
                raise unknown_name_error("method", m, METHODS)
        for m in self.methods:
            if METHODS[m].region_control:
                check_region_family(self.backbone, f"method {m}")
        plain = [m for m in self.methods if not METHODS[m].descriptive_class]
        if plain:
            raise MudiError(f"method {plain[0]} (the plain-class ablation) needs a benchmark pair folder: run it "
                            "with `mudi benchmark`")
        scorers = registry.names("scorer")
        bad = [x for x in self.scorers if x not in scorers]
        if bad or not self.scorers:
            raise unknown_name_error("scorer", bad[0] if bad else "(none)", scorers)
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise MudiError(f"methods {self.methods}: give each method once, e.g. mudi,dreambooth")
        if self.num_images < 1 or not self.prompts:
            raise MudiError("a run needs at least one prompt and num_images >= 1")
        if self.from_stage and self.only:
            raise MudiError("give --from or --only, not both")
        asked = BLOCKS.get(self.from_stage or self.only)
        if asked is not None and asked.switch and not getattr(self, asked.switch):
            flag = "--from" if self.from_stage else "--only"
            raise MudiError(f"{flag} {asked.name}: this run has no {asked.name} stage ({asked.switch} is false); "
                            f"set {asked.switch}=true to add it")
        check_dtype_name(self.dtype)
        if self.step_selection.use:
            from mudi.scoring.step_selection import check_disjoint_seeds

            check_disjoint_seeds(self.step_selection.seeds, [self.seed + i for i in range(self.num_images)])
        for stage, spec in BLOCKS.items():
            owned = [k for k in getattr(self, stage) if k in spec.owned]
            if owned:
                raise MudiError(f"{stage}.{owned[0]} is set by the run itself; remove it from the {stage} block")
            self.stage_config(stage, check=True)

    @classmethod
    def resolve_file_paths(cls, data: dict, base: Path) -> dict:
        """Relative paths in a run file are relative to the file (hub ids and URLs are left alone)."""
        data = dict(data)

        def local(v: Any, always: bool) -> Any:
            if not isinstance(v, str) or not v or "://" in v or Path(v).expanduser().is_absolute():
                return v
            p = base / v
            return str(p) if always or p.exists() else v

        if isinstance(data.get("subjects"), list):
            data["subjects"] = [local(v, True) for v in data["subjects"]]
        for key in ("output_dir",):
            if key in data:
                data[key] = local(data[key], True)
        if "pretrained_model_name_or_path" in data:
            data["pretrained_model_name_or_path"] = local(data["pretrained_model_name_or_path"], False)
        for block, keys in ((s.name, s.path_keys) for s in RUN_STAGES if s.path_keys):
            if isinstance(data.get(block), dict):
                data[block] = dict(data[block])
                for k in (k for k in keys if k in data[block]):
                    v = data[block][k]
                    data[block][k] = [local(x, False) for x in v] if isinstance(v, list) else local(v, False)
        return data

    def method_generation(self, method: str) -> dict:
        """What a method sets on its generate configs, beyond the run's ``generate:`` block: no negative prompt for a
        method without one (Appendix A.1) unless the run sets one, region control for DB+Region. The method's
        images and its step selection's renders both use it."""
        spec = METHODS[method]
        extra = {} if spec.use_negative_prompt or "negative_prompt" in self.generate else {"negative_prompt": ""}
        if spec.region_control:
            extra["region_control"] = True
        return {**extra, "init": spec.init}

    def stage_config(self, stage: str, check: bool = False, **values: Any) -> Any:
        """The stage's config: the run's block, then the values the run sets (validated like any config)."""
        spec = BLOCKS[stage]
        cls, block = spec.config, getattr(self, stage)
        if spec.places_itself:
            placement = {"device": "cpu" if self.device == "cpu" else "auto"}
        else:
            placement = {"device": self.device, **({"dtype": self.dtype} if spec.takes_run_dtype else {})}
        if check:
            values = {"output_dir": "check", "subjects": ["check"], "images": "check"} if stage != "segment" else {}
            values = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return from_dict(cls, {**placement, **block, **values}, prefix=f"{stage}.")
