#!/usr/bin/env bash
# Every verb once on a CUDA device with the tiny offline models: train (bf16 / fp16, each family), generate with
# the trained LoRA and the mean-shifted init, evaluate, segment. Checks device/dtype plumbing that the CPU tests
# cannot (generators, autocast, tensors left on the CPU). DEVICE=cpu runs the same on the CPU.
#   bash benchmarks/gpu_smoke.sh          # logs in $OUT (or ./gpu-logs)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-logs}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
if [ -d .whl ] && [ "$DEVICE" != cpu ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
W=$(mktemp -d)
S=src/mudi/samples
cp -r $S/dog6 $S/cat2 "$W/"
rm -rf "$W"/dog6/masks "$W"/cat2/masks
FAIL=0
run() {
  echo "+ mudi $*"
  if ! "$PY" -m mudi "$@" > "$W/log" 2>&1; then echo "FAILED: mudi $1"; FAIL=$((FAIL + 1)); fi
  grep -v -e torchvision -e "should be kept in float32" -e deprecate "$W/log" | tr '\r' '\n' | tail -3
}
run segment "$W/dog6" "$W/cat2" --backend tiny-owlv2+tiny-sam --device "$DEVICE" --dtype float16 --threshold 0.0
run segment "$W/dog6" "$W/cat2" --backend grabcut --overwrite
for spec in "tiny-sd fp16" "tiny-sdxl bf16" "tiny-flux bf16"; do
  set -- $spec
  bb=$1 mp=$2
  [ "$DEVICE" = cpu ] && mp=no
  run train --backbone "$bb" --subjects "$W/dog6" "$W/cat2" --output_dir "$W/lora-$bb" --max_train_steps 6 \
      --mixed_precision "$mp" --checkpointing_steps 3 --validation_steps 6 --device "$DEVICE" --set report_to=none
  [ "$bb" = tiny-sdxl ] && run train --backbone "$bb" --subjects "$W/dog6" "$W/cat2" --output_dir "$W/lora-$bb" \
      --max_train_steps 9 --mixed_precision "$mp" --checkpointing_steps 3 --device "$DEVICE" --set report_to=none \
      --resume_from_checkpoint latest
  run generate --backbone "$bb" --lora "$W/lora-$bb" --prompt "[V1] and [V2] on the beach" --num-images 2 \
      --steps 4 --device "$DEVICE" --dtype float16 --out "$W/gen-$bb"
done
run evaluate --images "$W/gen-tiny-sdxl" --subjects "$W/dog6" "$W/cat2" --detector tiny-owlv2 \
    --embedders tiny-dinov2 --text-scorers tiny-clip --device "$DEVICE" -o "$W/eval"
ls "$W"/lora-* "$W"/gen-tiny-sdxl "$W"/eval | tee "$OUT/smoke_files.txt" | head -40
if [ "$FAIL" -gt 0 ]; then echo "smoke: $FAIL verb(s) failed on $DEVICE"; exit 1; fi
echo "smoke: all verbs ran on $DEVICE"
