"""Prompts longer than a text encoder reads: said once, in mudi's words, naming the prompt.

CLIP text encoders read 77 tokens (T5 in FLUX: the pipeline's ``max_sequence_length``); the rest of a longer
prompt is dropped. diffusers and transformers say so in their own words on every call (the mudi CLI filters
those notices, see :mod:`mudi.cli`); mudi says it once per prompt and encoder, with the prompt's start and how
much is lost.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)
TOKENIZERS = ("tokenizer", "tokenizer_2", "tokenizer_3")
_said: set[tuple[str, str, int]] = set()


def prompt_lengths(pipeline: Any, prompt: str) -> list[tuple[str, int, int]]:
    """``(tokenizer attribute, tokens in the prompt, tokens the encoder reads)`` for each tokenizer of
    ``pipeline`` whose limit the prompt exceeds."""
    out = []
    for name in TOKENIZERS:
        tok = getattr(pipeline, name, None)
        limit = getattr(tok, "model_max_length", None)
        if tok is None or not isinstance(limit, int) or limit <= 0 or limit > 100_000:
            continue
        try:
            n = len(tok(prompt, truncation=False, verbose=False)["input_ids"])
        except Exception:  # a tokenizer that cannot count: nothing to say
            continue
        if n > limit:
            out.append((name, n, limit))
    return out


def warn_long_prompts(pipeline: Any, prompts: list[str]) -> list[str]:
    """Log, once per prompt and tokenizer, that a prompt is cut; returns the messages logged now."""
    said = []
    for prompt in dict.fromkeys(prompts):
        for name, n, limit in prompt_lengths(pipeline, prompt):
            key = (prompt, name, limit)
            if key in _said:
                continue
            _said.add(key)
            start = prompt if len(prompt) <= 60 else prompt[:57] + "..."
            msg = (f"the prompt {start!r} is {n} tokens; the text encoder read through `{name}` takes only the first {limit}, "
                   "the rest is ignored: shorten it")
            log.warning(msg)
            said.append(msg)
    return said
