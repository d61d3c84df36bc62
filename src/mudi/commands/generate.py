"""``mudi generate``: images of personalized subjects with MuDI's mean-shifted initial latents — :mod:`mudi.sampling`."""

from __future__ import annotations

from pathlib import Path

from mudi.sampling.config import GenerateConfig
from mudi.sampling.folder import generate_to_folder

HELP = "generate images of personalized subjects with MuDI's mean-shifted initial latents"
CONFIG = GenerateConfig


def main(config: GenerateConfig) -> int:
    results = generate_to_folder(config)
    print(f"wrote {len(results)} image(s) to {config.output_dir} (see {Path(config.output_dir) / 'grid' / 'grid.png'})")
    return 0
