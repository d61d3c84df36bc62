"""Test setup: offline, deterministic, and gentle on a 2-core machine."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

BENCHMARK_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mudi-benchmark"


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="session")
def benchmark_dir() -> Path:
    """The shared MuDI benchmark data (``../shared/data/mudi-benchmark``); skips when absent."""
    if not BENCHMARK_DIR.is_dir():
        pytest.skip(f"benchmark data not found at {BENCHMARK_DIR}")
    return BENCHMARK_DIR
