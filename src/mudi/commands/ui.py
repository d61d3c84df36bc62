"""``mudi ui``: the web UI over the same library calls as the CLI (needs ``pip install 'mudi[ui]'``) —
:mod:`mudi.ui`."""

from __future__ import annotations

from mudi.ui.config import UiConfig
from mudi.ui.server import serve

HELP = "open the web UI: subjects, masks, Seg-Mix previews, training, generation and scores (needs mudi[ui])"
CONFIG = UiConfig


def main(config: UiConfig) -> int:
    serve(config)
    return 0
