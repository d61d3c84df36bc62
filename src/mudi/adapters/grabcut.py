"""GrabCut (OpenCV) behind :class:`Segmenter`: subject masks offline, with no weights at all.

GrabCut (Rother et al., 2004) fits two colour mixtures, subject and background, and cuts the image graph
between them. It needs an initialisation: the detector's box when there is one (``owlv2+grabcut``). Without
a box (``grabcut`` alone) it makes several and keeps the most convincing result:

- a *border-saliency* initialisation: the geodesic colour distance of each pixel to the image border
  (background prior of Wei et al., ECCV 2012, on a 64 px grid), Otsu-thresholded into probable subject /
  probable background, with the least salient pixels as definite background; it finds subjects that do
  not fill the frame, wherever they are;
- rectangles inset from the image border (4 % and 10 %); they find subjects that fill the frame and touch
  several borders, where the saliency has no background to measure from.

An optional fourth initialisation (``use_focus``, off by default) adds a *focus* cue: reference photos are
often shot with the subject in focus before a blurred background, so :func:`focus_map` (local energy of the
grey image minus its Gaussian blur) times the border saliency, Otsu-thresholded, seeds one more cut. On the
benchmark photos it does not help (phone photos keep the background sharp; docs/segment.md has the figures).

Each cut is cleaned (largest component, holes filled), then cut again from its own mask (the mask probably
subject, a ring around it probably background, the rest background: the colour models now come from the
first cut's regions rather than from a rectangle), cleaned, and scored by how well it separates the colours:
one minus the Bhattacharyya coefficient of the inside / outside colour histograms (Lab, 8x8x8 bins). The
best-separating mask wins (see docs/segment.md for the measurements behind these choices).

Photos are cut at a bounded working resolution (longer side ``max_side``); the chosen mask is then refined
once at ``refine_max_side`` (coarse to fine: a ring-seeded cut around the upsampled mask) and upsampled to
the original size, so a 3000x3600 phone photo costs about the same as a 512x512 one. ``cv2.grabCut`` takes
no random generator (its colour mixtures start from k-means on OpenCV's thread RNG), so every cut reseeds
that RNG with ``seed``: the same photo always gives the same mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mudi.adapters.mask_cleanup import clean_mask
from mudi.errors import MudiError


class GrabCutSegmenter:
    """Box-prompted (or box-free) GrabCut. ``segment`` returns one ``(H, W)`` bool mask per image.

    Args:
        max_side: longer side of the working resolution (pixels).
        num_iterations: GrabCut iterations per cut.
        box_padding: the detector box is grown by this fraction of its size on each side (0: OWLv2 boxes are
            tight; on the benchmark photos any padding lowers the IoU, see docs/segment.md).
        border_insets: without a box, one rectangle initialisation per value, treating this fraction of each
            image side as background (besides the border-saliency initialisation).
        use_saliency: without a box, also try the border-saliency initialisation.
        use_focus: without a box, also try the focus initialisation (:func:`focus_saliency_labels`); off by
            default: no gain on the benchmark photos (mean IoU 0.827 either way) at 15 % more time.
        use_cleanup: keep the largest connected component and fill holes.
        refine_ring: without a box, every initialisation's cut is cut again from its own mask with a ring
            of this fraction of the longer side as probable background (0: no second cut).
        refine_max_side: longer side of the final coarse-to-fine cut around the chosen mask (ring 5 %,
            3 iterations); 0, or not above ``max_side``, skips it.
        seed: OpenCV RNG seed set before every cut (``cv2.grabCut`` has no generator argument).
    """

    def __init__(self, max_side: int = 256, num_iterations: int = 5, box_padding: float = 0.0,
                 border_insets: Sequence[float] = (0.04, 0.10), use_saliency: bool = True,
                 use_focus: bool = False, use_cleanup: bool = True, refine_ring: float = 0.10, refine_max_side: int = 512,
                 seed: int = 0) -> None:
        if max_side < 32:
            raise MudiError(f"GrabCutSegmenter max_side must be >= 32 pixels, got {max_side}")
        if num_iterations < 1:
            raise MudiError(f"GrabCutSegmenter num_iterations must be >= 1, got {num_iterations}")
        border_insets = tuple(float(v) for v in border_insets)
        if any(not 0.0 <= v < 0.5 for v in border_insets):
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
        in original pixels) or, for a ``None`` box, the main object of the image."""
        if len(images) != len(boxes):
            raise MudiError(f"segment: {len(images)} images but {len(boxes)} boxes; give one box (or None) per image")
        return [self.segment_one(np.asarray(im), box) for im, box in zip(images, boxes)]

    def segment_one(self, image: np.ndarray, box_xyxy: tuple[float, float, float, float] | None) -> np.ndarray:
        import cv2

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise MudiError(f"GrabCut expects an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA) if scale < 1 else image
        bgr = np.ascontiguousarray(small[..., ::-1])
        if box_xyxy is not None:
            box = self._pad_box(tuple(v * scale for v in box_xyxy), sw, sh, self.box_padding)
            cut = self._cut(bgr, self._box_labels(sh, sw, box))
        else:
            cut = self._best_box_free_cut(small, bgr, image)
        if self.use_cleanup:
            cut = clean_mask(cut)
        if self.refine_max_side > self.max_side and scale < 1 and cut.any():
            cut = self._refine_fine(image, cut)
        if cut.shape == (h, w):
            return cut
        big = cv2.resize(cut.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_LINEAR)
        return big > 127

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

    def _best_box_free_cut(self, rgb: np.ndarray, bgr: np.ndarray, full: np.ndarray) -> np.ndarray:
        """Cut from every box-free initialisation; keep the (cleaned) mask separating the colours best.
        ``rgb``/``bgr``: the photo at the working size; ``full``: the original photo (for the focus map)."""
        import cv2

        h, w = rgb.shape[:2]
        inits = []
        if self.use_saliency:
            inits.append(border_saliency_labels(rgb))
        if self.use_focus:
            inits.append(focus_saliency_labels(full, rgb))
        for inset in self.border_insets:
            iw, ih = int(w * inset), int(h * inset)
            inits.append(self._box_labels(h, w, (iw, ih, max(w - iw, iw + 1), max(h - ih, ih + 1))))
        lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
        cuts = []
        for labels in inits:
            cut = clean_mask(self._cut(bgr, labels))
            if self.refine_ring > 0 and cut.any():
                cut = clean_mask(self._cut(bgr, ring_labels(cut, self.refine_ring)))
            cuts.append(cut)
        return choose_cut(lab, cuts)

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
    plausible = [c for c in cuts if min_fraction <= c.mean() <= max_fraction] or list(cuts)
    return max(plausible, key=lambda c: colour_separation(lab, c))


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
    import cv2

    sal = border_saliency(rgb)
    u8 = np.clip(sal / max(float(sal.max()), 1e-6) * 255, 0, 255).astype(np.uint8)
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
    import cv2

    sal = border_saliency(work_rgb)
    cue = np.sqrt(focus_map(rgb, work_rgb.shape[:2]) * sal / max(float(sal.max()), 1e-6))
    u8 = np.clip(cue * 255, 0, 255).astype(np.uint8)
    threshold, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    labels = np.full(u8.shape, cv2.GC_PR_BGD, np.uint8)
    labels[u8 > threshold] = cv2.GC_PR_FGD
    labels[u8 <= definite_fraction * threshold] = cv2.GC_BGD
    return labels


def colour_separation(lab: np.ndarray, mask: np.ndarray, bins: int = 8) -> float:
    """One minus the Bhattacharyya coefficient of the colour histograms inside and outside ``mask``: 1 when
    subject and background share no colour, 0 when they look alike (or the mask is empty or full).
    ``lab``: ``(H, W, 3)`` uint8 (OpenCV Lab); ``mask``: ``(H, W)`` bool."""
    inside, outside = int(mask.sum()), int((~mask).sum())
    if inside == 0 or outside == 0:
        return 0.0
    q = (lab.astype(np.int32) * bins) // 256
    code = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    hist_in = np.bincount(code[mask], minlength=bins ** 3) / inside
    hist_out = np.bincount(code[~mask], minlength=bins ** 3) / outside
    return float(1.0 - np.sqrt(hist_in * hist_out).sum())
