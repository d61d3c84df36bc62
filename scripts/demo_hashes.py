"""sha256 of everything `mudi demo` writes that a refactor must not change: every PNG and CSV byte for byte,
and every safetensors file by content (tensors and metadata in sorted order: the safetensors writer orders
the metadata of its header differently from one process to the next).

    .venv/bin/python scripts/demo_hashes.py > before.sha   # change the code
    .venv/bin/python scripts/demo_hashes.py > after.sha && diff before.sha after.sha
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def content_hash(path: Path) -> str:
    if path.suffix != ".safetensors":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), framework="numpy") as f:
        for k, v in sorted((f.metadata() or {}).items()):
            h.update(f"{k}={v}".encode())
        for k in sorted(f.keys()):
            t = f.get_tensor(k)
            h.update(k.encode() + str(t.dtype).encode() + str(t.shape).encode() + t.tobytes())
    return h.hexdigest()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        subprocess.run([str(ROOT / ".venv" / "bin" / "mudi"), "demo", "--out", str(out)], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        files = sorted(p for p in out.rglob("*") if p.suffix in (".png", ".csv", ".safetensors"))
        for p in files:
            print(f"{content_hash(p)}  ./{p.relative_to(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
