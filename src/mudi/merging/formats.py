"""Every LoRA in one canonical form: per denoiser layer, the low-rank update ``ΔW = scale · B A``.

A LoRA is read by loading it into the backbone's denoiser as its own adapter with diffusers'
``load_lora_weights`` (:func:`mudi.sampling.loras.apply_loras`) and reading the peft layers back. So every
format diffusers reads comes in through diffusers' own converters — the diffusers/peft format mudi writes,
kohya / A1111 / ComfyUI files (``lora_unet_…``, ``.alpha``; SDXL's sgm block names), FLUX's kohya, XLabs and
BFL formats — and the matrices are exactly the ones diffusers applies, with its reading of ``alpha``,
``lora_adapter_metadata``, ``rank_pattern`` and rsLoRA.

Layers are named by their path in the denoiser (``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q``),
the peft key format without the ``unet.`` / ``transformer.`` prefix. Conv2d layers (kohya's LoCon, SD1.5's
``proj_in``) keep their kernel: ``A`` is ``(r, in, kh, kw)``, ``B`` ``(out, r, 1, 1)``; :meth:`LowRankUpdate.down`
and :meth:`LowRankUpdate.up` are the flattened ``(r, in·kh·kw)`` and ``(out, r)`` matrices.
"""

from __future__ import annotations

import collections
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from mudi.errors import MudiError
from mudi.sampling.loras import apply_loras, remove_loras

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone

log = logging.getLogger(__name__)


@dataclass
class LowRankUpdate:
    """One layer's LoRA: ``ΔW = scale · B @ A``.

    ``A``: ``(r, in)`` (Conv2d: ``(r, in, kh, kw)``); ``B``: ``(out, r)`` (Conv2d: ``(out, r, 1, 1)``); both float32
    on the CPU. ``scale``: what peft multiplies by (``lora_alpha / r``, rsLoRA ``lora_alpha / sqrt(r)``).
    """

    A: torch.Tensor
    B: torch.Tensor
    scale: float = 1.0

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def kernel(self) -> tuple[int, ...]:
        """``()`` for a Linear layer, ``(kh, kw)`` for a Conv2d one."""
        return tuple(self.A.shape[2:])

    def down(self) -> torch.Tensor:
        """``A`` as a matrix, ``(r, in·kh·kw)``."""
        return self.A.reshape(self.A.shape[0], -1)

    def up(self) -> torch.Tensor:
        """``B`` as a matrix, ``(out, r)``."""
        return self.B.reshape(self.B.shape[0], -1)

    def delta(self) -> torch.Tensor:
        """The dense update ``scale · B A`` as a matrix ``(out, in·kh·kw)``."""
        return self.scale * (self.up() @ self.down())


LoraUpdates = dict[str, LowRankUpdate]


def update_from_matrices(up: torch.Tensor, down: torch.Tensor, kernel: tuple[int, ...] = ()) -> LowRankUpdate:
    """A ``LowRankUpdate`` of scale 1 from ``up (out, r)`` and ``down (r, in·kh·kw)``, reshaped for a conv kernel."""
    r = down.shape[0]
    if kernel:
        n_in = down.shape[1] // math.prod(kernel)
        return LowRankUpdate(down.reshape(r, n_in, *kernel).contiguous(), up.reshape(up.shape[0], r, 1, 1).contiguous())
    return LowRankUpdate(down.contiguous(), up.contiguous())


# ------------------------------------------------------------------------------------------------ reading
def read_adapter(denoiser: Any, adapter_name: str, where: str = "this LoRA") -> LoraUpdates:
    """The updates of the peft adapter ``adapter_name`` in ``denoiser``, by layer path (refuses what a low-rank
    merge cannot represent: DoRA, LoRA biases, embedding or Conv1d/3d layers)."""
    from peft.tuners.lora import LoraLayer

    out: LoraUpdates = {}
    for name, module in denoiser.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if adapter_name in getattr(module, "lora_embedding_A", {}):
            raise MudiError(f"{where}: layer {name} is an embedding LoRA; mudi merge takes Linear and Conv2d LoRAs")
        if adapter_name not in module.lora_A:
            continue
        if module.use_dora.get(adapter_name):
            raise MudiError(f"{where}: it is a DoRA (layer {name} has a magnitude vector), not a plain LoRA; "
                            "a DoRA is not a low-rank update and cannot be merged as one")
        if module.lora_bias.get(adapter_name):
            raise MudiError(f"{where}: layer {name} has a LoRA bias; mudi merge takes LoRAs without biases")
        base = module.get_base_layer()
        if not isinstance(base, (torch.nn.Linear, torch.nn.Conv2d)):
            raise MudiError(f"{where}: layer {name} is a {type(base).__name__}; mudi merge takes Linear and Conv2d "
                            "LoRAs")
        r, alpha = module.r[adapter_name], module.lora_alpha[adapter_name]
        scale = alpha / math.sqrt(r) if module.use_rslora.get(adapter_name) else alpha / r
        A = module.lora_A[adapter_name].weight.detach().to("cpu", torch.float32).clone()
        B = module.lora_B[adapter_name].weight.detach().to("cpu", torch.float32).clone()
        out[name] = LowRankUpdate(A, B, float(scale))
    return out


def load_lora_updates(backbone: Backbone, paths: Sequence[str]) -> tuple[list[str], list[LoraUpdates]]:
    """Load every LoRA into ``backbone``'s pipeline as its own adapter (all active at weight 1) and read each back;
    returns the adapter names and one :data:`LoraUpdates` per path. A file with no layer of this denoiser is
    refused with one line; text-encoder layers (which mudi's LoRAs never have) are left out, with a warning."""
    before = set(getattr(backbone.denoiser, "peft_config", None) or {})
    try:
        with warnings.catch_warnings():  # peft's "multiple adapters ... know what you are doing": we do
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            names = apply_loras(backbone, paths)
    except MudiError:  # leave the backbone as it came: drop the adapters loaded before the one that failed
        remove_adapters(backbone, sorted(set(getattr(backbone.denoiser, "peft_config", None) or {}) - before))
        raise
    try:
        return names, [_read_loaded(backbone, path, name) for path, name in zip(paths, names)]
    except MudiError:
        remove_adapters(backbone, names)
        raise


def _read_loaded(backbone: Backbone, path: str, name: str) -> LoraUpdates:
    found = read_adapter(backbone.denoiser, name, str(path))
    if not found:
        raise MudiError(f"{path}: none of its layers belong to the {backbone.family} denoiser (is it a LoRA, and "
                        "for this model? give a diffusers, kohya, A1111 or ComfyUI LoRA file)")
    others = [c for c, m in backbone.pipeline.components.items()
              if m is not backbone.denoiser and name in (getattr(m, "peft_config", None) or {})]
    if others:
        log.warning("warning: %s also has LoRA layers in the %s; mudi merge merges the denoiser's only, the merged "
                    "file leaves those out", path, " and ".join(others))
    return found


def remove_adapters(backbone: Backbone, names: Sequence[str]) -> None:
    """Take the merge's adapters out of the pipeline again (the backbone is left as it came)."""
    remove_loras(backbone, names)


# ------------------------------------------------------------------------------------------------ writing
def peft_state_dict(updates: LoraUpdates) -> tuple[dict[str, torch.Tensor], dict]:
    """The peft-format state dict (``<layer>.lora_A.weight`` / ``.lora_B.weight``, the scale folded in) and the
    ``LoraConfig`` metadata (``r`` and ``lora_alpha`` = the commonest rank, ``rank_pattern`` / ``alpha_pattern``
    for the other layers) that :meth:`~mudi.adapters.base.Backbone.save_lora` writes with it."""
    state: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    for name, u in updates.items():
        if u.rank == 0:
            continue
        root = math.sqrt(abs(u.scale))
        state[f"{name}.lora_A.weight"] = (u.A * (root if u.scale >= 0 else -root)).to(torch.float32).contiguous()
        state[f"{name}.lora_B.weight"] = (u.B * root).to(torch.float32).contiguous()
        ranks[name] = u.rank
    if not ranks:
        raise MudiError("the merged LoRA has no layer left (every update was zero)")
    r = collections.Counter(ranks.values()).most_common(1)[0][0]
    pattern = {k: v for k, v in ranks.items() if v != r}
    metadata = {"r": r, "lora_alpha": r, "rank_pattern": pattern, "alpha_pattern": dict(pattern),
                "target_modules": sorted(ranks), "lora_dropout": 0.0, "bias": "none", "use_dora": False,
                "use_rslora": False, "lora_bias": False, "init_lora_weights": True}
    return state, metadata
