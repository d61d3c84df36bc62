"""``mudi segment``: a mask for every reference photo (OWLv2 + SAM, or GrabCut offline) — :mod:`mudi.segmentation`."""

from __future__ import annotations

from mudi.segmentation.config import SegmentConfig
from mudi.segmentation.folder import format_summary, segment_subjects

HELP = "Detect and segment every subject in its reference photos (OWLv2 + SAM, or offline GrabCut)."
CONFIG = SegmentConfig
POSITIONAL = "subjects"


def main(config: SegmentConfig) -> int:
    result = segment_subjects(config)
    print(format_summary(result))
    for p in result.preview_paths:
        print(f"review: {p}")
    if result.failures:
        print(f"{len(result.failures)} image(s) failed:")
        for r in result.failures:
            print(f"  {r.subject}/{r.image}: {r.note}")
        return 1
    return 0
