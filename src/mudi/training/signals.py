"""Stopping a training run cleanly: Ctrl-C (SIGINT) or SIGTERM only *ask* the run to stop.

The step in progress finishes (the optimizer step, the LR scheduler and every random draw of that step), the
run saves a checkpoint at that step boundary and exits with 130 (SIGINT) or 143 (SIGTERM), so
``--resume_from_checkpoint latest`` continues bit for bit. A second signal aborts at once with
``KeyboardInterrupt``: checkpoints are written atomically, so the last good one is never damaged.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

from mudi.errors import MudiError


class TrainingStopped(MudiError):
    """The run stopped at a step boundary on request; ``exit_code`` is 128 + the signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


class StopRequest:
    """A context that turns SIGINT/SIGTERM into a flag (main thread only; elsewhere it does nothing)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # the second request: abort now
            self._restore()
            raise KeyboardInterrupt
        self.signum = signum
        name = signal.Signals(signum).name
        print(f"\nmudi train: {name} received; finishing this step, then saving a checkpoint (press Ctrl-C again "
              "to abort without saving)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def __exit__(self, *exc: Any) -> None:
        self._restore()
