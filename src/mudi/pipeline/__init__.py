"""``mudi run``: the whole pipeline from one run file — (describe) → segment → (prior) → train → generate →
evaluate — with every stage skipped when done and resumed when partial, ending in one self-contained HTML report."""

from mudi.pipeline.config import RunConfig
from mudi.pipeline.stages import run_pipeline

__all__ = ["RunConfig", "run_pipeline"]
