#!/usr/bin/env bash
# The GPU parts of the benchmarks in one call, for a lent GPU machine that has CUDA torch but not our
# pinned diffusers/transformers/peft (carried as wheels in .whl/, see docs/benchmark.md):
#   train_step.py part (b): full-size SDXL LoRA training step, 1024², batch 2, rank 32, bf16
#   generate_overhead.py part (b): full-size SDXL 1024², 30 steps, plain vs mean-shifted init
# Logs go to $OUT (or ./gpu-logs).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-logs}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, diffusers, transformers, peft, accelerate; print('torch', torch.__version__, \
'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, \
'accelerate', accelerate.__version__)" | tee -a "$OUT/gpu.txt"
cd benchmarks
timeout "${TRAIN_TIMEOUT:-330}" python3 train_step.py --only-gpu --gpu-steps "${GPU_STEPS:-20}" --threads 8 2>&1 \
  | grep -v -e torchvision -e "should be kept in float32" | tee "$OUT/train_step_gpu.log"
timeout "${GEN_TIMEOUT:-150}" python3 generate_overhead.py --only-gpu --threads 8 --repeats "${GEN_REPEATS:-6}" 2>&1 \
  | grep -v -e torchvision -e "should be kept in float32" | tee "$OUT/generate_overhead_gpu.log"
