"""Seg-Mix and Cut-Mix composition (paper Sec. 4.1, Algorithm 1, Appendix B.2, C.1; the authors' released code).

Seg-Mix, as the authors' SDXL training code composes two subjects on a W x H canvas (the ``sdxl`` preset,
mudi's default), generalised to N >= 2 subjects so that N = 2 is exactly that:

- each subject is its cutout (the image cropped to its mask's box);
- **scale** (``scale="fit"``): ``max_factor = min((W / N - 32) / w, (H - 32) / h)`` at 1024 px (the 32 px margin
  scales with the canvas: ``reference_resolution``), the factor drawn from
  ``U(0.75 * max_factor, max_factor)`` (``scale_range``), or ``max_factor * s`` for a fixed relative size ``s``;
- **positions**: each top ``y ~ U{0, H - h}``, independently (``align_tops``: one ``y`` for all, the prior
  compositions); the leftmost subject's left edge at ``x = m1``, the rightmost's right edge at ``W - m2``,
  ``m ~ U{1, W / 4}`` (``max_margin_frac`` = 1/4, divided by N - 1 beyond two subjects; middle subjects are
  spaced evenly between them and moved by up to half a margin); the left-to-right order and the stacking order
  are random permutations (50 % each for two subjects); large margins make subjects overlap;
- pixels are pasted where the resized mask is ``> 122``; the background is white (the ``flux`` preset: black
  with probability 1/4);
- the caption names the subjects in the order given — the sample's own subject first — whatever the layout:
  ``"a photo of a {A} and a {B}, simple background."``.

``SEGMIX_PRESETS`` holds the authors' SDXL and FLUX settings and ``legacy`` (mudi 0.1's geometry: heights
``U(0.4, 0.8) H``, margins ``U{0, 0.3 W}``). Configs give a :class:`SegMixSettings` (a preset name plus any
field to change), which :meth:`SegMixSettings.resolve` turns into the :class:`SegMixParams` used here.
``allow_overlap=False`` gives the "Seg-Mix w/o subject overlap" ablation of Appendix B.2.

Cut-Mix (Han et al., SVDiff) is the baseline: whole reference images cut into vertical strips side by side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from mudi.core.prompts import SEGMIX_TEMPLATE, cutmix_prompt, segmix_prompt
from mudi.core.types import BoxXYXY, Composition, Cutout
from mudi.errors import MudiError, unknown_name_error

MIN_SUBJECT_PX = 8
FLUX_TEMPLATE = ("a close out photo of {subjects}, {background} simple background, pasted, sticker, unnatural, "
                 "glued, clip-art, attached, collage, low quality.")
LEGACY_TEMPLATE = "A photo of {subjects}, simple background."


@dataclass(frozen=True)
class SegMixParams:
    """How subjects are scaled, placed, pasted and captioned (every value explicit; see the module docstring).

    - ``scale``: ``fit`` (the authors': a fraction ``scale_range`` of the largest factor that fits the
      subject in ``W / N - fit_margin_px`` by ``H - fit_margin_px``) or ``height`` (mudi 0.1: the subject's
      height is a fraction ``scale_range`` of the canvas height, its width at most ``max_width_frac`` of it).
    - ``reference_resolution``: the canvas width ``fit_margin_px`` is given for (the preset's training
      resolution: 1024 for ``sdxl``, 512 for ``flux``); on another canvas the margin scales with the width, so
      the geometry is the same at every size (the authors' 32 px at 1024 px, 1 px at 32 px). ``None``: pixels.
    - ``relative_sizes``: fixed relative sizes per subject in prompt order (Appendix C.1), e.g. ``(1, 2)``:
      with ``fit`` the factor is ``max_factor * s / max(s)``; with ``height`` the heights have exactly these
      ratios.
    - ``max_margin_frac`` / ``min_margin_px``: the outer subjects' distance to the canvas edge is drawn from
      ``U{min_margin_px, round(max_margin_frac * W / (N - 1))}``.
    - ``allow_overlap``: if false, subjects never overlap (they are shrunk to fit side by side).
    - ``align_tops``: every subject's top at one random ``y`` (the authors' prior compositions).
    - ``keep_prompt_order``: subjects left to right in prompt order instead of a random permutation (the
      authors' prior compositions: the instance subject's class on the left).
    - ``background`` / ``black_background_prob``: the plain background's RGB, replaced by black with that
      probability.
    - ``paste_threshold``: pixels are pasted where the resized mask (0..255) is above it.
    - ``caption_template`` (``{subjects}``, ``{background}``: white / black / plain), ``subject_prefix``
      (``"a "``: "a photo of a X and a Y") and ``use_count_prefix`` ("N objects: ", Appendix B.9).
    """

    scale: Literal["fit", "height"] = "fit"
    scale_range: tuple[float, float] = (0.75, 1.0)
    fit_margin_px: int = 32
    reference_resolution: int | None = 1024
    max_width_frac: float = 0.9
    relative_sizes: tuple[float, ...] | None = None
    max_margin_frac: float = 0.25
    min_margin_px: int = 1
    allow_overlap: bool = True
    align_tops: bool = False
    keep_prompt_order: bool = False
    background: tuple[int, int, int] = (255, 255, 255)
    black_background_prob: float = 0.0
    paste_threshold: int = 122
    caption_template: str = SEGMIX_TEMPLATE
    subject_prefix: str = "a "
    use_count_prefix: bool = False

    def __post_init__(self) -> None:
        lo, hi = self.scale_range
        if not 0 < lo <= hi <= 1:
            raise MudiError(f"segmix scale_range {self.scale_range} must satisfy 0 < min <= max <= 1")
        if self.scale not in ("fit", "height"):
            raise MudiError(f"segmix scale {self.scale!r} must be fit (the authors') or height (mudi 0.1)")
        if self.relative_sizes is not None and any(r <= 0 for r in self.relative_sizes):
            raise MudiError(f"relative sizes {list(self.relative_sizes)} must all be positive, e.g. 1,2")
        if self.reference_resolution is not None and self.reference_resolution < 1:
            raise MudiError(f"segmix reference_resolution {self.reference_resolution} must be >= 1 (or null: pixels)")
        if not 0 <= self.max_margin_frac <= 1 or self.min_margin_px < 0 or self.fit_margin_px < 0:
            raise MudiError(f"segmix margins: max_margin_frac {self.max_margin_frac} must be in [0, 1] and the pixel "
                            "margins >= 0")
        if len(self.background) != 3 or any(not 0 <= c <= 255 for c in self.background):
            raise MudiError(f"background {self.background} must be three values in 0..255, e.g. 255,255,255")
        if not 0 <= self.black_background_prob <= 1 or not 0 <= self.paste_threshold <= 254:
            raise MudiError("segmix black_background_prob must be in [0, 1] and paste_threshold in 0..254")
        if "{subjects}" not in self.caption_template:
            raise MudiError(f"segmix caption_template {self.caption_template!r} must contain {{subjects}}")


SEGMIX_PRESETS: dict[str, SegMixParams] = {
    # The authors' SDXL training code (mudi's default for the UNet families).
    "sdxl": SegMixParams(),
    # The authors' FLUX script: scale U(0.9 max, max), margins U{1, 64} at 512 px, white or (1/4) black.
    "flux": SegMixParams(reference_resolution=512, scale_range=(0.9, 1.0), max_margin_frac=0.125, black_background_prob=0.25,
                         caption_template=FLUX_TEMPLATE, subject_prefix="a small "),
    # mudi 0.1: heights U(0.4, 0.8) H, margins U{0, 0.3 W}, "A photo of X and Y, simple background."
    "legacy": SegMixParams(scale="height", scale_range=(0.4, 0.8), max_margin_frac=0.3, min_margin_px=0,
                           caption_template=LEGACY_TEMPLATE, subject_prefix="", paste_threshold=127),
}


@dataclass(frozen=True)
class SegMixSettings:
    """The ``segmix`` block of a config: a preset (``auto``: the backbone's, ``sdxl`` without one) and any
    :class:`SegMixParams` field to change (``None``: the preset's value)."""

    preset: str = "auto"
    scale: Literal["fit", "height"] | None = None
    scale_range: tuple[float, float] | None = None
    fit_margin_px: int | None = None
    reference_resolution: int | None = None
    max_width_frac: float | None = None
    max_margin_frac: float | None = None
    min_margin_px: int | None = None
    allow_overlap: bool | None = None
    align_tops: bool | None = None
    keep_prompt_order: bool | None = None
    background: tuple[int, int, int] | None = None
    black_background_prob: float | None = None
    paste_threshold: int | None = None
    caption_template: str | None = None
    subject_prefix: str | None = None
    use_count_prefix: bool | None = None

    def __post_init__(self) -> None:
        if self.preset != "auto" and self.preset not in SEGMIX_PRESETS:
            raise unknown_name_error("segmix preset", self.preset, [*SEGMIX_PRESETS, "auto"])
        self.resolve()  # validates the values now, not at step 300

    def resolve(self, default_preset: str = "sdxl") -> SegMixParams:
        """The :class:`SegMixParams`: the preset (``auto`` → ``default_preset``) with the given fields changed."""
        name = default_preset if self.preset == "auto" else self.preset
        if name not in SEGMIX_PRESETS:
            raise unknown_name_error("segmix preset", name, SEGMIX_PRESETS)
        changes = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name != "preset" and getattr(self, f.name) is not None}
        return dataclasses.replace(SEGMIX_PRESETS[name], **changes)


def cutout_max_side(size_hw: tuple[int, int], params: SegMixParams) -> int:
    """The longest side a cutout can have in a composition of ``size_hw``: caching cutouts at this size
    (``Subject.cutouts(max_side=...)``) loses nothing and makes every resize cheaper."""
    H, W = size_hw
    if params.scale == "fit":
        return int(max(H, W))
    return int(np.ceil(max(params.scale_range[1] * H, params.max_width_frac * W)))


def _check_size(size_hw: tuple[int, int], n: int) -> None:
    h, w = size_hw
    if h < 2 * MIN_SUBJECT_PX or w < n * MIN_SUBJECT_PX:
        raise MudiError(f"composition size {w}x{h} is too small for {n} subjects: use at least "
                        f"{max(2 * MIN_SUBJECT_PX, n * MIN_SUBJECT_PX)} px (e.g. --resolution 512)")


def _relative(params: SegMixParams, n: int) -> np.ndarray | None:
    if params.relative_sizes is None:
        return None
    if len(params.relative_sizes) != n:
        raise MudiError(f"{len(params.relative_sizes)} relative sizes given for {n} subjects: give one per subject")
    r = np.asarray(params.relative_sizes, dtype=float)
    return r / r.max()


def _fit_sizes(cutouts: Sequence[Cutout], size_hw: tuple[int, int], params: SegMixParams,
               rng: np.random.Generator) -> list[tuple[int, int]]:
    """The authors' scale: a fraction of the largest factor that fits ``W / N - m`` by ``H - m``."""
    H, W = size_hw
    n = len(cutouts)
    fit = params.fit_margin_px if not params.reference_resolution else \
        int(round(params.fit_margin_px * W / params.reference_resolution))
    fit = min(fit, max(0, W // (2 * n) - 1), max(0, H // 2 - 1))  # tiny canvases keep room
    rel = _relative(params, n)
    lo, hi = params.scale_range
    sizes = []
    for i, c in enumerate(cutouts):
        h, w = c.size_hw
        max_factor = min((W / n - fit) / w, (H - fit) / h)
        factor = max_factor * rel[i] if rel is not None else rng.uniform(lo * max_factor, hi * max_factor)
        sizes.append((max(1, int(h * factor)), max(1, int(w * factor))))
    return sizes


def _height_sizes(cutouts: Sequence[Cutout], size_hw: tuple[int, int], params: SegMixParams,
                  rng: np.random.Generator) -> list[tuple[int, int]]:
    """mudi 0.1's scale: heights a fraction of the canvas height (exact ratios for relative sizes)."""
    H, W = size_hw
    n = len(cutouts)
    lo, hi = params.scale_range
    rel = _relative(params, n)
    heights = rng.uniform(lo, hi) * H * rel if rel is not None else rng.uniform(lo, hi, size=n) * H
    widths = heights * np.array([c.size_hw[1] / c.size_hw[0] for c in cutouts])
    limit = params.max_width_frac * W
    f = min(1.0, limit / widths.max()) if rel is not None else np.minimum(1.0, limit / widths)
    heights, widths = heights * f, widths * f
    return [(max(1, int(round(h))), max(1, int(round(w)))) for h, w in zip(heights, widths)]


def _subject_sizes(cutouts: Sequence[Cutout], size_hw: tuple[int, int], params: SegMixParams,
                   rng: np.random.Generator) -> list[tuple[int, int]]:
    H, W = size_hw
    n = len(cutouts)
    sizes = (_fit_sizes if params.scale == "fit" else _height_sizes)(cutouts, size_hw, params, rng)
    total = sum(w for _, w in sizes)
    if not params.allow_overlap and total > 0.98 * W:  # shrink together to fit side by side
        f = 0.98 * W / total
        sizes = [(max(1, int(h * f)), max(1, int(w * f))) for h, w in sizes]
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
    max_m = int(round(params.max_margin_frac * W / (n - 1)))  # N > 2: slots are narrower, so are margins
    lo_m = min(params.min_margin_px, max_m)
    c_first, c_last = widths[0] / 2, W - widths[-1] / 2
    xs = []
    for k, w in enumerate(widths):
        c = c_first + (c_last - c_first) * k / (n - 1)
        m = int(rng.integers(lo_m, max_m + 1))
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

    ``cutouts`` and ``phrases`` are in prompt order (a training sample's own subject first); the result's masks
    and boxes follow that order, and so does the caption, whatever the left-to-right layout. Deterministic given
    ``rng``'s state.
    """
    n = len(cutouts)
    if n == 0 or len(phrases) != n:
        raise MudiError(f"compose_segmix needs one phrase per cutout, got {n} cutouts and {len(phrases)} phrases")
    _check_size(size_hw, n)
    H, W = size_hw
    sizes = _subject_sizes(cutouts, size_hw, params, rng)
    left_to_right = list(range(n)) if params.keep_prompt_order else [int(i) for i in rng.permutation(n)]
    xs_ordered = _x_positions([sizes[i][1] for i in left_to_right], W, params, rng)
    xs = [0] * n
    for k, i in enumerate(left_to_right):
        xs[i] = xs_ordered[k]
    if params.align_tops:
        top = int(rng.integers(0, H - max(h for h, _ in sizes) + 1))
        ys = [top] * n
    else:
        ys = [int(rng.integers(0, H - sizes[i][0] + 1)) for i in range(n)]
    stacking = [int(i) for i in rng.permutation(n)]
    black = params.black_background_prob > 0 and rng.random() < params.black_background_prob
    background = (0, 0, 0) if black else tuple(int(c) for c in params.background)

    # Paste with PIL: its masked paste is several times faster than numpy's boolean indexing.
    canvas = Image.new("RGB", (W, H), background)
    label_img = Image.new("L", (W, H), 255)  # 255 = background, i = subject i
    boxes: list[BoxXYXY] = [(0, 0, 0, 0)] * n
    for i in stacking:
        h, w = sizes[i]
        rgb, mask = cutouts[i].resized_pil((h, w), params.paste_threshold)
        if mask.getbbox() is None:  # a sliver that vanished: keep its centre pixel
            mask.putpixel((w // 2, h // 2), 255)
        x, y = xs[i], ys[i]
        canvas.paste(rgb, (x, y), mask)
        label_img.paste(i, (x, y, x + w, y + h), mask)
        boxes[i] = (x, y, x + w, y + h)
    label = np.asarray(label_img)
    masks = np.stack([label == i for i in range(n)])
    name = {(255, 255, 255): "white", (0, 0, 0): "black"}.get(background, "plain")
    prompt = segmix_prompt(phrases, params.use_count_prefix, template=params.caption_template,
                           subject_prefix=params.subject_prefix, background=name)
    return Composition(np.asarray(canvas).copy(), masks, label != 255, boxes, prompt, left_to_right, stacking,
                       background)


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
