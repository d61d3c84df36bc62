"""LoRAs into a backbone's pipeline: one adapter per file, all active with their weights (diffusers'
``load_lora_weights`` + ``set_adapters``), and the trained token embeddings a folder holds with or instead of its
LoRA (Custom Diffusion, Textual Inversion: :mod:`mudi.sampling.modifier_tokens`).

A LoRA made for another model is refused with one line before diffusers sees it: by the family its
``mudi_subjects.json`` records (:func:`check_lora_family`, before any model loads), and by its key shapes
against the loaded denoiser (:func:`check_lora_fits`, for files from elsewhere).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open

from mudi.adapters import registry
from mudi.data.manifests import LORA_FILE, read_manifest, token_files
from mudi.errors import MudiError
from mudi.sampling.modifier_tokens import load_modifier_tokens, unload_modifier_tokens

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone


def lora_file(path: Path) -> tuple[str, str | None]:
    """``(folder, weight file name or None)`` of a LoRA given as a folder or a ``.safetensors`` file."""
    if path.is_file():
        if path.suffix != ".safetensors":
            raise MudiError(f"{path}: a LoRA file must be .safetensors (or give the folder holding {LORA_FILE})")
        return str(path.parent), path.name
    if not path.is_dir():
        raise MudiError(f"{path}: no such LoRA folder or file; give the output folder of `mudi train`")
    if (path / LORA_FILE).is_file() or embeddings_only(path):
        return str(path), None
    found = sorted(p.name for p in path.glob("*.safetensors"))
    if len(found) == 1:
        return str(path), found[0]
    raise MudiError(f"{path}: no {LORA_FILE}" + (f"; found {found}, give one of them as --lora {path}/<file>"
                                                   if found else "; is this the output folder of `mudi train`?"))


def embeddings_only(path: Path) -> bool:
    """A Textual Inversion run's folder: trained token embeddings and no LoRA weights."""
    return path.is_dir() and not (path / LORA_FILE).is_file() and bool(token_files(path))


def lora_path(path: str | Path) -> Path:
    """The LoRA weight file of a folder or file; a Textual Inversion folder (no LoRA) is refused in one line."""
    if embeddings_only(Path(path)):
        raise MudiError(f"{path}: holds token embeddings only (a Textual Inversion run), no LoRA weights; this step "
                        "needs a LoRA (generate with it: `mudi generate --lora` loads the embeddings)")
    folder, name = lora_file(Path(path))
    return Path(folder) / (name or LORA_FILE)


def check_lora_family(paths: Sequence[str], backbone_name: str) -> None:
    """Before any model loads: a LoRA whose ``mudi_subjects.json`` records another family than the
    ``backbone_name`` asked for is refused with one line."""
    wanted = registry.family_of(backbone_name)
    for p in paths:
        lora_file(Path(p))  # a missing or ambiguous path fails now, not after the model loaded
        if not embeddings_only(Path(p)):
            check_lora_finite(lora_path(p))
        folder = Path(p) if Path(p).is_dir() else Path(p).parent
        data = read_manifest(folder)
        if not data:
            continue
        trained, family = data.get("backbone"), data.get("family")
        if trained == backbone_name or not family or not wanted or family == wanted:
            continue
        raise MudiError(f"{p}: this LoRA was trained for {family} (--backbone {trained}), not for {wanted} "
                        f"(--backbone {backbone_name}); use --backbone {trained} or a LoRA trained for {wanted}")


def check_lora_finite(path: Path) -> None:
    """Refuse (one line) a LoRA file with NaN or infinite weights: it would give black images or a failed merge."""
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                t = f.get_tensor(key)
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    raise MudiError(f"{path}: the LoRA weight {key} holds NaN or infinite values; the file is damaged "
                                    "(retrain, or use an earlier checkpoint or snapshot)")
    except MudiError:
        raise
    except Exception as e:  # a truncated or foreign file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise MudiError(f"{path}: not a readable safetensors LoRA ({first})") from None


def lora_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a safetensors file, read from its header (no tensor is loaded)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # a truncated or foreign file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise MudiError(f"{path}: not a readable safetensors LoRA ({first})") from None


def check_lora_fits(backbone: Backbone, path: str | Path) -> None:
    """Refuse (one line) a diffusers-format LoRA whose layers do not exist in, or do not have the shapes of,
    the backbone's denoiser. Other formats (kohya, A1111) are left to diffusers' converters."""
    shapes = lora_shapes(lora_path(path))
    denoiser = backbone.denoiser
    owner = next((n for n in backbone.frozen_components if getattr(backbone.pipeline, n, None) is denoiser), "")
    prefixes = {f"{owner}.", "unet.", "transformer."}
    checked = 0
    for key, shape in shapes.items():
        if not (key.endswith(".lora_A.weight") or key.endswith(".lora_B.weight")):
            continue
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            continue  # text-encoder LoRA or another format
        module_name = key[len(prefix):].rsplit(".lora_", 1)[0]
        reason = None
        if prefix != f"{owner}.":
            reason = f"it holds {prefix.rstrip('.')} layers and this backbone's denoiser is its {owner}"
        else:
            try:
                layer = denoiser.get_submodule(module_name)
            except AttributeError:
                reason = f"its layer {module_name} does not exist in the {backbone.family} {owner}"
            else:
                reason = _shape_mismatch(layer, key, shape)
        if reason:
            raise MudiError(f"{path}: this LoRA does not fit the {backbone.family} model ({reason}); it was made "
                            "for another model: use the --backbone it was trained for")
        checked += 1
    if checked == 0 and any(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in shapes):
        raise MudiError(f"{path}: none of this LoRA's layers belong to the {backbone.family} {owner}; it was made "
                        "for another model")


def _shape_mismatch(layer: Any, key: str, shape: tuple[int, ...]) -> str | None:
    base = getattr(layer, "base_layer", layer)  # a layer that already holds an adapter
    if not isinstance(base, torch.nn.Linear) or len(shape) != 2:
        return None
    if key.endswith(".lora_A.weight") and shape[1] != base.in_features:
        return f"{key} takes {shape[1]} inputs, the layer has {base.in_features}"
    if key.endswith(".lora_B.weight") and shape[0] != base.out_features:
        return f"{key} gives {shape[0]} outputs, the layer has {base.out_features}"
    return None


def apply_loras(backbone: Backbone, paths: Sequence[str], weights: Sequence[float] | None = None) -> list[str]:
    """Load each LoRA into the pipeline as its own adapter and activate all with their weights."""
    if not paths:
        return []
    weights = list(weights) if weights else [1.0] * len(paths)
    names = []
    for k, p in enumerate(paths):
        folder, weight_name = lora_file(Path(p))
        check_lora_fits(backbone, p)
        name = f"mudi_lora_{k}"
        kwargs = {"weight_name": weight_name} if weight_name else {}
        try:
            backbone.pipeline.load_lora_weights(folder, adapter_name=name, **kwargs)
        except (ValueError, KeyError, RuntimeError, OSError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise MudiError(f"{p}: cannot load this file as a LoRA of the {backbone.family} pipeline ({first}); check "
                            "that it is a LoRA (diffusers, kohya or A1111 format) made for this model") from None
        names.append(name)
    backbone.pipeline.set_adapters(names, adapter_weights=weights)
    return names


def adapter_names(backbone: Backbone) -> list[str]:
    """The LoRA adapters loaded in the backbone's pipeline now."""
    names: list[str] = []
    for adapters in backbone.pipeline.get_list_adapters().values():
        names.extend(a for a in adapters if a not in names)
    return names


def remove_loras(backbone: Backbone, names: Sequence[str]) -> None:
    """Take adapters out of the pipeline again (the one place outside ``adapters/`` that deletes adapters)."""
    if names:
        backbone.pipeline.delete_adapters(list(names))


@contextmanager
def loras_applied(backbone: Backbone, paths: Sequence[str], weights: Sequence[float] | None = None) -> Iterator[list[str]]:
    """``with loras_applied(backbone, paths) as names:`` the LoRAs are active inside the block; every adapter the
    block added is removed after it, also when it fails (the backbone is left as it came)."""
    before = set(adapter_names(backbone)) if paths else set()
    tokens: list[str] = []  # Custom Diffusion LoRAs and Textual Inversion folders: their tokens, loaded with them
    keep = [k for k, p in enumerate(paths) if not embeddings_only(Path(p))]
    try:
        names = apply_loras(backbone, [paths[k] for k in keep], [weights[k] for k in keep] if weights else None)
        for p in paths:
            tokens += load_modifier_tokens(backbone, lora_file(Path(p))[0])
        yield names
    finally:
        if paths:
            unload_modifier_tokens(backbone, tokens)
            remove_loras(backbone, [a for a in adapter_names(backbone) if a not in before])
