"""What every tab of the page shares: the config, the workspace, the worker and the training runs. Imports no
gradio at module level."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mudi.errors import MudiError
from mudi.io import os_error_message
from mudi.ui.config import UiConfig
from mudi.ui.jobs import Task, TrainingRuns, Worker
from mudi.ui.state import Workspace

POLL_SECONDS = 0.4


@dataclass
class UiContext:
    config: UiConfig
    ws: Workspace
    worker: Worker = field(default_factory=Worker)
    runs: TrainingRuns = field(default_factory=TrainingRuns)

    def subject_dirs(self, ticked: list[str] | None) -> list[Path]:
        """The ticked subjects' folders, in the order of the page's list ([V1], [V2], …)."""
        names = set(ticked or [])
        return [p for p in self.ws.subject_dirs() if p.name in names]

    @staticmethod
    def error_text(e: BaseException) -> str:
        if isinstance(e, MudiError):
            return str(e)
        if isinstance(e, OSError):
            return os_error_message(e)
        return f"{type(e).__name__}: {e}"


def waiting_text(task: Task) -> str:
    what = "waiting for the task before it" if task.state == "queued" else "running"
    return f"*{task.name}*: {what} for {task.elapsed():.0f} s — the page stays usable; results are kept on disk"


def wait_for(task: Task, num_outputs: int) -> Iterator[tuple]:
    """Yield ``(status text, skip, skip, …)`` for a generator handler until ``task`` ends."""
    import gradio as gr

    while not task.wait(POLL_SECONDS):
        yield (waiting_text(task), *[gr.skip()] * (num_outputs - 1))
