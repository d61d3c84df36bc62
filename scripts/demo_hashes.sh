#!/usr/bin/env bash
# sha256 of every image, LoRA and CSV that `mudi demo` writes, for before/after comparisons of a refactor:
#   bash scripts/demo_hashes.sh > before.sha; (change the code); bash scripts/demo_hashes.sh > after.sha; diff before.sha after.sha
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
HF_HUB_OFFLINE=1 .venv/bin/mudi demo --out "$out/demo" > "$out/log" 2>&1
(cd "$out/demo" && find . -type f \( -name '*.png' -o -name '*.safetensors' -o -name '*.csv' \) | sort | xargs sha256sum)
rm -rf "$out"
