"""Training samples: single-subject images, Seg-Mix / Cut-Mix compositions, prior images (paper Sec. 4.1).

With probability ``composition_prob`` a sample is a composition of 2..``max_composed_subjects`` distinct
subjects (Seg-Mix: segmented cutouts on a plain background, Algorithm 1; Cut-Mix: whole images in strips)
captioned with the composition prompt; otherwise one reference image with its own caption, or the template
``"A photo of <identifier> <descriptive class>."``. Prior batches are drawn the same way from the prior
(class) set, so they are Seg-Mixed with the same probability when it holds two or more classes.

All randomness comes from one ``numpy.random.Generator`` the trainer owns and checkpoints, so the data
order resumes exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mudi.core.prompts import instance_prompt, prior_prompt
from mudi.core.segmix import SegMixParams, compose_cutmix, compose_segmix
from mudi.data.subjects import Subject
from mudi.errors import MudiError


@dataclass
class Sample:
    """One training image ``(R, R, 3)`` uint8 with its caption; ``num_subjects > 1`` for a composition."""

    image: np.ndarray
    prompt: str
    num_subjects: int = 1


def square_resize(rgb: np.ndarray, resolution: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``resolution`` (bicubic), as DreamBooth's ``center_crop``."""
    h, w = rgb.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    img = Image.fromarray(rgb[y0:y0 + s, x0:x0 + s])
    if s != resolution:
        img = img.resize((resolution, resolution), Image.BICUBIC)
    return np.asarray(img)


class SampleSource:
    """Draws :class:`Sample` s from a list of subjects (the instance set, or the prior set)."""

    def __init__(self, subjects: Sequence[Subject], resolution: int, mode: str = "segmix",
                 composition_prob: float = 0.3, max_composed_subjects: int = 2,
                 segmix: SegMixParams = SegMixParams(), is_prior: bool = False) -> None:
        if mode not in ("segmix", "cutmix", "none"):
            raise MudiError(f"composition mode {mode!r} must be segmix, cutmix or none")
        self.subjects = list(subjects)
        self.resolution = resolution
        self.is_prior = is_prior
        self.segmix = segmix
        self.max_composed = max(2, min(max_composed_subjects, len(self.subjects)))
        can_compose = len(self.subjects) >= 2
        if mode != "none" and composition_prob > 0 and not can_compose and not is_prior:
            names = ", ".join(s.name for s in self.subjects) or "none"
            raise MudiError(f"composition mode {mode!r} needs at least 2 subjects, got {len(self.subjects)} "
                            f"({names}); add --subjects or use --composition none")
        # a prior set with a single class cannot be composed: its prior batches stay single-subject
        self.mode = mode if can_compose else "none"
        self.composition_prob = composition_prob if self.mode != "none" else 0.0
        self._images: dict[tuple[int, int], np.ndarray] = {}
        if self.mode == "segmix":
            for s in self.subjects:
                s.cutouts(max_side=max(resolution, 64))  # fail now on a missing mask, not at step 300

    def _image(self, si: int, ii: int) -> np.ndarray:
        key = (si, ii)
        if key not in self._images:
            self._images[key] = square_resize(self.subjects[si].load(ii)[0], self.resolution)
        return self._images[key]

    def _raw(self, si: int, ii: int) -> np.ndarray:
        key = (-1 - si, ii)
        if key not in self._images:
            self._images[key] = self.subjects[si].load(ii)[0]
        return self._images[key]

    def _caption(self, subject: Subject, ii: int) -> str:
        cap = subject.images[ii].caption
        if cap:
            return cap
        return prior_prompt(subject.class_name) if self.is_prior else instance_prompt(subject.phrase)

    def draw(self, rng: np.random.Generator) -> Sample:
        """One sample; the number of draws from ``rng`` depends only on ``rng``'s state."""
        compose = self.composition_prob > 0 and rng.random() < self.composition_prob
        if not compose:
            si = int(rng.integers(len(self.subjects)))
            ii = int(rng.integers(len(self.subjects[si].images)))
            return Sample(self._image(si, ii), self._caption(self.subjects[si], ii), 1)
        n = int(rng.integers(2, self.max_composed + 1))
        chosen = [int(i) for i in rng.choice(len(self.subjects), size=n, replace=False)]
        phrases = [self.subjects[i].class_name if self.is_prior else self.subjects[i].phrase for i in chosen]
        size = (self.resolution, self.resolution)
        if self.mode == "segmix":
            cutouts = []
            for i in chosen:
                cs = self.subjects[i].cutouts(max_side=max(self.resolution, 64))
                cutouts.append(cs[int(rng.integers(len(cs)))])
            comp = compose_segmix(cutouts, phrases, size, rng, self.segmix)
        else:
            images = [self._raw(i, int(rng.integers(len(self.subjects[i].images)))) for i in chosen]
            comp = compose_cutmix(images, phrases, size, rng)
        return Sample(comp.image, comp.prompt, n)


def to_pixels(samples: Sequence[Sample]):
    """``(B, 3, R, R)`` float32 tensor in [-1, 1]."""
    import torch

    arr = np.stack([s.image for s in samples]).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
