"""Images/s of the D&C scoring path (detection + crop embedding + score), batched vs one image at a time,
with OWLv2's own image processor vs the adapter's fast torch preprocessing (``use_fast_preprocess``).

Side by side in one run, same images, same models, same thread count. Images are decoded beforehand
(decoding is not part of the scoring path). Default: tiny random OWLv2 + DINOv2 built from configs (the only
models available offline); ``--real`` loads ``google/owlv2-base-patch16-ensemble`` and
``facebook/dinov2-base`` from the local Hugging Face cache.

A random tiny OWLv2 rarely finds anything above the threshold, which would leave the embedding stage idle;
so by default its forward pass runs on every image (its cost is measured) but its boxes are replaced by two
fixed boxes per image, as a real two-subject image would have. ``--real`` uses the real boxes.

    python benchmarks/dnc_speed.py [--n 32] [--batch-size 8] [--threads 1] [--real] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mudi.adapters.base import Detection
from mudi.scoring.evaluator import DncEvaluator
from mudi.scoring.folder import load_reference_subjects

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "mudi-benchmark" / "dnc-examples"


class FixedBoxes:
    """Runs a real detector (for its cost) but returns two fixed boxes per image."""

    def __init__(self, detector):
        self.detector = detector

    def detect(self, images, queries, threshold):
        self.detector.detect(images, queries, threshold)
        out = []
        for im in images:
            h, w = im.shape[:2]
            out.append([Detection((0.0, h / 4, w / 2, 3 * h / 4), 0.9, 0, queries[0][0]),
                        Detection((w / 2, h / 4, float(w), 3 * h / 4), 0.8, 0, queries[0][0])])
        return out


def _images(n: int) -> tuple[list[np.ndarray], str]:
    from mudi.data.images import list_images, read_image

    if EXAMPLES.is_dir():
        src = [read_image(p)[0] for p in list_images(EXAMPLES / "images")]
        return [src[i % len(src)] for i in range(n)], "dnc-examples photos (1024x1024)"
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(n)], "random 512x512 images"


def _timed(evaluator: DncEvaluator, images: list[np.ndarray], repeats: int) -> float:
    evaluator.score_images(images[: evaluator.batch_size])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        evaluator.score_images(images)
        best = min(best, time.perf_counter() - t)
    return len(images) / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--real", action="store_true")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from mudi.adapters.dinov2 import Dinov2Embedder
    from mudi.adapters.owlv2 import Owlv2Detector

    if EXAMPLES.is_dir():
        refs = EXAMPLES / "references"
        subjects = load_reference_subjects([str(refs / "monster_toy"), str(refs / "robot_toy")], ["toy", "toy"])
    else:
        raise SystemExit(f"needs the reference photos in {EXAMPLES}")
    images, what = _images(args.n)
    rates = {}
    for fast in (False, True):
        for bs in (1, args.batch_size):
            if args.real:
                det = Owlv2Detector.from_pretrained(device=args.device, batch_size=bs, use_fast_preprocess=fast)
                emb = Dinov2Embedder.from_pretrained(device=args.device, batch_size=2 * bs)
            else:
                det = FixedBoxes(Owlv2Detector.build_tiny(device=args.device, batch_size=bs,
                                                          use_fast_preprocess=fast))
                emb = Dinov2Embedder.build_tiny(device=args.device, batch_size=2 * bs)
            ev = DncEvaluator(subjects, det, {"dnc_dino": emb}, batch_size=bs)
            rates[fast, bs] = _timed(ev, images, args.repeats)
    models = "OWLv2-base + DINOv2-base" if args.real else "tiny OWLv2 + tiny DINOv2 (fixed boxes)"
    print(f"D&C scoring path, {models}, {what}, {args.n} images, {args.threads} thread(s), {args.device}")
    print(f"  {'images/s':22s} {'processor':>10s} {'fast':>10s} {'fast/processor':>15s}")
    for bs in (1, args.batch_size):
        label = "one image at a time" if bs == 1 else f"batches of {bs}"
        print(f"  {label:22s} {rates[False, bs]:10.2f} {rates[True, bs]:10.2f} {rates[True, bs] / rates[False, bs]:14.2f}x")
    print(f"  batched / one-by-one : processor {rates[False, args.batch_size] / rates[False, 1]:.2f}x, "
          f"fast {rates[True, args.batch_size] / rates[True, 1]:.2f}x")


if __name__ == "__main__":
    main()
