"""How ``mudi run`` judges a folder of generated images: the scorers registered as kind ``scorer`` in
:mod:`mudi.adapters.registry` (``dnc``: Detect-and-Compare and CLIP, the run's ``evaluate`` block; ``toyworld``:
the toy world's checker). Each is ``score(st, cfg, images, folder, label)``: ``cfg`` is the unit's
:class:`~mudi.scoring.config.EvaluateConfig`, ``images`` the generated folder, ``folder`` the unit's output
folder, ``label`` how messages name the unit. It returns the folder's score, higher is better (``dnc``: the first
embedder's mean D&C score; ``toyworld``: the share of correct images): step selection
(:mod:`mudi.scoring.step_selection`) keeps the snapshot that scores best. ``st`` is anything with ``models``
(a :class:`~mudi.adapters.pool.ModelPool`), ``names`` (the subjects) and ``say``: the run's :class:`RunState`,
or :class:`mudi.scoring.step_selection.ScoringContext`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mudi.devices import dtype_name
from mudi.pipeline.state import RunState
from mudi.scoring.folder import evaluate_folder
from mudi.scoring.models import build_detector, build_embedders, build_text_scorers, metric_name, placement


def evaluation_models(cfg: Any) -> tuple[Any, Any, Any]:
    """The detector, embedders and text scorers, loaded once for every evaluation of the run."""
    device, dtype = placement(cfg)
    cfg = dataclasses.replace(cfg, device=str(device), dtype=dtype_name(dtype))
    return build_detector(cfg), build_embedders(cfg), build_text_scorers(cfg)


def score_dnc(st: RunState, cfg: Any, images: Path, folder: Path, label: str) -> float | None:
    """D&C and CLIP scores of the folder (``mudi evaluate``), the models kept in the run's pool; returns the
    mean D&C score of the first embedder (D&C-DS with dreamsim, D&C-DINO with dinov2)."""
    summary = evaluate_folder(cfg, *st.models.get("evaluation", lambda: evaluation_models(cfg)))
    means = summary.get("means", {})
    first = next((metric_name("embedder", e) for e in cfg.embedders if metric_name("embedder", e) in means), None)
    return means[first] if first else None


def score_toyworld(st: RunState, cfg: Any, images: Path, folder: Path, label: str) -> float:
    """The toy world's checker: which images show both toy subjects right (toy subjects only)."""
    from mudi.toyworld.evaluate import check_folder

    result = check_folder(images, st.names, folder)
    st.say(f"  {label}: toy-world checker {result['successes']}/{result['n']} correct "
           f"({', '.join(f'{v} {n}' for v, n in result['verdicts'].items())})")
    return result["successes"] / max(result["n"], 1)


def check_toyworld_subjects(subjects: list) -> None:
    """Before anything is written: every subject of a run judged by the toy checker has a valid toy identity
    (a wrong colour word used to surface only after training)."""
    from mudi.toyworld.evaluate import toy_subject

    for s in subjects:
        toy_subject(s)


score_toyworld.check_subjects = check_toyworld_subjects  # type: ignore[attr-defined]
