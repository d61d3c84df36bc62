"""GrabCut (OpenCV) behind :class:`Segmenter`: subject masks offline, with no weights at all.

GrabCut (Rother et al., 2004) fits two colour mixtures, subject and background, and cuts the image graph
between them. It needs an initialisation: the detector's box when there is one (``owlv2+grabcut``). Without
a box (``grabcut`` alone) uniform bars along the photo's sides (letterboxing) are cropped first, then it
makes several initialisations and keeps the most convincing result:

- a *border-saliency* initialisation: the geodesic colour distance of each pixel to the image border
  (background prior of Wei et al., ECCV 2012, on a 64 px grid), Otsu-thresholded into probable subject /
  probable background, with the least salient pixels as definite background; it finds subjects that do
  not fill the frame, wherever they are;
- rectangles inset from the image border (4 % and 10 %); they find subjects that fill the frame and touch
  several borders, where the saliency has no background to measure from;
- a ground-prior rectangle (10 % from the sides and top, 20 % from the bottom) for subjects standing on a
  floor or table.

An optional further initialisation (``use_focus``, off by default) adds a *focus* cue: reference photos are
often shot with the subject in focus before a blurred background, so :func:`focus_map` (local energy of the
grey image minus its Gaussian blur) times the border saliency, Otsu-thresholded, seeds one more cut. On the
benchmark photos it does not help (phone photos keep the background sharp; docs/segment.md has the figures).

Each cut is cleaned (largest component, holes filled), then cut again from its own mask (the mask probably
subject, a ring around it probably background, the rest background: the colour models now come from the
first cut's regions rather than from a rectangle) and cleaned. One photo alone keeps the mask that best
separates the colours (one minus the Bhattacharyya coefficient of the inside / outside colour histograms,
Lab, 8x8x8 bins). A subject's photos together (:meth:`GrabCutSegmenter.segment_group`, what ``mudi segment``
uses) add to that each mask's colour agreement with the subject's other photos and its user masks
(:func:`choose_cuts_jointly`): the subject looks alike in all of them, a window or a patch of floor does not.

Photos are cut at a bounded working resolution (longer side ``max_side``); the chosen mask is then refined
once at ``refine_max_side`` (coarse to fine: a ring-seeded cut around the upsampled mask) and upsampled to
the original size edge-aware (:func:`guided_upsample`), so a 3000x3600 phone photo costs about the same as a
512x512 one. ``cv2.grabCut`` takes no random generator (its colour mixtures start from k-means on OpenCV's
thread RNG), so every cut reseeds that RNG with ``seed``: the same photo always gives the same mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mudi.adapters.mask_cleanup import clean_mask
from mudi.errors import MudiError


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


def _sides(inset: float | Sequence[float]) -> tuple[float, float, float, float]:
    """A border inset as ``(left, top, right, bottom)`` fractions (one number: the same on every side)."""
    if isinstance(inset, (int, float)):
        return (float(inset),) * 4
    sides = tuple(float(v) for v in inset)
    if len(sides) != 4:
        raise ValueError(inset)
    return sides  # type: ignore[return-value]


class GrabCutSegmenter:
    """Box-prompted (or box-free) GrabCut. ``segment`` returns one ``(H, W)`` bool mask per image.

    Args:
        max_side: longer side of the working resolution (pixels).
        num_iterations: GrabCut iterations per cut.
        box_padding: the detector box is grown by this fraction of its size on each side (0: OWLv2 boxes are
            tight; on the benchmark photos any padding lowers the IoU, see docs/segment.md).
        border_insets: without a box, one rectangle initialisation per value, treating this fraction of each
            image side as background (besides the border-saliency initialisation); a value is one fraction for
            every side or four, ``(left, top, right, bottom)``. The default's third, 20 % at the bottom, is a
            ground prior: a subject standing on a floor or table has it along the bottom of the photo.
        use_saliency: without a box, also try the border-saliency initialisation.
        use_focus: without a box, also try the focus initialisation (:func:`focus_saliency_labels`); off by
            default: no gain on the benchmark photos (third round: mean IoU 0.827 either way) at 15 % more time.
        use_cleanup: keep the largest connected component and fill holes.
        refine_ring: without a box, every initialisation's cut is cut again from its own mask with a ring
            of this fraction of the longer side as probable background (0: no second cut).
        refine_max_side: longer side of the final coarse-to-fine cut around the chosen mask (ring 5 %,
            3 iterations); 0, or not above ``max_side``, skips it.
        crop_bars: without a box, cut uniform bars along the photo's sides (letterboxing, padding to a square)
            away first (:func:`content_box`); they count as background.
        consensus_weight: in :meth:`segment_group`, the weight of the colour agreement with the other photos
            against the photo's own colour separation (:func:`choose_cuts_jointly`); 0 chooses per photo.
        guide_max_side: the final mask is upsampled edge-aware (:func:`guided_upsample`, guided by the photo at
            longer side at most this) instead of bilinearly; 0, or not above the mask's size, turns it off.
        seed: OpenCV RNG seed set before every cut (``cv2.grabCut`` has no generator argument).
    """

    def __init__(self, max_side: int = 256, num_iterations: int = 5, box_padding: float = 0.0,
                 border_insets: Sequence[float | Sequence[float]] = (0.04, 0.10, (0.10, 0.10, 0.10, 0.20)),
                 use_saliency: bool = True,
                 use_focus: bool = False, use_cleanup: bool = True, refine_ring: float = 0.10, refine_max_side: int = 512,
                 crop_bars: bool = True, consensus_weight: float = 2.0, guide_max_side: int = 1024,
                 seed: int = 0) -> None:
        if max_side < 32:
            raise MudiError(f"GrabCutSegmenter max_side must be >= 32 pixels, got {max_side}")
        if num_iterations < 1:
            raise MudiError(f"GrabCutSegmenter num_iterations must be >= 1, got {num_iterations}")
        try:
            border_insets = tuple(_sides(v) for v in border_insets)
        except (TypeError, ValueError):
            raise MudiError("GrabCutSegmenter border_insets: each is a fraction or four (left, top, right, "
                            f"bottom), got {list(border_insets)}") from None
        if any(not 0.0 <= v < 0.5 for sides in border_insets for v in sides):
            raise MudiError(f"GrabCutSegmenter border_insets must be in [0, 0.5), got {list(border_insets)}")
        if not border_insets and not use_saliency and not use_focus:
            raise MudiError("GrabCutSegmenter needs a box-free initialisation: give border_insets, use_saliency "
                            "or use_focus")
        if box_padding < 0:
            raise MudiError(f"GrabCutSegmenter box_padding must be >= 0, got {box_padding}")
        if not 0.0 <= refine_ring < 0.5:
            raise MudiError(f"GrabCutSegmenter refine_ring must be in [0, 0.5), got {refine_ring}")
        if refine_max_side < 0:
            raise MudiError(f"GrabCutSegmenter refine_max_side must be >= 0 (0: off), got {refine_max_side}")
        if consensus_weight < 0:
            raise MudiError(f"GrabCutSegmenter consensus_weight must be >= 0, got {consensus_weight}")
        if guide_max_side < 0:
            raise MudiError(f"GrabCutSegmenter guide_max_side must be >= 0 (0: off), got {guide_max_side}")
        self.guide_max_side = int(guide_max_side)
        self.crop_bars = bool(crop_bars)
        self.consensus_weight = float(consensus_weight)
        self.refine_ring = float(refine_ring)
        self.refine_max_side = int(refine_max_side)
        self.seed = int(seed)
        self.max_side = max_side
        self.num_iterations = num_iterations
        self.box_padding = box_padding
        self.border_insets = border_insets
        self.use_saliency = use_saliency
        self.use_focus = bool(use_focus)
        self.use_cleanup = use_cleanup

    @classmethod
    def build(cls, device: Any = None, dtype: Any = None, **kwargs: Any) -> GrabCutSegmenter:
        """Registry factory: GrabCut runs on the CPU in OpenCV; ``device``/``dtype`` are accepted and unused."""
        return cls(**kwargs)

    def segment(self, images: Sequence[np.ndarray],
                boxes: Sequence[tuple[float, float, float, float] | None]) -> list[np.ndarray]:
        """One ``(H, W)`` bool mask per ``(H, W, 3)`` uint8 image, for the object in its box (``(x0, y0, x1, y1)``
        in original pixels) or, for a ``None`` box, the main object of the image. Each image on its own."""
        self._check_lengths(images, boxes)
        return [self.segment_one(np.asarray(im), box) for im, box in zip(images, boxes)]

    def segment_group(self, images: Sequence[np.ndarray],
                      boxes: Sequence[tuple[float, float, float, float] | None],
                      references: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> list[np.ndarray]:
        """Like :meth:`segment`, for photos **of one subject** (a subject's reference photos): box-free photos
        choose among their candidate cuts jointly (:func:`choose_cuts_jointly`), preferring a cut whose colours
        look like a cut of the same subject in the other photos. ``references``: ``(rgb, bool mask)`` pairs
        of the same subject with known masks (the user's own), which count as photos already cut right.
        ``mudi segment`` calls this per subject, with the subject's user masks as references."""
        import cv2

        self._check_lengths(images, boxes)
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
            for rgb, mask in references:  # at the working size: histograms only need the colours
                rgb, mask = np.asarray(rgb), np.asarray(mask, dtype=bool)
                if rgb.shape[:2] != mask.shape:
                    raise MudiError(f"segment_group: a reference mask of size {mask.shape} for a "
                                    f"{rgb.shape[:2]} photo")
                if not mask.any():
                    continue
                work = self._prepare(rgb, crop_bars=False)
                h, w = work.small.shape[:2]
                small = cv2.resize(mask.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_AREA) > 127
                labs.append(work.lab)
                cands.append([small if small.any() else np.ones((h, w), bool)])
            picks = choose_cuts_jointly(labs, cands, self.consensus_weight)
            for (k, work), cand, pick in zip(free, cands, picks):
                out[k] = self._finish(work, cand[pick])
        return out  # type: ignore[return-value]

    @staticmethod
    def _check_lengths(images: Sequence[Any], boxes: Sequence[Any]) -> None:
        if len(images) != len(boxes):
            raise MudiError(f"segment: {len(images)} images but {len(boxes)} boxes; give one box (or None) per image")

    def segment_one(self, image: np.ndarray, box_xyxy: tuple[float, float, float, float] | None) -> np.ndarray:
        work = self._prepare(image, crop_bars=box_xyxy is None)
        if box_xyxy is not None:
            h, w = work.small.shape[:2]
            box = self._pad_box(tuple(v * work.scale for v in box_xyxy), w, h, self.box_padding)
            cut = self._cut(work.bgr, self._box_labels(h, w, box))
        else:
            cut = choose_cut(work.lab, self._box_free_candidates(work))
        return self._finish(work, cut)

    def _prepare(self, image: np.ndarray, crop_bars: bool = True) -> _Work:
        """The photo at the working size, without uniform bars along its sides (``crop_bars``)."""
        import cv2

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise MudiError(f"GrabCut expects an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA) if scale < 1 else image
        crop = (0, 0, w, h)
        if crop_bars and self.crop_bars:
            x0, y0, x1, y1 = content_box(small)
            if (x0, y0, x1, y1) != (0, 0, sw, sh):
                small = small[y0:y1, x0:x1]
                crop = (min(w - 1, round(x0 / scale)), min(h - 1, round(y0 / scale)),
                        max(1, min(w, round(x1 / scale))), max(1, min(h, round(y1 / scale))))
        small = np.ascontiguousarray(small)
        return _Work(image, crop, scale, small)

    def _finish(self, work: _Work, cut: np.ndarray) -> np.ndarray:
        """Clean-up, the coarse-to-fine cut and the upsampling of a working-size ``cut`` to the photo."""
        import cv2

        h, w = work.image.shape[:2]
        x0, y0, x1, y1 = work.crop
        photo = work.image[y0:y1, x0:x1]
        if self.use_cleanup:
            cut = clean_mask(cut)
        if self.refine_max_side > self.max_side and work.scale < 1 and cut.any():
            cut = self._refine_fine(photo, cut)
        ph, pw = photo.shape[:2]
        if cut.shape != (ph, pw):
            if self.guide_max_side > max(cut.shape) and cut.any():
                cut = guided_upsample(cut, photo, self.guide_max_side)
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
        scale = min(1.0, self.refine_max_side / max(h, w))
        fw, fh = max(1, round(w * scale)), max(1, round(h * scale))
        fine = cv2.resize(image, (fw, fh), interpolation=cv2.INTER_AREA) if scale < 1 else image
        seed = cv2.resize(cut.astype(np.uint8) * 255, (fw, fh), interpolation=cv2.INTER_LINEAR) > 127
        out = self._cut(np.ascontiguousarray(fine[..., ::-1]), ring_labels(seed, 0.05), num_iterations=3)
        return clean_mask(out) if self.use_cleanup else out

    @staticmethod
    def _pad_box(box: tuple[float, ...], w: int, h: int, padding: float) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = box
        px, py = (x1 - x0) * padding, (y1 - y0) * padding
        x0, y0 = max(0, int(np.floor(x0 - px))), max(0, int(np.floor(y0 - py)))
        x1, y1 = min(w, int(np.ceil(x1 + px))), min(h, int(np.ceil(y1 + py)))
        return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)

    def _box_free_candidates(self, work: _Work) -> list[np.ndarray]:
        """One cleaned, re-cut mask per box-free initialisation, at the working size."""
        rgb, bgr = work.small, work.bgr
        h, w = rgb.shape[:2]
        inits = []
        if self.use_saliency:
            inits.append(border_saliency_labels(rgb))
        if self.use_focus:
            x0, y0, x1, y1 = work.crop
            inits.append(focus_saliency_labels(work.image[y0:y1, x0:x1], rgb))
        for left, top, right, bottom in self.border_insets:
            x0, y0 = int(w * left), int(h * top)
            inits.append(self._box_labels(h, w, (x0, y0, max(w - int(w * right), x0 + 1),
                                                 max(h - int(h * bottom), y0 + 1))))
        cuts = []
        for labels in inits:
            cut = clean_mask(self._cut(bgr, labels))
            if self.refine_ring > 0 and cut.any():
                cut = clean_mask(self._cut(bgr, ring_labels(cut, self.refine_ring)))
            cuts.append(cut)
        return cuts

    @staticmethod
    def _box_labels(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
        """GrabCut labels from a box: outside is background, inside probably subject. When the box leaves
        (almost) no background, a thin strip along the image border becomes *probable* background so the
        background colour model has samples."""
        import cv2

        x0, y0, x1, y1 = box
        labels = np.full((h, w), cv2.GC_BGD, np.uint8)
        labels[y0:y1, x0:x1] = cv2.GC_PR_FGD
        if (labels == cv2.GC_BGD).sum() < 0.02 * h * w:
            s = max(1, int(0.03 * max(h, w)))
            strip = np.zeros((h, w), bool)
            strip[:s], strip[-s:], strip[:, :s], strip[:, -s:] = True, True, True, True
            labels[strip & (labels == cv2.GC_PR_FGD)] = cv2.GC_PR_BGD
        return labels

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
        cv2.setRNGSeed(self.seed)
        cv2.grabCut(bgr, labels, None, bgd_model, fgd_model, num_iterations or self.num_iterations,
                    cv2.GC_INIT_WITH_MASK)
        return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def choose_cut(lab: np.ndarray, cuts: Sequence[np.ndarray], min_fraction: float = 0.01,
               max_fraction: float = 0.9) -> np.ndarray:
    """The ``(H, W)`` bool mask among ``cuts`` that best separates the colours (:func:`colour_separation` on
    ``lab``), among those covering ``min_fraction``..``max_fraction`` of the image when any does (a speck
    can separate its few colours perfectly; a subject is rarely under 1 % or over 90 % of its photo)."""
    if not cuts:
        raise MudiError("choose_cut needs at least one candidate mask")
    return cuts[choose_cuts_jointly([lab], [cuts], 0.0, min_fraction=min_fraction, max_fraction=max_fraction)[0]]


def choose_cuts_jointly(labs: Sequence[np.ndarray], candidates: Sequence[Sequence[np.ndarray]],
                        consensus_weight: float = 2.0, bins: int = 4, min_fraction: float = 0.01,
                        max_fraction: float = 0.9) -> list[int]:
    """For photos of **one subject**, the index of the chosen cut in each photo's ``candidates``.

    A cut scores its :func:`colour_separation` plus ``consensus_weight`` x its mean, over the other photos, of
    the best Bhattacharyya coefficient between its inside colour histogram (Lab, ``bins`` per channel) and any
    plausible cut of that photo: the subject looks alike from photo to photo, a patch of floor or a window
    does not. Only cuts covering ``min_fraction``..``max_fraction`` of their photo compete (all, where none
    does). One photo alone, or ``consensus_weight=0``: the separation alone, as :func:`choose_cut`.
    ``labs``: ``(H, W, 3)`` uint8 Lab photos, each the size of its candidates.
    """
    if len(labs) != len(candidates) or any(not c for c in candidates):
        raise MudiError("choose_cuts_jointly needs one non-empty candidate list per photo")
    plausible = [[min_fraction <= c.mean() <= max_fraction for c in cands] for cands in candidates]
    plausible = [p if any(p) else [True] * len(p) for p in plausible]
    joint = consensus_weight > 0 and len(labs) > 1
    hists = [[colour_histogram(lab, c, bins) for c in cands] for lab, cands in zip(labs, candidates)] if joint else []
    picks = []
    for k, (lab, cands) in enumerate(zip(labs, candidates)):
        scores = []
        for i, cut in enumerate(cands):
            if not plausible[k][i]:
                scores.append(-np.inf)
                continue
            score = colour_separation(lab, cut)
            if joint:
                agree = [max(float(np.sqrt(hists[k][i] * h).sum()) for h, ok in zip(hists[j], plausible[j]) if ok)
                         for j in range(len(labs)) if j != k]
                score += consensus_weight * float(np.mean(agree))
            scores.append(score)
        picks.append(int(np.argmax(scores)))
    return picks


def guided_upsample(mask: np.ndarray, photo: np.ndarray, max_side: int = 1024, radius: float = 0.004,
                    eps: float = 0.01) -> np.ndarray:
    """``mask`` (``(h, w)`` bool, a low-resolution cut of ``photo``) at ``photo``'s size, its edges snapped to
    the photo's edges by a guided filter (He et al., "Guided image filtering", ECCV 2010) on the grey photo at
    longer side ``max_side`` (window radius ``radius`` x that side, regularisation ``eps``), then bilinearly
    to full size and thresholded at 0.5. ``photo``: ``(H, W, 3)`` uint8."""
    import cv2

    h, w = photo.shape[:2]
    s = min(1.0, max_side / max(h, w))
    gw, gh = max(1, round(w * s)), max(1, round(h * s))
    guide = cv2.cvtColor(cv2.resize(photo, (gw, gh), interpolation=cv2.INTER_AREA) if s < 1 else photo,
                         cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    p = cv2.resize(mask.astype(np.float32), (gw, gh), interpolation=cv2.INTER_LINEAR)
    r = max(1, round(radius * max(gw, gh)))

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(guide), box(p)
    a = (box(guide * p) - mean_i * mean_p) / (box(guide * guide) - mean_i * mean_i + eps)
    q = box(a) * guide + box(mean_p - a * mean_i)
    if (gh, gw) != (h, w):
        q = cv2.resize(q, (w, h), interpolation=cv2.INTER_LINEAR)
    return q > 0.5


def content_box(rgb: np.ndarray, tolerance: int = 4, min_fraction: float = 0.02) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of ``rgb`` without uniform bars along its sides (letterboxing, padding to a square).

    From each side inwards, rows / columns whose every pixel is within ``tolerance`` of the first line's
    colour are a bar; bars narrower than ``min_fraction`` of the side are ignored, and at most half the image
    is taken from each side. A photo without bars gives ``(0, 0, W, H)``.
    """
    im = rgb.astype(np.int16)
    h, w = im.shape[:2]

    def bar(lines: np.ndarray) -> int:  # (n, L, 3), from the border inwards
        ref = np.median(lines[0], axis=0)
        ok = np.abs(lines - ref).max(axis=(1, 2)) <= tolerance
        return len(ok) if ok.all() else int(np.argmin(ok))

    left = bar(im[:, : w // 2].transpose(1, 0, 2))
    right = bar(im[:, w - w // 2:][:, ::-1].transpose(1, 0, 2))
    top = bar(im[: h // 2])
    bottom = bar(im[h - h // 2:][::-1])
    left, right = (v if v >= min_fraction * w else 0 for v in (left, right))
    top, bottom = (v if v >= min_fraction * h else 0 for v in (top, bottom))
    return left, top, w - right, h - bottom


def colour_histogram(lab: np.ndarray, mask: np.ndarray, bins: int = 8) -> np.ndarray:
    """Normalised colour histogram (``bins`` per channel) of ``lab``'s pixels inside ``mask`` (zeros if empty)."""
    q = (lab.astype(np.int32) * bins) // 256
    code = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    n = int(mask.sum())
    if n == 0:
        return np.zeros(bins ** 3)
    return np.bincount(code[mask], minlength=bins ** 3) / n


def ring_labels(mask: np.ndarray, ring: float) -> np.ndarray:
    """GrabCut labels seeded from a ``(H, W)`` bool mask: the mask probably subject, a ring of width ``ring``
    x the longer side around it probably background, everything further away background."""
    import cv2

    h, w = mask.shape
    r = max(1, int(ring * max(h, w)))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    labels = np.full((h, w), cv2.GC_BGD, np.uint8)
    labels[cv2.dilate(mask.astype(np.uint8), disk) > 0] = cv2.GC_PR_BGD
    labels[mask] = cv2.GC_PR_FGD
    return labels


def border_saliency(rgb: np.ndarray, grid_side: int = 64, clip: float = 3.0) -> np.ndarray:
    """Geodesic distance of every pixel to the image border over colour differences, ``(H, W)`` float32.

    Background prior (Wei et al., "Geodesic saliency using background priors", ECCV 2012): background
    regions connect to the border through small colour steps, a subject is walled off by its outline. Computed
    on an 8-connected grid of longer side ``grid_side`` (Lab, Gaussian-blurred; steps below ``clip`` Lab units
    are free, so smooth shading and fine texture cost nothing) and upsampled to ``rgb``'s size.
    """
    import cv2
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    h, w = rgb.shape[:2]
    s = grid_side / max(h, w)
    gw, gh = max(2, round(w * s)), max(2, round(h * s))
    small = cv2.GaussianBlur(cv2.resize(rgb, (gw, gh), interpolation=cv2.INTER_AREA), (3, 3), 0)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32).reshape(-1, 3)
    ys, xs = np.mgrid[:gh, :gw]
    ys, xs = ys.ravel(), xs.ravel()
    src, dst = [], []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        ok = (ys + dy < gh) & (xs + dx >= 0) & (xs + dx < gw)
        src.append((ys * gw + xs)[ok])
        dst.append(((ys + dy) * gw + xs + dx)[ok])
    a, b = np.concatenate(src), np.concatenate(dst)
    weight = np.maximum(np.linalg.norm(lab[a] - lab[b], axis=1) - clip, 0.0) + 1e-3
    graph = coo_matrix((weight, (a, b)), shape=(gh * gw, gh * gw)).tocsr()
    border = np.flatnonzero((ys == 0) | (ys == gh - 1) | (xs == 0) | (xs == gw - 1))
    dist = dijkstra(graph, directed=False, indices=border, min_only=True).reshape(gh, gw).astype(np.float32)
    return cv2.resize(dist, (w, h), interpolation=cv2.INTER_LINEAR)


def border_saliency_labels(rgb: np.ndarray, definite_fraction: float = 0.15) -> np.ndarray:
    """GrabCut labels from :func:`border_saliency`: above its Otsu threshold probably subject, below probably
    background, below ``definite_fraction`` of the threshold definitely background."""
    sal = border_saliency(rgb)
    return otsu_labels(sal / max(float(sal.max()), 1e-6), definite_fraction)


def otsu_labels(cue: np.ndarray, definite_fraction: float) -> np.ndarray:
    """GrabCut labels from a ``(H, W)`` cue in [0, 1] (higher: more likely subject), Otsu-thresholded on 256
    levels: above the threshold probably subject, below probably background, at or below ``definite_fraction``
    of it definitely background."""
    import cv2

    u8 = np.clip(cue * 255, 0, 255).astype(np.uint8)
    threshold, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    labels = np.full(u8.shape, cv2.GC_PR_BGD, np.uint8)
    labels[u8 > threshold] = cv2.GC_PR_FGD
    labels[u8 <= definite_fraction * threshold] = cv2.GC_BGD
    return labels


def focus_map(rgb: np.ndarray, out_hw: tuple[int, int] | None = None, max_side: int = 512, sigma: float = 1.0,
              window: float = 0.03) -> np.ndarray:
    """How in focus each pixel's neighbourhood is, ``(H, W)`` float32 in [0, 1] (``out_hw`` or ``rgb``'s size).

    The grey photo at longer side ``max_side`` minus its Gaussian blur (``sigma`` pixels) keeps the fine
    detail a defocused region lacks; its energy pooled over a Gaussian window of ``window`` x the longer side,
    log-compressed and stretched between the 1st and 99th percentiles, is the map (per image: only the
    contrast within one photo means anything). ``rgb``: ``(H, W, 3)`` uint8.
    """
    import cv2

    h, w = rgb.shape[:2]
    out_h, out_w = out_hw or (h, w)
    s = min(1.0, max_side / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    detail = grey - cv2.GaussianBlur(grey, (0, 0), sigma)
    energy = np.sqrt(cv2.GaussianBlur(detail * detail, (0, 0), max(1.0, window * max(grey.shape))))
    energy = np.log1p(cv2.resize(energy, (out_w, out_h), interpolation=cv2.INTER_AREA))
    lo, hi = np.percentile(energy, (1, 99))
    return np.clip((energy - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0).astype(np.float32)


def focus_saliency_labels(rgb: np.ndarray, work_rgb: np.ndarray, definite_fraction: float = 0.5) -> np.ndarray:
    """GrabCut labels at ``work_rgb``'s size from the geometric mean of :func:`focus_map` (of the full photo
    ``rgb``) and the normalised :func:`border_saliency` (of ``work_rgb``): above the Otsu threshold probably
    subject, below probably background, below ``definite_fraction`` of it definitely background. (Focus alone
    also lights up sharp backgrounds, e.g. asphalt or a brick wall; see docs/segment.md.)"""
    sal = border_saliency(work_rgb)
    return otsu_labels(np.sqrt(focus_map(rgb, work_rgb.shape[:2]) * sal / max(float(sal.max()), 1e-6)),
                       definite_fraction)


def colour_separation(lab: np.ndarray, mask: np.ndarray, bins: int = 8) -> float:
    """One minus the Bhattacharyya coefficient of the colour histograms inside and outside ``mask``: 1 when
    subject and background share no colour, 0 when they look alike (or the mask is empty or full).
    ``lab``: ``(H, W, 3)`` uint8 (OpenCV Lab); ``mask``: ``(H, W)`` bool."""
    if not mask.any() or mask.all():
        return 0.0
    return float(1.0 - np.sqrt(colour_histogram(lab, mask, bins) * colour_histogram(lab, ~mask, bins)).sum())
