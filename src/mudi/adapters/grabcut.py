"""GrabCut (OpenCV) behind :class:`Segmenter`: subject masks offline, with no weights at all.

GrabCut (Rother et al., 2004) fits two colour mixtures, subject and background, and cuts the image graph
between them. It needs an initialisation: the detector's box when there is one (``owlv2+grabcut``). Without
a box (``grabcut`` alone) uniform bars along the photo's sides (letterboxing) are cropped first, then it
makes several initialisations and keeps the most convincing result:

- a *border-saliency* initialisation (:func:`~mudi.adapters.grabcut_cues.border_saliency_labels`); it finds
  subjects that do not fill the frame, wherever they are;
- rectangles inset from the image border (4 % and 10 %); they find subjects that fill the frame and touch
  several borders, where the saliency has no background to measure from;
- a ground-prior rectangle (10 % from the sides and top, 20 % from the bottom) for subjects standing on a
  floor or table;
- optionally (``use_focus``, off by default) a *focus* initialisation
  (:func:`~mudi.adapters.grabcut_cues.focus_saliency_labels`).

Each cut is cleaned (largest component, holes filled), then cut again from its own mask
(:func:`~mudi.adapters.grabcut_cues.ring_labels`) and cleaned. One photo alone keeps the mask that best
separates the colours (:func:`~mudi.adapters.grabcut_cues.choose_cut`). A subject's photos together
(:meth:`GrabCutSegmenter.segment_group`, what ``mudi segment`` uses) add to that each mask's colour agreement
with the subject's other photos and its user masks (:func:`~mudi.adapters.grabcut_cues.choose_cuts_jointly`).
The cues themselves live in :mod:`mudi.adapters.grabcut_cues`, the settings in
:class:`~mudi.adapters.grabcut_params.GrabCutParams`.

Photos are cut at a bounded working resolution (longer side ``max_side``); the chosen mask is then refined
once at ``refine_max_side`` (coarse to fine: a ring-seeded cut around the upsampled mask) and upsampled to
the original size edge-aware (:func:`~mudi.adapters.grabcut_cues.guided_upsample`), so a 3000x3600 phone
photo costs about the same as a 512x512 one. ``cv2.grabCut`` takes no random generator (its colour mixtures
start from k-means on OpenCV's thread RNG), so every cut reseeds that RNG with ``seed``: the same photo
always gives the same mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mudi.adapters.grabcut_cues import (
    border_saliency_labels,
    box_labels,
    choose_cut,
    choose_cuts_jointly,
    content_box,
    focus_saliency_labels,
    guided_upsample,
    pad_box,
    ring_labels,
)
from mudi.adapters.grabcut_params import GrabCutParams
from mudi.adapters.mask_cleanup import clean_mask
from mudi.errors import MudiError

__all__ = ["GrabCutParams", "GrabCutSegmenter"]

BoxXYXY = tuple[float, float, float, float]


@dataclass
class _Work:
    """One photo prepared for cutting: the original, the crop without bars (``(x0, y0, x1, y1)`` in its
    pixels), the working scale and the crop at the working size (RGB; BGR and Lab computed once)."""

    image: np.ndarray
    crop: tuple[int, int, int, int]
    scale: float
    small: np.ndarray
    _bgr: np.ndarray | None = field(default=None, repr=False)
    _lab: np.ndarray | None = field(default=None, repr=False)

    @property
    def bgr(self) -> np.ndarray:
        if self._bgr is None:
            self._bgr = np.ascontiguousarray(self.small[..., ::-1])
        return self._bgr

    @property
    def lab(self) -> np.ndarray:
        import cv2

        if self._lab is None:
            self._lab = cv2.cvtColor(self.small, cv2.COLOR_RGB2LAB)
        return self._lab


class GrabCutSegmenter:
    """Box-prompted (or box-free) GrabCut. ``segment`` returns one ``(H, W)`` bool mask per image.

    ``params``: every setting, validated (:class:`GrabCutParams`); :meth:`build` takes them as keywords.
    """

    def __init__(self, params: GrabCutParams = GrabCutParams()) -> None:
        if not isinstance(params, GrabCutParams):
            raise MudiError(f"GrabCutSegmenter takes a GrabCutParams, got {type(params).__name__}; use "
                            "GrabCutSegmenter(GrabCutParams(max_side=...)) or "
                            "GrabCutSegmenter.build(max_side=...)")
        self.params = params

    @classmethod
    def build(cls, device: Any = None, dtype: Any = None, batch_size: int | None = None,
              **kwargs: Any) -> GrabCutSegmenter:
        """Registry factory: ``kwargs`` are :class:`GrabCutParams` fields (an unknown one is an error).
        GrabCut runs on the CPU in OpenCV, one photo at a time: ``device``, ``dtype`` and ``batch_size`` are
        accepted and unused."""
        return cls(GrabCutParams.from_kwargs(**kwargs))

    def segment(self, images: Sequence[np.ndarray], boxes: Sequence[BoxXYXY | None]) -> list[np.ndarray]:
        """One ``(H, W)`` bool mask per ``(H, W, 3)`` uint8 image, for the object in its box
        (``(x0, y0, x1, y1)`` in original pixels) or, for a ``None`` box, the main object of the image. Each
        image on its own."""
        _check_lengths(images, boxes)
        return [self.segment_one(np.asarray(im), box) for im, box in zip(images, boxes)]

    def segment_group(self, images: Sequence[np.ndarray], boxes: Sequence[BoxXYXY | None],
                      references: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> list[np.ndarray]:
        """Like :meth:`segment`, for photos **of one subject** (a subject's reference photos): box-free
        photos choose among their candidate cuts jointly (:func:`choose_cuts_jointly`), preferring a cut whose
        colours look like a cut of the same subject in the other photos. ``references``: ``(rgb, bool mask)``
        pairs of the same subject with known masks (the user's own), which count as photos already cut right.
        ``mudi segment`` calls this per subject, with the subject's user masks as references."""
        _check_lengths(images, boxes)
        out: list[np.ndarray | None] = [None] * len(images)
        free = []
        for k, (im, box) in enumerate(zip(images, boxes)):
            if box is not None:
                out[k] = self.segment_one(np.asarray(im), box)
            else:
                free.append((k, self._prepare(np.asarray(im))))
        if free:
            cands = [self._box_free_candidates(work) for _, work in free]
            labs = [work.lab for _, work in free]
            for lab, mask in self._references(references):
                labs.append(lab)
                cands.append([mask])
            picks = choose_cuts_jointly(labs, cands, self.params.consensus_weight)
            for (k, work), cand, pick in zip(free, cands, picks):
                out[k] = self._finish(work, cand[pick])
        return out  # type: ignore[return-value]

    def segment_one(self, image: np.ndarray, box_xyxy: BoxXYXY | None) -> np.ndarray:
        """The ``(H, W)`` bool mask of ``image``'s object in ``box_xyxy`` (original pixels) or, for ``None``,
        of its main object."""
        work = self._prepare(image, crop_bars=box_xyxy is None)
        if box_xyxy is not None:
            hw = work.small.shape[:2]
            box = pad_box(tuple(v * work.scale for v in box_xyxy), hw, self.params.box_padding)
            cut = self._cut(work.bgr, box_labels(hw, box))
        else:
            cut = choose_cut(work.lab, self._box_free_candidates(work))
        return self._finish(work, cut)

    def _references(self, references: Sequence[tuple[np.ndarray, np.ndarray]]
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(lab, mask)`` of each non-empty user mask at the working size (histograms only need the
        colours)."""
        import cv2

        out = []
        for rgb, mask in references:
            rgb, mask = np.asarray(rgb), np.asarray(mask, dtype=bool)
            if rgb.shape[:2] != mask.shape:
                raise MudiError(f"segment_group: a reference mask of size {mask.shape} for a "
                                f"{rgb.shape[:2]} photo; give each reference photo its own mask")
            if not mask.any():
                continue
            work = self._prepare(rgb, crop_bars=False)
            h, w = work.small.shape[:2]
            small = cv2.resize(mask.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_AREA) > 127
            out.append((work.lab, small if small.any() else np.ones((h, w), bool)))
        return out

    def _prepare(self, image: np.ndarray, crop_bars: bool = True) -> _Work:
        """The photo at the working size, without uniform bars along its sides (``crop_bars``)."""
        import cv2

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise MudiError(f"GrabCut expects an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        scale = min(1.0, self.params.max_side / max(h, w))
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA) if scale < 1 else image
        crop = (0, 0, w, h)
        if crop_bars and self.params.crop_bars:
            x0, y0, x1, y1 = content_box(small)
            if (x0, y0, x1, y1) != (0, 0, sw, sh):
                small = small[y0:y1, x0:x1]
                crop = (min(w - 1, round(x0 / scale)), min(h - 1, round(y0 / scale)),
                        max(1, min(w, round(x1 / scale))), max(1, min(h, round(y1 / scale))))
        small = np.ascontiguousarray(small)
        return _Work(image, crop, scale, small)

    def _box_free_candidates(self, work: _Work) -> list[np.ndarray]:
        """One cleaned, re-cut mask per box-free initialisation, at the working size."""
        p = self.params
        rgb, bgr = work.small, work.bgr
        h, w = rgb.shape[:2]
        inits = []
        if p.use_saliency:
            inits.append(border_saliency_labels(rgb))
        if p.use_focus:
            x0, y0, x1, y1 = work.crop
            inits.append(focus_saliency_labels(work.image[y0:y1, x0:x1], rgb))
        for left, top, right, bottom in p.border_insets:
            x0, y0 = int(w * left), int(h * top)
            inits.append(box_labels((h, w), (x0, y0, max(w - int(w * right), x0 + 1),
                                             max(h - int(h * bottom), y0 + 1))))
        cuts = []
        for labels in inits:
            cut = clean_mask(self._cut(bgr, labels))
            if p.refine_ring > 0 and cut.any():
                cut = clean_mask(self._cut(bgr, ring_labels(cut, p.refine_ring)))
            cuts.append(cut)
        return cuts

    def _finish(self, work: _Work, cut: np.ndarray) -> np.ndarray:
        """Clean-up, the coarse-to-fine cut and the upsampling of a working-size ``cut`` to the photo."""
        import cv2

        p = self.params
        h, w = work.image.shape[:2]
        x0, y0, x1, y1 = work.crop
        photo = work.image[y0:y1, x0:x1]
        if p.use_cleanup:
            cut = clean_mask(cut)
        if p.refine_max_side > p.max_side and work.scale < 1 and cut.any():
            cut = self._refine_fine(photo, cut)
        ph, pw = photo.shape[:2]
        if cut.shape != (ph, pw):
            if p.guide_max_side > max(cut.shape) and cut.any():
                cut = guided_upsample(cut, photo, p.guide_max_side)
            else:
                cut = cv2.resize(cut.astype(np.uint8) * 255, (pw, ph), interpolation=cv2.INTER_LINEAR) > 127
        if (ph, pw) == (h, w):
            return cut
        full = np.zeros((h, w), bool)
        full[y0:y1, x0:x1] = cut
        return full

    def _refine_fine(self, image: np.ndarray, cut: np.ndarray) -> np.ndarray:
        """Coarse to fine: the working-resolution ``cut`` upsampled to longer side ``refine_max_side`` (at
        most the photo's), and cut again there in a 5 % ring around it (3 iterations)."""
        import cv2

        h, w = image.shape[:2]
        scale = min(1.0, self.params.refine_max_side / max(h, w))
        fw, fh = max(1, round(w * scale)), max(1, round(h * scale))
        fine = cv2.resize(image, (fw, fh), interpolation=cv2.INTER_AREA) if scale < 1 else image
        seed = cv2.resize(cut.astype(np.uint8) * 255, (fw, fh), interpolation=cv2.INTER_LINEAR) > 127
        out = self._cut(np.ascontiguousarray(fine[..., ::-1]), ring_labels(seed, 0.05), num_iterations=3)
        return clean_mask(out) if self.params.use_cleanup else out

    def _cut(self, bgr: np.ndarray, labels: np.ndarray, num_iterations: int | None = None) -> np.ndarray:
        """GrabCut initialised from ``labels`` (``cv2.GC_*`` per pixel); returns the subject's bool mask."""
        import cv2

        h, w = bgr.shape[:2]
        labels = labels.copy()
        has_fg = ((labels == cv2.GC_PR_FGD) | (labels == cv2.GC_FGD)).any()
        has_bg = ((labels == cv2.GC_PR_BGD) | (labels == cv2.GC_BGD)).any()
        if not (has_fg and has_bg) or min(h, w) < 4:
            return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
        bgd_model, fgd_model = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(self.params.seed)
        cv2.grabCut(bgr, labels, None, bgd_model, fgd_model, num_iterations or self.params.num_iterations,
                    cv2.GC_INIT_WITH_MASK)
        return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def _check_lengths(images: Sequence[Any], boxes: Sequence[Any]) -> None:
    if len(images) != len(boxes):
        raise MudiError(f"segment: {len(images)} images but {len(boxes)} boxes; give one box (or None) per "
                        "image")
