"""The run files mudi writes and reads back: a LoRA's subject manifest, and the stage markers of resumable
multi-stage runs (the benchmark, ``mudi run``).

- ``mudi_subjects.json`` beside ``pytorch_lora_weights.safetensors``: which subjects a LoRA was trained on
  (identifier, classes, phrase, folder), so ``mudi generate --lora RUN`` names them and builds the init
  without ``--subjects``.
- stage markers (``stage.json``, ``generate.json``…): ``{"status": "running" | "done", "fingerprint": …}``,
  written atomically; when a unit is done, skipped, resumed or redone is :class:`mudi.data.units.Unit`'s to say.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mudi.core.prompts import subject_phrase
from mudi.data.subjects import load_subjects
from mudi.errors import MudiError
from mudi.io import write_json_atomic

SUBJECTS_FILE = "mudi_subjects.json"
LORA_FILE = "pytorch_lora_weights.safetensors"
KOHYA_FILE = "pytorch_lora_weights_kohya.safetensors"
TOKEN_FILE_PREFIX = "modifier_token_"  # + identifier + .safetensors: trained token embeddings (CD, TI)


def weight_outputs(train_lora: bool, token_identifiers: Sequence[str] = ()) -> tuple[str, ...]:
    """The weight files a training run writes (what its unit verifies): the LoRA, one token file per subject."""
    return ((LORA_FILE,) if train_lora else ()) + tuple(f"{TOKEN_FILE_PREFIX}{i}.safetensors" for i in token_identifiers)


def token_files(folder: str | Path) -> list[Path]:
    """The trained token-embedding files of a training folder (none for a plain LoRA)."""
    folder = Path(folder)
    return sorted(folder.glob(f"{TOKEN_FILE_PREFIX}*.safetensors")) if folder.is_dir() else []


def weight_files(folder: str | Path) -> list[Path]:
    """The trained weight files a training folder (or snapshot) holds: its LoRA and its token embeddings (Custom
    Diffusion, Textual Inversion); empty when it holds none."""
    folder = Path(folder)
    return ([folder / LORA_FILE] if (folder / LORA_FILE).is_file() else []) + token_files(folder)


# ------------------------------------------------------------------------------------------------ subjects
def subjects_manifest(subjects: Sequence[Any], **extra: Any) -> dict:
    """``{**extra, "subjects": [{name, identifier, class_noun, descriptive_class, class_name, phrase, path}]}``."""
    rows = [{"name": s.name, "identifier": s.identifier, "class_noun": s.class_noun,
             "descriptive_class": s.descriptive_class, "class_name": s.class_name, "phrase": s.phrase,
             "path": str(s.root) if s.root else None} for s in subjects]
    return {**extra, "subjects": rows}


def write_subjects_manifest(folder: str | Path, subjects: Sequence[Any], **extra: Any) -> Path:
    """Write ``FOLDER/mudi_subjects.json`` (``extra``: backbone, family, checkpoint…)."""
    path = Path(folder) / SUBJECTS_FILE
    write_json_atomic(path, subjects_manifest(subjects, **extra))
    return path


def read_manifest(folder: str | Path) -> dict | None:
    """``FOLDER/mudi_subjects.json`` as a mapping (``backbone``, ``family``, ``subjects``…), or None."""
    f = Path(folder) / SUBJECTS_FILE
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MudiError(f"{f}: not valid JSON ({e.msg}); re-run `mudi train` or delete it") from None
    return data if isinstance(data, dict) else {"subjects": data}


def read_lora_subjects(paths: Sequence[str | Path]) -> list[dict] | None:
    """The subjects a LoRA was trained on, from ``mudi_subjects.json`` beside its weights (first found).

    Accepts a list of objects or ``{"subjects": [...]}``; each object has at least ``identifier`` or
    ``phrase``, and optionally ``name``, ``class_name`` and the subject folder (``path``/``root``/``paths``).
    """
    for p in paths:
        folder = Path(p) if Path(p).is_dir() else Path(p).parent
        f = folder / SUBJECTS_FILE
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise MudiError(f"{f}: not valid JSON ({e.msg}); re-run `mudi train` or delete it") from None
        rows = data.get("subjects") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise MudiError(f"{f}: expected a list of subjects with 'identifier' and 'phrase'")
        return rows
    return None


def entry_phrase(row: dict) -> str:
    """How prompts name the subject of one manifest row."""
    if row.get("phrase"):
        return str(row["phrase"])
    cls = row.get("class_name") or row.get("descriptive_class") or row.get("class_noun") or row.get("class") or ""
    return subject_phrase(str(row.get("identifier", "")), str(cls))


def entry_paths(row: dict) -> list[str]:
    """The subject folder of one manifest row (``[]`` when the row names none)."""
    for key in ("path", "root", "subject_path"):
        if isinstance(row.get(key), str):
            return [row[key]]
    if isinstance(row.get("paths"), list):
        return [str(v) for v in row["paths"]][:1]
    return []


def subjects_of_manifest(rows: list[dict]) -> list:
    """The subjects listed in a ``mudi_subjects.json``, loaded from their folders, in the file's order (a
    benchmark pair folder listed for two subjects is read once)."""
    paths = [p for r in rows for p in entry_paths(r)]
    if len(paths) != len(rows) or not all(Path(p).exists() for p in paths):
        raise MudiError(f"the subject folders listed in the LoRA's {SUBJECTS_FILE} are not all present "
                        f"({paths}); pass --subjects PATH [PATH ...] for the init (or use --init none)")
    loaded = load_subjects(list(dict.fromkeys(paths)))
    by_key = {k: s for s in loaded for k in (s.identifier, s.name) if k}
    picked = []
    for r in rows:
        s = by_key.get(str(r.get("identifier") or "")) or by_key.get(str(r.get("name") or ""))
        if s is None:
            raise MudiError(f"subject {r.get('name') or r.get('identifier')!r} of the LoRA's {SUBJECTS_FILE} is not "
                            f"in {entry_paths(r)[0]}; pass --subjects PATH [PATH ...] for the init")
        picked.append(s)
    return picked


# ------------------------------------------------------------------------------------------------ stages
def fingerprint(obj: Any) -> str:
    """A short stable hash of JSON-able settings."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_marker(path: str | Path) -> dict | None:
    """A stage marker, or None when absent (a broken marker counts as absent: markers are written atomically)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def write_marker(path: str | Path, status: str, fp: str, **extra: Any) -> None:
    write_json_atomic(path, {"status": status, "fingerprint": fp, **extra})
