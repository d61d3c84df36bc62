"""The test side of tests/zygote.py: start the zygote, have it fork ``mudi`` commands, wait for their exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


class Zygote:
    def __init__(self) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("zygote.py"))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def start(self, argv: list[str], log: Path, slow_checkpoint: float = 0.0) -> int:
        self.proc.stdin.write(json.dumps({"argv": argv, "log": str(log), "slow_checkpoint": slow_checkpoint}) + "\n")
        self.proc.stdin.flush()
        return int(json.loads(self.proc.stdout.readline())["pid"])

    def wait(self) -> int:
        return int(json.loads(self.proc.stdout.readline())["exit"])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
