#!/usr/bin/env bash
# Set up (if needed) and run the main job on its embedded default: the bundled sample subjects, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/mudi demo --out "${1:-mudi-demo}"
