"""Small on-disk fixtures shared by tests (no model libraries)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image


def make_subject_dir(root: Path, name: str, identifier: str, class_noun: str = "toy", n: int = 3,
                     size=(96, 80), color=(200, 30, 30), descriptive_class: str | None = None,
                     with_masks: bool = True) -> Path:
    """A native subject folder with ``n`` synthetic photos (a coloured rectangle on noise) and masks."""
    d = root / name
    (d / "masks").mkdir(parents=True, exist_ok=True)
    w, h = size
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    for i in range(n):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), bool)
        mask[10 + i:h - 10, 15:w - 15 - i] = True
        img[mask] = color
        Image.fromarray(img).save(d / f"{i:02d}.png")
        if with_masks:
            Image.fromarray(mask.astype(np.uint8) * 255).save(d / "masks" / f"{i:02d}.png")
    meta = {"name": name, "identifier": identifier, "class_noun": class_noun}
    if descriptive_class:
        meta["descriptive_class"] = descriptive_class
    (d / "subject.yaml").write_text(yaml.safe_dump(meta))
    return d
