"""The benchmark pairs and their prompts, and the plain-class subject folders of the "w/o descriptive class"
ablation. The methods of the comparison themselves are :mod:`mudi.core.methods` (``mudi run`` uses them too)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import yaml

from mudi.data.convert import convert
from mudi.data.subjects import SUBJECT_FILE, find_subjects
from mudi.data.units import Unit
from mudi.errors import MudiError, did_you_mean
from mudi.io import write_text_atomic

log = logging.getLogger(__name__)
STAGE_FILE = "stage.json"
PROMPTS_FILE = "eval_prompts.json"


def load_prompts(path: Path) -> dict[str, list[str]]:
    if not path.is_file():
        raise MudiError(f"{path}: no evaluation prompts; give prompts_file, a JSON mapping pair names to lists "
                        "of prompts with [V1] and [V2]")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MudiError(f"{path}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise MudiError(f"{path}: expected a mapping {{pair: [prompts]}}")
    out = {}
    for k, v in data.items():
        if k.startswith("_"):
            continue
        if not isinstance(v, list) or not v or not all(isinstance(p, str) and p.strip() for p in v):
            raise MudiError(f"{path}: pair {k!r} must map to a non-empty list of prompts")
        out[k] = v
    return out


def select_pairs(config: Any) -> list[tuple[str, Path, list[str]]]:
    """``(pair, pair folder, prompts)`` for every selected pair, in config (or file) order."""
    root = Path(config.benchmark_dir)
    if not config.benchmark_dir or not (root / "pairs").is_dir():
        raise MudiError(f"benchmark_dir {config.benchmark_dir!r}: no pairs/ folder there; give the MuDI benchmark "
                        "folder, e.g. --benchmark_dir ../shared/data/mudi-benchmark")
    prompts = load_prompts(Path(config.prompts_file) if config.prompts_file else root / PROMPTS_FILE)
    present = sorted(p.name for p in (root / "pairs").iterdir() if p.is_dir())
    if config.pairs:
        names = list(config.pairs)
        for n in names:
            if n not in present:
                raise MudiError(f"pair {n!r} is not in {root / 'pairs'}; {did_you_mean(n, present)}present: "
                                f"{', '.join(present)}")
            if n not in prompts:
                raise MudiError(f"pair {n!r} has no prompts in the prompts file; add '{n}': ['[V1] and [V2] ...']")
    else:
        names = [n for n in prompts if n in present]
        missing = [n for n in prompts if n not in present]
        if missing:
            log.warning("prompts given for pairs not in %s (skipped): %s", root / "pairs", ", ".join(missing))
        if not names:
            raise MudiError(f"no pair folder in {root / 'pairs'} has prompts in the prompts file")
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise MudiError(f"pairs {sorted(dup)} listed twice")
    return [(n, root / "pairs" / n, prompts[n][:config.num_prompts] if config.num_prompts else prompts[n])
            for n in names]


def generic_class(subject: Any, table: dict[str, str]) -> str:
    """The plain class of ``subject`` for the "w/o descriptive class" ablation."""
    return table.get(subject.class_name.lower(), subject.class_noun)


def write_nodesc_subjects(pair_dir: Path, out_dir: Path, table: dict[str, str]) -> list[Path]:
    """The pair's subjects as native folders (``mudi convert``) with the descriptive class replaced by the
    plain class, in ``subject.yaml`` and in every caption. Returns the folders, in [V1], [V2] order."""
    subjects = find_subjects(pair_dir)
    folders = [out_dir / s.name for s in subjects]
    unit = Unit.of(out_dir, {"pair": str(pair_dir), "classes": [generic_class(s, table) for s in subjects]},
                   marker=out_dir / STAGE_FILE, name=f"{pair_dir.name} without descriptive classes")
    if unit.is_done():
        return folders
    convert(pair_dir, out_dir, overwrite=True)
    for s, folder in zip(subjects, folders):
        plain = generic_class(s, table)
        if plain == s.class_name:
            log.warning("%s: no plain class known for %r; the no-desc ablation keeps it (set generic_classes)",
                        s.name, s.class_name)
        meta = s.to_metadata()
        meta.pop("descriptive_class", None)
        meta["class_noun"] = plain
        new_phrase = f"{s.identifier} {plain}"
        pattern = re.compile(rf"(?<!\w){re.escape(s.phrase)}(?!\w)", re.IGNORECASE)
        if meta.get("captions"):
            meta["captions"] = {k: pattern.sub(new_phrase, v) for k, v in meta["captions"].items()}
        write_text_atomic(folder / SUBJECT_FILE, yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))
    unit.finish()
    return folders
