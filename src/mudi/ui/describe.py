"""The UI's review of ``mudi describe``: ask the describer without writing (a dry run), show one row per value,
let the page edit them, write what is accepted. Imports no gradio; the Subjects tab calls these.

A row is ``[subject, field, value, status]``: ``field`` is ``descriptive_class`` or a photo's file name; the
status says ``proposed``, ``kept`` (hand-written, never replaced from here) or ``rejected: <reason>``. On
*accept*, every ``proposed`` row — as edited — is checked like a model's answer (a short class, captions naming
``<identifier> <class>`` once) and written with :func:`mudi.data.descriptions.write_descriptions`; a row whose
value is emptied is skipped.
"""

from __future__ import annotations

from pathlib import Path

from mudi.data.descriptions import write_descriptions
from mudi.data.subjects import find_subjects
from mudi.describing.config import DescribeConfig
from mudi.describing.describe import CLASS, describe_subjects, format_report
from mudi.describing.replies import check_caption, check_class
from mudi.errors import MudiError

HEADERS = ["subject", "field", "value", "status"]


def propose(subject_dirs: list[Path], provider: str, url: str = "", model: str = "",
            device: str = "auto") -> tuple[list[list[str]], str]:
    """``(rows, report)`` of a dry run of ``mudi describe`` on the ticked subjects."""
    if not subject_dirs:
        raise MudiError("no subjects ticked; tick all the subjects of the run at the top of the page")
    extra = {"model": model} if provider == "openai" and model else (
        {"pretrained_model_name_or_path": model} if model else {})
    config = DescribeConfig(subjects=[str(p) for p in subject_dirs], provider=provider, url=url, dry_run=True,
                            device=device, **extra)
    result = describe_subjects(config)
    rows = [[i.subject, i.field, i.value or "", i.status if i.status != "rejected" else f"rejected: {i.note}"]
            for i in result.items]
    return rows, format_report(result)


def accept(subject_dirs: list[Path], rows: list[list[str]]) -> str:
    """Write the ``proposed`` rows (as edited) into the subjects' ``subject.yaml``; one line per subject."""
    subjects = {s.name: s for p in subject_dirs for s in find_subjects(p)}
    ids = [s.identifier for s in subjects.values()]
    chosen: dict[str, dict[str, str]] = {}
    for row in rows:
        name, field, value, status = (list(row) + ["", "", "", ""])[:4]
        if status == "proposed" and str(value).strip():
            if name not in subjects:
                raise MudiError(f"subject {name!r} is not ticked; tick it, or ask again")
            chosen.setdefault(name, {})[field] = " ".join(str(value).split())
    if not chosen:
        raise MudiError("nothing to write: ask first, then accept the proposed rows")
    for name, values in chosen.items():  # everything checked before anything is written
        s, cls = subjects[name], values.get(CLASS)
        if cls is not None and (why := check_class(cls, ids)):
            raise MudiError(f"{name}: {why}")
        for file, caption in values.items():
            if file != CLASS and (why := check_caption(caption, s.identifier, cls or s.class_name, ids)):
                raise MudiError(f"{name} {file}: {why}")
    lines = []
    for name, values in chosen.items():
        cls = values.pop(CLASS, None)
        status = write_descriptions(subjects[name], cls, values, note={"provider": "ui review"})
        counts = {k: list(status.values()).count(k) for k in ("written", "unchanged", "kept")}
        lines.append(f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    return "\n".join(lines)
