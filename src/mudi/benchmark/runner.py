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

import logging
from pathlib import Path
from typing import Any

from mudi.benchmark.cells import evaluate_cell, generate_cell, train_cell
from mudi.benchmark.config import CONFIG_FILE, BenchmarkConfig
from mudi.benchmark.context import BenchmarkRunner
from mudi.benchmark.methods import select_pairs
from mudi.benchmark.selection import select_cell_step
from mudi.benchmark.study import run_study
from mudi.benchmark.tables import build_tables, write_tables
from mudi.config import save_config
from mudi.core.methods import METHODS
from mudi.errors import MudiError
from mudi.io import OutputLock, prepare_output_dir

log = logging.getLogger(__name__)


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
    one_process = [m for m in config.methods if METHODS[m].train.get("train_modifier_tokens")]
    if one_process and runner.state.num_processes > 1:
        raise MudiError(f"method {one_process[0]} trains modifier tokens in one process: leave it out of methods "
                        "under accelerate launch, or run the benchmark in one process")
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
            selection = None
            if config.step_selection.use:
                train_cfg, train_fp, selection = select_cell_step(runner, pair, pair_dir, method, train_cfg, train_fp,
                                                                  tag)
            gen_fp, cell = generate_cell(runner, pair, method, train_cfg, train_fp, prompts, tag)
            cells[(pair, method)] = evaluate_cell(runner, pair, pair_dir, method, gen_fp, cell, prompts, tag)
            if selection is not None:
                cells[(pair, method)] = {**cells[(pair, method)], "step_selection": selection}
    tables = build_tables(config, cells)
    if runner.state.is_main_process:
        path = write_tables(config, tables)
        runner.say(f"trained {runner.counts['train']}, generated {runner.counts['generate']}, evaluated "
                   f"{runner.counts['evaluate']} cell stage(s), skipped {runner.counts['skipped']} finished; "
                   f"table in {path / 'results.md'}")
        print((path / "results.md").read_text(encoding="utf-8"), flush=True)
    tables["counts"] = dict(runner.counts)
    return tables
