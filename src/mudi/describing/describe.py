"""``mudi describe`` as a library call: every subject's descriptive class and a caption per reference photo,
from a describer that sees all the run's subjects together, written into the subject folders.

1. The subjects are loaded (native folders only: a benchmark pair is converted first) and their photos
   downscaled to ``max_side``. Hand-written descriptive classes (:func:`mudi.data.descriptions.hand_written`) are
   kept unless ``overwrite``: the describer is told to reuse them, so its captions name them.
2. The describer is asked; the reply is parsed strictly and reviewed (:mod:`mudi.describing.replies`). What was
   rejected — or a failed request, or a reply that is not JSON — is asked for again, with the reasons, up to
   ``max_retries`` times; accepted classes stay fixed across attempts.
3. Accepted values go into ``subject.yaml`` (:func:`mudi.data.descriptions.write_descriptions`: hand-written values
   kept, the old file in ``subject.yaml.bak``, a line in ``describe_history.jsonl``), unless ``dry_run``.

Every item ends in the report as ``written``, ``unchanged``, ``kept`` (hand-written), ``proposed`` (dry run) or
``rejected`` with the reason.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from mudi.adapters import registry
from mudi.adapters.describers import Describer, DescribeRequest, SubjectPhotos
from mudi.config import to_dict
from mudi.data.descriptions import hand_written, write_descriptions
from mudi.data.subjects import Subject, load_subjects
from mudi.describing.config import DescribeConfig
from mudi.describing.replies import Review, parse_reply, review_reply
from mudi.devices import describe as describe_device
from mudi.devices import place_config
from mudi.errors import MudiError
from mudi.sampling.layout_llm import chat_completions_url, check_key_transport

log = logging.getLogger(__name__)
CLASS = "descriptive_class"


@dataclass
class Item:
    """One value of the report: a subject's descriptive class (``field == "descriptive_class"``) or the caption
    of one photo (``field`` is its file name)."""

    subject: str
    field: str
    value: str | None
    status: str  # written | unchanged | kept | proposed | rejected
    note: str = ""


@dataclass
class DescribeResult:
    items: list[Item]
    attempts: int
    errors: list[str] = field(default_factory=list)  # failed requests and unparseable replies, per attempt

    @property
    def rejected(self) -> list[Item]:
        return [i for i in self.items if i.status == "rejected"]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in self.items:
            out[i.status] = out.get(i.status, 0) + 1
        return out

    def to_dict(self) -> dict:
        """JSON-able: ``attempts``, ``errors``, ``counts`` and ``items`` (:func:`mudi.data.descriptions.write_describe_report`)."""
        return {"attempts": self.attempts, "errors": list(self.errors), "counts": self.counts(),
                "items": [asdict(i) for i in self.items]}


def describer_model(config: DescribeConfig) -> str | None:
    """The model a describe config asks (the endpoint's model name, or the local checkpoint)."""
    return config.model if config.provider == "openai" else config.pretrained_model_name_or_path


def build_describer(config: DescribeConfig) -> Describer:
    """The describer ``config.provider`` names. For an endpoint, the key is read from ``config.api_key_env`` and
    refused over plain http to another machine (:func:`~mudi.sampling.layout_llm.check_key_transport`)."""
    kwargs: dict[str, Any] = {"max_new_tokens": config.max_new_tokens}
    if config.provider == "openai":
        endpoint = chat_completions_url(config.url) if config.url else ""
        key = os.environ.get(config.api_key_env) or None
        if key:
            check_key_transport(endpoint, config.api_key_env)
        kwargs.update(url=endpoint, model=config.model, api_key=key, timeout_s=config.timeout_s)
    config, device, dtype = place_config(config)
    log.info("mudi describe: %s (%s)", config.provider, describe_device(device, dtype))
    return registry.load("describer", config.provider, config.pretrained_model_name_or_path, device=device,
                         dtype=dtype, **kwargs)


def photos_of(subjects: list[Subject], max_side: int) -> list[SubjectPhotos]:
    return [SubjectPhotos(s.identifier, s.class_noun, [im.path.name for im in s.images], s.full_images(max_side))
            for s in subjects]


def ask(describer: Describer, photos: list[SubjectPhotos], keep: dict[str, str], max_retries: int
        ) -> tuple[Review, int, list[str]]:
    """Ask until everything is accepted or ``1 + max_retries`` attempts are spent: ``(merged review, attempts,
    request/parse errors)``; ``reasons`` hold the last reason of each item still missing."""
    merged = Review(classes=dict(keep), captions={p.identifier: {} for p in photos})
    errors: list[str] = []
    feedback: list[str] = []
    attempt = 0
    for attempt in range(1, max_retries + 2):
        request = DescribeRequest(photos, feedback=feedback, keep=dict(merged.classes))
        try:
            review = review_reply(parse_reply(describer.describe(request)), photos, keep=merged.classes)
        except MudiError as e:
            errors.append(f"attempt {attempt}: {e}")
            feedback = [str(e)]
            continue
        merged.classes.update(review.classes)
        for ident, caps in review.captions.items():
            merged.captions[ident].update(caps)
        merged.reasons = {k: v for k, v in {**merged.reasons, **review.reasons}.items() if not _done(merged, k)}
        if not _missing(merged, photos):
            break
        feedback = [f"{ident} {name}: {why}" for (ident, name), why in merged.reasons.items()][:20]
    return merged, attempt, errors


def _done(review: Review, key: tuple[str, str]) -> bool:
    ident, name = key
    return ident in review.classes if name == CLASS else name in review.captions.get(ident, {})


def _missing(review: Review, photos: list[SubjectPhotos]) -> list[tuple[str, str]]:
    keys = [(p.identifier, name) for p in photos for name in [CLASS, *p.file_names]]
    return [k for k in keys if not _done(review, k)]


def describe_subjects(config: DescribeConfig, describer: Describer | None = None) -> DescribeResult:
    """Describe every subject of ``config.subjects`` together and write the accepted values (see the module
    docstring). ``describer`` may be injected (tests); otherwise it is built from ``config``."""
    subjects = load_subjects(config.subjects)
    for s in subjects:
        if s.source != "native":
            raise MudiError(f"{s.root}: {s.name!r} is a {s.source} folder; convert it first (`mudi convert PAIR "
                            "--out DIR`) and describe the native subject folders")
    hand = {s.identifier: ({CLASS: None, "captions": {}} if config.overwrite else hand_written(s)) for s in subjects}
    keep = {i: h[CLASS] for i, h in hand.items() if h[CLASS]}
    photos = photos_of(subjects, config.max_side)
    review, attempts, errors = ask(describer or build_describer(config), photos, keep, config.max_retries)
    note = {"provider": config.provider, "model": describer_model(config), "attempts": attempts,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "config": to_dict(config)}
    items: list[Item] = []
    for s in subjects:
        cls, caps = review.classes.get(s.identifier), review.captions.get(s.identifier, {})
        if config.dry_run:
            status = {k: "proposed" for k in [CLASS, *caps] if k != CLASS or cls}
        else:
            status = write_descriptions(s, None if s.identifier in keep else cls, caps, config.overwrite, note)
        if s.identifier in keep:
            status[CLASS] = "kept"
        for name in [CLASS, *(im.path.name for im in s.images)]:
            value = cls if name == CLASS else caps.get(name)
            why = review.reasons.get((s.identifier, name)) or (errors[-1] if errors else "no answer")
            if name in status:
                hand_note = "hand-written; --overwrite replaces it" if status[name] == "kept" else ""
                items.append(Item(s.name, name, value, status[name], hand_note))
            else:
                items.append(Item(s.name, name, value, "rejected", why))
    return DescribeResult(items, attempts, errors)


def format_report(result: DescribeResult) -> str:
    """One line per item (subject, field, status, value or reason), then the counts."""
    lines = []
    for i in result.items:
        text = i.note if i.status == "rejected" else f"{i.value!s}" + (f"  ({i.note})" if i.note else "")
        lines.append(f"{i.subject}  {i.field}  {i.status}  {text}")
    lines += [f"  request: {e}" for e in result.errors]
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.counts().items()))
    lines.append(f"{len(result.items)} values after {result.attempts} attempt(s): {counts}")
    return "\n".join(lines)
