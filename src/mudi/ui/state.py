"""The UI's workspace folder and what it holds on disk. Imports no gradio.

::

    WORKSPACE/
      subjects/<name>/       native subject folders (subject.yaml, photos, masks/; segment/ui_review.json)
      runs/<name>/           ordinary `mudi train` run folders (the CLI resumes them as they are)
      generations/<name>/    `mudi generate` output folders, each with evaluation/ (Detect-and-Compare)
      layouts/<name>.json    the boxes drawn for a generation (`mudi generate --layout`)
      segmix/                the latest Seg-Mix preview (`mudi segmix`)

Everything the page shows is read back from these folders, so closing the browser or restarting the UI
loses nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from mudi.data.subjects import SUBJECT_FILE
from mudi.errors import MudiError
from mudi.io import prepare_output_dir, write_json_atomic

REVIEW_FILE = "ui_review.json"  # in a subject's segment/ folder: {image file name: "accepted" | "rejected"}
VERDICTS = ("accepted", "rejected")


def slugify(text: str, fallback: str = "item") -> str:
    """A folder name from free text: lower case, ``a-z0-9_-`` only."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", text.strip().lower()).strip("-_")
    return slug[:60] or fallback


def unique_name(parent: Path, base: str) -> str:
    """``base``, else ``base-2``, ``base-3`` … — the first that does not exist in ``parent``."""
    if not (parent / base).exists():
        return base
    n = 2
    while (parent / f"{base}-{n}").exists():
        n += 1
    return f"{base}-{n}"


def _folders(parent: Path) -> list[Path]:
    return sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")) if parent.is_dir() else []


def _newest_first(parent: Path) -> list[Path]:
    return sorted(_folders(parent), key=lambda p: p.stat().st_mtime, reverse=True)


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def open(cls, root: str | Path) -> Workspace:
        """The workspace at ``root``, its folders created (a file or a read-only folder is one line)."""
        ws = cls(Path(root).expanduser().resolve())
        prepare_output_dir(ws.root, "UI workspace")
        for folder in (ws.subjects_dir, ws.runs_dir, ws.generations_dir, ws.layouts_dir):
            folder.mkdir(exist_ok=True)
        return ws

    @property
    def subjects_dir(self) -> Path:
        return self.root / "subjects"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def generations_dir(self) -> Path:
        return self.root / "generations"

    @property
    def layouts_dir(self) -> Path:
        return self.root / "layouts"

    @property
    def segmix_dir(self) -> Path:
        return self.root / "segmix"

    def subject_dirs(self) -> list[Path]:
        return [p for p in _folders(self.subjects_dir) if (p / SUBJECT_FILE).is_file()]

    def run_dirs(self) -> list[Path]:
        """Run folders, newest first."""
        return _newest_first(self.runs_dir)

    def generation_dirs(self) -> list[Path]:
        """Generation folders, newest first."""
        return _newest_first(self.generations_dir)

    def subject_dir(self, name: str) -> Path:
        return self._child(self.subjects_dir, name, "subject")

    def run_dir(self, name: str) -> Path:
        return self._child(self.runs_dir, name, "run")

    def generation_dir(self, name: str) -> Path:
        return self._child(self.generations_dir, name, "generation")

    def contain(self, path: str | Path, what: str = "path") -> Path:
        """``path`` resolved, when it lies inside the workspace; a one-line :class:`MudiError` otherwise (a path
        a page sends is never trusted: links and ``..`` are resolved first)."""
        p = Path(path).expanduser()
        resolved = (p if p.is_absolute() else self.root / p).resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise MudiError(f"{what} {str(path)[:80]!r} is outside the UI workspace {self.root}; the UI only reads "
                            "and writes inside it")
        return resolved

    @staticmethod
    def _child(parent: Path, name: str, what: str) -> Path:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise MudiError(f"{name!r} is not a {what} name of this workspace")
        return parent / name


# ------------------------------------------------------------------------------------------------ mask review
def review_path(subject_root: Path) -> Path:
    return Path(subject_root) / "segment" / REVIEW_FILE


def read_review(subject_root: Path) -> dict[str, str]:
    """``{image file name: verdict}`` of a subject's mask review (empty when none was recorded)."""
    path = review_path(subject_root)
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return {str(k): str(v) for k, v in data.items() if v in VERDICTS} if isinstance(data, dict) else {}


def set_review(subject_root: Path, image_name: str, verdict: str | None) -> None:
    """Record ``verdict`` (``accepted`` / ``rejected``; ``None`` clears it) for one photo of a subject."""
    if verdict is not None and verdict not in VERDICTS:
        raise MudiError(f"verdict {verdict!r}: use one of {VERDICTS}")
    review = read_review(subject_root)
    if verdict is None:
        review.pop(image_name, None)
    else:
        review[image_name] = verdict
    path = review_path(subject_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, dict(sorted(review.items())))
