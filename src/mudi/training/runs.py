"""One output folder, one training run: refuse to mix runs, check a resumed run's config, keep its history.

- A folder holding another run (``train_config.yaml``, checkpoints or a LoRA) is refused unless the command
  resumes it (``--resume_from_checkpoint``) or replaces it (``--overwrite``).
- On resume, the saved config is compared with the new one. Fields that change what the run *is* (backbone,
  model, subjects, rank, targets, composition, resolution, seed, optimizer and loss settings, …) refuse with one
  line listing the differences; the fields in :data:`MAY_CHANGE` (steps, checkpointing, logging, validation,
  device) are accepted and recorded as a new entry of ``train_history.jsonl``. ``train_config.yaml`` is the
  original config and is never overwritten.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from mudi.config import save_config, to_dict
from mudi.data.manifests import KOHYA_FILE, LORA_FILE, SUBJECTS_FILE
from mudi.errors import MudiError
from mudi.io import write_text_atomic
from mudi.training.checkpoint import list_checkpoints
from mudi.training.config import CONFIG_FILE, TrainConfig

HISTORY_FILE = "train_history.jsonl"
#: What a resumed run may change: how long it runs and how it saves, logs and validates — not what it learns.
MAY_CHANGE = frozenset({
    "max_train_steps", "checkpointing_steps", "checkpoints_total_limit", "save_steps", "resume_from_checkpoint",
    "overwrite", "report_to", "validation_prompts", "validation_steps", "num_validation_inference_steps", "progress",
    "device", "export", "output_dir", "gradient_checkpointing", "cache_latents", "dataloader_num_workers",
    "fused_optimizer", "channels_last", "compile",
})
#: Files and folders of a run that ``--overwrite`` removes (nothing else in the folder is touched).
RUN_FILES = (CONFIG_FILE, HISTORY_FILE, LORA_FILE, KOHYA_FILE, SUBJECTS_FILE, "README.md", "metrics.jsonl")
RUN_DIRS = ("logs", "validation")
PATH_KEYS = ("subjects", "class_data_dir", "pretrained_model_name_or_path", "vae")


def run_files(folder: Path) -> list[str]:
    """The files of a training run already in ``folder`` (empty: the folder holds no run)."""
    found = [f for f in (CONFIG_FILE, LORA_FILE) if (folder / f).is_file()]
    found += [p.name for p in list_checkpoints(folder)]
    found += sorted(p.name for p in folder.glob("snapshot-*") if p.is_dir())
    return found


def guard_output_dir(config: TrainConfig) -> None:
    """Refuse a folder holding another run unless resuming it or replacing it (``--overwrite``)."""
    folder = Path(config.output_dir)
    found = run_files(folder)
    if not found or config.resume_from_checkpoint:
        return
    if not config.overwrite:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise MudiError(f"{folder} holds another training run ({shown}); continue it with --resume_from_checkpoint "
                        "latest, replace it with --overwrite, or choose another --output_dir")
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)
    for d in [*RUN_DIRS, *found]:
        if (folder / d).is_dir():
            shutil.rmtree(folder / d)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _normal(key: str, value: Any) -> Any:
    """Paths compared as resolved paths (``./a`` and ``/home/u/a`` are one folder); lists as lists."""
    if key.split(".")[0] in PATH_KEYS and value is not None:
        if isinstance(value, (list, tuple)):
            return [_normal(key, v) for v in value]
        p = Path(str(value))
        return str(p.resolve()) if p.exists() else str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def config_changes(saved: dict, new: TrainConfig) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """``(refused, accepted)``: ``{key: (saved value, new value)}`` of every field that differs."""
    old, cur = _flat(saved), _flat(to_dict(new))
    refused: dict[str, tuple] = {}
    accepted: dict[str, tuple] = {}
    for key in sorted(set(old) | set(cur)):
        if key not in old or key not in cur:  # a field another mudi version lacks: not a change of the run
            continue
        a, b = _normal(key, old[key]), _normal(key, cur[key])
        if a != b:
            (accepted if key.split(".")[0] in MAY_CHANGE else refused)[key] = (old[key], cur[key])
    return refused, accepted


def check_resume(saved: dict | None, config: TrainConfig, where: Path) -> dict[str, tuple]:
    """Raise a one-line :class:`MudiError` for changes that alter the run; returns the accepted changes."""
    if saved is None:
        return {}
    refused, accepted = config_changes(saved, config)
    if refused:
        shown = "; ".join(f"{k}: {v[0]!r} → {v[1]!r}" for k, v in refused.items())
        raise MudiError(f"cannot resume {where} with a changed run ({shown}); resume with the saved values (see "
                        f"{Path(config.output_dir) / CONFIG_FILE}), or start a new run with another --output_dir "
                        "or --overwrite")
    return accepted


def saved_config(folder: Path) -> dict | None:
    """The original config of the run in ``folder`` (``train_config.yaml``), or None."""
    f = folder / CONFIG_FILE
    if not f.is_file():
        return None
    try:
        data = yaml.safe_load(f.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise MudiError(f"{f}: not valid YAML ({str(e).splitlines()[0]}); fix it or start over with --overwrite") \
            from None
    return data if isinstance(data, dict) else None


def write_run_config(folder: Path, config: TrainConfig) -> None:
    """``FOLDER/train_config.yaml``: the run's original config, written once (a resumed run never overwrites
    it; :func:`check_resume` compares against it). The one writer of that file."""
    if not (folder / CONFIG_FILE).is_file():
        save_config(config, folder / CONFIG_FILE)


def record_history(folder: Path, event: str, step: int, changes: dict[str, tuple]) -> None:
    """Append one line to ``train_history.jsonl`` (rewritten atomically: a crash loses no earlier line)."""
    path = folder / HISTORY_FILE
    previous = path.read_text(encoding="utf-8") if path.is_file() else ""
    entry = {"event": event, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "step": step,
             "changes": {k: {"from": v[0], "to": v[1]} for k, v in changes.items()}}
    write_text_atomic(path, previous + json.dumps(entry, default=str) + "\n")
