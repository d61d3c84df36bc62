"""``mudi segmix``: Seg-Mix (or Cut-Mix) compositions and a contact sheet to review — :mod:`mudi.compositions`."""

from __future__ import annotations

from pathlib import Path

from mudi.compositions import SegmixConfig, write_compositions
from mudi.errors import MudiError

HELP = "compose subjects into Seg-Mix (or Cut-Mix) training images and write a contact sheet"
CONFIG = SegmixConfig
ALIASES = {"--background": "segmix.background", "--no-overlap": ("segmix.allow_overlap", "false"),
           "--count-prefix": ("segmix.use_count_prefix", "true")}


def main(config: SegmixConfig) -> int:
    if not config.subjects:
        raise MudiError("no subjects given: pass --subjects PATH [PATH ...]")
    rows = write_compositions(config)
    print(f"wrote {len(rows)} compositions to {config.output_dir} (see {Path(config.output_dir) / 'grid.png'})")
    return 0
