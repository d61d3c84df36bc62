"""Judging generated toy-world images: the checker over a folder, success rates with Wilson intervals.

A generated image of two toy subjects is a **success** when the checker finds exactly the two expected objects,
each with its own shape and colours (:func:`mudi.toyworld.checker.check_image` says ``correct``); otherwise it
names the failure (``missing`` — often two objects fused into one —, ``extra``, ``duplicate``, ``blend``:
identity mixing, ``wrong_shape``, ``wrong_colour``). Any toy subject can be judged: its identity is the
``toyworld`` key of its subject.yaml (:mod:`mudi.data.toyworld_identity`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from mudi.data.images import list_images, read_image
from mudi.data.subjects import SUBJECT_FILE, Subject, find_subjects
from mudi.data.toyworld_identity import TOYWORLD_KEY
from mudi.errors import MudiError
from mudi.io import write_json_atomic
from mudi.toyworld.checker import VERDICTS, check_image
from mudi.toyworld.world import ToySubject

RESULT_FILE = "toyworld.json"


def toy_subject(subject: ToySubject | Subject | str | Path) -> ToySubject:
    """The toy-world identity of a subject: a :class:`ToySubject` as it is, a loaded subject or a subject folder by
    the ``toyworld`` key of its subject.yaml (shape, top and bottom colour; docs/toyworld.md)."""
    if isinstance(subject, ToySubject):
        return subject
    if not isinstance(subject, Subject):
        found = find_subjects(subject)
        if len(found) != 1:
            raise MudiError(f"{subject}: holds {len(found)} subjects; give one subject folder (or use toy_subjects)")
        subject = found[0]
    where = f"{Path(subject.root) / SUBJECT_FILE}" if subject.root is not None else repr(subject.name)
    if subject.toyworld is None:
        raise MudiError(f"{where}: subject {subject.name!r} is not a toy-world subject (its subject.yaml has no "
                        f"'{TOYWORLD_KEY}' identity); add e.g. 'toyworld: {{shape: square, top: red, bottom: "
                        "yellow}' if it is one, or drop 'toyworld' from scorers for other subjects")
    t = subject.toyworld
    try:
        return ToySubject(subject.name, subject.identifier, t["shape"], t["top"], t.get("bottom"))
    except MudiError as e:
        raise MudiError(f"{where}: '{TOYWORLD_KEY}': {e}") from None


def find_subject_folder(name: str, near: str | Path | None = None) -> Path:
    """The folder of the subject called ``name``: ``name`` itself when it is a folder, else ``subjects/<name>``
    beside the nearest ancestor of ``near`` that has one (a ``mudi run`` folder: its scorers pass names), else
    a shipped toy subject of that name (:data:`mudi.toyworld.SUBJECTS_DIR`)."""
    from mudi.toyworld import SUBJECTS_DIR

    if Path(name).is_dir():
        return Path(name)
    for parent in Path(near).resolve().parents if near is not None else ():
        if (parent / "subjects" / name / SUBJECT_FILE).is_file():
            return parent / "subjects" / name
    for folder in (SUBJECTS_DIR / name, *sorted(SUBJECTS_DIR.glob(f"*/{name}"))):
        if (folder / SUBJECT_FILE).is_file():
            return folder
    raise MudiError(f"subject {name!r}: no subject folder found (not beside {near}, not a shipped toy subject); "
                    "give its folder")


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95 % for ``z = 1.96``); ``(0, 1)`` for ``n = 0``."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def toy_subjects(subjects: Sequence[ToySubject | Subject | str | Path], near: str | Path | None = None
                 ) -> list[ToySubject]:
    """:func:`toy_subject` of each; a folder of subject folders (a set) gives all of them, a name (a ``str`` that is
    no folder) is looked up by :func:`find_subject_folder`."""
    out = []
    for s in subjects:
        if isinstance(s, str):
            s = find_subject_folder(s, near)
        out += [toy_subject(t) for t in (find_subjects(s) if isinstance(s, Path) else [s])]
    return out


def judge_images(images: list, subjects: Sequence[ToySubject | Subject | str | Path]) -> list[str]:
    """The checker's verdict for each image (uint8 arrays) against the toy subjects (see :func:`toy_subjects`)."""
    specs = [t.spec() for t in toy_subjects(subjects)]
    return [check_image(im, specs).verdict for im in images]


def summarize_verdicts(verdicts: list[str]) -> dict:
    n, k = len(verdicts), sum(v == "correct" for v in verdicts)
    lo, hi = wilson_interval(k, n)
    return {"success_rate": k / n if n else float("nan"), "successes": k, "n": n, "interval95": [lo, hi],
            "verdicts": {v: verdicts.count(v) for v in VERDICTS if v in verdicts}}


def check_folder(images_dir: str | Path, subjects: Sequence[ToySubject | Subject | str | Path],
                 out_dir: str | Path) -> dict:
    """Judge every generated image of ``images_dir`` (not its ``init/`` or ``grid/``) against ``subjects``
    (subject folders, loaded subjects, or names: :func:`find_subject_folder` looks them up from ``out_dir``),
    write ``out_dir/toyworld.json`` (the summary and each image's verdict) and return it."""
    paths = [p for p in list_images(images_dir) if p.stem[:1].isdigit()]
    if not paths:
        raise MudiError(f"{images_dir}: no generated images to judge")
    toys = toy_subjects(subjects, near=out_dir)
    verdicts = judge_images([read_image(p)[0] for p in paths], toys)
    summary = {**summarize_verdicts(verdicts), "subjects": [t.name for t in toys],
               "identities": {t.name: t.phrase for t in toys},
               "images": {p.name: v for p, v in zip(paths, verdicts)}}
    write_json_atomic(Path(out_dir) / RESULT_FILE, summary)
    return summary


def read_result(out_dir: str | Path) -> dict | None:
    path = Path(out_dir) / RESULT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
