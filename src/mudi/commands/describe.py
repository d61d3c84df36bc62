"""``mudi describe``: descriptive classes and training captions from a vision-language model (paper Sec. 4.1,
A.1) — :mod:`mudi.describing`."""

from __future__ import annotations

from mudi.describing.config import DescribeConfig
from mudi.describing.describe import describe_subjects, format_report

HELP = ("Ask a vision-language model, shown all the subjects together, for each subject's descriptive class and "
        "a caption per photo; write them into subject.yaml (hand-written values are kept).")
CONFIG = DescribeConfig
POSITIONAL = "subjects"


def main(config: DescribeConfig) -> int:
    result = describe_subjects(config)
    print(format_report(result))
    if config.dry_run:
        print("dry run: nothing written")
    if result.rejected:
        print(f"{len(result.rejected)} value(s) rejected: run again (more --max_retries), or write them in "
              "subject.yaml by hand")
        return 1
    return 0
