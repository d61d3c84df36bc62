"""The image cues behind :class:`mudi.adapters.grabcut.GrabCutSegmenter`: pure functions of numpy arrays.

Nothing here cuts a graph or holds settings; each function takes an image or a mask and returns labels, a
map, a box or a score. Conventions: images are ``(H, W, 3)`` uint8 RGB unless named ``lab`` (OpenCV Lab,
uint8); masks are ``(H, W)`` bool; *labels* are ``(H, W)`` uint8 ``cv2.GC_*`` values, a GrabCut
initialisation (``GC_BGD`` background, ``GC_PR_BGD`` probably background, ``GC_PR_FGD`` probably subject).

- **Bars** (:func:`content_box`): uniform rows / columns along a photo's sides (letterboxing, padding to a
  square) are found first and count as background.
- **Box labels** (:func:`box_labels`, :func:`pad_box`): outside a box background, inside probably subject.
- **Border saliency** (:func:`border_saliency`, :func:`border_saliency_labels`): the geodesic colour distance
  of each pixel to the image border (background prior of Wei et al., ECCV 2012, on a 64 px grid),
  Otsu-thresholded (:func:`otsu_labels`) into probable subject / probable background, with the least salient
  pixels as definite background; it finds subjects that do not fill the frame, wherever they are.
- **Focus** (:func:`focus_map`, :func:`focus_saliency_labels`): reference photos are often shot with the
  subject in focus before a blurred background, so the local energy of the grey image minus its Gaussian
  blur, times the border saliency, Otsu-thresholded, seeds a cut. On the benchmark photos it does not help
  (phone photos keep the background sharp; docs/segment.md has the figures).
- **Ring labels** (:func:`ring_labels`): a cut seeded from a mask (the mask probably subject, a ring around
  it probably background, the rest background), so the colour models come from a first cut's regions rather
  than from a rectangle.
- **Choosing a cut** (:func:`colour_separation`, :func:`choose_cut`, :func:`choose_cuts_jointly`): one photo
  alone keeps the mask that best separates the colours (one minus the Bhattacharyya coefficient of the
  inside / outside colour histograms, Lab, 8x8x8 bins); a subject's photos together add each mask's colour
  agreement with the subject's other photos: the subject looks alike in all of them, a window or a patch of
  floor does not.
- **Upsampling** (:func:`guided_upsample`): a low-resolution mask brought to the photo's size with its edges
  snapped to the photo's edges by a guided filter (He et al., ECCV 2010).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mudi.errors import MudiError


def content_box(rgb: np.ndarray, tolerance: int = 4, min_fraction: float = 0.02) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of ``rgb`` without uniform bars along its sides (letterboxing, padding to a
    square).

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


def pad_box(box_xyxy: tuple[float, ...], hw: tuple[int, int], padding: float) -> tuple[int, int, int, int]:
    """``box_xyxy`` grown by ``padding`` x its size on each side, rounded outwards to whole pixels and clipped
    to an image of size ``hw``; at least one pixel wide and high."""
    h, w = hw
    x0, y0, x1, y1 = box_xyxy
    px, py = (x1 - x0) * padding, (y1 - y0) * padding
    x0, y0 = max(0, int(np.floor(x0 - px))), max(0, int(np.floor(y0 - py)))
    x1, y1 = min(w, int(np.ceil(x1 + px))), min(h, int(np.ceil(y1 + py)))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def box_labels(hw: tuple[int, int], box_xyxy: tuple[int, int, int, int]) -> np.ndarray:
    """GrabCut labels of size ``hw`` from a box (whole pixels): outside is background, inside probably
    subject. When the box leaves (almost) no background, a thin strip along the image border becomes
    *probable* background so the background colour model has samples."""
    import cv2

    h, w = hw
    x0, y0, x1, y1 = box_xyxy
    labels = np.full((h, w), cv2.GC_BGD, np.uint8)
    labels[y0:y1, x0:x1] = cv2.GC_PR_FGD
    if (labels == cv2.GC_BGD).sum() < 0.02 * h * w:
        s = max(1, int(0.03 * max(h, w)))
        strip = np.zeros((h, w), bool)
        strip[:s], strip[-s:], strip[:, :s], strip[:, -s:] = True, True, True, True
        labels[strip & (labels == cv2.GC_PR_FGD)] = cv2.GC_PR_BGD
    return labels


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


def focus_map(rgb: np.ndarray, out_hw: tuple[int, int] | None = None, max_side: int = 512, sigma: float = 1.0,
              window: float = 0.03) -> np.ndarray:
    """How in focus each pixel's neighbourhood is, ``(H, W)`` float32 in [0, 1] (``out_hw`` or ``rgb``'s
    size).

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


def focus_saliency_labels(rgb: np.ndarray, work_rgb: np.ndarray,
                          definite_fraction: float = 0.5) -> np.ndarray:
    """GrabCut labels at ``work_rgb``'s size from the geometric mean of :func:`focus_map` (of the full photo
    ``rgb``) and the normalised :func:`border_saliency` (of ``work_rgb``): above the Otsu threshold probably
    subject, below probably background, below ``definite_fraction`` of it definitely background. (Focus alone
    also lights up sharp backgrounds, e.g. asphalt or a brick wall; see docs/segment.md.)"""
    sal = border_saliency(work_rgb)
    return otsu_labels(np.sqrt(focus_map(rgb, work_rgb.shape[:2]) * sal / max(float(sal.max()), 1e-6)),
                       definite_fraction)


def colour_histogram(lab: np.ndarray, mask: np.ndarray, bins: int = 8) -> np.ndarray:
    """Normalised colour histogram (``bins`` per channel) of ``lab``'s pixels inside ``mask`` (zeros if
    empty)."""
    q = (lab.astype(np.int32) * bins) // 256
    code = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    n = int(mask.sum())
    if n == 0:
        return np.zeros(bins ** 3)
    return np.bincount(code[mask], minlength=bins ** 3) / n


def colour_separation(lab: np.ndarray, mask: np.ndarray, bins: int = 8) -> float:
    """One minus the Bhattacharyya coefficient of the colour histograms inside and outside ``mask``: 1 when
    subject and background share no colour, 0 when they look alike (or the mask is empty or full).
    ``lab``: ``(H, W, 3)`` uint8 (OpenCV Lab); ``mask``: ``(H, W)`` bool."""
    if not mask.any() or mask.all():
        return 0.0
    return float(1.0 - np.sqrt(colour_histogram(lab, mask, bins) * colour_histogram(lab, ~mask, bins)).sum())


def choose_cut(lab: np.ndarray, cuts: Sequence[np.ndarray], min_fraction: float = 0.01,
               max_fraction: float = 0.9) -> np.ndarray:
    """The ``(H, W)`` bool mask among ``cuts`` that best separates the colours (:func:`colour_separation` on
    ``lab``), among those covering ``min_fraction``..``max_fraction`` of the image when any does (a speck
    can separate its few colours perfectly; a subject is rarely under 1 % or over 90 % of its photo)."""
    if not cuts:
        raise MudiError("choose_cut needs at least one candidate mask")
    pick = choose_cuts_jointly([lab], [cuts], 0.0, min_fraction=min_fraction, max_fraction=max_fraction)[0]
    return cuts[pick]


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
    hists = ([[colour_histogram(lab, c, bins) for c in cands] for lab, cands in zip(labs, candidates)]
             if joint else [])
    picks = []
    for k, (lab, cands) in enumerate(zip(labs, candidates)):
        scores = []
        for i, cut in enumerate(cands):
            if not plausible[k][i]:
                scores.append(-np.inf)
                continue
            score = colour_separation(lab, cut)
            if joint:
                agree = [max(float(np.sqrt(hists[k][i] * h).sum())
                             for h, ok in zip(hists[j], plausible[j]) if ok)
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
