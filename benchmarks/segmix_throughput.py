"""Seg-Mix compositions per second at 1024x1024 on one CPU core, cache warm.

Uses the real benchmark photos (../shared/data/mudi-benchmark/pairs/dog6_and_dog2, cutouts up to 1024 px)
when present, else the bundled samples. Prints compositions/s for 2 and 3 subjects, Seg-Mix and Cut-Mix, and
the cold (first, decoding) time. Target: >= 50 compositions/s (issue #2).

    python benchmarks/segmix_throughput.py [--n 200] [--size 1024]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mudi.compositions import compose_one
from mudi.core.segmix import SegMixParams, cutout_max_side
from mudi.data.subjects import load_subjects
from mudi.samples import sample_subject_dirs

PAIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mudi-benchmark" / "pairs"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    if PAIR.is_dir():
        paths, src = [PAIR / "count_ablation"], "benchmark photos (count_ablation, 5 subjects)"
    else:
        paths, src = sample_subject_dirs(), "bundled samples"
    subjects = load_subjects(paths)
    t0 = time.perf_counter()
    for s in subjects:
        s.cutouts(max_side=cutout_max_side((args.size, args.size), SegMixParams()))
    cold = time.perf_counter() - t0
    print(f"subjects: {len(subjects)} ({src}); decoding + cropping all references once: {cold:.2f} s")
    params = SegMixParams()
    for mode, k in (("segmix", 2), ("segmix", 3), ("cutmix", 2)):
        rng = np.random.default_rng(0)
        if mode == "cutmix":  # Cut-Mix uses whole images: decode them once, as a trainer's cache would
            for s in subjects:
                s.full_images(max_side=args.size)
        t0 = time.perf_counter()
        for _ in range(args.n):
            compose_one(subjects, k, args.size, rng, params, mode)
        dt = time.perf_counter() - t0
        print(f"{mode:7s} k={k}  {args.size}x{args.size}: {args.n / dt:7.1f} compositions/s "
              f"({1000 * dt / args.n:.1f} ms each)")


if __name__ == "__main__":
    main()
