"""Strict parsing and validation of a describer's reply (the JSON of
:data:`mudi.adapters.describers.REPLY_EXAMPLE`).

- :func:`parse_reply`: the reply must be one JSON object, alone or as the whole of one fenced block; anything
  else is an error (no hunting for braces in prose).
- :func:`review_reply`: per subject and per photo, what is accepted and why the rest is rejected:

  * a **descriptive class** is a short noun phrase: 1–4 words of letters (hyphens and apostrophes allowed), at
    most 40 characters, holding no identifier, different from every other subject's class (it must tell them
    apart);
  * a **caption** is one line of at most 1000 characters that names ``"<identifier> <descriptive class>"`` and
    the identifier exactly once, and no other subject's identifier;
  * classes already accepted (``keep``: hand-written, or from an earlier attempt) are the ones captions must
    name; a reply proposing another is not taken.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from mudi.adapters.describers import SubjectPhotos
from mudi.data.subjects import MAX_TEXT
from mudi.errors import MudiError

MAX_CLASS_WORDS = 4
MAX_CLASS_CHARS = 40
_FENCED = re.compile(r"\A```(?:json)?\s*\n?(.*?)\n?```\Z", re.DOTALL)
_CLASS_CHARS = re.compile(r"\A[^\W\d_]+(?:[-' ]+[^\W\d_]+)*\Z")


def parse_reply(text: str) -> dict:
    """The reply's ``{"subjects": {identifier: {...}}}``; :class:`MudiError` if it is anything else."""
    body = text.strip()
    fenced = _FENCED.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as e:
        raise MudiError(f"the reply is not one JSON object ({getattr(e, 'msg', 'nested too deeply')}): "
                        f"{text[:80]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("subjects"), dict):
        raise MudiError(f'the reply must be a JSON object {{"subjects": {{identifier: ...}}}}: {text[:80]!r}')
    return data


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())


def check_class(value: object, identifiers: Sequence[str]) -> str | None:
    """Why ``value`` is not a short noun phrase for a descriptive class (``None``: it is)."""
    if not isinstance(value, str) or not value.strip():
        return "descriptive_class is missing or not a text"
    text = " ".join(value.split())
    if len(text) > MAX_CLASS_CHARS or len(text.split()) > MAX_CLASS_WORDS:
        return f"descriptive_class {text[:60]!r} is not a short noun phrase (at most {MAX_CLASS_WORDS} words)"
    if not _CLASS_CHARS.match(text):
        return f"descriptive_class {text!r} must be words only (no digits or punctuation)"
    named = [i for i in identifiers if i.lower() in _words(text)]
    if named:
        return f"descriptive_class {text!r} holds the identifier {named[0]!r}; give the class alone"
    return None


def check_caption(value: object, identifier: str, descriptive_class: str, identifiers: Sequence[str]) -> str | None:
    """Why ``value`` is not a caption in the authors' style for this subject (``None``: it is)."""
    if not isinstance(value, str) or not value.strip():
        return "the caption is missing or not a text"
    if len(value) > MAX_TEXT or any(ord(c) < 32 for c in value):
        return f"the caption must be one line of at most {MAX_TEXT} characters"
    words = _words(value)
    if words.count(identifier.lower()) != 1:
        return (f"the caption must name {identifier!r} exactly once (found {words.count(identifier.lower())} "
                f"times): {value[:80]!r}")
    phrase = " ".join(_words(f"{identifier} {descriptive_class}"))
    if f" {phrase} " not in f" {' '.join(words)} ":
        return f"the caption must name the subject as {identifier} {descriptive_class!r}: {value[:80]!r}"
    others = [i for i in identifiers if i != identifier and i.lower() in words]
    if others:
        return f"the caption names another subject ({others[0]!r}): {value[:80]!r}"
    return None


@dataclass
class Review:
    """What one reply gave: accepted classes (identifier → class), accepted captions (identifier → file →
    caption) and the reasons the rest was rejected (``(identifier, "descriptive_class" or file) → reason``)."""

    classes: dict[str, str] = field(default_factory=dict)
    captions: dict[str, dict[str, str]] = field(default_factory=dict)
    reasons: dict[tuple[str, str], str] = field(default_factory=dict)


def _review_classes(answers: dict, subjects: Sequence[SubjectPhotos], keep: dict[str, str], out: Review) -> None:
    ids = [s.identifier for s in subjects]
    proposed: dict[str, str] = {}
    for s in subjects:
        if s.identifier in keep:
            proposed[s.identifier] = keep[s.identifier]
            continue
        if s.identifier not in answers:
            continue  # "no answer for subject …" already
        reason = check_class(answers.get(s.identifier, {}).get("descriptive_class"), ids)
        if reason:
            out.reasons[(s.identifier, "descriptive_class")] = reason
        else:
            proposed[s.identifier] = " ".join(answers[s.identifier]["descriptive_class"].split())
    for ident, cls in proposed.items():
        twins = [o for o, c in proposed.items() if o != ident and c.lower() == cls.lower()]
        if twins and ident not in keep:
            out.reasons[(ident, "descriptive_class")] = (f"descriptive_class {cls!r} does not tell {ident} from "
                                                         f"{twins[0]}; give each subject a different one")
        else:
            out.classes[ident] = cls


def review_reply(data: dict, subjects: Sequence[SubjectPhotos], keep: dict[str, str] | None = None) -> Review:
    """Check a parsed reply against the run's subjects (see the module docstring)."""
    keep = keep or {}
    out = Review()
    raw = data["subjects"]
    answers = {s.identifier: raw[s.identifier] for s in subjects if isinstance(raw.get(s.identifier), dict)}
    for s in subjects:
        if s.identifier not in answers:
            out.reasons[(s.identifier, "descriptive_class")] = f"no answer for subject {s.identifier!r}"
    _review_classes(answers, subjects, keep, out)
    ids = [s.identifier for s in subjects]
    for s in subjects:
        caps = answers.get(s.identifier, {}).get("captions")
        caps = caps if isinstance(caps, dict) else {}
        cls = out.classes.get(s.identifier)
        accepted = out.captions.setdefault(s.identifier, {})
        for name in s.file_names:
            if cls is None:
                reason = "its subject has no accepted descriptive class"
            else:
                reason = check_caption(caps.get(name), s.identifier, cls, ids)
            if reason:
                out.reasons[(s.identifier, name)] = reason
            else:
                accepted[name] = " ".join(caps[name].split())
        for name in sorted(set(caps) - set(s.file_names))[:3]:
            out.reasons[(s.identifier, str(name))] = f"{str(name)[:40]!r} is not a photo of {s.identifier!r}"
    return out
