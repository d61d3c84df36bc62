"""The one exception type users see, and the one "did you mean" helper every lookup uses."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MudiError(Exception):
    """Bad input or environment. The CLI prints ``str(error)`` on one line and exits non-zero.

    Raise it with a message naming the file or value at fault and the fix, e.g.
    ``MudiError("mask masks/a00.png is 512x512 but its image a00.jpg is 640x480: re-export the mask")``.
    """


def did_you_mean(name: str, choices: Iterable[str], cutoff: float = 0.5) -> str:
    """``"did you mean 'sdxl'? "`` for the closest of ``choices`` to ``name``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=cutoff)
    return f"did you mean {close[0]!r}? " if close else ""


def unknown_name_error(kind: str, name: str, choices: Iterable[str]) -> MudiError:
    """``unknown backbone 'sdx1'; did you mean 'sdxl'? choose one of [...]`` as a :class:`MudiError`."""
    choices = sorted(str(c) for c in choices)
    return MudiError(f"unknown {kind} {name!r}; {did_you_mean(name, choices)}choose one of {choices}")
