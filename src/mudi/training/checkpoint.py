"""Training checkpoints: everything needed to continue a run bit for bit, written atomically, no pickles.

``OUTPUT_DIR/checkpoint-<step>/``:

- ``trainable.safetensors``: the trainable (LoRA) parameters by name;
- ``optimizer.safetensors`` + ``optimizer.json``: the optimizer state tensors and the rest of its state dict;
- ``state.json``: step, LR scheduler state, the numpy data generator's state;
- ``rng.safetensors``: the torch noise generator's and the global CPU RNG's states.

The folder is assembled under a temporary name and renamed into place, so an interrupted save never
leaves a half checkpoint; only the newest ``checkpoints_total_limit`` are kept.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mudi.errors import MudiError

_CKPT = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """``checkpoint-<step>`` folders under ``output_dir``, oldest first."""
    d = Path(output_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if p.is_dir() and (m := _CKPT.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(output_dir: str | Path, resume_from_checkpoint: str) -> Path | None:
    """``"latest"`` → newest checkpoint (None if there is none yet); a path → that folder (must exist)."""
    if resume_from_checkpoint == "latest":
        ckpts = list_checkpoints(output_dir)
        return ckpts[-1] if ckpts else None
    p = Path(resume_from_checkpoint)
    if not p.is_dir() and (Path(output_dir) / p).is_dir():
        p = Path(output_dir) / p
    if not (p / "state.json").is_file():
        raise MudiError(f"{resume_from_checkpoint}: not a training checkpoint (no state.json); give a "
                        f"checkpoint-<step> folder or 'latest'")
    return p


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
                    lr_scheduler: Any, noise_generator: torch.Generator, data_rng: np.random.Generator,
                    checkpoints_total_limit: int | None = None) -> Path:
    from safetensors.torch import save_file

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / f"checkpoint-{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".checkpoint-{step}-", suffix=".tmp", dir=output_dir))
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in trainable.items()},
                  str(tmp / "trainable.safetensors"))
        opt_tensors, opt_rest = _split_optimizer(optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(opt_rest))
        save_file({"noise_generator": noise_generator.get_state(), "torch_cpu": torch.get_rng_state()},
                  str(tmp / "rng.safetensors"))
        state = {"step": step, "lr_scheduler": lr_scheduler.state_dict(), "data_rng": data_rng.bit_generator.state,
                 "noise_generator_device": str(noise_generator.device)}
        (tmp / "state.json").write_text(json.dumps(state, default=_jsonable))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if checkpoints_total_limit is not None:
        for old in list_checkpoints(output_dir)[:-checkpoints_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: str | Path, trainable: dict[str, torch.nn.Parameter], optimizer: Any, lr_scheduler: Any,
                    noise_generator: torch.Generator, data_rng: np.random.Generator) -> int:
    """Restore everything :func:`save_checkpoint` wrote, in place; returns the step to continue from."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        weights = load_file(str(folder / "trainable.safetensors"))
        opt_tensors = load_file(str(folder / "optimizer.safetensors"))
        opt_rest = json.loads((folder / "optimizer.json").read_text())
        rng = load_file(str(folder / "rng.safetensors"))
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise MudiError(f"{folder}: cannot read the checkpoint ({e}); resume from another checkpoint") from None
    missing = set(trainable) ^ set(weights)
    if missing:
        raise MudiError(f"{folder}: its LoRA parameters do not match this run's ({len(missing)} differ, e.g. "
                        f"{sorted(missing)[0]}); resume with the same backbone, rank and target modules")
    with torch.no_grad():
        for k, p in trainable.items():
            p.copy_(weights[k].to(device=p.device, dtype=p.dtype))
    optimizer.load_state_dict(_join_optimizer(opt_tensors, opt_rest))
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    noise_generator.set_state(rng["noise_generator"])
    torch.set_rng_state(rng["torch_cpu"])
    data_rng.bit_generator.state = state["data_rng"]
    return int(state["step"])


def _jsonable(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__} in a checkpoint")
