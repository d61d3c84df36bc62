"""What ``mudi describe`` writes into a subject folder, and how it tells its own values from hand-written ones:
``subject.yaml``'s descriptive class and captions (hand-written values kept unless asked), ``subject.yaml.bak``,
and one line per write in ``describe_history.jsonl``; and the record of one ``mudi run`` describe stage
(``describe/describe_report.json``: every value's status, for the run's report). The subject folder format itself
is :mod:`mudi.data.subjects`."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from mudi.data.subjects import SUBJECT_FILE, Subject, captions_field, text_field
from mudi.errors import MudiError
from mudi.io import write_bytes_atomic, write_json_atomic, write_text_atomic

DESCRIBE_HISTORY = "describe_history.jsonl"  # in the subject folder: one line per `mudi describe` write
DESCRIBE_REPORT = "describe_report.json"  # in a run's describe/ folder: what the describe stage did


def write_describe_report(folder: str | Path, report: dict) -> Path:
    """``folder/describe_report.json``: ``{"provider", "model", "attempts", "errors", "counts", "items": [{"subject",
    "field", "value", "status", "note"}, …]}`` (``field``: ``descriptive_class`` or a photo's file name)."""
    path = Path(folder) / DESCRIBE_REPORT
    write_json_atomic(path, report)
    return path


def read_describe_report(folder: str | Path) -> dict | None:
    """What :func:`write_describe_report` wrote into ``folder``, or None (not described, or unreadable)."""
    path = Path(folder) / DESCRIBE_REPORT
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("items"), list) else None


def described_values(subject: Subject) -> dict:
    """What ``mudi describe`` last wrote into ``subject``'s folder (``{"descriptive_class": …, "captions":
    {file: caption}}``, empty if never): a value still equal to it is the machine's, any other is hand-written."""
    path = Path(subject.root or ".") / DESCRIBE_HISTORY
    if subject.source != "native" or not path.is_file():
        return {}
    last = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("written"), dict):
            last = row["written"]
    return last


def hand_written(subject: Subject) -> dict:
    """``subject``'s descriptive class and captions that a person wrote (present, and not what ``mudi describe``
    last wrote): ``{"descriptive_class": str | None, "captions": {file: caption}}``."""
    ours = described_values(subject)
    ours_caps = ours.get("captions") if isinstance(ours.get("captions"), dict) else {}
    desc = subject.descriptive_class if subject.descriptive_class != ours.get("descriptive_class") else None
    caps = {im.path.name: im.caption for im in subject.images
            if im.caption and im.caption != ours_caps.get(im.path.name)}
    return {"descriptive_class": desc, "captions": caps}


def write_descriptions(subject: Subject, descriptive_class: str | None, captions: dict[str, str],
                       overwrite: bool = False, note: dict | None = None) -> dict[str, str]:
    """Write a descriptive class and per-photo captions into a native subject's ``subject.yaml``; returns
    ``{"descriptive_class" or file name: "written" | "unchanged" | "kept"}``.

    Hand-written values (:func:`hand_written`) are ``kept`` unless ``overwrite``; empty ones and those ``mudi
    describe`` wrote before are replaced. Before a change the old file is copied to ``subject.yaml.bak`` and a
    line is appended to ``describe_history.jsonl``: ``before`` (the old values), ``written`` (every value of the
    new file that ``mudi describe`` wrote) and ``note`` (the caller's record: provider, model, config). Everything is checked
    first (a one-line error writes nothing); other keys keep their values and order (YAML comments live on in
    the ``.bak`` only).
    """
    if subject.source != "native" or subject.root is None:
        raise MudiError(f"{subject.root}: {subject.name!r} is a {subject.source} folder; convert it first "
                        "(`mudi convert PAIR --out DIR`) and describe the native subject folders")
    path = Path(subject.root) / SUBJECT_FILE
    meta = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    files = {im.path.name for im in subject.images}
    unknown = sorted(set(captions) - files)
    if unknown:
        raise MudiError(f"{path}: captions for {unknown[:3]}, which are not photos of {subject.name!r}")
    hand = {} if overwrite else hand_written(subject)
    old_caps = dict(meta.get("captions") or {})
    status: dict[str, str] = {}
    new = dict(meta)
    if descriptive_class is not None:
        current = meta.get("descriptive_class")
        status["descriptive_class"] = ("unchanged" if current == descriptive_class
                                       else "kept" if hand.get("descriptive_class") else "written")
        if status["descriptive_class"] == "written":
            new["descriptive_class"] = descriptive_class
    caps = dict(old_caps)
    for name, text in sorted(captions.items()):
        status[name] = ("unchanged" if old_caps.get(name) == text
                        else "kept" if name in hand.get("captions", {}) else "written")
        if status[name] == "written":
            caps[name] = text
    if caps:
        new["captions"] = caps
    text_field(new, "descriptive_class", path)
    captions_field(new.get("captions"), path)
    if "written" not in status.values():
        return status
    before = {"descriptive_class": meta.get("descriptive_class"), "captions": old_caps}
    ours = described_values(subject)  # "written": every value in the file that mudi describe wrote, still there
    ours_caps = ours.get("captions") if isinstance(ours.get("captions"), dict) else {}
    mine = {n: caps[n] for n, v in ours_caps.items() if caps.get(n) == v and status.get(n) != "kept"}
    mine.update({n: caps[n] for n, st in status.items() if st == "written" and n != "descriptive_class"})
    own_class = new.get("descriptive_class") if (status.get("descriptive_class") == "written" or
                                                 new.get("descriptive_class") == ours.get("descriptive_class")) else None
    written = {"descriptive_class": own_class, "captions": mine}
    write_bytes_atomic(path.with_name(SUBJECT_FILE + ".bak"), path.read_bytes())
    history = path.with_name(DESCRIBE_HISTORY)
    rows = [line for line in (history.read_text(encoding="utf-8").splitlines() if history.is_file() else [])
            if line.strip()]
    row = json.dumps({"before": before, "written": written, "note": note or {}}, ensure_ascii=False)
    write_text_atomic(history, "\n".join(rows + [row]) + "\n")
    write_text_atomic(path, yaml.safe_dump(new, sort_keys=False, allow_unicode=True, width=1000))
    return status
