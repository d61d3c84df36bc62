"""Text fidelity (paper Sec. 5.2, Fig. 6): the CLIP score (or ImageReward) of an image with its prompt written
with the subjects' descriptive classes, averaged over the subject orders in the prompt (the † of the tables)."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from mudi.core.prompts import fill_placeholders


def prompt_template(prompt: str, subjects: Sequence[Any]) -> str | None:
    """Turn a prompt naming every subject (by phrase, descriptive class or ``[Vk]``) into a ``[Vk]``
    template; ``None`` when some subject is not found in it."""
    if all(f"[V{k + 1}]" in prompt for k in range(len(subjects))):
        return prompt
    text = prompt
    for k, s in enumerate(subjects):
        names = [s.phrase, s.phrase_without_descriptive_class(), s.class_name] if s.identifier else [s.class_name]
        for name in sorted(set(names), key=len, reverse=True):
            pattern = re.compile(rf"(?<![\w\]]){re.escape(name)}(?!\w)", re.IGNORECASE)
            if pattern.search(text):
                text = pattern.sub(f"[V{k + 1}]", text, count=1)
                break
        else:
            return None
    return text


def prompt_orders(template: str, class_names: Sequence[str], max_orders: int = 24) -> list[str]:
    """The prompt with the subjects (by descriptive class, no identifiers) in every order (the † of the
    paper's tables); beyond ``max_orders`` permutations, the cyclic rotations."""
    n = len(class_names)
    if math.factorial(n) <= max_orders:
        perms = list(itertools.permutations(range(n)))
    else:
        perms = [tuple((i + r) % n for i in range(n)) for r in range(n)]
    out = []
    for p in perms:
        text = fill_placeholders(template, [class_names[i] for i in p])
        if text not in out:
            out.append(text)
    return out


def text_scores(scorer: Any, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]) -> list[float]:
    """Mean score of each image over its prompts (its subject orders). Uses ``embed``/``embed_text`` when
    the scorer has them (CLIP: each image embedded once), else ``score`` per pair."""
    if not images:
        return []
    if hasattr(scorer, "embed_text"):
        img = np.asarray(scorer.embed(images), dtype=np.float64)
        flat = [p for ps in prompts for p in ps]
        txt = np.asarray(scorer.embed_text(flat), dtype=np.float64)
        out, k = [], 0
        for i, ps in enumerate(prompts):
            out.append(float((txt[k:k + len(ps)] @ img[i]).mean()))
            k += len(ps)
        return out
    out = []
    for im, ps in zip(images, prompts):
        out.append(float(np.mean(scorer.score([im] * len(ps), list(ps)))))
    return out
