"""Seg-Mix and Cut-Mix composition (paper Sec. 4.1, Algorithm 1, Appendix B.2, C.1).

Seg-Mix generalised to N >= 2 subjects: each segmented subject (a :class:`Cutout`) is resized — random
scale, or fixed relative sizes — placed at a random position on a plain background, in a random
left-to-right order and a random stacking order, and pasted through its mask. As in Algorithm 1 the
outermost subjects start flush with the canvas edges and move inwards by a random margin of up to
``max_margin_frac`` of the width (divided by N - 1 for more than two subjects; middle subjects start evenly
spaced and move either way by up to half of that), so large margins make subjects overlap; ``allow_overlap=False`` gives
the "Seg-Mix w/o subject overlap" ablation of Appendix B.2.

Cut-Mix (Han et al., SVDiff) is the baseline: whole reference images cut into vertical strips side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mudi.core.prompts import cutmix_prompt, segmix_prompt
from mudi.core.types import BoxXYXY, Composition, Cutout
from mudi.errors import MudiError

MIN_SUBJECT_PX = 8


@dataclass(frozen=True)
class SegMixParams:
    """How subjects are scaled and placed.

    - ``scale_range``: each subject's height as a fraction of the canvas height, drawn uniformly
      (with ``relative_sizes``: the height of the largest subject; the others follow the ratios).
    - ``relative_sizes``: fixed height ratios per subject in prompt order (Appendix C.1), e.g. ``(1, 2)``.
    - ``max_margin_frac``: largest inward shift from the canvas edge, as a fraction of its width.
    - ``allow_overlap``: if false, subjects never overlap (they are shrunk to fit side by side).
    - ``max_width_frac``: no subject is wider than this fraction of the canvas.
    - ``background``: RGB of the plain background.
    """

    scale_range: tuple[float, float] = (0.4, 0.8)
    relative_sizes: tuple[float, ...] | None = None
    max_margin_frac: float = 0.3
    allow_overlap: bool = True
    max_width_frac: float = 0.9
    background: tuple[int, int, int] = (255, 255, 255)
    use_count_prefix: bool = False

    def __post_init__(self) -> None:
        lo, hi = self.scale_range
        if not 0 < lo <= hi <= 1:
            raise MudiError(f"segmix scale_range {self.scale_range} must satisfy 0 < min <= max <= 1")
        if self.relative_sizes is not None and any(r <= 0 for r in self.relative_sizes):
            raise MudiError(f"relative sizes {list(self.relative_sizes)} must all be positive, e.g. 1,2")
        if not 0 <= self.max_margin_frac <= 1:
            raise MudiError(f"segmix max_margin_frac {self.max_margin_frac} must be in [0, 1]")
        if len(self.background) != 3 or any(not 0 <= c <= 255 for c in self.background):
            raise MudiError(f"background {self.background} must be three values in 0..255, e.g. 255,255,255")


def check_segmix_block(params: SegMixParams) -> None:
    """Relative sizes are given per subject (``relative_sizes`` of a verb, or subject.yaml), never in a
    config's ``segmix`` block, whose values apply to every composition."""
    if params.relative_sizes is not None:
        raise MudiError("segmix.relative_sizes is set per composition by mudi itself; give relative sizes per "
                        "subject with relative_sizes (or in subject.yaml) instead")


def cutout_max_side(size_hw: tuple[int, int], params: SegMixParams) -> int:
    """The longest side a cutout can have in a composition of ``size_hw``: caching cutouts at this size
    (``Subject.cutouts(max_side=...)``) loses nothing and makes every resize cheaper."""
    H, W = size_hw
    return int(np.ceil(max(params.scale_range[1] * H, params.max_width_frac * W)))


def _check_size(size_hw: tuple[int, int], n: int) -> None:
    h, w = size_hw
    if h < 2 * MIN_SUBJECT_PX or w < n * MIN_SUBJECT_PX:
        raise MudiError(f"composition size {w}x{h} is too small for {n} subjects: use at least "
                        f"{max(2 * MIN_SUBJECT_PX, n * MIN_SUBJECT_PX)} px (e.g. --size 512)")


def _subject_sizes(cutouts: Sequence[Cutout], size_hw: tuple[int, int], params: SegMixParams,
                   rng: np.random.Generator) -> list[tuple[int, int]]:
    H, W = size_hw
    n = len(cutouts)
    lo, hi = params.scale_range
    if params.relative_sizes is not None:
        if len(params.relative_sizes) != n:
            raise MudiError(f"{len(params.relative_sizes)} relative sizes given for {n} subjects: give one per subject")
        r = np.asarray(params.relative_sizes, dtype=float)
        heights = rng.uniform(lo, hi) * H * r / r.max()
    else:
        heights = rng.uniform(lo, hi, size=n) * H
    aspects = np.array([c.size_hw[1] / c.size_hw[0] for c in cutouts])
    widths = heights * aspects
    limit = params.max_width_frac * W
    if params.relative_sizes is not None:  # one common factor keeps the ratios exact
        f = min(1.0, limit / widths.max())
        heights, widths = heights * f, widths * f
    else:
        f = np.minimum(1.0, limit / widths)
        heights, widths = heights * f, widths * f
    if not params.allow_overlap and widths.sum() > 0.98 * W:
        f = 0.98 * W / widths.sum()
        heights, widths = heights * f, widths * f
    sizes = [(max(1, int(round(h))), max(1, int(round(w)))) for h, w in zip(heights, widths)]
    if min(min(s) for s in sizes) < MIN_SUBJECT_PX // 2:
        raise MudiError(f"composition size {W}x{H} is too small for {n} subjects of these shapes: "
                        "use a larger size or fewer subjects")
    return sizes


def _x_positions(widths: list[int], W: int, params: SegMixParams, rng: np.random.Generator) -> list[int]:
    """Left edges for subjects given in left-to-right order."""
    n = len(widths)
    if not params.allow_overlap:
        free = max(0, W - sum(widths))
        gaps = rng.random(n + 1)
        gaps = np.floor(gaps / gaps.sum() * free).astype(int)
        xs, x = [], int(gaps[0])
        for k in range(n):
            xs.append(x)
            x += widths[k] + int(gaps[k + 1])
        return xs
    if n == 1:
        return [int(rng.integers(0, W - widths[0] + 1))]
    max_m = int(params.max_margin_frac * W / (n - 1))  # N > 2: slots are narrower, so are margins
    c_first, c_last = widths[0] / 2, W - widths[-1] / 2
    xs = []
    for k, w in enumerate(widths):
        c = c_first + (c_last - c_first) * k / (n - 1)
        m = int(rng.integers(0, max_m + 1))
        if k == 0:
            c += m
        elif k == n - 1:
            c -= m
        else:
            c += m * (1 if rng.random() < 0.5 else -1) / 2
        xs.append(int(np.clip(round(c - w / 2), 0, W - w)))
    return xs


def compose_segmix(cutouts: Sequence[Cutout], phrases: Sequence[str], size_hw: tuple[int, int],
                   rng: np.random.Generator, params: SegMixParams = SegMixParams()) -> Composition:
    """Compose segmented subjects on a plain background (Algorithm 1, for N subjects).

    ``cutouts`` and ``phrases`` are in prompt order; the result's masks and boxes follow that order.
    Deterministic given ``rng``'s state.
    """
    n = len(cutouts)
    if n == 0 or len(phrases) != n:
        raise MudiError(f"compose_segmix needs one phrase per cutout, got {n} cutouts and {len(phrases)} phrases")
    _check_size(size_hw, n)
    H, W = size_hw
    sizes = _subject_sizes(cutouts, size_hw, params, rng)
    left_to_right = [int(i) for i in rng.permutation(n)]
    xs_ordered = _x_positions([sizes[i][1] for i in left_to_right], W, params, rng)
    xs = [0] * n
    for k, i in enumerate(left_to_right):
        xs[i] = xs_ordered[k]
    ys = [int(rng.integers(0, H - sizes[i][0] + 1)) for i in range(n)]
    stacking = [int(i) for i in rng.permutation(n)]

    # Paste with PIL: its masked paste is several times faster than numpy's boolean indexing.
    canvas = Image.new("RGB", (W, H), tuple(int(c) for c in params.background))
    label_img = Image.new("L", (W, H), 255)  # 255 = background, i = subject i
    boxes: list[BoxXYXY] = [(0, 0, 0, 0)] * n
    for i in stacking:
        h, w = sizes[i]
        rgb, mask = cutouts[i].resized_pil((h, w))
        if mask.getbbox() is None:  # a sliver that vanished: keep its centre pixel
            mask.putpixel((w // 2, h // 2), 255)
        x, y = xs[i], ys[i]
        canvas.paste(rgb, (x, y), mask)
        label_img.paste(i, (x, y, x + w, y + h), mask)
        boxes[i] = (x, y, x + w, y + h)
    label = np.asarray(label_img)
    masks = np.stack([label == i for i in range(n)])
    prompt = segmix_prompt(phrases, params.use_count_prefix)
    return Composition(np.asarray(canvas).copy(), masks, label != 255, boxes, prompt, left_to_right, stacking)


def _cover_resize(rgb: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize to cover ``size_hw`` keeping the aspect ratio, then centre-crop."""
    h, w = size_hw
    ih, iw = rgb.shape[:2]
    s = max(h / ih, w / iw)
    nh, nw = max(h, round(ih * s)), max(w, round(iw * s))
    img = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR))
    y0, x0 = (nh - h) // 2, (nw - w) // 2
    return img[y0:y0 + h, x0:x0 + w]


def compose_cutmix(images: Sequence[np.ndarray], phrases: Sequence[str], size_hw: tuple[int, int],
                   rng: np.random.Generator, seam_jitter_frac: float = 0.1) -> Composition:
    """Cut-Mix baseline: whole reference images (``(h, w, 3)`` uint8) cut into vertical strips.

    Subjects are ordered left to right at random; the seams lie at equal splits of the width, each moved
    by up to ``seam_jitter_frac`` of a strip. The caption names subjects by position. No segmentation:
    each subject's mask is its whole strip.
    """
    n = len(images)
    if n == 0 or len(phrases) != n:
        raise MudiError(f"compose_cutmix needs one phrase per image, got {n} images and {len(phrases)} phrases")
    _check_size(size_hw, n)
    H, W = size_hw
    strip = W / n
    seams = [0] + [int(round(k * strip + rng.uniform(-seam_jitter_frac, seam_jitter_frac) * strip))
                   for k in range(1, n)] + [W]
    left_to_right = [int(i) for i in rng.permutation(n)]
    canvas = np.empty((H, W, 3), dtype=np.uint8)
    masks = np.zeros((n, H, W), dtype=bool)
    boxes: list[BoxXYXY] = [(0, 0, 0, 0)] * n
    for k, i in enumerate(left_to_right):
        x0, x1 = seams[k], seams[k + 1]
        canvas[:, x0:x1] = _cover_resize(images[i], (H, x1 - x0))
        masks[i, :, x0:x1] = True
        boxes[i] = (x0, 0, x1, H)
    prompt = cutmix_prompt([phrases[i] for i in left_to_right])
    return Composition(canvas, masks, masks.any(0), boxes, prompt, left_to_right, list(range(n)))
