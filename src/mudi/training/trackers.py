"""Experiment trackers of a training run (``report_to``): TensorBoard, Weights & Biases, or none.

Both receive the same series through accelerate (``loss``, the loss terms, ``lr``, ``step_seconds``,
``data_seconds``; exactly the rows of ``metrics.jsonl``) and the validation images of each validation step.
A wandb run lives in ``OUTPUT_DIR/wandb/`` with the id kept in ``OUTPUT_DIR/wandb_run_id``, so a resumed run
continues the same wandb run; ``WANDB_MODE=offline`` (or ``wandb offline``) is honoured as wandb itself reads it.
"""

from __future__ import annotations

import importlib.util
import secrets
from pathlib import Path
from typing import Any

from mudi.errors import MudiError
from mudi.io import write_text_atomic

REPORTERS = ("tensorboard", "wandb", "none")
WANDB_ID_FILE = "wandb_run_id"
PROJECT = "mudi-train"
_PACKAGES = {"tensorboard": ("tensorboard", "mudi[tensorboard]"), "wandb": ("wandb", "mudi[wandb]")}


def check_tracker(report_to: str) -> None:
    """A one-line error, before any model loads, when the tracker's package is missing."""
    if report_to not in REPORTERS:
        raise MudiError(f"--report_to {report_to!r}: use one of {', '.join(REPORTERS)}")
    if report_to in _PACKAGES:
        module, extra = _PACKAGES[report_to]
        if importlib.util.find_spec(module) is None:
            raise MudiError(f"--report_to {report_to} needs {module}, which is not installed: pip install '{extra}' "
                            "(or --report_to none; metrics.jsonl is always written)")


def log_with(report_to: str) -> str | None:
    """accelerate's ``log_with`` for ``report_to``."""
    return None if report_to == "none" else report_to


def wandb_run_id(output_dir: Path) -> str:
    """The run's wandb id: read from ``OUTPUT_DIR/wandb_run_id``, made (and kept there) on the first start."""
    path = Path(output_dir) / WANDB_ID_FILE
    if path.is_file():
        found = path.read_text(encoding="utf-8").strip()
        if found.isalnum():
            return found
    new = secrets.token_hex(4)
    write_text_atomic(path, new + "\n")
    return new


def init_trackers(accelerator: Any, report_to: str, output_dir: Path, config: dict) -> None:
    """Start the trackers (the main process only, as accelerate does)."""
    if report_to == "none":
        return
    kwargs: dict[str, Any] = {}
    if report_to == "wandb":
        kwargs = {"wandb": {"dir": str(output_dir), "id": wandb_run_id(output_dir), "resume": "allow",
                            "name": Path(output_dir).name}}
    accelerator.init_trackers(PROJECT, config=config, init_kwargs=kwargs)


def log_validation_images(accelerator: Any, paths: list[Path], step: int) -> None:
    """The validation images of ``step`` into every tracker that takes images."""
    if not paths:
        return
    import numpy as np
    from PIL import Image

    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    for tracker in accelerator.trackers:
        if tracker.name == "wandb":
            import wandb

            tracker.log({"validation": [wandb.Image(img, caption=p.name) for img, p in zip(images, paths)]},
                        step=step)
        elif tracker.name == "tensorboard":
            tracker.log_images({"validation": np.stack(images)}, step=step, dataformats="NHWC")
