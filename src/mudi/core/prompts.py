"""Prompt building (paper Sec. 4.1, Appendix A.1, B.9).

A subject is named in prompts by its *phrase*: the rare identifier followed by its descriptive class
(``"olis corgi"``, ``"amg white robot toy"``) or, without one, its class noun. Templates use ``[V1]``,
``[V2]``, … placeholders for the subjects in order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: The authors' Seg-Mix caption (their SDXL training code): "a photo of a {A} and a {B}, simple background."
SEGMIX_TEMPLATE = "a photo of {subjects}, simple background."
INSTANCE_TEMPLATE = "A photo of {subject}."
#: The authors' prior images (generate_prior.py): generation prompt and negative prompt, "{}" the class.
PRIOR_PROMPT = "a photo of a {}, simple background, full body view, award winning photography, highly detailed"
PRIOR_NEGATIVE_PROMPT = "anime, cartoon, graphic, text, painting, crayon, graphite, abstract glitch, blurry"
#: The caption a training step sees with a single prior image (their dataset/reg/*/class_metadata.jsonl).
PRIOR_CAPTION = "A photo of a {}"
DEFAULT_NEGATIVE_PROMPT = "sticker, collage."
#: Region control's regional prompt per subject ({subject}: its phrase); Mix-of-Show writes these by hand.
DEFAULT_REGION_PROMPT = "a photo of {subject}"
_PLACEHOLDER = re.compile(r"\[V(\d+)\]")


def subject_phrase(identifier: str, class_name: str) -> str:
    """``subject_phrase("olis", "corgi") == "olis corgi"``; an empty identifier gives the bare class."""
    return f"{identifier} {class_name}".strip() if identifier else class_name.strip()


def join_subjects(phrases: Sequence[str]) -> str:
    """``["a"] -> "a"``, ``["a", "b"] -> "a and b"``, ``["a", "b", "c"] -> "a, b and c"``."""
    phrases = list(phrases)
    if not phrases:
        raise ValueError("join_subjects needs at least one subject phrase")
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def count_prefix(num_subjects: int, noun: str = "objects") -> str:
    """The optional prefix of Appendix B.9: ``count_prefix(3) == "3 objects: "``."""
    return f"{num_subjects} {noun}: "


def segmix_prompt(phrases: Sequence[str], use_count_prefix: bool = False, count_noun: str = "objects",
                  template: str = SEGMIX_TEMPLATE, subject_prefix: str = "a ", background: str = "white") -> str:
    """The Seg-Mix caption, every subject named exactly once, in the given order.

    >>> segmix_prompt(["olis corgi", "hta chow chow"])
    'a photo of a olis corgi and a hta chow chow, simple background.'
    """
    text = template.format(subjects=join_subjects([subject_prefix + p for p in phrases]), background=background)
    return count_prefix(len(phrases), count_noun) + text if use_count_prefix else text


def cutmix_prompt(phrases_left_to_right: Sequence[str]) -> str:
    """The Cut-Mix caption (Han et al.), which names the subjects by position."""
    p = list(phrases_left_to_right)
    if len(p) == 2:
        return f"A photo of {p[0]} on the left and {p[1]} on the right."
    return f"A photo of {join_subjects(p)}, from left to right."


def instance_prompt(phrase: str) -> str:
    return INSTANCE_TEMPLATE.format(subject=phrase)


def prior_prompt(class_name: str, template: str = PRIOR_PROMPT) -> str:
    """The prompt that generates prior (class) images (Appendix A.1; the authors' generate_prior.py).

    >>> prior_prompt("corgi")
    'a photo of a corgi, simple background, full body view, award winning photography, highly detailed'
    """
    return template.format(class_name)


def prior_caption(class_name: str, template: str = PRIOR_CAPTION) -> str:
    """The training caption of a single prior image: ``prior_caption("corgi") == "A photo of a corgi"``."""
    return template.format(class_name)


def fill_placeholders(template: str, phrases: Sequence[str]) -> str:
    """Replace ``[V1]``, ``[V2]``, … by the subjects' phrases; a placeholder without a subject is an error."""

    def sub(m: re.Match) -> str:
        k = int(m.group(1))
        if not 1 <= k <= len(phrases):
            raise ValueError(f"prompt {template!r} uses [V{k}] but only {len(phrases)} subject(s) were given")
        return phrases[k - 1]

    return _PLACEHOLDER.sub(sub, template)


def placeholder_count(template: str) -> int:
    """Highest ``[Vk]`` index used in a template (0 if none)."""
    return max((int(m.group(1)) for m in _PLACEHOLDER.finditer(template)), default=0)
