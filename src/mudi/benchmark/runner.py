"""``mudi benchmark`` as a library call: the paper's comparison protocol, resumable (Sec. 5.1, Appendix A.1, A.4).

For every selected benchmark pair and method: **train** a LoRA, **generate** prompts × seeds (spread over the
processes of ``accelerate launch``) and **evaluate** them (D&C-DS, D&C-DINO, ImageReward†, CLIPs†), each a
cell stage of :mod:`mudi.benchmark.cells`; then write the table of the paper's Fig. 6 and per-pair breakdowns
(:mod:`mudi.benchmark.tables`).

Every cell stage records its settings' fingerprint in a small JSON marker written atomically when it
finishes; a re-run skips finished stages, resumes an interrupted training from its last checkpoint and an
interrupted generation from the images already on disk, and redoes a stage whose settings changed. Methods
that train the same recipe (``mudi`` and ``mudi-no-init``; ``dreambooth`` and ``mudi-no-segmix`` when their
steps agree) share one LoRA.

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

import dataclasses
import gc
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate import PartialState

from mudi.adapters import registry
from mudi.benchmark.cells import evaluate_cell, generate_cell, train_cell
from mudi.benchmark.config import CONFIG_FILE, BenchmarkConfig
from mudi.benchmark.methods import GENERIC_CLASSES, select_pairs
from mudi.benchmark.study import run_study
from mudi.benchmark.tables import build_tables, write_tables
from mudi.config import save_config
from mudi.devices import describe, resolve_device, resolve_dtype
from mudi.errors import MudiError
from mudi.io import OutputLock, prepare_output_dir
from mudi.scoring.models import build_detector, build_embedders, build_text_scorers, metric_name

log = logging.getLogger(__name__)


class _NoDetector:
    """Stands in when the detector cannot be loaded: no detections, and no D&C metric is reported."""

    def detect(self, images: Any, queries: Any, threshold: float) -> list[list[Any]]:
        return [[] for _ in images]


class BenchmarkRunner:
    """The state of one benchmark run: its config, the process group, the models (built lazily and shared
    between cells) and the counts of stages run and skipped. The cells are :mod:`mudi.benchmark.cells`."""

    def __init__(self, config: BenchmarkConfig, detector: Any = None, embedders: dict[str, Any] | None = None,
                 text_scorers: dict[str, Any] | None = None) -> None:
        self.config = config
        self.out = Path(config.output_dir)
        self._eval_models = None if detector is None and embedders is None and text_scorers is None else (
            detector if detector is not None else _NoDetector(), dict(embedders or {}), dict(text_scorers or {}), {})
        self._gen_backbone: Any = None
        self.generic_classes = {**GENERIC_CLASSES, **{k.lower(): v for k, v in config.generic_classes.items()}}
        on_cpu = config.device == "cpu" or config.train.get("device") == "cpu"
        self.state = PartialState(cpu=on_cpu)
        self.counts = {"train": 0, "generate": 0, "evaluate": 0, "skipped": 0}
        self.trained_recipes: set[str] = set()  # recipes trained in this run (methods may share one)

    def say(self, text: str) -> None:
        if self.state.is_main_process:
            print(f"mudi benchmark: {text}", flush=True)

    def placement(self) -> tuple[Any, Any]:
        """Generation and evaluation ``(device, dtype)``: ``auto`` is this process's accelerate device."""
        c = self.config
        device = self.state.device if c.device == "auto" else resolve_device(c.device)
        return device, resolve_dtype(c.dtype, device)

    def release_generation_backbone(self) -> None:
        self._gen_backbone = None
        gc.collect()

    def generation_backbone(self) -> Any:
        if self._gen_backbone is None:
            device, dtype = self.placement()
            self.say(f"generation and evaluation on {describe(device, dtype)}")
            self._gen_backbone = registry.load_backbone(self.config.backbone, self.config.pretrained_model_name_or_path,
                                                        device, dtype)
        return self._gen_backbone

    def evaluation_models(self, probe: Any) -> tuple[Any, dict, dict, dict]:
        """Detector, embedders and text scorers, built once; a model that cannot be built is left out and
        its metric reported as n/a with the reason."""
        if self._eval_models is not None:
            return self._eval_models
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
            metric = metric_name("embedder", name)
            if isinstance(det, Exception):
                unavailable[metric] = f"needs the detector {probe.detector}: {det}"
                continue
            one = attempt(lambda n=name: build_embedders(dataclasses.replace(probe, embedders=[n])), f"embedder {name}")
            if isinstance(one, Exception):
                unavailable[metric] = str(one)
            else:
                embedders.update(one)
        for name in probe.text_scorers:
            one = attempt(lambda n=name: build_text_scorers(dataclasses.replace(probe, text_scorers=[n])), f"text scorer {name}")
            if isinstance(one, Exception):
                unavailable[metric_name("text_scorer", name)] = str(one)
            else:
                text.update(one)
        self._eval_models = (_NoDetector() if isinstance(det, Exception) else det, embedders, text, unavailable)
        return self._eval_models


def run_benchmark(config: BenchmarkConfig, detector: Any = None, embedders: dict[str, Any] | None = None,
                  text_scorers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train, generate and evaluate every selected pair × method (skipping finished cells), then write the
    tables; with ``study.kind: num_subjects`` run that study instead (:mod:`mudi.benchmark.study`). The evaluation
    models may be injected as for :func:`mudi.scoring.folder.evaluate_folder` (otherwise built once from
    ``config.evaluate``). Returns the tables dict plus ``counts`` of the stages run and skipped."""
    pairs = select_pairs(config) if config.study.kind == "none" else []  # a study picks its own subjects
    runner = BenchmarkRunner(config, detector, embedders, text_scorers)
    out = Path(config.output_dir)
    lock = None
    if runner.state.is_main_process:
        prepare_output_dir(out, "benchmark output folder")
        lock = OutputLock(out, "benchmark").acquire()
        save_config(config, out / CONFIG_FILE)
    try:
        if config.study.kind == "num_subjects":
            return run_study(runner, config, out)
        return _run_cells(runner, config, pairs, out)
    finally:
        if lock is not None:
            lock.release()


def _run_cells(runner: BenchmarkRunner, config: BenchmarkConfig, pairs: list, out: Path) -> dict[str, Any]:
    n_cells = len(pairs) * len(config.methods)
    runner.say(f"{len(pairs)} pair(s) × {len(config.methods)} method(s) = {n_cells} cells on {config.backbone}, "
               f"{config.num_seeds} seed(s) per prompt → {out}")
    cells: dict[tuple[str, str], dict] = {}
    i = 0
    for pair, pair_dir, prompts in pairs:
        for method in config.methods:
            i += 1
            tag = f"[{i}/{n_cells}] {pair} · {method}:"
            train_cfg, train_fp = train_cell(runner, pair, pair_dir, method, tag)
            gen_fp, cell = generate_cell(runner, pair, method, train_cfg, train_fp, prompts, tag)
            cells[(pair, method)] = evaluate_cell(runner, pair, pair_dir, method, gen_fp, cell, prompts, tag)
    tables = build_tables(config, cells)
    if runner.state.is_main_process:
        path = write_tables(config, tables)
        runner.say(f"trained {runner.counts['train']}, generated {runner.counts['generate']}, evaluated "
                   f"{runner.counts['evaluate']} cell stage(s), skipped {runner.counts['skipped']} finished; "
                   f"table in {path / 'results.md'}")
        print((path / "results.md").read_text(encoding="utf-8"), flush=True)
    tables["counts"] = dict(runner.counts)
    return tables
