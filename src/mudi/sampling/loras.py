"""LoRAs into a backbone's pipeline: one adapter per file, all active with their weights (diffusers'
``load_lora_weights`` + ``set_adapters``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mudi.data.manifests import LORA_FILE
from mudi.errors import MudiError


def lora_file(path: Path) -> tuple[str, str | None]:
    if path.is_file():
        if path.suffix != ".safetensors":
            raise MudiError(f"{path}: a LoRA file must be .safetensors (or give the folder holding {LORA_FILE})")
        return str(path.parent), path.name
    if not path.is_dir():
        raise MudiError(f"{path}: no such LoRA folder or file; give the output folder of `mudi train`")
    if (path / LORA_FILE).is_file():
        return str(path), None
    found = sorted(p.name for p in path.glob("*.safetensors"))
    if len(found) == 1:
        return str(path), found[0]
    raise MudiError(f"{path}: no {LORA_FILE}" + (f"; found {found}, give one of them as --lora {path}/<file>"
                                                   if found else "; is this the output folder of `mudi train`?"))


def apply_loras(backbone: Any, paths: Sequence[str], weights: Sequence[float] | None = None) -> list[str]:
    """Load each LoRA into the pipeline as its own adapter and activate all with their weights."""
    if not paths:
        return []
    weights = list(weights) if weights else [1.0] * len(paths)
    names = []
    for k, p in enumerate(paths):
        folder, weight_name = lora_file(Path(p))
        name = f"mudi_lora_{k}"
        kwargs = {"weight_name": weight_name} if weight_name else {}
        try:
            backbone.pipeline.load_lora_weights(folder, adapter_name=name, **kwargs)
        except (ValueError, KeyError, RuntimeError, OSError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise MudiError(f"{p}: cannot load this LoRA into the {backbone.family} pipeline ({first}); was it "
                            f"trained for --backbone {backbone.family}?") from None
        names.append(name)
    backbone.pipeline.set_adapters(names, adapter_weights=weights)
    return names
