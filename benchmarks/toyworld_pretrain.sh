#!/usr/bin/env bash
# Pretrain the shipped toy-world model v2.2 (docs/toyworld.md): v2, about 3.3 h on one CPU thread, then three phases
# of benchmarks/toyworld_finetune.py (36 min on one thread, 33 min on two, 58 min on one); deterministic for a
# thread count.
# Usage: bash benchmarks/toyworld_pretrain.sh [OUT_DIR]   (rerun the same command to resume after a crash)
# Then copy OUT_DIR-ft3/pipeline into src/mudi/toyworld/model/ and measure it with benchmarks/toyworld_scores.py.
# v1 (the earlier model): python -m mudi.toyworld.pretrain --config benchmarks/toyworld_pretrain_v1.yaml ...
set -euo pipefail
OUT="${1:-runs/toyworld}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
python -m mudi.toyworld.pretrain --out "$OUT" --seed 0 --threads 1     # v2
python benchmarks/toyworld_finetune.py --work "$OUT/work" --pipeline "$OUT/pipeline_fp32" --out "$OUT-ft1" \
    --steps 2000 --lr 2e-4 --score_every 500 --score_images 128 --two_object_only
OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 python benchmarks/toyworld_finetune.py --work "$OUT/work" \
    --pipeline "$OUT/pipeline_fp32" --init "$OUT-ft1/work/denoiser.pt" --out "$OUT-ft2" \
    --steps 3000 --lr 1e-4 --score_every 1000 --score_images 128 --threads 2     # v2.1
python benchmarks/toyworld_finetune.py --work "$OUT/work" --pipeline "$OUT/pipeline_fp32" \
    --init "$OUT-ft2/work/denoiser.pt" --out "$OUT-ft3" --steps 3000 --lr 1e-4 --stage 5 \
    --score_every 1000 --score_images 128 --threads 1     # v2.2
