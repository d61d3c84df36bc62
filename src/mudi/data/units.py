"""One resumable unit of work: what every orchestrator (``mudi run``, the benchmark, ``mudi modular``,
``mudi iterate``) does before and after a piece of work that writes files.

A :class:`Unit` is a marker file (``{"status": "running" | "done", "fingerprint": …}``, :mod:`mudi.data.manifests`),
the fingerprint of everything the work reads, and the output files it must leave behind. Its :meth:`Unit.state`
is one of

- ``"new"``: no marker: run it;
- ``"stale"``: the marker has another fingerprint (a setting or an input file changed): clear what it wrote and
  redo it (and, because the fingerprint is an input of the next unit's, everything downstream);
- ``"partial"``: same fingerprint, not finished (or finished but an output is missing or unreadable): resume;
- ``"done"``: same fingerprint, finished, every output present and readable: skip.

A unit is done only when its outputs exist and verify: :meth:`Unit.finish` refuses to write the ``done`` marker
otherwise (a training launcher that exits 0 without a LoRA leaves the unit ``running``, so the next run resumes
it instead of failing later at generation).

Fingerprints cover the *content* of every input file (:func:`file_digest`, :func:`files_fingerprint`,
:func:`subjects_fingerprint`): editing a layout's boxes, a caption or a mask redoes the units that read it.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mudi.data.manifests import fingerprint, read_marker, write_marker
from mudi.errors import MudiError

NEW, STALE, PARTIAL, DONE = "new", "stale", "partial", "done"
KEEP_ON_CLEAR = (".mudi.lock",)
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: a file is hashed once per process


# ------------------------------------------------------------------------------------------------ content
def file_digest(path: str | Path) -> str:
    """The sha256 of a file's bytes (remembered for the process while its size and modification time stay)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def files_fingerprint(paths: Iterable[str | Path | None]) -> list[list[str]]:
    """``[[name, sha256], …]`` of files, or of every file under a folder (sorted; lock files left out). A path
    that does not exist (a hub id, ``random``) is kept as its name alone, so it still counts as a setting."""
    rows: list[list[str]] = []
    for path in paths:
        if path is None or str(path) == "":
            continue
        p = Path(path)
        if p.is_file():
            rows.append([p.name, file_digest(p)])
        elif p.is_dir():
            for f in sorted(x for x in p.rglob("*") if x.is_file() and not x.name.startswith(".mudi")):
                rows.append([f.relative_to(p).as_posix(), file_digest(f)])
        else:
            rows.append([str(path)])
    return rows


def subjects_fingerprint(subjects: Sequence[Any]) -> list[Any]:
    """What a unit reading ``subjects`` depends on: each subject's metadata (names, classes, captions,
    ``detect_as``, ``relative_size`` — what ``subject.yaml`` says) and the content of every photo and mask."""
    rows: list[Any] = []
    for s in subjects:
        rows.append(s.to_metadata())
        rows.append(files_fingerprint(p for im in s.images for p in (im.path, im.mask_path)))
    return rows


# ------------------------------------------------------------------------------------------------ outputs
def output_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable output (missing, empty, an unreadable safetensors file), or None."""
    if not path.is_file():
        return "is missing"
    if path.stat().st_size == 0:
        return "is empty"
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                if not list(f.keys()):
                    return "holds no tensor"
        except Exception:  # a truncated or foreign file
            return "is not a readable safetensors file"
    return None


# ------------------------------------------------------------------------------------------------ the unit
@dataclass
class Unit:
    """One piece of resumable work writing into ``folder``: its ``marker`` file (default ``folder/stage.json``),
    the fingerprint ``fp`` of everything it reads, and the ``outputs`` (paths relative to ``folder``) that must
    exist and verify for it to count as done."""

    folder: Path
    fp: str
    marker: Path | None = None
    outputs: tuple[str, ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.marker = Path(self.marker) if self.marker is not None else self.folder / "stage.json"
        self.name = self.name or self.folder.name

    @classmethod
    def of(cls, folder: str | Path, settings: Any, **kw: Any) -> Unit:
        """A unit whose fingerprint is that of ``settings`` (JSON-able)."""
        return cls(Path(folder), fingerprint(settings), **kw)

    def read(self) -> dict | None:
        return read_marker(self.marker)

    def problems(self) -> list[str]:
        """``"<output> is missing"``… for every declared output that does not verify."""
        found = ((o, output_problem(self.folder / o)) for o in self.outputs)
        return [f"{o} {why}" for o, why in found if why]

    def state(self) -> str:
        m = self.read()
        if m is None:
            return NEW
        if m.get("fingerprint") != self.fp:
            return STALE
        if m.get("status") == "done" and not self.problems():
            return DONE
        return PARTIAL

    def is_done(self) -> bool:
        return self.state() == DONE

    def start(self, write: bool = True, **extra: Any) -> None:
        """The marker says ``running`` (``write=False``: another process writes it)."""
        if write:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            write_marker(self.marker, "running", self.fp, **extra)

    def finish(self, write: bool = True, **extra: Any) -> None:
        """The marker says ``done`` — only when every output is there and readable; otherwise a one-line error
        (the marker keeps saying ``running``, so the next run resumes the unit)."""
        bad = self.problems()
        if bad:
            raise MudiError(f"{self.name}: the work finished but {bad[0]} (in {self.folder}); it is not marked done, "
                            "so the next run redoes it")
        if write:
            write_marker(self.marker, "done", self.fp, **extra)

    def clear(self, *subfolders: str) -> None:
        """Remove what the unit wrote: ``folder``'s contents (keeping the folder and its lock), or only the
        named subfolders of it."""
        if subfolders:
            for sub in subfolders:
                shutil.rmtree(self.folder / sub, ignore_errors=True)
            return
        if not self.folder.is_dir():
            return
        for child in self.folder.iterdir():
            if child.name in KEEP_ON_CLEAR:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
