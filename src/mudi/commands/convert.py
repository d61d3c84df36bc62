"""``mudi convert``: a MuDI benchmark pair folder (or prior set) → native subject folders — :mod:`mudi.data.convert`."""

from __future__ import annotations

from dataclasses import dataclass, field

from mudi.data.convert import convert
from mudi.errors import MudiError

HELP = "convert a MuDI benchmark pair folder into native subject folders"


@dataclass
class ConvertConfig:
    pair_dir: list[str] = field(default_factory=list, metadata={
        "help": "benchmark pair folder (with metadata.jsonl) or prior set"})
    output_dir: str = field(default="", metadata={
        "help": "folder to write one native subject folder per subject into", "flags": ["--out"]})
    overwrite: bool = field(default=False, metadata={"help": "replace existing subject folders"})


CONFIG = ConvertConfig
POSITIONAL = "pair_dir"


def main(config: ConvertConfig) -> int:
    if len(config.pair_dir) != 1:
        raise MudiError(f"give one pair folder to convert, got {len(config.pair_dir)}")
    if not config.output_dir:
        raise MudiError("no output folder given: pass --output_dir DIR")
    for t in convert(config.pair_dir[0], config.output_dir, config.overwrite):
        print(f"wrote {t}")
    return 0
