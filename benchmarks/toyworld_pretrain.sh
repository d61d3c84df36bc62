#!/usr/bin/env bash
# Pretrain the shipped toy-world model v2 (docs/toyworld.md): about 3.3 h on one CPU thread, deterministic.
# Usage: bash benchmarks/toyworld_pretrain.sh [OUT_DIR]   (rerun the same command to resume after a crash)
# Then copy OUT_DIR/pipeline into src/mudi/toyworld/model/ and measure it with benchmarks/toyworld_scores.py.
# v1 (the earlier model): python -m mudi.toyworld.pretrain --config benchmarks/toyworld_pretrain_v1.yaml ...
set -euo pipefail
OUT="${1:-runs/toyworld}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
python -m mudi.toyworld.pretrain --out "$OUT" --seed 0 --threads 1
