"""``mudi train``: DreamBooth-LoRA with Seg-Mix (or Cut-Mix / plain DreamBooth) — :mod:`mudi.training`."""

from __future__ import annotations

from mudi.errors import MudiError
from mudi.training.config import TrainConfig
from mudi.training.loop import train

HELP = "Fine-tune a LoRA on your subjects with Seg-Mix (or Cut-Mix / plain DreamBooth)."
CONFIG = TrainConfig


def main(config: TrainConfig) -> int:
    if not config.subjects:
        raise MudiError("no subjects given; pass --subjects PATH [PATH ...] (subject or benchmark pair folders)")
    train(config)
    return 0
