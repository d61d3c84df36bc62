"""Choosing the training step by score: the paper's authors save a LoRA every 200 steps and pick the step per
pair by eye (1200-1600); here every snapshot (``save_steps`` → ``OUTPUT_DIR/snapshot-N/``) and the final LoRA
are rendered on *validation* prompts and seeds (disjoint from the evaluation seeds: :func:`check_disjoint_seeds`),
scored by a registered scorer (registry kind ``scorer``: ``dnc``, ``toyworld``…), and the best is kept.

One owner for ``mudi run`` and ``mudi benchmark``: each passes how it renders images (``render``) and scores a
folder (``score``). Every snapshot is a resumable :class:`~mudi.data.units.Unit` (``step-N/score.json``), and so
is the choice (``selection.json``: the curve, the best step and its LoRA folder; ``curve.png``), so a rerun
scores only the snapshots it has not scored with the same settings.

Folder::

    selection.json      {"status", "fingerprint", "steps", "scores", "best_step", "best_lora", "scorer", "seeds"}
    curve.png           the score-vs-step curve (the report shows it)
    step-N/             images/pKK/ (the validation images of that snapshot), eval/pKK/, score.json
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mudi.adapters import registry
from mudi.adapters.pool import ModelPool
from mudi.data.manifests import weight_files
from mudi.data.units import DONE, Unit, files_fingerprint
from mudi.errors import MudiError

SELECTION_DIR = "step-selection"  # its folder in a training folder (mudi run) or a cell (the benchmark)
SELECTION_FILE = "selection.json"
CURVE_FILE = "curve.png"
DEFAULT_VALIDATION_PROMPTS = ["[V1] and [V2] sitting side by side on a wooden table.",
                              "[V1] and [V2] on a sunny beach."]


@dataclass
class StepSelectionConfig:
    use: bool = field(default=False, metadata={
        "help": "score every snapshot (train.save_steps) and the final LoRA on validation prompts and seeds, and "
                "generate with the best (off: the last step, as the paper's fixed step)"})
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_VALIDATION_PROMPTS), metadata={
        "help": "validation prompts ([V1], [V2] = the subjects); keep them apart from the evaluation prompts"})
    num_seeds: int = field(default=2, metadata={"help": "validation images per prompt and snapshot"})
    seed: int = field(default=100000, metadata={
        "help": "first validation seed (seeds seed..seed+num_seeds-1, which must not meet the evaluation seeds)"})
    scorer: str = field(default="dnc", metadata={
        "help": f"registered scorer judging the snapshots: {', '.join(registry.names('scorer'))}"})

    def __post_init__(self) -> None:
        if self.num_seeds < 1 or not self.prompts:
            raise MudiError("step_selection needs at least one prompt and num_seeds >= 1")
        if self.scorer not in registry.names("scorer"):
            from mudi.errors import unknown_name_error

            raise unknown_name_error("scorer", self.scorer, registry.names("scorer"))

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.num_seeds)]


@dataclass
class ScoringContext:
    """What a registered scorer reads of its caller (``st``) outside ``mudi run``, whose ``RunState`` has the
    same members: the models kept between calls, the subjects' names, where messages go."""

    models: ModelPool
    names: list[str]
    say: Callable[[str], None] = print


def check_disjoint_seeds(validation: Sequence[int], evaluation: Sequence[int]) -> None:
    """Selecting on the evaluation seeds would tune the step to the very images that are scored: refuse it."""
    shared = sorted(set(validation) & set(evaluation))
    if shared:
        raise MudiError(f"step_selection seeds {list(validation)} meet the evaluation seeds at {shared}; set "
                        f"step_selection.seed above {max(evaluation)}")


def find_snapshots(lora_dir: str | Path, final_step: int) -> list[tuple[int, Path]]:
    """``[(step, folder)]`` of every loadable snapshot-N/ of a training folder and its final LoRA, by step."""
    root = Path(lora_dir)
    found = {int(p.name[9:]): p for p in root.glob("snapshot-*")
             if p.name[9:].isdigit() and weight_files(p)}
    if weight_files(root):
        found[final_step] = root
    if not found:
        raise MudiError(f"{root}: no LoRA to choose from (train it first; set train.save_steps for snapshots)")
    return sorted(found.items())


def select_step(lora_dir: str | Path, out: str | Path, config: StepSelectionConfig, final_step: int,
                evaluation_seeds: Sequence[int], render: Callable[[Path, str, list[int], Path], None],
                score: Callable[[Path, Path, str], float | None], settings: Any = None,
                say: Callable[[str], None] = print) -> dict:
    """Score every snapshot of ``lora_dir`` and return the choice (``selection.json``'s content).

    ``render(lora, prompt, seeds, folder)`` writes one image per seed of ``prompt`` with ``lora`` into
    ``folder``; ``score(images, folder, label)`` returns the folder's score (higher is better); ``settings``:
    what else the images depend on (the sampler), part of every fingerprint. Ties go to the earlier step."""
    check_disjoint_seeds(config.seeds, evaluation_seeds)
    out = Path(out)
    snapshots = find_snapshots(lora_dir, final_step)
    base = {"selection": {"prompts": config.prompts, "seeds": config.seeds, "scorer": config.scorer},
            "settings": settings}
    scores = [score_snapshot(step, folder, out / f"step-{step}", base, config, render, score, say)
              for step, folder in snapshots]
    usable = [(s, i) for i, s in enumerate(scores) if s is not None and not math.isnan(s)]
    if not usable:
        raise MudiError(f"step selection: the {config.scorer} scorer gave no score for any snapshot of {lora_dir}")
    best = max(usable, key=lambda t: (t[0], -t[1]))[1]
    record = {"steps": [s for s, _ in snapshots], "scores": scores, "best_step": snapshots[best][0],
              "best_lora": str(snapshots[best][1]), "scorer": config.scorer, "seeds": config.seeds,
              "prompts": config.prompts}
    unit = Unit.of(out, {**base, "scores": scores}, marker=out / SELECTION_FILE, outputs=(CURVE_FILE,),
                   name="step selection")
    write_curve(out / CURVE_FILE, record)
    unit.finish(**record)
    say(f"  step selection ({config.scorer}): " + ", ".join(f"{s}: {_fmt(v)}" for s, v in zip(record["steps"], scores))
        + f" → step {record['best_step']}")
    return {"fingerprint": unit.fp, **record}


def score_snapshot(step: int, lora: Path, folder: Path, base: dict, config: StepSelectionConfig,
                   render: Callable, score: Callable, say: Callable[[str], None]) -> float | None:
    """One snapshot's mean score over the validation prompts (resumable: skipped when done with these settings)."""
    files = files_fingerprint(weight_files(lora))
    unit = Unit.of(folder, {**base, "lora": files}, marker=folder / "score.json", name=f"step {step}")
    if unit.state() == DONE:
        return unit.read().get("score")
    unit.clear()
    unit.start()
    values = []
    for k, prompt in enumerate(config.prompts):
        images = folder / "images" / f"p{k:02d}"
        render(lora, prompt, config.seeds, images)
        values.append(score(images, folder / "eval" / f"p{k:02d}", f"step {step} p{k:02d}"))
    got = [float(v) for v in values if v is not None]
    value = sum(got) / len(got) if got else None
    unit.finish(score=value, step=step, lora=str(lora))
    return value


def read_selection(out: str | Path) -> dict | None:
    """``selection.json`` of a finished step selection, or None."""
    from mudi.data.manifests import read_marker

    m = read_marker(Path(out) / SELECTION_FILE)
    return m if m and m.get("status") == "done" else None


def write_curve(path: Path, record: dict) -> None:
    """The score-vs-step line chart (the best step marked in the title)."""
    from mudi.visualize import line_chart

    values = [v for v in record["scores"] if v is not None]
    lo, hi = min([0.0, *values]), max([1.0, *values])
    chart = line_chart({record["scorer"]: record["scores"]}, [str(s) for s in record["steps"]],
                       title=f"validation score by step (best: {record['best_step']})", y_range=(lo, hi),
                       x_title="step")
    path.parent.mkdir(parents=True, exist_ok=True)
    chart.save(path)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
