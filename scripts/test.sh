#!/usr/bin/env bash
# Set up (if needed) and run the whole offline test suite plus the linter. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
.venv/bin/ruff check src tests benchmarks
.venv/bin/python -m pytest -q "$@"
