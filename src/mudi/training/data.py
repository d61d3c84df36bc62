"""Training samples: single-subject images, Seg-Mix / Cut-Mix compositions, prior images (paper Sec. 4.1;
the authors' released training code).

As the authors sample them: each instance sample starts from one reference image of one subject (its *own*
subject, drawn uniformly); with probability ``composition_prob`` (from ``segmix_start_step`` on) it becomes a
composition of its own subject and 1..K-1 random other subjects (one random image each), captioned with its own
subject first; otherwise it is the image itself with its caption, resized so its short side is the resolution
and cropped (randomly by default, or at the centre), optionally flipped.

Prior samples are coupled to the instance samples: when an instance sample is a composition, its prior sample
is one too — a prior image of the instance subject's class with one of another class (the same class when the
prior set has only one), top-aligned at one ``y`` — captioned with the class names; otherwise one prior image of
that class with its caption.

Each sample carries the mask the loss may weight (``loss_mask``): the union of the composed subjects, or, with
``loss_mask="all"``, a single photo's own subject mask too. With ``buckets`` (``aspect_buckets``,
:mod:`mudi.training.buckets`) a single photo is resized to cover its bucket and cropped to it instead of the
square; compositions stay square. All randomness comes from one
``numpy.random.Generator`` the trainer owns and checkpoints, so the data order resumes exactly.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from mudi.core.prompts import instance_prompt, prior_caption
from mudi.core.segmix import SegMixParams, compose_cutmix, compose_segmix, cutout_max_side
from mudi.data.subjects import Subject
from mudi.errors import MudiError
from mudi.training.buckets import nearest_bucket

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """One training image ``(R, R, 3)`` uint8 (with ``aspect_buckets``, a single photo's bucket ``(h, w, 3)``) with
    its caption.

    ``num_subjects > 1`` for a composition; ``subject``: index of the own subject (instance) or class (prior);
    ``mask``: ``(R, R)`` bool the loss may weight (the composed subjects, or a photo's subject), or None.
    """

    image: np.ndarray
    prompt: str
    num_subjects: int = 1
    subject: int = 0
    mask: np.ndarray | None = None
    boxes_xyxy: list | None = None  # a composition's boxes, in caption order
    cache_key: tuple | None = None  # set when the pixels are the same every time (latent caching)


def resize_short_side(rgb: np.ndarray, resolution: int) -> Image.Image:
    """Resize (bicubic) so the short side is ``resolution``, as diffusers' DreamBooth scripts do."""
    h, w = rgb.shape[:2]
    s = resolution / min(h, w)
    img = Image.fromarray(rgb)
    size = (max(resolution, round(w * s)), max(resolution, round(h * s)))
    return img if size == img.size else img.resize(size, Image.BICUBIC)


def resize_to_cover(rgb: np.ndarray, size_hw: tuple[int, int]) -> Image.Image:
    """Resize (bicubic) so the image just covers ``size_hw`` (the aspect-ratio buckets' rule; for a square size
    it is :func:`resize_short_side`)."""
    h, w = rgb.shape[:2]
    bh, bw = size_hw
    if bh == bw:
        return resize_short_side(rgb, bh)
    s = max(bh / h, bw / w)
    img = Image.fromarray(rgb)
    size = (max(bw, round(w * s)), max(bh, round(h * s)))
    return img if size == img.size else img.resize(size, Image.BICUBIC)


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
                 segmix: SegMixParams = SegMixParams(), is_prior: bool = False, center_crop: bool = False,
                 random_flip: bool = False, loss_mask: str = "segmix",
                 relative_sizes: Sequence[float] | None = None,
                 buckets: Sequence[tuple[int, int]] | None = None) -> None:
        if mode not in ("segmix", "cutmix", "none"):
            raise MudiError(f"composition mode {mode!r} must be segmix, cutmix or none")
        self.subjects = list(subjects)
        self.resolution = resolution
        self.is_prior = is_prior
        # the authors' prior compositions: tops aligned, the instance subject's class on the left
        self.segmix = dataclasses.replace(segmix, align_tops=True, keep_prompt_order=True) if is_prior else segmix
        self.center_crop, self.random_flip, self.loss_mask = center_crop, random_flip, loss_mask
        self.relative_sizes = list(relative_sizes) if relative_sizes else None
        if self.relative_sizes is not None and len(self.relative_sizes) != len(self.subjects):
            raise MudiError(f"{len(self.relative_sizes)} relative sizes for {len(self.subjects)} subjects: give one per "
                            "subject, in --subjects order")
        self.max_composed = max(2, min(max_composed_subjects, len(self.subjects)))
        can_compose = len(self.subjects) >= 2
        if mode != "none" and composition_prob > 0 and not can_compose and not is_prior:
            names = ", ".join(s.name for s in self.subjects) or "none"
            raise MudiError(f"composition mode {mode!r} needs at least 2 subjects, got {len(self.subjects)} "
                            f"({names}); add --subjects or use --composition none")
        self.mode = mode
        self.composition_prob = composition_prob if mode != "none" else 0.0
        self._resized: dict[tuple, tuple[Image.Image, Image.Image | None]] = {}
        self._raw: dict[tuple[int, int], np.ndarray] = {}
        self._side = cutout_max_side((resolution, resolution), self.segmix) if mode == "segmix" else resolution
        if mode == "segmix" or loss_mask == "all":
            for s in self.subjects:
                s.cutouts(max_side=max(self._side, 64))  # fail now on a missing mask, not at step 300
        self.buckets = [tuple(b) for b in buckets] if buckets else None
        self.photo_bucket: dict[tuple[int, int], tuple[int, int]] = {}  # (subject, photo) -> its bucket (h, w)
        self.bucket_members: dict[tuple[int, int], list[tuple[int, int]]] = {}
        if self.buckets:  # mudi.training.buckets: each photo at the bucket nearest its aspect
            for si, s in enumerate(self.subjects):
                for ii in range(len(s.images)):
                    b = nearest_bucket(s.load(ii)[0].shape[:2], self.buckets)
                    self.photo_bucket[(si, ii)] = b
                    self.bucket_members.setdefault(b, []).append((si, ii))

    # ---------------------------------------------------------------------------------------------- photos
    def _load_resized(self, si: int, ii: int, size_hw: tuple[int, int] | None = None,
                      ) -> tuple[Image.Image, Image.Image | None]:
        key = (si, ii) if size_hw is None else (si, ii, size_hw)
        if key not in self._resized:
            rgb, mask = self.subjects[si].load(ii)
            img = resize_short_side(rgb, self.resolution) if size_hw is None else resize_to_cover(rgb, size_hw)
            m = None
            if self.loss_mask == "all" and mask is not None:
                m = Image.fromarray(mask.astype(np.uint8) * 255).resize(img.size, Image.BILINEAR)
            self._resized[key] = (img, m)
        return self._resized[key]

    def is_fixed(self, si: int, ii: int, size_hw: tuple[int, int] | None = None) -> bool:
        """Whether photo ``ii`` of subject ``si`` gives the same pixels at every draw (centre crop, or a photo
        that is the training size once resized, and no flip): then its latents can be cached exactly."""
        if self.random_flip:
            return False
        img, _ = self._load_resized(si, ii, size_hw)
        h, w = size_hw or (self.resolution, self.resolution)
        return self.center_crop or img.size == (w, h)

    def _cache_key(self, si: int, ii: int, size_hw: tuple[int, int] | None) -> tuple | None:
        if not self.is_fixed(si, ii, size_hw):
            return None
        return (self.is_prior, si, ii) if size_hw is None else (self.is_prior, si, ii, size_hw)

    def fixed_photos(self) -> list[tuple[tuple, np.ndarray]]:
        """``(cache key, image)`` of every photo :meth:`is_fixed` (what a latent cache encodes at start-up)."""
        out = []
        rng = np.random.default_rng(0)  # unused by fixed photos
        for si, s in enumerate(self.subjects):
            for ii in range(len(s.images)):
                hw = self.photo_bucket.get((si, ii))
                if self.is_fixed(si, ii, hw):
                    out.append((self._cache_key(si, ii, hw), self._photo(si, ii, rng, hw)[0]))
        return out

    def _photo(self, si: int, ii: int, rng: np.random.Generator, size_hw: tuple[int, int] | None = None,
               ) -> tuple[np.ndarray, np.ndarray | None]:
        """One reference photo at the resolution (or at bucket ``size_hw``): resized to cover it, cropped (random
        or centre), maybe flipped; with its subject mask cropped alike when the loss needs it."""
        img, m = self._load_resized(si, ii, size_hw)
        RH, RW = size_hw or (self.resolution, self.resolution)
        W, H = img.size
        if self.center_crop:
            x0, y0 = (W - RW) // 2, (H - RH) // 2
        else:
            x0, y0 = int(rng.integers(0, W - RW + 1)), int(rng.integers(0, H - RH + 1))
        flip = self.random_flip and rng.random() < 0.5
        out = np.asarray(img.crop((x0, y0, x0 + RW, y0 + RH)))
        mask_out = np.asarray(m.crop((x0, y0, x0 + RW, y0 + RH))) >= 128 if m is not None else None
        if flip:
            out = out[:, ::-1]
            mask_out = mask_out[:, ::-1] if mask_out is not None else None
        return np.ascontiguousarray(out), mask_out

    def _full(self, si: int, ii: int) -> np.ndarray:
        if (si, ii) not in self._raw:
            self._raw[(si, ii)] = self.subjects[si].load(ii)[0]
        return self._raw[(si, ii)]

    def _caption(self, subject: Subject, ii: int) -> str:
        cap = subject.images[ii].caption
        if cap:
            return cap
        return prior_caption(subject.class_name) if self.is_prior else instance_prompt(subject.phrase)

    # ---------------------------------------------------------------------------------------------- drawing
    def draw(self, rng: np.random.Generator, allow_compose: bool = True) -> Sample:
        """One instance sample: its own subject drawn uniformly, composed with probability ``composition_prob``."""
        si = int(rng.integers(len(self.subjects)))
        compose = allow_compose and self.composition_prob > 0 and rng.random() < self.composition_prob
        return self.compose(rng, si) if compose else self.single(rng, si)

    def single(self, rng: np.random.Generator, si: int, size_hw: tuple[int, int] | None = None,
               ii: int | None = None) -> Sample:
        """One photo of subject ``si`` (photo ``ii``, default: drawn) with its caption; with buckets, at
        ``size_hw`` (default: the photo's own bucket)."""
        if ii is None:
            ii = int(rng.integers(len(self.subjects[si].images)))
        if self.buckets and size_hw is None:
            size_hw = self.photo_bucket[(si, ii)]
        if size_hw is not None and not self.buckets:
            raise MudiError("a training size per sample needs aspect buckets (SampleSource(buckets=...))")
        image, mask = self._photo(si, ii, rng, size_hw)
        return Sample(image, self._caption(self.subjects[si], ii), 1, si, mask,
                      cache_key=self._cache_key(si, ii, size_hw))

    def compose(self, rng: np.random.Generator, si: int, other: int | None = None) -> Sample:
        """Subject ``si`` (first in the caption) composed with random others (``other``: that one)."""
        if other is not None:
            chosen = [si, other]
        else:
            n = int(rng.integers(2, self.max_composed + 1))
            rest = [i for i in range(len(self.subjects)) if i != si]
            chosen = [si] + [int(i) for i in rng.choice(rest, size=n - 1, replace=False)]
        phrases = [self.subjects[i].class_name if self.is_prior else self.subjects[i].phrase for i in chosen]
        size = (self.resolution, self.resolution)
        if self.mode == "cutmix":
            images = [self._full(i, int(rng.integers(len(self.subjects[i].images)))) for i in chosen]
            comp = compose_cutmix(images, phrases, size, rng)
        else:
            cutouts = []
            for i in chosen:
                cs = self.subjects[i].cutouts(max_side=max(self._side, 64))
                cutouts.append(cs[int(rng.integers(len(cs)))])
            params = self.segmix
            if self.relative_sizes is not None:  # Appendix C.1: fixed relative sizes per subject
                params = dataclasses.replace(params, relative_sizes=tuple(self.relative_sizes[i] for i in chosen))
            comp = compose_segmix(cutouts, phrases, size, rng, params)
        return Sample(comp.image, comp.prompt, len(chosen), si, comp.union_mask, list(comp.boxes_xyxy))

    def draw_prior(self, rng: np.random.Generator, instance: Sample, instance_class: str) -> Sample:
        """The prior sample coupled to ``instance``: of the instance subject's class, composed when it is."""
        names = [s.class_name.lower() for s in self.subjects]
        ci = names.index(instance_class.lower()) if instance_class.lower() in names else \
            int(rng.integers(len(self.subjects)))
        if instance.num_subjects == 1 or self.mode == "none":  # with buckets: at the instance sample's size
            return self.single(rng, ci, tuple(instance.image.shape[:2]) if self.buckets else None)
        others = [i for i in range(len(self.subjects)) if i != ci]
        other = int(rng.choice(others)) if others else ci
        return self.compose(rng, ci, other)

    def class_names(self) -> list[str]:
        return [s.class_name for s in self.subjects]


def to_pixels(samples: Sequence[Sample]) -> torch.Tensor:
    """``(B, 3, R, R)`` float32 tensor in [-1, 1]."""
    arr = np.stack([s.image for s in samples]).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
