"""``mudi benchmark``: the paper's comparison as one resumable command — :mod:`mudi.benchmark`."""

from __future__ import annotations

from accelerate import PartialState

from mudi.benchmark.config import BenchmarkConfig
from mudi.benchmark.runner import run_benchmark
from mudi.errors import MudiError

HELP = "Run the paper's comparison: train, generate and evaluate every pair and method; write the Fig. 6 table."
CONFIG = BenchmarkConfig


def main(config: BenchmarkConfig) -> int:
    if not config.benchmark_dir:
        raise MudiError("no benchmark folder given; pass --benchmark_dir DIR (with pairs/ and eval_prompts.json)")
    run_benchmark(config)
    PartialState().destroy_process_group()
    return 0
