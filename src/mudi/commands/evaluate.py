"""``mudi evaluate``: Detect-and-Compare and text fidelity of generated images — :mod:`mudi.scoring`."""

from __future__ import annotations

from mudi.errors import MudiError
from mudi.scoring.config import EvaluateConfig
from mudi.scoring.folder import evaluate_folder

HELP = "Score generated images: Detect-and-Compare (multi-subject fidelity), CLIP score, HTML report."
CONFIG = EvaluateConfig


def main(config: EvaluateConfig) -> int:
    if not config.images:
        raise MudiError("no generated images given; pass --images DIR")
    if not config.subjects:
        raise MudiError("no subjects given; pass --subjects PATH [PATH ...]")
    summary = evaluate_folder(config)
    means = ", ".join(f"{m}={v:.3f}" for m, v in summary["means"].items())
    print(f"{summary['num_images']} images: {means}; results in {summary['output_dir']}")
    return 0
