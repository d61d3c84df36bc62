"""Layout files (``--layout PATH.json``): one normalised box per subject; the forms are those of
:func:`mudi.core.layout.parse_layout`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from mudi.core.layout import LAYOUT_EXAMPLE, NormBox, parse_layout
from mudi.errors import MudiError


def load_layout(path: str | Path, subject_keys: Sequence[Sequence[str]]) -> list[NormBox]:
    """Read a layout JSON file; errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise MudiError(f"{path}: layout file not found; give 'random' or a JSON file like {LAYOUT_EXAMPLE}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MudiError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (UnicodeDecodeError, RecursionError):
        raise MudiError(f"{path}: not a UTF-8 JSON layout; give a JSON file like {LAYOUT_EXAMPLE}") from None
    return parse_layout(data, subject_keys, source=str(path))
