"""Backbone names → adapter classes (plain dotted paths, so ``import mudi`` stays light).

``load_backbone("sdxl")`` loads the default hub checkpoint of the family; ``pretrained_model_name_or_path``
overrides it (hub id or local diffusers folder). The ``tiny-*`` names build random tiny models in memory
and ignore the checkpoint argument (giving one is an error).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch

from mudi.adapters.lookup import check_names
from mudi.adapters.weights import missing_weights_error
from mudi.errors import MudiError

# name -> (adapter class path, family, default checkpoint)
BACKBONES: dict[str, tuple[str, str, str | None]] = {
    "sd15": ("mudi.adapters.sd.StableDiffusionBackbone", "sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
    "sd2": ("mudi.adapters.sd.StableDiffusionBackbone", "sd2", "stabilityai/stable-diffusion-2-1"),
    "sdxl": ("mudi.adapters.sdxl.StableDiffusionXLBackbone", "sdxl", "stabilityai/stable-diffusion-xl-base-1.0"),
    "flux": ("mudi.adapters.flux.FluxBackbone", "flux", "black-forest-labs/FLUX.1-dev"),
    "tiny-sd": ("mudi.adapters.tiny_backbones.build_tiny_backbone", "sd15", None),
    "tiny-sd2": ("mudi.adapters.tiny_backbones.build_tiny_backbone", "sd2", None),
    "tiny-sdxl": ("mudi.adapters.tiny_backbones.build_tiny_backbone", "sdxl", None),
    "tiny-flux": ("mudi.adapters.tiny_backbones.build_tiny_backbone", "flux", None),
}
TINY_BACKBONES = tuple(n for n in BACKBONES if n.startswith("tiny-"))

# family -> the diffusers pipeline class names a checkpoint of that family declares in model_index.json
PIPELINE_CLASSES: dict[str, tuple[str, ...]] = {
    "sd15": ("StableDiffusionPipeline",),
    "sd2": ("StableDiffusionPipeline",),
    "sdxl": ("StableDiffusionXLPipeline",),
    "flux": ("FluxPipeline",),
}
_FAMILY_OF_CLASS = {"StableDiffusionPipeline": "sd15 or sd2", "StableDiffusionXLPipeline": "sdxl",
                    "FluxPipeline": "flux"}


def _import(dotted: str) -> Any:
    mod, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(mod), attr)


def load_backbone(backbone: str, pretrained_model_name_or_path: str | None = None, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32) -> Any:
    """A :class:`~mudi.adapters.base.Backbone` for ``backbone`` (one of :data:`BACKBONES`)."""
    check_names(BACKBONES, [backbone], "backbone")
    path, family, default = BACKBONES[backbone]
    if default is None:
        if pretrained_model_name_or_path:
            raise MudiError(f"--backbone {backbone} builds a random tiny model and takes no checkpoint; drop "
                            f"--pretrained_model_name_or_path {pretrained_model_name_or_path} or use --backbone "
                            f"{family}")
        return _import(path)(backbone, device=device, dtype=dtype)
    cls = _import(path)
    return cls.from_pretrained(pretrained_model_name_or_path or default, family=family, device=device, dtype=dtype)


def read_model_index(pretrained_model_name_or_path: str) -> dict | None:
    """``model_index.json`` of a local folder or a cached hub checkpoint (no download); None if not found."""
    local = Path(pretrained_model_name_or_path)
    if local.is_dir():
        f = local / "model_index.json"
        if not f.is_file():
            raise MudiError(f"{local}: not a diffusers pipeline folder (no model_index.json); give the folder "
                            "saved by `pipe.save_pretrained(...)` or a hub id")
        return json.loads(f.read_text())
    try:
        from huggingface_hub import hf_hub_download

        f = hf_hub_download(pretrained_model_name_or_path, "model_index.json")
    except Exception:  # not cached / offline / no such repo: from_pretrained reports it
        return None
    return json.loads(Path(f).read_text())


def check_pipeline_class(pretrained_model_name_or_path: str, family: str, expected: str) -> None:
    """Raise a one-line MudiError if the checkpoint declares a pipeline of another family."""
    index = read_model_index(pretrained_model_name_or_path)
    if index is None:
        return
    found = str(index.get("_class_name", ""))
    if found and found not in PIPELINE_CLASSES.get(family, (expected,)):
        other = _FAMILY_OF_CLASS.get(found, "another family")
        raise MudiError(f"{pretrained_model_name_or_path} is a {found} checkpoint ({other}), not {family}: use "
                        f"--backbone {other.split(' ')[0]} or give a {expected} checkpoint")


def missing_checkpoint_error(pretrained_model_name_or_path: str, family: str, cause: Exception) -> MudiError:
    """The one-line error for a checkpoint that cannot be loaded (typically: not downloaded while offline)."""
    return missing_weights_error(family, pretrained_model_name_or_path, cause, "--pretrained_model_name_or_path")

