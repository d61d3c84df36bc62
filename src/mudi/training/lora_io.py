"""LoRA files: the diffusers format every family's pipeline loads, and the kohya (A1111/ComfyUI) export.

Only safetensors are written or read (never pickles).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from mudi.data.manifests import KOHYA_FILE, LORA_FILE
from mudi.io import atomic_path

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone


def lora_state_dict(denoiser: Any) -> dict[str, torch.Tensor]:
    """The denoiser's LoRA weights in peft key format (``...to_q.lora_A.weight``), detached, on CPU."""
    return {k: v.detach().to("cpu").contiguous() for k, v in get_peft_model_state_dict(denoiser).items()}


def save_diffusers_lora(backbone: Backbone, denoiser: Any, output_dir: str | Path) -> Path:
    """Write ``OUTPUT_DIR/pytorch_lora_weights.safetensors`` (with the LoRA config as adapter metadata, so a
    ``lora_alpha`` other than the rank round-trips) atomically; ``pipe.load_lora_weights(OUTPUT_DIR)`` loads it."""
    output_dir = Path(output_dir)
    target = output_dir / LORA_FILE
    metadata = denoiser.peft_config["default"].to_dict()
    metadata = {k: (sorted(v) if isinstance(v, set) else v) for k, v in metadata.items()}
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".lora-", suffix=".tmp", dir=output_dir))
    try:
        backbone.save_lora(str(tmp_dir), lora_state_dict(denoiser), metadata)
        with atomic_path(target) as tmp:
            (tmp_dir / LORA_FILE).replace(tmp)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


def export_kohya(output_dir: str | Path, backbone: Backbone) -> Path:
    """Convert ``OUTPUT_DIR/pytorch_lora_weights.safetensors`` to kohya keys (``lora_unet_…``, ``alpha``) with
    the backbone's own mapping (:meth:`~mudi.adapters.base.Backbone.to_kohya`), for A1111 and ComfyUI."""
    state = load_file(str(Path(output_dir) / LORA_FILE))
    kohya = backbone.to_kohya(state)
    target = Path(output_dir) / KOHYA_FILE
    with atomic_path(target) as tmp:
        save_file({k: v.contiguous() for k, v in kohya.items()}, str(tmp))
    return target
