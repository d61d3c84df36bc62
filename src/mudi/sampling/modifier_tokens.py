"""Trained token embeddings on disk and in a pipeline: Custom Diffusion's modifier tokens (Kumari et al. 2023; the
paper's Appendix B.1) and Textual Inversion's (Gal et al. 2023) are the same files.

A folder trained with ``train_modifier_tokens`` holds one ``modifier_token_<identifier>.safetensors`` per
subject: the token ``<identifier>``'s input embedding per text encoder, under the keys of the textual-inversion
files diffusers and ComfyUI read (``clip_l``: ``text_encoder``; SDXL's ``clip_g``: ``text_encoder_2``; FLUX.1's and
SD3's T5 ``t5xxl``; an LLM text encoder's ``text_encoder``; each family's ``token_embedding_encoders``), each
``(1, D)``, with ``{"token": "<identifier>"}`` as metadata. A Textual Inversion run (``train_lora: false``) holds
these files and no LoRA weights. diffusers loads them with::

    state = safetensors.torch.load_file("modifier_token_olis.safetensors")
    pipe.load_textual_inversion(state["clip_l"], token="<olis>", text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)          # and clip_g into text_encoder_2 for SDXL

Prompts keep naming a subject by its identifier ("olis corgi"); while the tokens are loaded each identifier word is
written as its token (:func:`with_modifier_tokens`), in training and generation alike.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers.loaders import TextualInversionLoaderMixin
from safetensors import safe_open
from safetensors.torch import save_file

from mudi.data.manifests import TOKEN_FILE_PREFIX, token_files
from mudi.errors import MudiError
from mudi.io import atomic_path

if TYPE_CHECKING:
    from mudi.adapters.base import Backbone


BASE_ROWS = "_mudi_rows_before_tokens"  # set on a text encoder while modifier tokens are loaded into it


def modifier_token(identifier: str) -> str:
    """The new token of a subject: ``<identifier>`` (Custom Diffusion writes ``<new1>``)."""
    return f"<{identifier}>"


def with_modifier_tokens(text: str, identifiers: Sequence[str]) -> str:
    """``text`` with every whole word ``identifier`` written as its modifier token."""
    for ident in identifiers:
        text = re.sub(rf"(?<![\w<]){re.escape(ident)}(?![\w>])", modifier_token(ident), text)
    return text


def token_encoders(backbone: Backbone) -> list[tuple[str, Any, Any]]:
    """``[(file key, tokenizer, text encoder)]`` of the backbone's text encoders that hold token embeddings (SD:
    clip_l; SDXL: clip_l, clip_g; FLUX.1: clip_l, t5xxl; …); a family without them cannot train tokens."""
    spec = getattr(backbone, "token_embedding_encoders", None)
    if not spec:
        raise MudiError(f"trained token embeddings (train_modifier_tokens, Textual Inversion) need a family whose "
                        f"text encoders take new tokens; {backbone.family} declares none")
    out = [(key, getattr(backbone.pipeline, tok, None), getattr(backbone.pipeline, enc, None)) for key, tok, enc in spec]
    return [(key, tok, enc) for key, tok, enc in out if tok is not None and enc is not None]


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


def load_modifier_tokens(backbone: Backbone, folder: str | Path) -> list[str]:
    """Load a LoRA folder's modifier tokens into the pipeline (``load_textual_inversion`` per encoder); returns
    the identifiers whose tokens were added."""
    loaded = []
    for path in token_files(folder):
        with safe_open(str(path), framework="pt") as f:
            token = (f.metadata() or {}).get("token") or modifier_token(path.stem[len(TOKEN_FILE_PREFIX):])
            rows = {k: f.get_tensor(k) for k in f.keys()}
        if not re.fullmatch(r"<[\w.-]{1,100}>", token):  # the file's own metadata: untrusted
            raise MudiError(f"{path}: token {token[:40]!r} is not a <word> token; rename the file's metadata token")
        if not all(bool(torch.isfinite(v).all()) for v in rows.values()):
            raise MudiError(f"{path}: a token embedding holds NaN or infinite values; the file is damaged (retrain)")
        for key, tokenizer, encoder in token_encoders(backbone):
            if not hasattr(encoder, BASE_ROWS):  # the size unloading restores (before the first token)
                setattr(encoder, BASE_ROWS, encoder.get_input_embeddings().weight.shape[0])
            if key not in rows:
                raise MudiError(f"{path}: no {key} embedding for this {backbone.family} pipeline; it was trained "
                                f"for another family (it holds {', '.join(sorted(rows))})")
            width = encoder.get_input_embeddings().weight.shape[-1]
            if rows[key].shape[-1] != width:
                raise MudiError(f"{path}: its {key} embedding has {rows[key].shape[-1]} values, this "
                                f"{backbone.family} text encoder's have {width}; it was trained for another model")
            if isinstance(backbone.pipeline, TextualInversionLoaderMixin):  # diffusers' own loader where it has one
                backbone.pipeline.load_textual_inversion(rows[key].to(encoder.dtype), token=token,
                                                         text_encoder=encoder, tokenizer=tokenizer)
            else:
                _add_token(tokenizer, encoder, token, rows[key])
        loaded.append(token[1:-1])
    return loaded


def _add_token(tokenizer: Any, encoder: Any, token: str, row: torch.Tensor) -> None:
    """A new token with its embedding row in a pipeline without diffusers' textual-inversion loader (SD3, FLUX.2,
    Qwen-Image, Z-Image): what ``load_textual_inversion`` does for one single-vector token."""
    tokenizer.add_tokens([token])  # a tokenizer two encoders share (tiny builds) holds it once
    fit_embeddings(encoder, tokenizer)
    weight = encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[tokenizer.convert_tokens_to_ids(token)] = row.reshape(-1).to(weight.device, weight.dtype)


def fit_embeddings(encoder: Any, tokenizer: Any) -> None:
    """Grow the encoder's input embeddings to the tokenizer's size; never shrink them (T5's and Qwen's matrices
    have spare rows beyond their vocabulary, which a new token's id may already fall in)."""
    if encoder.get_input_embeddings().weight.shape[0] < len(tokenizer):
        quiet = "mean_resizing" in inspect.signature(encoder.resize_token_embeddings).parameters
        encoder.resize_token_embeddings(len(tokenizer), **({"mean_resizing": False} if quiet else {}))


def unload_modifier_tokens(backbone: Backbone, identifiers: Sequence[str]) -> None:
    """Take the tokens out of the tokenizers and text encoders again."""
    if not identifiers:
        return
    tokens = [modifier_token(i) for i in identifiers]
    for _, tokenizer, encoder in token_encoders(backbone):
        if any(t in tokenizer.get_vocab() for t in tokens):  # diffusers' unloader uses no other pipeline member
            TextualInversionLoaderMixin.unload_textual_inversion(backbone.pipeline, tokens, tokenizer=tokenizer,
                                                                 text_encoder=encoder)
        # back to the size it had before the first token: a tokenizer two encoders share (tiny builds) is already
        # empty for the second, and T5's/Qwen's spare rows beyond their tokenizer are never cut
        base = getattr(encoder, BASE_ROWS, None)
        if base is None:
            continue
        if encoder.get_input_embeddings().weight.shape[0] > base:
            encoder.resize_token_embeddings(base)
        delattr(encoder, BASE_ROWS)


def with_loaded_tokens(backbone: Backbone, prompts: Sequence[str]) -> list[str]:
    """``prompts`` with the identifiers of the tokens loaded now written as their tokens (as is when none is
    loaded): what the pipeline's and region control's prompts go through."""
    identifiers = loaded_identifiers(backbone)
    return [with_modifier_tokens(p, identifiers) for p in prompts] if identifiers else list(prompts)


def loaded_identifiers(backbone: Backbone) -> list[str]:
    """The identifiers whose modifier tokens the pipeline's first tokenizer holds now (prompts rewrite them)."""
    spec = getattr(backbone, "token_embedding_encoders", None)
    if not spec:
        return []
    tokenizer = getattr(backbone.pipeline, spec[0][1], None)
    added = getattr(tokenizer, "added_tokens_encoder", {}) or {}
    return [t[1:-1] for t in added if re.fullmatch(r"<[^<>\s]+>", t) and not t.startswith("<|")]
