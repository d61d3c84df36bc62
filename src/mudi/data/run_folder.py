"""Which folder a ``mudi run`` owns, and what in it.

A run folder carries ``.mudi-run.json``: the entries ``mudi run`` writes there (``subjects/``, ``train/``, …,
``run.yaml``, ``report.html``). ``mudi run`` deletes or rewrites only those entries, and only in a folder that
has the file. A folder it did not make is refused unless it is empty; ``--force`` accepts a non-empty one
whose existing entries do not bear any of those names, so nothing that was there before is ever deleted or
overwritten. A run's inputs (subject folders, layouts, base LoRAs, local model folders) may never lie inside an
entry the run rewrites.
"""

from __future__ import annotations

import json
from pathlib import Path

from mudi.errors import MudiError
from mudi.io import write_json_atomic

RUN_MANIFEST = ".mudi-run.json"
IGNORED = (".mudi.lock",)  # what mudi itself puts in a folder before claiming it


def read_run_manifest(out: Path) -> dict | None:
    """The folder's run manifest, or None when ``mudi run`` did not make the folder."""
    path = Path(out) / RUN_MANIFEST
    if not path.is_file() or path.is_symlink():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("owned"), list) else None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _made_by_an_earlier_mudi(out: Path) -> bool:
    marker = out / "segment" / "stage.json"
    if not (out / "run.yaml").is_file() or not marker.is_file():
        return False
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "fingerprint" in data and "status" in data


def check_inputs_outside(out: Path, owned: tuple[str, ...], inputs: list[str]) -> None:
    """A one-line error when an input of the run lies inside an entry of ``out`` that the run rewrites."""
    out = Path(out).resolve()
    for raw in inputs:
        if not raw:
            continue
        p = Path(raw).expanduser()
        if not p.exists():
            continue
        p = p.resolve()
        for entry in owned:
            if _inside(p, out / entry):
                raise MudiError(f"{raw}: an input of this run lies inside the run folder's {entry}, which mudi run "
                                f"rewrites; move it out of {out} or choose another output_dir")


def claim_run_folder(out: Path, owned: tuple[str, ...], inputs: list[str], force: bool = False,
                     write: bool = True) -> None:
    """Make ``out`` a run folder (write its manifest) or check that it is one; see the module docstring.
    ``write=False`` only checks (before anything, even a lock file, is written there)."""
    out = Path(out)
    check_inputs_outside(out, owned, inputs)
    if not out.is_dir():
        return
    for entry in owned:
        if (out / entry).is_symlink():
            raise MudiError(f"{out / entry} is a symbolic link; mudi run writes its {entry} only inside the run "
                            "folder: remove the link or choose another output_dir")
    if read_run_manifest(out) is not None:
        return
    if _made_by_an_earlier_mudi(out):  # mudi 0.1 wrote no manifest: its run.yaml and segment marker say it
        if write:
            write_json_atomic(out / RUN_MANIFEST, {"mudi_run": 1, "owned": list(owned)})
        return
    present = sorted(c.name for c in out.iterdir() if c.name not in IGNORED)
    if present and not force:
        raise MudiError(f"{out} is not empty ({', '.join(present[:3])}{' …' if len(present) > 3 else ''}) and was not "
                        "made by mudi run; choose a new or empty output_dir, or pass --force to add a run beside "
                        "those files (mudi then writes only its own entries: " + ", ".join(owned) + ")")
    clash = [n for n in present if n in owned]
    if clash:
        raise MudiError(f"{out / clash[0]} exists and was not written by mudi run, which would replace it; move it "
                        "away or choose another output_dir (--force never deletes what mudi did not write)")
    if write:
        write_json_atomic(out / RUN_MANIFEST, {"mudi_run": 1, "owned": list(owned)})
