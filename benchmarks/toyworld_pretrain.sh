#!/usr/bin/env bash
# Pretrain the shipped toy-world model (docs/toyworld.md): about 65 min on one CPU thread, deterministic.
# Usage: bash benchmarks/toyworld_pretrain.sh [OUT_DIR]   (rerun the same command to resume after a crash)
# Then copy OUT_DIR/pipeline into src/mudi/toyworld/model/ and measure it with benchmarks/toyworld_scores.py.
set -euo pipefail
OUT="${1:-runs/toyworld}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
python -m mudi.toyworld.pretrain --out "$OUT" --seed 0 --threads 1
