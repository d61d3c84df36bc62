"""What the stages of ``mudi run`` hand each other (:class:`RunState`): the run folder, the upstream
fingerprints, what each unit did, the models kept between units; and the names of the run's own files."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mudi.adapters.pool import ModelPool
from mudi.data.units import DONE, PARTIAL, STALE, Unit
from mudi.errors import MudiError
from mudi.pipeline.config import STAGES, RunConfig

MARKER = "stage.json"
RUN_FILE = "run.yaml"
REPORT_FILE = "report.html"
RUN_ENTRIES = (RUN_FILE, REPORT_FILE, "subjects", "describe", "segment", "prior", "segmix", "train", "generate", "evaluate")


@dataclass
class RunState:
    """What the stages hand each other: the run folder, the upstream fingerprints, what each stage did."""

    config: RunConfig
    out: Path
    say: Callable[[str], None] = print
    fps: dict[str, str] = field(default_factory=dict)
    did: dict[str, str] = field(default_factory=dict)  # folder (relative) -> "done" | "skipped" | "resumed" ...
    train_dirs: dict[str, Path] = field(default_factory=dict)  # composition -> LoRA folder
    selections: dict[str, dict] = field(default_factory=dict)  # composition -> its step selection (step_selection)
    seconds: dict[str, float] = field(default_factory=dict)
    models: ModelPool = field(default_factory=ModelPool)  # the generation backbone, the evaluation models

    @property
    def subjects_dir(self) -> Path:
        return self.out / "subjects"

    @property
    def described_dir(self) -> Path:
        """The describe stage's copies of the subjects (described; segmentation copies them into subjects/)."""
        return self.out / "describe" / "subjects"

    names: list[str] = field(default_factory=list)  # the subjects' names in [V1], [V2]... order

    def subject_paths(self) -> list[str]:
        return [str(self.subjects_dir / n) for n in self.names]

    def described_paths(self) -> list[str]:
        return [str(self.described_dir / n) for n in self.names]

    def begin(self, stage: str, unit: Unit) -> bool:
        """Whether ``unit`` (of ``stage``) must run now; clears its folder when its settings or inputs changed or
        ``--from`` asks for it. Also enforces ``--only``."""
        c, rel = self.config, unit.folder.relative_to(self.out).as_posix()
        if c.only and stage != c.only:
            if not unit.is_done():
                where = "earlier" if STAGES.index(stage) < STAGES.index(c.only) else "later"
                raise MudiError(f"--only {c.only}: the {where} stage {stage} ({unit.name}) is not done with these "
                                f"settings; run without --only (or with --from {stage})")
            return False
        forced = (bool(c.from_stage) and STAGES.index(stage) >= STAGES.index(c.from_stage)) or c.only == stage
        state = unit.state()
        if not forced and state == DONE:
            self.did[rel] = "skipped"
            self.say(f"  {unit.name}: done already, skipped")
            return False
        if forced or state == STALE:
            why = f"--from {c.from_stage}" if c.from_stage else f"--only {c.only}" if forced else "its settings changed"
            if unit.folder.exists():
                self.say(f"  {unit.name}: redone from scratch ({why})")
                unit.clear()
        elif state == PARTIAL:
            self.did[rel] = "resumed"
            self.say(f"  {unit.name}: resuming the unfinished run")
        unit.folder.mkdir(parents=True, exist_ok=True)
        unit.start()
        self.did.setdefault(rel, "redone" if forced else "done")
        return True

    def end(self, unit: Unit, t0: float, **extra: Any) -> None:
        self.seconds[unit.name] = round(time.perf_counter() - t0, 1)
        unit.finish(seconds=self.seconds[unit.name], **extra)
