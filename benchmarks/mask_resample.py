"""How far mudi's pasted Seg-Mix masks are from the authors': their `mask.resize(size)` (PIL's default filter,
bicubic, from the full-size cropped mask) vs mudi's bilinear antialiased resize from a cached pyramid
(`Cutout.resized_pil`), both thresholded at 122. Prints the differing pixels as a share of the mask's area and
of its boundary, over the bundled subjects' masks at 30, 50 and 80 % scale (docs/differences.md).

    python benchmarks/mask_resample.py
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np
from PIL import Image

from mudi.data.subjects import load_subjects


def main() -> None:
    samples = Path(str(files("mudi") / "samples"))
    subjects = load_subjects([samples / "dog6", samples / "cat2", samples / "dog2"])
    of_area, of_boundary = [], []
    for s in subjects:
        for c in s.cutouts(max_side=1024):
            H, W = c.size_hw
            for f in (0.3, 0.5, 0.8):
                h, w = max(1, int(H * f)), max(1, int(W * f))
                ours = np.asarray(c.resized_pil((h, w), 122)[1]) > 0
                theirs = np.asarray(Image.fromarray(c.mask.astype(np.uint8) * 255).resize((w, h))) > 122
                diff = int((ours != theirs).sum())
                boundary = int((theirs ^ np.roll(theirs, 1, 0)).sum() + (theirs ^ np.roll(theirs, 1, 1)).sum())
                of_area.append(diff / max(1, int(theirs.sum())))
                of_boundary.append(diff / max(1, boundary))
    print(f"{len(of_area)} resizes: differing pixels / mask area mean {np.mean(of_area):.4f} max {np.max(of_area):.4f}; "
          f"/ boundary pixels mean {np.mean(of_boundary):.3f} max {np.max(of_boundary):.3f}")


if __name__ == "__main__":
    main()
