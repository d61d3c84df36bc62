"""``mudi prior``: prior (class) images for prior preservation, segmented and filtered (Appendix A.1)."""

from __future__ import annotations

from mudi.segmentation.prior import PriorConfig, make_prior_set

HELP = "Generate, segment and filter prior (class) images for prior preservation (Appendix A.1)."
CONFIG = PriorConfig


def main(config: PriorConfig) -> int:
    summary = make_prior_set(config)
    width = max(len(n) for n in summary)
    print(f"{'class'.ljust(width)}  id  kept  rejected")
    for name, s in summary.items():
        print(f"{name.ljust(width)}  {s['letter']}   {s['kept']:>4}  {s['rejected']:>8}")
    empty = [n for n, s in summary.items() if s["kept"] == 0]
    print(f"prior folder: {config.output_dir}")
    if empty:
        print(f"no image kept for {empty}: raise --num_images, lower --set threshold=..., or check the backend")
        return 1
    return 0
