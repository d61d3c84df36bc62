"""Training new token embeddings (``train_modifier_tokens``): Custom Diffusion's modifier tokens (Kumari et al. 2023,
the paper's Appendix B.1) beside a LoRA, or Textual Inversion (Gal et al. 2023) alone. A new token ``<identifier>``
per subject goes into every text encoder of the backbone that reads tokens, its row initialised from the subject's
class noun.

Only the new rows train: each encoder keeps its embedding matrix frozen, in its own dtype, and a forward hook on its
input embedding puts the trained rows (one small float32 parameter per encoder, ``(subjects, D)``) in place of the
new tokens' rows. So the optimizer state and the checkpoints hold ``subjects × D`` numbers per encoder, not the
whole matrix (Qwen2.5-VL-7B's is 152 064 × 3584), and no other row can move. Prompts are encoded every step, with
gradients (no text cache). After training the hook stays: the backbone generates with the trained rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mudi.errors import MudiError
from mudi.sampling.modifier_tokens import (
    fit_embeddings,
    modifier_token,
    save_modifier_tokens,
    token_encoders,
    with_modifier_tokens,
)

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone


@dataclass
class TokenRows:
    """The trained rows of one text encoder: ``param[k]`` is the embedding of token id ``ids[k]``."""

    key: str  # the file key (clip_l, clip_g, t5xxl, ...)
    param: torch.nn.Parameter  # (subjects, D) float32
    initial: torch.Tensor  # the rows as initialised (from the class nouns)
    ids: list[int]


def _substitute_rows(rows: TokenRows) -> Any:
    """A forward hook for an input embedding: the output at the new tokens' positions is the trained rows."""
    lookup: dict[str, torch.Tensor] = {}

    def hook(module: Any, args: tuple, kwargs: dict, out: torch.Tensor) -> torch.Tensor:
        input_ids = args[0] if args else kwargs.get("input")
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.long, torch.int):
            return out
        table = lookup.get(str(input_ids.device))
        if table is None:
            table = torch.full((max(rows.ids) + 1,), -1, dtype=torch.long, device=input_ids.device)
            table[torch.tensor(rows.ids, device=input_ids.device)] = torch.arange(len(rows.ids), device=input_ids.device)
            lookup[str(input_ids.device)] = table
        clipped = input_ids.clamp(max=table.shape[0] - 1)
        slot = torch.where(input_ids <= table.shape[0] - 1, table[clipped], torch.full_like(clipped, -1))
        if not bool((slot >= 0).any()):
            return out
        trained = rows.param.to(out.dtype)[slot.clamp(min=0)]
        return torch.where((slot >= 0)[..., None], trained, out)

    return hook


class ModifierTokens:
    """The trained token rows of one run: ``trainable()`` for the optimizer and checkpoints, ``encode`` for the
    loss, ``save`` next to the LoRA (or alone, for Textual Inversion)."""

    def __init__(self, backbone: Backbone, subjects: list[Any], num_processes: int = 1) -> None:
        if num_processes > 1:
            raise MudiError("train_modifier_tokens trains in one process (the token rows are not synchronised "
                            "between processes yet); run it without accelerate launch --num_processes N")
        self.backbone = backbone
        self.identifiers = [s.identifier for s in subjects]
        self.rows: list[TokenRows] = []
        for key, tokenizer, encoder in token_encoders(backbone):
            tokenizer.add_tokens([modifier_token(i) for i in self.identifiers])
            ids = [tokenizer.convert_tokens_to_ids(modifier_token(i)) for i in self.identifiers]
            fit_embeddings(encoder, tokenizer)
            embedding = encoder.get_input_embeddings()
            weight = embedding.weight
            with torch.no_grad():  # start from the class noun (Textual Inversion's initializer)
                start = []
                for s, row in zip(subjects, ids):
                    noun = tokenizer(s.class_noun, add_special_tokens=False).input_ids
                    start.append((weight[noun] if noun else weight[:row]).float().mean(0))
                    weight[row] = start[-1].to(weight.dtype)  # what an unhooked encoder would read
            param = torch.nn.Parameter(torch.stack(start).to(weight.device))
            rows = TokenRows(key, param, param.detach().clone(), ids)
            embedding.register_forward_hook(_substitute_rows(rows), with_kwargs=True)
            self.rows.append(rows)

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        """``{"modifier_tokens.clip_l": (subjects, D) rows, …}`` for the optimizer and the checkpoints."""
        return {f"modifier_tokens.{r.key}": r.param for r in self.rows}

    def encode(self, prompt: str) -> dict[str, torch.Tensor]:
        """The prompt (identifiers written as tokens) through the text encoders, with gradients."""
        return self.backbone.encode_prompts([with_modifier_tokens(prompt, self.identifiers)], grad=True)

    def save(self, folder: str | Path) -> list[Path]:
        """``modifier_token_<identifier>.safetensors`` per subject (:mod:`mudi.sampling.modifier_tokens`)."""
        per_token = {ident: {r.key: r.param[k] for r in self.rows} for k, ident in enumerate(self.identifiers)}
        return save_modifier_tokens(folder, per_token)
