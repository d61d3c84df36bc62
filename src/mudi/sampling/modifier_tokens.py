"""Custom Diffusion's modifier tokens on disk and in a pipeline (Kumari et al. 2023; the paper's Appendix B.1).

A LoRA folder trained with ``train_modifier_tokens`` holds one ``modifier_token_<identifier>.safetensors`` per
subject: the token ``<identifier>``'s input embedding per text encoder, under the keys of diffusers' SDXL
textual-inversion files (``clip_l``: ``text_encoder``; ``clip_g``: ``text_encoder_2``), each ``(1, D)``, with
``{"token": "<identifier>"}`` as metadata. diffusers loads them with::

    state = safetensors.torch.load_file("modifier_token_olis.safetensors")
    pipe.load_textual_inversion(state["clip_l"], token="<olis>", text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)          # and clip_g into text_encoder_2 for SDXL

Prompts keep naming a subject by its identifier ("olis corgi"); while the tokens are loaded each identifier word is
written as its token (:func:`with_modifier_tokens`), in training and generation alike.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mudi.errors import MudiError
from mudi.io import atomic_path

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone

TOKEN_FILE_PREFIX = "modifier_token_"


def modifier_token(identifier: str) -> str:
    """The new token of a subject: ``<identifier>`` (Custom Diffusion writes ``<new1>``)."""
    return f"<{identifier}>"


def with_modifier_tokens(text: str, identifiers: Sequence[str]) -> str:
    """``text`` with every whole word ``identifier`` written as its modifier token."""
    for ident in identifiers:
        text = re.sub(rf"(?<![\w<]){re.escape(ident)}(?![\w>])", modifier_token(ident), text)
    return text


def token_encoders(backbone: Backbone) -> list[tuple[str, Any, Any]]:
    """``[(file key, tokenizer, text encoder)]`` of the backbone's CLIP text encoders (SD: clip_l; SDXL: clip_l,
    clip_g); a family without them cannot train modifier tokens."""
    spec = getattr(backbone, "token_embedding_encoders", None)
    if not spec:
        raise MudiError(f"train_modifier_tokens needs a family with CLIP text encoders (sd15, sd2, sdxl); "
                        f"{backbone.family} has none")
    return [(key, getattr(backbone.pipeline, tok), getattr(backbone.pipeline, enc)) for key, tok, enc in spec]


def save_modifier_tokens(folder: str | Path, embeddings: dict[str, dict[str, torch.Tensor]]) -> list[Path]:
    """Write ``{identifier: {file key: (1, D) tensor}}`` as one file per token (atomically)."""
    paths = []
    for ident, rows in embeddings.items():
        path = Path(folder) / f"{TOKEN_FILE_PREFIX}{ident}.safetensors"
        with atomic_path(path) as tmp:
            save_file({k: v.detach().to("cpu", torch.float32).reshape(1, -1).contiguous() for k, v in rows.items()},
                      str(tmp), metadata={"token": modifier_token(ident)})
        paths.append(path)
    return paths


def token_files(folder: str | Path) -> list[Path]:
    """The modifier-token files of a LoRA folder (none for a plain LoRA)."""
    folder = Path(folder)
    return sorted(folder.glob(f"{TOKEN_FILE_PREFIX}*.safetensors")) if folder.is_dir() else []


def load_modifier_tokens(backbone: Backbone, folder: str | Path) -> list[str]:
    """Load a LoRA folder's modifier tokens into the pipeline (``load_textual_inversion`` per encoder); returns
    the identifiers whose tokens were added."""
    loaded = []
    for path in token_files(folder):
        with safe_open(str(path), framework="pt") as f:
            token = (f.metadata() or {}).get("token") or modifier_token(path.stem[len(TOKEN_FILE_PREFIX):])
            rows = {k: f.get_tensor(k) for k in f.keys()}
        for key, tokenizer, encoder in token_encoders(backbone):
            if key not in rows:
                raise MudiError(f"{path}: no {key} embedding for this {backbone.family} pipeline")
            backbone.pipeline.load_textual_inversion(rows[key].to(encoder.dtype), token=token, text_encoder=encoder,
                                                     tokenizer=tokenizer)
        loaded.append(token[1:-1])
    return loaded


def unload_modifier_tokens(backbone: Backbone, identifiers: Sequence[str]) -> None:
    """Take the tokens out of the tokenizers and text encoders again."""
    if not identifiers:
        return
    tokens = [modifier_token(i) for i in identifiers]
    for _, tokenizer, encoder in token_encoders(backbone):
        backbone.pipeline.unload_textual_inversion(tokens, tokenizer=tokenizer, text_encoder=encoder)


def loaded_identifiers(backbone: Backbone) -> list[str]:
    """The identifiers whose modifier tokens the pipeline's first tokenizer holds now (prompts rewrite them)."""
    spec = getattr(backbone, "token_embedding_encoders", None)
    if not spec:
        return []
    tokenizer = getattr(backbone.pipeline, spec[0][1], None)
    added = getattr(tokenizer, "added_tokens_encoder", {}) or {}
    return [t[1:-1] for t in added if re.fullmatch(r"<[^<>\s]+>", t) and not t.startswith("<|")]
