"""``mudi env``: the versions and devices a bug report needs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mudi.environment import collect

HELP = "print versions of mudi, python and the model libraries, and the available devices"


@dataclass
class EnvConfig:
    json: bool = field(default=False, metadata={"help": "print JSON instead of text"})


CONFIG = EnvConfig


def main(config: EnvConfig) -> int:
    info = collect()
    if config.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:24s} {v if v is not None else '-'}")
    return 0
