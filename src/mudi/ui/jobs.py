"""Long work away from the page. Imports no gradio.

- :class:`Worker`: one background thread that runs the UI's in-process tasks (segmentation, Seg-Mix previews,
  generation, scoring) one at a time, so model work never overlaps and no request waits on it.
- :class:`TrainingRuns`: training runs as ``python -m mudi.cli train`` subprocesses in their own session. Closing
  the browser or stopping the UI does not touch them; the run folder is an ordinary ``mudi train`` folder that
  the CLI resumes. Stop = SIGINT (the trainer finishes its step, checkpoints and exits 130).
- :func:`run_status`: what a run folder says about its run — read from the folder alone (``metrics.jsonl``,
  ``.mudi.lock``, checkpoints, the LoRA), so a run started before the UI was restarted is still seen.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mudi.data.manifests import weight_files
from mudi.errors import MudiError
from mudi.io import lock_holder, os_error_message, write_text_atomic
from mudi.training.checkpoint import list_checkpoints
from mudi.training.config import CONFIG_FILE
from mudi.training.loop import read_metrics
from mudi.training.runs import HISTORY_FILE
from mudi.ui.generation import release_generation_backbone

log = logging.getLogger(__name__)
TRAIN_LOG = "train.log"  # stdout and stderr of every start and resume, appended
REQUEST_FILE = "ui_train.yaml"  # the settings the UI started the run with (`mudi train --config` reads it)
STOPPED_CODES = (130, 143)  # SIGINT, SIGTERM: the trainer checkpointed and stopped on request


# ------------------------------------------------------------------------------------------------ worker
@dataclass
class Task:
    """One unit of in-process work. ``state``: queued, running, done or failed (``error``: one line)."""

    name: str
    state: str = "queued"
    result: Any = None
    error: str | None = None
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    _event: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def done(self) -> bool:
        return self.state in ("done", "failed")

    def elapsed(self) -> float:
        start = self.started if self.started is not None else self.submitted
        return (self.finished if self.finished is not None else time.monotonic()) - start

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the task ends (or ``timeout`` seconds pass); True when it ended."""
        return self._event.wait(timeout)


class Worker:
    """Runs tasks one at a time in a daemon thread (a stopped UI does not wait for it)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Task, Callable[..., Any], tuple, dict]] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="mudi-ui-worker", daemon=True)
        self._thread.start()
        self.current: Task | None = None

    def submit(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Task:
        task = Task(name)
        self._queue.put((task, fn, args, kwargs))
        return task

    def pending(self) -> int:
        """Tasks queued behind the current one."""
        return self._queue.qsize()

    def _loop(self) -> None:
        while True:
            task, fn, args, kwargs = self._queue.get()
            self.current = task
            task.state, task.started = "running", time.monotonic()
            try:
                task.result = fn(*args, **kwargs)
                task.state = "done"
            except MudiError as e:
                task.error, task.state = str(e), "failed"
            except OSError as e:
                task.error, task.state = os_error_message(e), "failed"
            except Exception as e:  # a bug or a model failure: one line on the page, the traceback in the log
                log.exception("mudi ui: task %r failed", task.name)
                task.error, task.state = f"{type(e).__name__}: {e}", "failed"
            finally:
                task.finished = time.monotonic()
                self.current = None
                task._event.set()


# ------------------------------------------------------------------------------------------------ run status
@dataclass
class RunStatus:
    """``state``: starting (process up, no step yet), running, finished, stopped (resumable), failed, or new
    (an empty folder)."""

    folder: Path
    state: str
    step: int = 0
    max_steps: int | None = None
    pid: int | None = None
    exit_code: int | None = None
    loss: float | None = None
    step_seconds: float | None = None
    message: str = ""
    metrics: list[dict] = field(default_factory=list, repr=False)

    @property
    def running(self) -> bool:
        return self.state in ("starting", "running")

    @property
    def resumable(self) -> bool:
        return not self.running and bool(list_checkpoints(self.folder))

    def summary(self) -> str:
        """One line for the page: ``running · step 3/5 · loss 1.0712 · 0.06 s/step``."""
        parts = [self.state]
        if self.max_steps:
            parts.append(f"step {self.step}/{self.max_steps}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.step_seconds and self.running:
            parts.append(f"{self.step_seconds:.2f} s/step")
            if self.max_steps and self.step < self.max_steps:
                parts.append(f"about {_duration(self.step_seconds * (self.max_steps - self.step))} left")
        if self.pid and self.running:
            parts.append(f"pid {self.pid}")
        if self.message:
            parts.append(self.message)
        return " · ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def planned_steps(folder: Path) -> int | None:
    """``max_train_steps`` of the run's latest start or resume (``train_history.jsonl``, else its config)."""
    folder = Path(folder)
    steps = None
    for name in (REQUEST_FILE, CONFIG_FILE):
        try:
            data = yaml.safe_load((folder / name).read_text(encoding="utf-8")) if (folder / name).is_file() else None
        except (OSError, yaml.YAMLError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("max_train_steps"), int):
            steps = data["max_train_steps"]
    history = folder / HISTORY_FILE
    if history.is_file():
        for line in history.read_text(encoding="utf-8").splitlines():
            try:
                change = json.loads(line).get("changes", {}).get("max_train_steps")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(change, dict) and isinstance(change.get("to"), int):
                steps = change["to"]
    return steps


def log_tail(folder: Path, lines: int = 12) -> str:
    """The last ``lines`` lines of the run's ``train.log`` (progress-bar redraws dropped)."""
    path = Path(folder) / TRAIN_LOG
    if not path.is_file():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 64 * 1024))
        text = f.read().decode("utf-8", "replace")
    rows = [r.rsplit("\r", 1)[-1] for r in text.splitlines() if r.strip()]
    return "\n".join(rows[-lines:])


def _last_error(folder: Path) -> str:
    for line in reversed(log_tail(folder, 40).splitlines()):
        if "error" in line.lower() or line.startswith("mudi train:"):
            return line.strip()
    return "see train.log"


def run_status(folder: Path, process: subprocess.Popen | None = None) -> RunStatus:
    """The state of the run in ``folder`` (``process``: the subprocess this UI started for it, if any)."""
    folder = Path(folder)
    metrics = read_metrics(folder)
    last = metrics[-1] if metrics else {}
    status = RunStatus(folder, "new", step=int(last.get("step", 0)), max_steps=planned_steps(folder),
                       loss=last.get("loss"), step_seconds=last.get("step_seconds"), metrics=metrics)
    exit_code = process.poll() if process is not None else None
    pid = process.pid if process is not None and exit_code is None else lock_holder(folder)
    if pid is not None:
        status.pid = pid
        status.state = "running" if metrics else "starting"
        return status
    status.exit_code = exit_code
    done = bool(weight_files(folder)) and (status.max_steps is None or status.step >= status.max_steps)
    if exit_code == 0 or (exit_code is None and done):
        status.state = "finished"
    elif exit_code in STOPPED_CODES or (exit_code is None and list_checkpoints(folder)):
        status.state = "stopped"
        status.message = "resume it to continue"
    elif exit_code is not None or (folder / TRAIN_LOG).is_file():
        status.state = "failed"
        status.message = _last_error(folder)
    return status


# ------------------------------------------------------------------------------------------------ training runs
class TrainingRuns:
    """Starts, stops and resumes ``mudi train`` subprocesses, one per run folder."""

    def __init__(self, python: str = sys.executable, env: dict[str, str] | None = None) -> None:
        self.python = python
        self.env = env
        self._procs: dict[Path, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def status(self, folder: Path) -> RunStatus:
        folder = Path(folder).resolve()
        with self._lock:
            return run_status(folder, self._procs.get(folder))

    def start(self, folder: Path, request: dict) -> RunStatus:
        """A new run in ``folder`` from ``request`` (TrainConfig keys), written to ``ui_train.yaml``."""
        folder = Path(folder).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        request = {**request, "output_dir": str(folder)}
        write_text_atomic(folder / REQUEST_FILE, yaml.safe_dump(request, sort_keys=False, allow_unicode=True))
        return self._spawn(folder, ["--config", str(folder / REQUEST_FILE)])

    def resume(self, folder: Path, max_train_steps: int | None = None) -> RunStatus:
        """Continue a stopped (or finished, with more steps) run from its latest checkpoint, as
        ``mudi train --config RUN/train_config.yaml --resume_from_checkpoint latest`` would."""
        folder = Path(folder).resolve()
        if (folder / CONFIG_FILE).is_file() and list_checkpoints(folder):
            args = ["--config", str(folder / CONFIG_FILE), "--resume_from_checkpoint", "latest"]
        elif (folder / REQUEST_FILE).is_file() and not (folder / CONFIG_FILE).is_file():
            args = ["--config", str(folder / REQUEST_FILE)]  # stopped before its first step: start it again
        else:
            raise MudiError(f"{folder.name} has no checkpoint to resume from; start a new run")
        if max_train_steps:
            args += ["--max_train_steps", str(int(max_train_steps))]
        return self._spawn(folder, args)

    def stop(self, folder: Path) -> RunStatus:
        """Ask the run to stop: SIGINT; it finishes its step, saves a checkpoint and exits 130."""
        status = self.status(folder)
        if not status.running or status.pid is None:
            raise MudiError(f"{Path(folder).name} is not running ({status.state})")
        try:
            os.kill(status.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        status.message = "stopping: the trainer finishes its step and saves a checkpoint"
        return status

    def _spawn(self, folder: Path, args: Sequence[str]) -> RunStatus:
        with self._lock:
            current = run_status(folder, self._procs.get(folder))
            if current.running:
                raise MudiError(f"{folder.name} is already running (pid {current.pid}); stop it first")
            release_generation_backbone()  # the training process needs the memory a kept generation model holds
            env = dict(os.environ if self.env is None else self.env)
            env["PYTHONUNBUFFERED"] = "1"
            args = [*args, "--no-progress"]
            with (folder / TRAIN_LOG).open("a", encoding="utf-8") as logfile:
                logfile.write(f"\n$ mudi train {shlex.join(args)}    # {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
                logfile.flush()
                self._procs[folder] = subprocess.Popen(
                    [self.python, "-m", "mudi.cli", "train", *args], stdout=logfile, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True, env=env)
            return run_status(folder, self._procs[folder])


def resume_command(folder: Path) -> str:
    """What a terminal runs to continue the run (the same command the UI's Resume button runs)."""
    return f"mudi train --config {shlex.quote(str(Path(folder) / CONFIG_FILE))} --resume_from_checkpoint latest"
