"""How much the D&C score moves when the detector and the embedder run in half precision instead of float32.

The authors score in float32; ``mudi evaluate`` does too by default (``dtype: float32``), and a faster dtype is
an option. This script measures, side by side on the same images and models, what the option changes:

- detection: every patch score of OWLv2 in float32 and in the other dtype, ``max |Δ score|``, and how many
  images change their *count* of boxes above a threshold set where the float32 model finds two boxes per image
  on average (a count change turns a D&C score into 0);
- D&C: the score with fixed boxes (two per image) and the embedder in float32 vs the other dtype, ``|Δ score|``.

Default: tiny random OWLv2 + DINOv2 from configs (the only models available offline), so the numbers say how
large the rounding effect is on these architectures, not on the real checkpoints; ``--real`` loads
``google/owlv2-base-patch16-ensemble`` and ``facebook/dinov2-base`` from the local cache (then the threshold is
the authors' 0.4).

    python benchmarks/dnc_dtype.py [--n 40] [--dtype bfloat16] [--real] [--device cpu]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from mudi.adapters.base import Detection
from mudi.scoring.evaluator import DncEvaluator
from mudi.scoring.folder import load_reference_subjects

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "mudi-benchmark" / "dnc-examples"


class FixedBoxes:
    """Two fixed boxes per image (left and right half), as a two-subject image would have."""

    def detect(self, images, queries, threshold):
        out = []
        for im in images:
            h, w = im.shape[:2]
            out.append([Detection((0.0, h / 4, w / 2, 3 * h / 4), 0.9, 0, queries[0][0]),
                        Detection((w / 2, h / 4, float(w), 3 * h / 4), 0.8, 0, queries[0][0])])
        return out


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` crops (random position and size, some flipped) of the D&C example photos."""
    from mudi.data.images import list_images, read_image

    src = [read_image(p)[0] for p in list_images(EXAMPLES / "images")]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        im = src[i % len(src)]
        h, w = im.shape[:2]
        s = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crop = im[y:y + s, x:x + s]
        out.append(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop))
    return out


def _patch_scores(det, images, queries) -> list[np.ndarray]:
    """Every box's score at threshold 0 (no NMS), sorted, per image."""
    found = det.detect(images, [queries] * len(images), 0.0)
    return [np.sort(np.array([d.score for d in f], dtype=np.float64))[::-1] for f in found]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--real", action="store_true")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from mudi.adapters.dinov2 import Dinov2Embedder
    from mudi.adapters.owlv2 import Owlv2Detector

    refs = EXAMPLES / "references"
    subjects = load_reference_subjects([str(refs / "monster_toy"), str(refs / "robot_toy")], ["toy", "toy"])
    queries = ["monster toy", "robot toy"]
    images = _images(args.n)
    half = getattr(torch, args.dtype)

    def detector(dtype):
        if args.real:
            return Owlv2Detector.from_pretrained(device=args.device, dtype=dtype, nms_iou=None)
        return Owlv2Detector.build_tiny(device=args.device, dtype=dtype, nms_iou=None)

    def embedder(dtype):
        if args.real:
            return Dinov2Embedder.from_pretrained(device=args.device, dtype=dtype)
        return Dinov2Embedder.build_tiny(device=args.device, dtype=dtype)

    s32, s16 = _patch_scores(detector(torch.float32), images, queries), _patch_scores(detector(half), images, queries)
    delta = max(float(np.abs(a[:len(b)] - b[:len(a)]).max()) for a, b in zip(s32, s16))
    # at the authors' 0.4 and beside it: on how many images the number of boxes above it changes
    thresholds = (0.4,) if args.real else (0.25, 0.4, 0.5, 0.75)
    changed = {t: sum(int((a > t).sum()) != int((b > t).sum()) for a, b in zip(s32, s16)) for t in thresholds}
    flips = {t: sum(int(((a[:len(b)] > t) != (b[:len(a)] > t)).sum()) for a, b in zip(s32, s16)) for t in thresholds}
    mean_boxes = {t: float(np.mean([(a > t).sum() for a in s32])) for t in thresholds}

    scores = {}
    for name, dtype in (("float32", torch.float32), (args.dtype, half)):
        ev = DncEvaluator(subjects, FixedBoxes(), {"dnc_dino": embedder(dtype)}, batch_size=8)
        scores[name] = np.array([r.dnc["dnc_dino"]["score"] for r in ev.score_images(images)])
    d = np.abs(scores["float32"] - scores[args.dtype])
    models = "OWLv2-base + DINOv2-base" if args.real else "tiny random OWLv2 + DINOv2"
    print(f"D&C in float32 vs {args.dtype}: {models}, {len(images)} crops of the dnc-examples photos, {args.device}")
    print(f"  detection: max |Δ patch score| {delta:.2e} over {sum(a.size for a in s32)} patch scores")
    for t in thresholds:
        print(f"    threshold {t}: box count changed on {changed[t]}/{len(images)} images ({flips[t]} sorted scores "
              f"crossed it; float32 finds {mean_boxes[t]:.1f} boxes per image)")
    print(f"  D&C-DINO (fixed boxes): |Δ score| mean {d.mean():.2e}, max {d.max():.2e} "
          f"(scores {scores['float32'].min():.3f} .. {scores['float32'].max():.3f})")


if __name__ == "__main__":
    main()
