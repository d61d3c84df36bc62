"""``mudi demo``: the main job on its embedded default — the bundled sample subjects, offline.

Stages: Seg-Mix compositions of the three bundled subjects with a contact sheet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mudi.compose import SegmixConfig
from mudi.compose import run as run_segmix
from mudi.samples import sample_subject_dirs

HELP = "run the pipeline on the bundled sample subjects with tiny offline models"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="mudi-demo", help="output folder (default: ./mudi-demo)")
    p.add_argument("--seed", type=int, default=0)


def run(out: str | Path, seed: int = 0) -> dict[str, Path]:
    out = Path(out)
    subjects = [str(p) for p in sample_subject_dirs()]
    results: dict[str, Path] = {}
    run_segmix(SegmixConfig(subjects=subjects, out=str(out / "segmix"), num=8, size=512, seed=seed,
                            num_subjects=2))
    results["segmix_grid"] = out / "segmix" / "grid.png"
    run_segmix(SegmixConfig(subjects=subjects, out=str(out / "segmix3"), num=4, size=512, seed=seed,
                            num_subjects=3))
    results["segmix3_grid"] = out / "segmix3" / "grid.png"
    return results


def main(args: argparse.Namespace) -> int:
    results = run(args.out, args.seed)
    print("mudi demo finished:")
    for k, v in results.items():
        print(f"  {k:14s} {v}")
    return 0
