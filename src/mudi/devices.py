"""Devices and dtypes: the one parser of dtype names and the ``auto`` rule every verb uses.

``device: auto`` is CUDA when present, then Apple's MPS, then the CPU. ``dtype: auto`` is half precision on
a GPU (bfloat16 where the GPU supports it, else float16) and float32 on the CPU. Library code never guesses:
workflows resolve ``auto`` once, print what they chose and record it in the run's config.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import torch

from mudi.errors import MudiError

#: Names accepted wherever a dtype is configured ("auto" is resolved by :func:`resolve_dtype`).
DTYPE_NAMES: dict[str, str] = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
                               "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}
DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")


def check_dtype_name(name: str, where: str = "dtype") -> None:
    """Raise a one-line :class:`MudiError` unless ``name`` is ``auto`` or a known dtype name (no torch call)."""
    if name != "auto" and name not in DTYPE_NAMES:
        raise MudiError(f"{where} {name!r} is not one of {', '.join(DTYPE_CHOICES)}")


def parse_dtype(dtype: Any) -> torch.dtype:
    """``None`` → float32; ``"float16"``/``"fp16"``/``"bf16"``… → the torch dtype; a torch dtype as is."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype in DTYPE_NAMES:
        return getattr(torch, DTYPE_NAMES[dtype])
    raise MudiError(f"dtype {dtype!r} is not one of float32, float16, bfloat16")


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` → ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def resolve_device(spec: str | None) -> torch.device:
    """``"auto"`` (or ``None``) → ``cuda`` if available, else ``mps``, else ``cpu``; anything else as given."""
    if spec in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise MudiError(f"device {spec!r} is not a torch device; use auto, cpu, cuda, cuda:1 or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MudiError(f"device {spec!r} asked for, but torch sees no CUDA GPU (torch {torch.__version__}); use "
                        "--device cpu or install a CUDA build of torch (docs/install.md)")
    return device


def resolve_dtype(spec: Any, device: torch.device | str) -> torch.dtype:
    """``"auto"`` → bfloat16 on a CUDA GPU that supports it, float16 on other GPUs, float32 on the CPU."""
    if spec in (None, "", "auto"):
        device = torch.device(device)
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    return parse_dtype(spec)


def mixed_precision_of(dtype: torch.dtype) -> str:
    """accelerate's ``mixed_precision`` name for a frozen-weight dtype: ``no``, ``fp16`` or ``bf16``."""
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "no")


def describe(device: torch.device | str, dtype: torch.dtype) -> str:
    """``"device cuda:0 (NVIDIA H100), dtype bfloat16"`` for the start-of-run line."""
    device = torch.device(device)
    name = ""
    if device.type == "cuda":
        try:
            name = f" ({torch.cuda.get_device_name(device)})"
        except (RuntimeError, AssertionError):  # pragma: no cover - no such GPU index
            name = ""
    return f"device {device}{name}, dtype {dtype_name(dtype)}"


C = TypeVar("C")


def place_config(config: C) -> tuple[C, torch.device, torch.dtype]:
    """A stage config with its ``device``/``dtype`` resolved (``auto`` → what this machine has), and the two:
    what the stage records and loads its models with."""
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    return dataclasses.replace(config, device=str(device), dtype=dtype_name(dtype)), device, dtype
