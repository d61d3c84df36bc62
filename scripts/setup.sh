#!/usr/bin/env bash
# Create ./.venv and install mudi with its test tools, the web UI (gradio) and wandb (for its offline test). Idempotent: re-running only
# checks.
#
# torch is installed first, pinned (MUDI_TORCH_SPEC, default torch==2.13.0): on this project's CPU machines
# that takes the local CPU wheel, and it stops an unpinned resolver from pulling a multi-GB CUDA build.
# On a GPU machine, install the CUDA torch you want first (see docs/install.md) and set
# MUDI_TORCH_SPEC=skip — mudi itself only asks for torch>=2.1 and keeps the build it finds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
spec="${MUDI_TORCH_SPEC:-torch==2.13.0}"
if [ "$spec" != "skip" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "$spec"
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,ui,wandb]"
