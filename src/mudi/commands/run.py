"""``mudi run RUN.yaml``: (describe) → segment → (prior) → train → generate → evaluate → report, resumable —
:mod:`mudi.pipeline`."""

from __future__ import annotations

from mudi.pipeline import RunConfig, run_pipeline

HELP = ("the whole pipeline from a run file: (describe), segment, (prior), train, generate, evaluate and one HTML report; "
        "done stages are skipped, partial ones resumed (--from STAGE / --only STAGE redo parts)")
CONFIG = RunConfig
CONFIG_FILE_POSITIONAL = True


def main(config: RunConfig) -> int:
    report = run_pipeline(config)
    print(f"mudi run finished; the report: {report}")
    return 0
