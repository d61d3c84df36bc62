"""Training Custom Diffusion's modifier tokens (``train_modifier_tokens``; Kumari et al. 2023, the paper's
Appendix B.1): a new token ``<identifier>`` per subject in every CLIP tokenizer of the backbone, its input-embedding
row initialised from the subject's class noun and trained with the LoRA; every other row of the embedding matrix
is put back after each optimizer step (so AdamW's weight decay cannot move it either) and every other parameter of
the text encoders stays frozen. Prompts are encoded every step, with gradients (no text cache)."""

from __future__ import annotations

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


class ModifierTokens:
    """The trained token rows of one run: ``trainable()`` for the optimizer and checkpoints, ``encode`` for the
    loss, ``restore_frozen_rows`` after each step, ``save`` next to the LoRA."""

    def __init__(self, backbone: Backbone, subjects: list[Any], num_processes: int = 1) -> None:
        if num_processes > 1:
            raise MudiError("train_modifier_tokens trains in one process (the token rows are not synchronised "
                            "between processes yet); run it without accelerate launch --num_processes N")
        self.backbone = backbone
        self.identifiers = [s.identifier for s in subjects]
        self.rows: list[tuple[str, torch.nn.Parameter, torch.Tensor, torch.Tensor, list[int]]] = []
        for key, tokenizer, encoder in token_encoders(backbone):
            tokenizer.add_tokens([modifier_token(i) for i in self.identifiers])
            ids = [tokenizer.convert_tokens_to_ids(modifier_token(i)) for i in self.identifiers]
            fit_embeddings(encoder, tokenizer)
            weight = encoder.get_input_embeddings().weight
            with torch.no_grad():
                for s, row in zip(subjects, ids):  # start from the class noun (Textual Inversion's initializer)
                    noun = tokenizer(s.class_noun, add_special_tokens=False).input_ids
                    weight[row] = weight[noun].mean(0) if noun else weight[:row].mean(0)
            dtype = weight.dtype  # the row trains in float32; the encoder still sees its own dtype
            weight.data = weight.data.float()
            encoder.get_input_embeddings().register_forward_hook(lambda m, i, out, dt=dtype: out.to(dt))
            weight.requires_grad_(True)
            frozen = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
            frozen[ids] = False
            self.rows.append((key, weight, weight.detach().clone(), frozen, ids))

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        """``{"modifier_tokens.clip_l": embedding matrix, …}`` (checkpointed whole; only the new rows change)."""
        return {f"modifier_tokens.{key}": w for key, w, *_ in self.rows}

    def encode(self, prompt: str) -> dict[str, torch.Tensor]:
        """The prompt (identifiers written as tokens) through the text encoders, with gradients."""
        return self.backbone.encode_prompts([with_modifier_tokens(prompt, self.identifiers)], grad=True)

    @torch.no_grad()
    def restore_frozen_rows(self) -> None:
        for _, weight, original, frozen, _ in self.rows:
            weight[frozen] = original[frozen]

    def save(self, folder: str | Path) -> list[Path]:
        """``modifier_token_<identifier>.safetensors`` per subject (:mod:`mudi.sampling.modifier_tokens`)."""
        per_token = {ident: {key: w[ids[k]] for key, w, _, _, ids in self.rows}
                     for k, ident in enumerate(self.identifiers)}
        return save_modifier_tokens(folder, per_token)
