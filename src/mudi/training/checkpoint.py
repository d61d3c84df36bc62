"""Training checkpoints: everything needed to continue a run bit for bit, written atomically, no pickles.

``OUTPUT_DIR/checkpoint-<step>/``:

- ``trainable.safetensors``: the trainable (LoRA) parameters by name;
- ``optimizer.safetensors`` + ``optimizer.json``: the optimizer state tensors and the rest of its state dict;
- ``state.json``: step, LR scheduler state, the run's config (the data of step ``k`` is drawn from a generator
  seeded by the run's seed and ``k``, so the step is all the data order needs);
- ``rng.safetensors``: the torch noise generator's and the global CPU RNG's states.

The folder is assembled under a temporary name and renamed into place (:func:`mudi.io.atomic_dir`), so an
interrupted, killed or out-of-space save never leaves a half checkpoint and never touches the previous ones;
only the newest ``checkpoints_total_limit`` are kept. ``latest`` resumes from the newest checkpoint that
reads back completely and says so when it has to skip a damaged one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mudi.errors import MudiError
from mudi.io import atomic_dir, os_error_message

log = logging.getLogger(__name__)
_CKPT = re.compile(r"^checkpoint-(\d+)$")
_FILES = ("trainable.safetensors", "optimizer.safetensors", "optimizer.json", "rng.safetensors", "state.json")


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """``checkpoint-<step>`` folders under ``output_dir``, oldest first."""
    d = Path(output_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if p.is_dir() and (m := _CKPT.match(p.name))]
    return [p for _, p in sorted(found)]


def remove_stale_temporaries(output_dir: str | Path) -> list[Path]:
    """Remove the hidden ``.checkpoint-*.tmp`` folders a killed save left behind (call it holding the lock)."""
    d = Path(output_dir)
    stale = [p for p in d.glob(".checkpoint-*.tmp") if p.is_dir()] if d.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


class CheckpointData:
    """What one checkpoint folder holds, read completely (so a damaged file is found before anything changes)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        missing = [f for f in _FILES if not (folder / f).is_file()]
        if missing:
            raise MudiError(f"{folder}: not a complete training checkpoint (missing {', '.join(missing)})")
        try:
            self.weights = load_file(str(folder / "trainable.safetensors"))
            self.opt_tensors = load_file(str(folder / "optimizer.safetensors"))
            self.opt_rest = json.loads((folder / "optimizer.json").read_text())
            self.rng = load_file(str(folder / "rng.safetensors"))
            self.state = json.loads((folder / "state.json").read_text())
        except Exception as e:  # safetensors raises its own error type for a truncated file
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise MudiError(f"{folder}: the checkpoint is damaged ({type(e).__name__}: {first})") from None

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def config(self) -> dict | None:
        """The run's config as saved with the checkpoint (None for checkpoints of older mudi versions)."""
        return self.state.get("config")


def resolve_checkpoint(output_dir: str | Path, resume_from_checkpoint: str) -> CheckpointData | None:
    """``"latest"`` → the newest checkpoint that reads back completely (None if there is none yet; a damaged
    newer one is skipped with a warning); a path → that folder, which must be intact."""
    if resume_from_checkpoint == "latest":
        for folder in reversed(list_checkpoints(output_dir)):
            try:
                data = CheckpointData(folder)
            except MudiError as e:
                log.warning("warning: %s; resuming from an older checkpoint", e)
                continue
            return data
        return None
    p = Path(resume_from_checkpoint)
    if not p.is_dir() and (Path(output_dir) / p).is_dir():
        p = Path(output_dir) / p
    if not (p / "state.json").is_file():
        raise MudiError(f"{resume_from_checkpoint}: not a training checkpoint (no state.json); give a "
                        f"checkpoint-<step> folder or 'latest'")
    return CheckpointData(p)


def _split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for idx, st in state["state"].items():
        rest["state"][str(idx)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().to("cpu").contiguous()
                rest["state"][str(idx)][k] = {"tensor": f"{idx}.{k}"}
            else:
                rest["state"][str(idx)][k] = {"value": v}
    return tensors, rest


def _join_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state = {}
    for idx, st in rest["state"].items():
        state[int(idx)] = {k: (tensors[v["tensor"]] if "tensor" in v else v["value"]) for k, v in st.items()}
    groups = []
    for g in rest["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def save_checkpoint(output_dir: str | Path, step: int, trainable: dict[str, torch.Tensor], optimizer: Any,
                    lr_scheduler: Any, noise_generator: torch.Generator,
                    checkpoints_total_limit: int | None = None, config: dict | None = None) -> Path:
    """Write ``OUTPUT_DIR/checkpoint-<step>`` atomically; a failed write (a full disk) raises a one-line
    :class:`MudiError` and leaves every earlier checkpoint as it was."""
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{step}"
    try:
        with atomic_dir(final) as tmp:
            save_file({k: v.detach().to("cpu").contiguous() for k, v in trainable.items()},
                      str(tmp / "trainable.safetensors"))
            opt_tensors, opt_rest = _split_optimizer(optimizer.state_dict())
            save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
            (tmp / "optimizer.json").write_text(json.dumps(opt_rest))
            save_file({"noise_generator": noise_generator.get_state(), "torch_cpu": torch.get_rng_state()},
                      str(tmp / "rng.safetensors"))
            state = {"step": step, "lr_scheduler": lr_scheduler.state_dict(),
                     "noise_generator_device": str(noise_generator.device), "config": config}
            (tmp / "state.json").write_text(json.dumps(state, default=_jsonable))
    except OSError as e:
        previous = [p for p in list_checkpoints(output_dir) if p != final]
        kept = f"the previous checkpoint {previous[-1].name} is intact" if previous else "no earlier checkpoint exists"
        raise MudiError(f"could not write checkpoint-{step} ({os_error_message(e)}); {kept}; fix it and continue "
                        "with --resume_from_checkpoint latest") from None
    if checkpoints_total_limit is not None:
        for old in list_checkpoints(output_dir)[:-checkpoints_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(data: CheckpointData, trainable: dict[str, torch.nn.Parameter], optimizer: Any,
                    lr_scheduler: Any, noise_generator: torch.Generator) -> int:
    """Restore everything :func:`save_checkpoint` wrote, in place; returns the step to continue from."""
    missing = set(trainable) ^ set(data.weights)
    if missing:
        raise MudiError(f"{data.folder}: its LoRA parameters do not match this run's ({len(missing)} differ, e.g. "
                        f"{sorted(missing)[0]}); resume with the same backbone, rank and target modules")
    with torch.no_grad():
        for k, p in trainable.items():
            if p.shape != data.weights[k].shape:
                raise MudiError(f"{data.folder}: {k} is {tuple(data.weights[k].shape)} in the checkpoint but "
                                f"{tuple(p.shape)} in this run; resume with the same backbone and rank")
            p.copy_(data.weights[k].to(device=p.device, dtype=p.dtype))
    optimizer.load_state_dict(_join_optimizer(data.opt_tensors, data.opt_rest))
    lr_scheduler.load_state_dict(data.state["lr_scheduler"])
    noise_generator.set_state(data.rng["noise_generator"])
    torch.set_rng_state(data.rng["torch_cpu"])
    return data.step


def _jsonable(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__} in a checkpoint")
