#!/usr/bin/env bash
# The GPU benchmarks in one call (under 8 minutes on an H100/H200), for a lent GPU machine that has CUDA torch
# but not our pinned diffusers/transformers/peft (carried as wheels in .whl/, see docs/benchmark.md):
#   train_step.py part (b): every `mudi train` speed option side by side with the default loop, full-size SDXL
#     (1024², effective batch 2) and FLUX.1-dev (512², batch 1 x 4), LoRA rank 32, bf16: s/step, data wait,
#     model FLOPs, MFU, peak memory, loss deviation
#   generate_overhead.py part (b): full-size SDXL 1024², 30 steps, plain vs mean-shifted init
# Logs and the exact environment go to $OUT (or ./gpu-logs); copy them to docs/results/.
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
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  python3 -c "import torch, diffusers, transformers, peft, accelerate; print('torch', torch.__version__, 'cuda', \
torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'diffusers', diffusers.__version__, 'transformers', \
transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
  python3 -c "import torchao; print('torchao', torchao.__version__)" 2>/dev/null || echo "torchao: not installed"
  python3 -c "import bitsandbytes; print('bitsandbytes', bitsandbytes.__version__)" 2>/dev/null \
    || echo "bitsandbytes: not installed"; } | tee "$OUT/env.txt"
cd benchmarks
timeout "${SDXL_TIMEOUT:-270}" python3 train_step.py --only-gpu --families sdxl --gpu-steps "${GPU_STEPS:-6}" \
  --threads 8 2>&1 | grep -v -e torchvision -e "should be kept in float32" -e "truncated because CLIP" \
  | tee "$OUT/train_step_sdxl.log"
timeout "${FLUX_TIMEOUT:-150}" python3 train_step.py --only-gpu --families flux --gpu-steps "${GPU_STEPS:-6}" \
  --threads 8 2>&1 | grep -v -e torchvision -e "should be kept in float32" -e "truncated because CLIP" \
  | tee "$OUT/train_step_flux.log"
timeout "${GEN_TIMEOUT:-60}" python3 generate_overhead.py --only-gpu --threads 8 --repeats "${GEN_REPEATS:-3}" 2>&1 \
  | grep -v -e torchvision -e "should be kept in float32" | tee "$OUT/generate_overhead_gpu.log"
