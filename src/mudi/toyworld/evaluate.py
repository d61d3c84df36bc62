"""Judging generated toy-world images: the checker over a folder, success rates with Wilson intervals.

A generated image of two toy subjects is a **success** when the checker finds exactly the two expected objects,
each with its own shape and colours (:func:`mudi.toyworld.checker.check_image` says ``correct``); otherwise it
names the failure (``missing`` — often two objects fused into one —, ``extra``, ``duplicate``, ``blend``:
identity mixing, ``wrong_shape``, ``wrong_colour``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from mudi.data.images import list_images, read_image
from mudi.errors import MudiError
from mudi.io import write_json_atomic
from mudi.toyworld.checker import VERDICTS, check_image
from mudi.toyworld.world import DEMO_SUBJECTS, ToySubject

RESULT_FILE = "toyworld.json"


def toy_subject(name: str) -> ToySubject:
    """The toy-world identity of a subject folder's name (the shipped subjects: :data:`DEMO_SUBJECTS`)."""
    known = {s.name: s for s in DEMO_SUBJECTS}
    if name not in known:
        raise MudiError(f"subject {name!r} is not a toy-world subject ({', '.join(known)}); the toy-world checker "
                        "judges only images of those (drop 'toyworld' from scorers for other subjects)")
    return known[name]


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95 % for ``z = 1.96``); ``(0, 1)`` for ``n = 0``."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def judge_images(images: list, subject_names: list[str]) -> list[str]:
    """The checker's verdict for each image (uint8 arrays) against the named toy subjects."""
    specs = [toy_subject(n).spec() for n in subject_names]
    return [check_image(im, specs).verdict for im in images]


def summarize_verdicts(verdicts: list[str]) -> dict:
    n, k = len(verdicts), sum(v == "correct" for v in verdicts)
    lo, hi = wilson_interval(k, n)
    return {"success_rate": k / n if n else float("nan"), "successes": k, "n": n, "interval95": [lo, hi],
            "verdicts": {v: verdicts.count(v) for v in VERDICTS if v in verdicts}}


def check_folder(images_dir: str | Path, subject_names: list[str], out_dir: str | Path) -> dict:
    """Judge every generated image of ``images_dir`` (not its ``init/`` or ``grid/``), write
    ``out_dir/toyworld.json`` (the summary and each image's verdict) and return it."""
    paths = [p for p in list_images(images_dir) if p.stem[:1].isdigit()]
    if not paths:
        raise MudiError(f"{images_dir}: no generated images to judge")
    verdicts = judge_images([read_image(p)[0] for p in paths], subject_names)
    summary = {**summarize_verdicts(verdicts), "subjects": list(subject_names),
               "images": {p.name: v for p, v in zip(paths, verdicts)}}
    write_json_atomic(Path(out_dir) / RESULT_FILE, summary)
    return summary


def read_result(out_dir: str | Path) -> dict | None:
    path = Path(out_dir) / RESULT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
