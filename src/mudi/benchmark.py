"""``mudi benchmark``: the paper's comparison protocol as one resumable command (Sec. 5.1, Appendix A.1, A.4).

For every selected benchmark pair and method: **train** a LoRA (``mudi.train``), **generate** prompts × seeds
(``mudi.generate.generate_images``, spread over the processes of ``accelerate launch`` with
``PartialState().split_between_processes``) and **evaluate** them (``mudi.evaluate``: D&C-DS, D&C-DINO,
ImageReward†, CLIPs†). Then write the table of the paper's Fig. 6 and per-pair breakdowns (Markdown, CSV,
JSON) into ``OUTPUT_DIR/results/``.

Every cell (pair × method × stage) records its settings' fingerprint in a small JSON marker written
atomically when it finishes; a re-run skips finished cells, resumes an interrupted training from its last
checkpoint and an interrupted generation from the images already on disk, and redoes a cell whose
settings changed. Methods that train the same recipe (``mudi`` and ``mudi-no-init``; ``dreambooth`` and
``mudi-no-segmix`` when their steps agree) share one LoRA.

Layout of ``OUTPUT_DIR``::

    benchmark_config.yaml                       the resolved config
    subjects/<pair>-nodesc/<subject>/           native subject folders without descriptive class
    <pair>/train/<recipe>/                      `mudi train` output (LoRA, train_config.yaml) + stage.json
    <pair>/<method>/images/pNN/pNN_seedS.png    generated images, one folder per prompt
    <pair>/<method>/meta/pNN_seedS.json         prompt, seed, init, γ, LoRA of each image
    <pair>/<method>/generate.json               generation marker (settings, status)
    <pair>/<method>/evaluation/pNN/             `mudi evaluate` output per prompt (report.html, ...)
    <pair>/<method>/evaluate.json               evaluation marker with the cell's mean scores
    results/results.{md,csv,json}, results/per_pair.{md,csv}
"""

from __future__ import annotations

import argparse
import csv
import difflib
import gc
import hashlib
import io
import json
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mudi.config import field_help, from_dict, load_config, save_config, to_dict
from mudi.core.prompts import DEFAULT_NEGATIVE_PROMPT
from mudi.errors import MudiError

HELP = "Run the paper's comparison: train, generate and evaluate every pair and method; write the Fig. 6 table."
log = logging.getLogger(__name__)

CONFIG_FILE = "benchmark_config.yaml"
STAGE_FILE = "stage.json"
PROMPTS_FILE = "eval_prompts.json"


@dataclass(frozen=True)
class Method:
    """One row of the comparison: how its LoRA is trained and how its images are sampled."""

    label: str
    composition: str  # TrainConfig.composition: segmix | cutmix | none
    init: str  # generate init: mean_shifted | none
    descriptive_class: bool = True
    use_negative_prompt: bool = True  # Appendix A.1: "sticker, collage." for MuDI, none for Cut-Mix/DB


METHODS: dict[str, Method] = {
    "mudi": Method("MuDI (Ours)", "segmix", "mean_shifted"),
    "dreambooth": Method("DB", "none", "none", use_negative_prompt=False),
    "cutmix": Method("Cut-Mix", "cutmix", "none", use_negative_prompt=False),
    "mudi-no-segmix": Method("w/o Seg-Mix", "none", "mean_shifted"),
    "mudi-no-init": Method("w/o Initialization", "segmix", "none"),
    "mudi-no-desc": Method("w/o Desc. Class", "segmix", "mean_shifted", descriptive_class=False),
}

# (metric key written by `mudi evaluate`, column of the paper's Fig. 6 table)
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (("dnc_ds", "D&C-DS ↑"), ("dnc_dino", "D&C-DINO ↑"),
                                              ("image_reward", "ImageReward† ↑"), ("clip_score", "CLIPs† ↑"))
# The paper's evaluation models; `evaluate:` in the config overrides single keys.
PAPER_EVALUATE: dict[str, Any] = {"detector": "owlv2", "embedders": ["dreamsim", "dinov2"],
                                  "text_scorers": ["image_reward", "clip"]}
# Descriptive class -> the plain class the "w/o Desc. Class" ablation trains with (Sec. 4.1, Table 1).
GENERIC_CLASSES: dict[str, str] = {
    "corgi": "dog", "chow chow": "dog", "weimaraner": "dog", "russian blue": "cat",
    "harry potter toy": "toy", "white robot toy": "toy", "red monster plush": "toy", "blue drink can": "can",
    "brown teddy bear": "teddy bear", "beige teddy bear": "teddy bear",
}
_OWNED_TRAIN_KEYS = ("subjects", "output_dir", "composition", "backbone", "pretrained_model_name_or_path",
                     "class_data_dir", "with_prior_preservation", "resume_from_checkpoint")
_OWNED_EVAL_KEYS = ("images", "subjects", "class_nouns", "output_dir", "prompt")
STAGES = ("train", "generate", "evaluate")


# ------------------------------------------------------------------------------------------------ config
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
    num_inference_steps: int = field(default=30, metadata={"help": "sampler steps"})
    guidance_scale: float | None = field(default=None, metadata={"help": "CFG scale (default: the pipeline's)"})
    gamma: float | None = field(default=None, metadata={"help": "init strength γ (default: 2 for 2-3 subjects)"})
    height: int | None = field(default=None, metadata={"help": "image height (default: the model's)"})
    width: int | None = field(default=None, metadata={"help": "image width (default: the model's)"})
    negative_prompt: str = field(default=DEFAULT_NEGATIVE_PROMPT, metadata={
        "help": "negative prompt of the MuDI methods; DreamBooth and Cut-Mix use none (Appendix A.1)"})
    batch_size: int = field(default=4, metadata={"help": "images per pipeline call"})
    device: str | None = field(default=None, metadata={
        "help": "generation device (default: accelerate's choice for this process, e.g. cuda:1 or cpu)"})
    dtype: Literal["float32", "float16", "bfloat16"] = field(default="float32", metadata={
        "help": "generation dtype (float16 on GPUs)"})
    evaluate: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "EvaluateConfig keys over the paper's models (owlv2; dreamsim, dinov2; image_reward, clip)"})
    generic_classes: dict[str, str] = field(default_factory=dict, metadata={
        "help": "descriptive class -> plain class for mudi-no-desc, over the built-in table"})
    redo: list[str] = field(default_factory=list, metadata={
        "help": "stages to redo even when finished: train, generate, evaluate"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        for m in self.methods:
            if m not in METHODS:
                close = difflib.get_close_matches(m, list(METHODS), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise MudiError(f"unknown method {m!r}; {hint}choose from {', '.join(METHODS)}")
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise MudiError(f"methods {self.methods}: give each method once, e.g. methods=mudi,dreambooth,cutmix")
        for s in self.redo:
            if s not in STAGES:
                raise MudiError(f"redo stage {s!r} is not one of {', '.join(STAGES)}")
        for name in ("num_seeds", "num_inference_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise MudiError(f"{name} {getattr(self, name)} must be at least 1")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise MudiError(f"num_prompts {self.num_prompts} must be at least 1 (or unset for all)")
        if self.gamma is not None and self.gamma < 0:
            raise MudiError(f"gamma {self.gamma} must be >= 0 (the paper uses 2)")
        for m in self.method_train:
            if m not in METHODS:
                raise MudiError(f"method_train.{m}: unknown method; choose from {', '.join(METHODS)}")
        blocks = [("train", self.train)] + [(f"pair_train.{k}", v) for k, v in self.pair_train.items()] + \
                 [(f"method_train.{k}", v) for k, v in self.method_train.items()]
        from mudi.train import TrainConfig

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

    def evaluate_config(self, images: str, subjects: list[str], output_dir: str, prompt: str = "",
                        cache_dir: str = "") -> Any:
        """The :class:`~mudi.evaluate.EvaluateConfig` of one evaluation (the paper's models + ``evaluate``)."""
        from mudi.evaluate import EvaluateConfig

        values = {**PAPER_EVALUATE, "cache_dir": cache_dir, **self.evaluate, "images": images,
                  "subjects": subjects, "output_dir": output_dir, "prompt": prompt}
        return from_dict(EvaluateConfig, values, prefix="evaluate.")


# ------------------------------------------------------------------------------------------------ helpers
def fingerprint(obj: Any) -> str:
    """A short stable hash of JSON-able settings."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_marker(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # a marker is written atomically; a broken one is treated as absent
    return data if isinstance(data, dict) else None


def is_done(path: Path, fp: str) -> bool:
    m = read_marker(path)
    return bool(m and m.get("status") == "done" and m.get("fingerprint") == fp)


def load_prompts(path: Path) -> dict[str, list[str]]:
    if not path.is_file():
        raise MudiError(f"{path}: no evaluation prompts; give prompts_file, a JSON mapping pair names to lists "
                        "of prompts with [V1] and [V2]")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MudiError(f"{path}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise MudiError(f"{path}: expected a mapping {{pair: [prompts]}}")
    out = {}
    for k, v in data.items():
        if k.startswith("_"):
            continue
        if not isinstance(v, list) or not v or not all(isinstance(p, str) and p.strip() for p in v):
            raise MudiError(f"{path}: pair {k!r} must map to a non-empty list of prompts")
        out[k] = v
    return out


def select_pairs(config: BenchmarkConfig) -> list[tuple[str, Path, list[str]]]:
    """``(pair, pair folder, prompts)`` for every selected pair, in config (or file) order."""
    root = Path(config.benchmark_dir)
    if not config.benchmark_dir or not (root / "pairs").is_dir():
        raise MudiError(f"benchmark_dir {config.benchmark_dir!r}: no pairs/ folder there; give the MuDI benchmark "
                        "folder, e.g. --benchmark_dir ../shared/data/mudi-benchmark")
    prompts = load_prompts(Path(config.prompts_file) if config.prompts_file else root / PROMPTS_FILE)
    present = sorted(p.name for p in (root / "pairs").iterdir() if p.is_dir())
    if config.pairs:
        names = list(config.pairs)
        for n in names:
            if n not in present:
                close = difflib.get_close_matches(n, present, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise MudiError(f"pair {n!r} is not in {root / 'pairs'}; {hint}present: {', '.join(present)}")
            if n not in prompts:
                raise MudiError(f"pair {n!r} has no prompts in the prompts file; add '{n}': ['[V1] and [V2] ...']")
    else:
        names = [n for n in prompts if n in present]
        missing = [n for n in prompts if n not in present]
        if missing:
            log.warning("prompts given for pairs not in %s (skipped): %s", root / "pairs", ", ".join(missing))
        if not names:
            raise MudiError(f"no pair folder in {root / 'pairs'} has prompts in the prompts file")
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise MudiError(f"pairs {sorted(dup)} listed twice")
    return [(n, root / "pairs" / n, prompts[n][:config.num_prompts] if config.num_prompts else prompts[n])
            for n in names]


def generic_class(subject: Any, table: dict[str, str]) -> str:
    """The plain class of ``subject`` for the "w/o descriptive class" ablation."""
    return table.get(subject.class_name.lower(), subject.class_noun)


def write_nodesc_subjects(pair_dir: Path, out_dir: Path, table: dict[str, str]) -> list[Path]:
    """The pair's subjects as native folders (``mudi convert``) with the descriptive class replaced by the
    plain class, in ``subject.yaml`` and in every caption. Returns the folders, in [V1], [V2] order."""
    import yaml

    from mudi.convert import convert
    from mudi.data.subjects import SUBJECT_FILE, find_subjects
    from mudi.io import write_json_atomic, write_text_atomic

    subjects = find_subjects(pair_dir)
    folders = [out_dir / s.name for s in subjects]
    fp = fingerprint({"pair": str(pair_dir), "classes": [generic_class(s, table) for s in subjects]})
    if is_done(out_dir / STAGE_FILE, fp):
        return folders
    convert(pair_dir, out_dir, overwrite=True)
    for s, folder in zip(subjects, folders):
        plain = generic_class(s, table)
        if plain == s.class_name:
            log.warning("%s: no plain class known for %r; the no-desc ablation keeps it (set generic_classes)",
                        s.name, s.class_name)
        meta = s.to_metadata()
        meta.pop("descriptive_class", None)
        meta["class_noun"] = plain
        new_phrase = f"{s.identifier} {plain}"
        pattern = re.compile(rf"(?<!\w){re.escape(s.phrase)}(?!\w)", re.IGNORECASE)
        if meta.get("captions"):
            meta["captions"] = {k: pattern.sub(new_phrase, v) for k, v in meta["captions"].items()}
        write_text_atomic(folder / SUBJECT_FILE, yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))
    write_json_atomic(out_dir / STAGE_FILE, {"status": "done", "fingerprint": fp})
    return folders


class _NoDetector:
    """Stands in when the detector cannot be loaded: no detections, and no D&C metric is reported."""

    def detect(self, images: Any, queries: Any, threshold: float) -> list[list[Any]]:
        return [[] for _ in images]


def _metric_name(kind: str, name: str) -> str:
    from mudi.adapters.eval_registry import METRIC_NAMES

    if kind == "embedder":
        return METRIC_NAMES.get(name, f"dnc_{name.replace('-', '_')}")
    return "clip_score" if name in ("clip", "tiny-clip") else name


# ------------------------------------------------------------------------------------------------ the runner
class BenchmarkRunner:
    """Runs the cells of one benchmark; models are built lazily and shared between cells."""

    def __init__(self, config: BenchmarkConfig, detector: Any = None, embedders: dict[str, Any] | None = None,
                 text_scorers: dict[str, Any] | None = None) -> None:
        self.config = config
        self.out = Path(config.output_dir)
        self._eval_models = None if detector is None and embedders is None and text_scorers is None else (
            detector if detector is not None else _NoDetector(), dict(embedders or {}), dict(text_scorers or {}), {})
        self._gen_backbone: Any = None
        self.generic_classes = {**GENERIC_CLASSES, **{k.lower(): v for k, v in config.generic_classes.items()}}
        from accelerate import PartialState

        on_cpu = config.device == "cpu" or config.train.get("device") == "cpu"
        self.state = PartialState(cpu=on_cpu)
        self.counts = {"train": 0, "generate": 0, "evaluate": 0, "skipped": 0}
        self._trained: set[str] = set()  # recipes trained in this run (methods may share one)

    def say(self, text: str) -> None:
        if self.state.is_main_process:
            print(f"mudi benchmark: {text}", flush=True)

    # ---------------------------------------------------------------------------------------- train
    def train_config(self, pair: str, pair_dir: Path, method: str) -> tuple[Any, str]:
        """The resolved TrainConfig of (pair, method) and its recipe fingerprint."""
        from mudi.train import TrainConfig

        c, spec = self.config, METHODS[method]
        values = {**c.train, **c.pair_train.get(pair, {}), **c.method_train.get(method, {})}
        prior = Path(c.priors_dir or Path(c.benchmark_dir) / "priors") / pair
        prior_dir = str(prior) if c.use_priors and prior.is_dir() else None
        recipe = {"pair": pair, "descriptive_class": spec.descriptive_class, "composition": spec.composition,
                  "backbone": c.backbone, "model": c.pretrained_model_name_or_path, "prior": prior_dir,
                  "train": {k: v for k, v in sorted(values.items()) if k not in ("progress", "device")}}
        if not spec.descriptive_class:
            recipe["generic_classes"] = self.generic_classes
        fp = fingerprint(recipe)
        name = f"{spec.composition}{'' if spec.descriptive_class else '-nodesc'}-{fp[:8]}"
        out_dir = self.out / pair / "train" / name
        if spec.descriptive_class:
            subjects = [str(pair_dir)]
        else:
            subjects = [str(p) for p in self.nodesc_folders(pair, pair_dir)]
        cfg = from_dict(TrainConfig, {"progress": c.progress, **values, "backbone": c.backbone,
                                      "pretrained_model_name_or_path": c.pretrained_model_name_or_path,
                                      "subjects": subjects, "composition": spec.composition,
                                      "class_data_dir": prior_dir, "output_dir": str(out_dir),
                                      "resume_from_checkpoint": "latest"}, prefix="train.")
        return cfg, fp

    def nodesc_folders(self, pair: str, pair_dir: Path) -> list[Path]:
        target = self.out / "subjects" / f"{pair}-nodesc"
        if self.state.is_main_process:
            folders = write_nodesc_subjects(pair_dir, target, self.generic_classes)
        self.state.wait_for_everyone()
        if not self.state.is_main_process:
            folders = write_nodesc_subjects(pair_dir, target, self.generic_classes)  # already done: just lists
        return folders

    def run_train(self, pair: str, pair_dir: Path, method: str, tag: str) -> tuple[Any, str]:
        import mudi.train as train_mod
        from mudi.io import write_json_atomic

        cfg, fp = self.train_config(pair, pair_dir, method)
        out_dir = Path(cfg.output_dir)
        marker = out_dir / STAGE_FILE
        redo = "train" in self.config.redo and fp not in self._trained
        if is_done(marker, fp) and not redo:
            self.say(f"{tag} train: done already ({out_dir.name}), skipped")
            self.counts["skipped"] += 1
            return cfg, fp
        if redo and self.state.is_main_process:
            shutil.rmtree(out_dir, ignore_errors=True)  # from scratch, not from its last checkpoint
        self.state.wait_for_everyone()
        self._gen_backbone = None  # free the generation model before loading a training one
        gc.collect()
        self.say(f"{tag} train {cfg.composition}, {cfg.max_train_steps} steps → {out_dir}")
        t0 = time.perf_counter()
        if self.state.is_main_process:
            write_json_atomic(marker, {"status": "running", "fingerprint": fp})
        train_mod.run(cfg)
        self.state.wait_for_everyone()
        if self.state.is_main_process:
            write_json_atomic(marker, {"status": "done", "fingerprint": fp, "seconds": time.perf_counter() - t0,
                                       "steps": cfg.max_train_steps})
        self.counts["train"] += 1
        self._trained.add(fp)
        return cfg, fp

    # ---------------------------------------------------------------------------------------- generate
    def generation_backbone(self) -> Any:
        if self._gen_backbone is None:
            import torch

            from mudi.adapters.registry import load_backbone

            device = self.config.device or str(self.state.device)
            self._gen_backbone = load_backbone(self.config.backbone, self.config.pretrained_model_name_or_path,
                                               device, getattr(torch, self.config.dtype))
        return self._gen_backbone

    def run_generate(self, pair: str, method: str, train_cfg: Any, train_fp: str, prompts: list[str],
                     tag: str) -> tuple[str, Path]:
        import numpy as np

        import mudi.generate as gen_mod
        from mudi.core.prompts import fill_placeholders, placeholder_count
        from mudi.data.subjects import load_subjects
        from mudi.io import save_image_atomic, write_json_atomic

        c, spec = self.config, METHODS[method]
        cell = self.out / pair / method
        subjects = load_subjects(train_cfg.subjects)
        phrases = [s.phrase for s in subjects]
        for p in prompts:
            if placeholder_count(p) > len(subjects):
                raise MudiError(f"prompt {p!r} of pair {pair} names [V{placeholder_count(p)}] but the pair has "
                                f"{len(subjects)} subjects")
        filled = [fill_placeholders(p, phrases) for p in prompts]
        seeds = [c.seed + i for i in range(c.num_seeds)]
        negative = c.negative_prompt if spec.use_negative_prompt else None
        settings = {"train": train_fp, "init": spec.init, "prompts": filled, "seeds": seeds,
                    "num_inference_steps": c.num_inference_steps, "guidance_scale": c.guidance_scale,
                    "gamma": c.gamma if spec.init != "none" else 0.0, "height": c.height, "width": c.width,
                    "negative_prompt": negative, "backbone": c.backbone, "dtype": c.dtype}
        fp = fingerprint(settings)
        marker = cell / "generate.json"
        if is_done(marker, fp) and "generate" not in c.redo:
            self.say(f"{tag} generate: done already, skipped")
            self.counts["skipped"] += 1
            return fp, cell
        old = read_marker(marker)
        if self.state.is_main_process:
            if old is not None and (old.get("fingerprint") != fp or "generate" in c.redo):
                log.info("%s: generation settings changed; removing the previous images", cell)
                for sub in ("images", "meta"):
                    shutil.rmtree(cell / sub, ignore_errors=True)
            write_json_atomic(marker, {"status": "running", "fingerprint": fp, "settings": settings})
        self.state.wait_for_everyone()

        jobs = [(k, s) for k in range(len(prompts)) for s in seeds]
        with self.state.split_between_processes(jobs) as mine:
            mine = [(k, s) for k, s in mine if not (cell / "images" / f"p{k:02d}" / f"p{k:02d}_seed{s}.png").is_file()]
        self.say(f"{tag} generate {len(prompts)} prompt(s) × {len(seeds)} seed(s), init {spec.init} "
                 f"({len(mine)} image(s) to make here, {self.state.num_processes} process(es))")
        if mine:
            backbone = self.generation_backbone()
            adapters = gen_mod.apply_loras(backbone, [train_cfg.output_dir])
            try:
                from tqdm.auto import tqdm

                bs = c.batch_size
                bar = tqdm(range(0, len(mine), bs), desc=f"{pair}/{method} generate", unit="batch",
                           disable=not c.progress)
                for start in bar:
                    chunk = mine[start:start + bs]
                    results = gen_mod.generate_images(
                        backbone, [filled[k] for k, _ in chunk], [s for _, s in chunk],
                        subjects=subjects if spec.init != "none" else None, gamma=c.gamma, init=spec.init,
                        negative_prompt=negative, num_inference_steps=c.num_inference_steps,
                        guidance_scale=c.guidance_scale, height=c.height, width=c.width, batch_size=bs,
                        progress=False)
                    for (k, s), r in zip(chunk, results):
                        stem = f"p{k:02d}_seed{s}"
                        write_json_atomic(cell / "meta" / f"{stem}.json", {
                            "image": f"images/p{k:02d}/{stem}.png", "pair": pair, "method": method,
                            "prompt": r.prompt, "prompt_template": prompts[k], "negative_prompt": negative,
                            "seed": s, "init": r.init, "gamma": r.gamma, "layout": r.layout,
                            "boxes_normalized": r.boxes_normalized, "source_images": r.source_images,
                            "lora": train_cfg.output_dir, "num_inference_steps": c.num_inference_steps})
                        save_image_atomic(cell / "images" / f"p{k:02d}" / f"{stem}.png", np.asarray(r.image))
            finally:
                backbone.pipeline.delete_adapters(adapters)
        self.state.wait_for_everyone()
        if self.state.is_main_process:
            write_json_atomic(marker, {"status": "done", "fingerprint": fp, "settings": settings,
                                       "num_images": len(jobs)})
        self.counts["generate"] += 1
        return fp, cell

    # ---------------------------------------------------------------------------------------- evaluate
    def evaluation_models(self, probe: Any) -> tuple[Any, dict, dict, dict]:
        """Detector, embedders and text scorers, built once; a model that cannot be built is left out and
        its metric reported as n/a with the reason."""
        if self._eval_models is not None:
            return self._eval_models
        from mudi.evaluate import build_detector, build_embedders, build_text_scorers

        unavailable: dict[str, str] = {}

        def attempt(build: Callable[[], Any], what: str) -> Any:
            try:
                return build()
            except (MudiError, ImportError, OSError) as e:
                log.warning("%s unavailable: %s", what, e)
                return e

        det = attempt(lambda: build_detector(probe), f"detector {probe.detector}")
        embedders: dict[str, Any] = {}
        text: dict[str, Any] = {}
        for name in probe.embedders:
            metric = _metric_name("embedder", name)
            if isinstance(det, Exception):
                unavailable[metric] = f"needs the detector {probe.detector}: {det}"
                continue
            one = attempt(lambda n=name: build_embedders(_with(probe, embedders=[n])), f"embedder {name}")
            if isinstance(one, Exception):
                unavailable[metric] = str(one)
            else:
                embedders.update(one)
        for name in probe.text_scorers:
            one = attempt(lambda n=name: build_text_scorers(_with(probe, text_scorers=[n])), f"text scorer {name}")
            if isinstance(one, Exception):
                unavailable[_metric_name("text", name)] = str(one)
            else:
                text.update(one)
        self._eval_models = (_NoDetector() if isinstance(det, Exception) else det, embedders, text, unavailable)
        return self._eval_models

    def run_evaluate(self, pair: str, pair_dir: Path, method: str, gen_fp: str, cell: Path, prompts: list[str],
                     tag: str) -> dict:
        import mudi.evaluate as eval_mod
        from mudi.io import write_json_atomic

        c = self.config
        probe = c.evaluate_config(str(cell / "images"), [str(pair_dir)], "")
        settings = {"generate": gen_fp, "evaluate": {k: v for k, v in to_dict(probe).items()
                                                     if k not in ("images", "output_dir", "device", "batch_size",
                                                                  "cache_dir", "report")}}
        fp = fingerprint(settings)
        marker = cell / "evaluate.json"
        if is_done(marker, fp) and "evaluate" not in c.redo:
            self.say(f"{tag} evaluate: done already, skipped")
            self.counts["skipped"] += 1
            return read_marker(marker) or {}
        if not self.state.is_main_process:
            self.state.wait_for_everyone()
            return read_marker(marker) or {}
        self.say(f"{tag} evaluate with {probe.detector}; {', '.join(probe.embedders)}; "
                 f"{', '.join(probe.text_scorers) or 'no text scorer'}")
        detector, embedders, text_scorers, unavailable = self.evaluation_models(probe)
        shutil.rmtree(cell / "evaluation", ignore_errors=True)
        per_prompt, totals, counts, failures = [], {}, {}, {}
        for k, template in enumerate(prompts):
            ecfg = c.evaluate_config(str(cell / "images" / f"p{k:02d}"), [str(pair_dir)],
                                     str(cell / "evaluation" / f"p{k:02d}"), prompt=template,
                                     cache_dir=str(self.out / "cache" / "embeddings"))
            summary = eval_mod.run(ecfg, detector=detector, embedders=embedders, text_scorers=text_scorers)
            n = int(summary["num_images"])
            per_prompt.append({"prompt": template, "num_images": n, "means": summary["means"],
                               "failure_counts": summary["failure_counts"]})
            for m, v in summary["means"].items():
                totals[m] = totals.get(m, 0.0) + v * n
                counts[m] = counts.get(m, 0) + n
            for f, v in summary["failure_counts"].items():
                failures[f] = failures.get(f, 0) + int(v)
        result = {"status": "done", "fingerprint": fp, "pair": pair, "method": method,
                  "num_images": sum(p["num_images"] for p in per_prompt),
                  "means": {m: totals[m] / counts[m] for m in totals}, "failure_counts": failures,
                  "unavailable": unavailable, "requested": {"embedders": list(probe.embedders),
                                                            "text_scorers": list(probe.text_scorers)},
                  "per_prompt": per_prompt}
        write_json_atomic(marker, result)
        self.state.wait_for_everyone()
        self.counts["evaluate"] += 1
        return result


def _with(cfg: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(cfg, **changes)


# ------------------------------------------------------------------------------------------------ tables
def build_tables(config: BenchmarkConfig, cells: dict[tuple[str, str], dict]) -> dict[str, Any]:
    """Overall (mean over all images of a method, as the paper's 400) and per-pair means, plus notes for
    every column that is n/a."""
    pairs = list(dict.fromkeys(p for p, _ in cells))
    metrics = [m for m, _ in TABLE_COLUMNS]
    extra = sorted({m for r in cells.values() for m in r.get("means", {}) if m not in metrics})
    notes: dict[str, str] = {}
    ev = {**PAPER_EVALUATE, **config.evaluate}
    requested = {_metric_name("embedder", n): n for n in ev.get("embedders", [])}
    requested.update({_metric_name("text", n): n for n in ev.get("text_scorers", [])})
    for r in cells.values():
        for m, why in r.get("unavailable", {}).items():
            notes.setdefault(m, f"model unavailable: {why}")
    for m in metrics:
        if m not in notes and not any(m in r.get("means", {}) for r in cells.values()):
            if m in requested:
                notes[m] = f"not computed ({requested[m]})"
            else:
                hint = {"dnc_ds": "add dreamsim to evaluate.embedders (pip install 'mudi[dreamsim]')",
                        "dnc_dino": "add dinov2 to evaluate.embedders",
                        "image_reward": "add image_reward to evaluate.text_scorers (pip install 'mudi[image-reward]')",
                        "clip_score": "add clip to evaluate.text_scorers"}[m]
                notes[m] = f"not requested: {hint}"

    def agg(rows: list[dict]) -> dict:
        out: dict[str, Any] = {"num_images": sum(r.get("num_images", 0) for r in rows)}
        for m in metrics + extra:
            vals = [(r["means"][m], r["num_images"]) for r in rows if m in r.get("means", {})]
            n = sum(w for _, w in vals)
            out[m] = sum(v * w for v, w in vals) / n if n else None
        fails: dict[str, int] = {}
        for r in rows:
            for f, v in r.get("failure_counts", {}).items():
                fails[f] = fails.get(f, 0) + v
        out["failure_counts"] = fails
        return out

    overall = {m: {"label": METHODS[m].label, **agg([cells[(p, m)] for p in pairs if (p, m) in cells])}
               for m in config.methods}
    per_pair = {p: {m: {"label": METHODS[m].label, **agg([cells[(p, m)]])} for m in config.methods
                    if (p, m) in cells} for p in pairs}
    return {"columns": [{"metric": m, "title": t} for m, t in TABLE_COLUMNS] + [{"metric": m, "title": m}
                                                                                   for m in extra],
            "methods": overall, "pairs": per_pair, "notes": notes}


def _markdown_table(rows: dict[str, dict], columns: list[dict], notes: dict[str, str], marks: dict[str, str]) -> str:
    head = "| Method | " + " | ".join(c["title"] for c in columns) + " | images | count errors | mixed |"
    lines = [head, "|" + "---|" * (len(columns) + 4)]
    for r in rows.values():
        cells = []
        for c in columns:
            v = r.get(c["metric"])
            cells.append(f"{v:.3f}" if v is not None else f"n/a{marks.get(c['metric'], '')}")
        fails = r.get("failure_counts", {})
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {r['num_images']} | {fails.get('count', 0)} | "
                     f"{fails.get('mixed', 0)} |")
    return "\n".join(lines)


def write_tables(config: BenchmarkConfig, tables: dict[str, Any]) -> Path:
    """``results.md``, ``results.csv``, ``results.json``, ``per_pair.md``, ``per_pair.csv`` in ``results/``."""
    from mudi.io import write_json_atomic, write_text_atomic

    out = Path(config.output_dir) / "results"
    columns, notes = tables["columns"], tables["notes"]
    marks = {m: f"[^{i + 1}]" for i, m in enumerate(notes)}
    foot = "\n".join(f"[^{i + 1}]: {m}: {why}" for i, (m, why) in enumerate(notes.items()))
    n_pairs = len(tables["pairs"])
    title = (f"# MuDI benchmark: {config.backbone}, {n_pairs} pair(s) × {config.num_prompts or 'all'} prompt(s) × "
             f"{config.num_seeds} seed(s)\n\nMeans over all generated images of each method (paper Fig. 6; "
             "† = averaged over both subject orders in the prompt). count errors: images whose number of "
             "detections differs from the number of subjects (scored 0); mixed: identity-mixing flags of "
             "`mudi evaluate`.\n\n")
    write_text_atomic(out / "results.md", title + _markdown_table(tables["methods"], columns, notes, marks)
                      + ("\n\n" + foot if foot else "") + "\n")
    parts = ["# Per-pair breakdown\n"]
    for pair, rows in tables["pairs"].items():
        parts.append(f"## {pair}\n\n" + _markdown_table(rows, columns, notes, marks) + "\n")
    write_text_atomic(out / "per_pair.md", "\n".join(parts) + ("\n" + foot + "\n" if foot else ""))

    metric_keys = [c["metric"] for c in columns]

    def csv_text(rows: list[dict], lead: list[str]) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=[*lead, "label", *metric_keys, "num_images", "count_failures",
                                            "mixed_failures"], lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({**{k: r[k] for k in lead}, "label": r["label"], "num_images": r["num_images"],
                        **{m: ("n/a" if r.get(m) is None else f"{r[m]:.4f}") for m in metric_keys},
                        "count_failures": r["failure_counts"].get("count", 0),
                        "mixed_failures": r["failure_counts"].get("mixed", 0)})
        return buf.getvalue()

    write_text_atomic(out / "results.csv", csv_text([{"method": m, **r} for m, r in tables["methods"].items()],
                                                    ["method"]))
    write_text_atomic(out / "per_pair.csv", csv_text([{"pair": p, "method": m, **r}
                                                      for p, rows in tables["pairs"].items()
                                                      for m, r in rows.items()], ["pair", "method"]))
    write_json_atomic(out / "results.json", {**tables, "config": to_dict(config)})
    return out


# ------------------------------------------------------------------------------------------------ workflow
def run(config: BenchmarkConfig, detector: Any = None, embedders: dict[str, Any] | None = None,
        text_scorers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train, generate and evaluate every selected pair × method (skipping finished cells), then write the
    tables. The evaluation models may be injected as for :func:`mudi.evaluate.run` (otherwise built once from
    ``config.evaluate``). Returns the tables dict plus ``counts`` of the stages run and skipped."""
    pairs = select_pairs(config)
    runner = BenchmarkRunner(config, detector, embedders, text_scorers)
    out = Path(config.output_dir)
    if runner.state.is_main_process:
        save_config(config, out / CONFIG_FILE)
    n_cells = len(pairs) * len(config.methods)
    runner.say(f"{len(pairs)} pair(s) × {len(config.methods)} method(s) = {n_cells} cells on {config.backbone}, "
               f"{config.num_seeds} seed(s) per prompt → {out}")
    cells: dict[tuple[str, str], dict] = {}
    i = 0
    for pair, pair_dir, prompts in pairs:
        for method in config.methods:
            i += 1
            tag = f"[{i}/{n_cells}] {pair} · {method}:"
            train_cfg, train_fp = runner.run_train(pair, pair_dir, method, tag)
            gen_fp, cell = runner.run_generate(pair, method, train_cfg, train_fp, prompts, tag)
            cells[(pair, method)] = runner.run_evaluate(pair, pair_dir, method, gen_fp, cell, prompts, tag)
    tables = build_tables(config, cells)
    if runner.state.is_main_process:
        path = write_tables(config, tables)
        runner.say(f"trained {runner.counts['train']}, generated {runner.counts['generate']}, evaluated "
                   f"{runner.counts['evaluate']} cell stage(s), skipped {runner.counts['skipped']} finished; "
                   f"table in {path / 'results.md'}")
        print((path / "results.md").read_text(encoding="utf-8"), flush=True)
    tables["counts"] = dict(runner.counts)
    return tables


# ------------------------------------------------------------------------------------------------ CLI
_FLAGS = {"benchmark_dir": str, "prompts_file": str, "output_dir": str, "backbone": str,
          "pretrained_model_name_or_path": str, "num_prompts": int, "num_seeds": int, "seed": int,
          "num_inference_steps": int, "guidance_scale": float, "gamma": float, "height": int, "width": int,
          "batch_size": int, "device": str}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (configs/benchmark_sdxl.yaml, configs/benchmark_tiny.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides, e.g. train.max_train_steps=10 evaluate.detector=tiny-owlv2")
    for name, tp in _FLAGS.items():
        p.add_argument(f"--{name}", type=tp, help=field_help(BenchmarkConfig, name))
    p.add_argument("--pairs", nargs="+", help=field_help(BenchmarkConfig, "pairs"))
    p.add_argument("--methods", nargs="+", help=field_help(BenchmarkConfig, "methods"))
    p.add_argument("--redo", nargs="+", choices=list(STAGES), help=field_help(BenchmarkConfig, "redo"))
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help=field_help(BenchmarkConfig, "dtype"))
    p.add_argument("--no_progress", dest="progress", action="store_false", default=None, help="no progress bars")


def main(args: argparse.Namespace) -> int:
    names = [*_FLAGS, "pairs", "methods", "redo", "dtype", "progress"]
    values = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    config = load_config(BenchmarkConfig, args.config, args.overrides or [], values)
    if not config.benchmark_dir:
        raise MudiError("no benchmark folder given; pass --benchmark_dir DIR (with pairs/ and eval_prompts.json)")
    run(config)
    from accelerate import PartialState

    PartialState().destroy_process_group()
    return 0
