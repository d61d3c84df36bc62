"""The toy world's automatic checker: which objects does an image show, and are they the ones asked for?

Pure numpy/scipy. :func:`detect_objects` finds the background as the median border colour, marks as object
every pixel nearer to a palette colour than to the background (and clearly away from it), splits that into
4-connected components, votes each half's colour against the palette (the rows next to the middle are
left out: that is where two colours blend), and classifies the shape as the world's shape template that
best overlaps the component's mask.

:func:`check_image` compares the detections with the expected :class:`~mudi.toyworld.world.ObjectSpec` list
and gives one verdict, the first that applies of :data:`VERDICTS`:

- ``missing`` / ``extra``: fewer / more objects than asked for (two touching objects read as one: missing);
- ``duplicate``: one subject drawn twice, another not at all;
- ``blend``: an object carries a colour or the shape of *another* expected object (identity mixing);
- ``wrong_shape`` / ``wrong_colour``: any other mismatch;
- ``correct``: every object matches exactly (shape, top colour, bottom colour).

:func:`calibrate` runs the checker on ground-truth renders: it should say ``correct`` for (nearly) all.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mudi.errors import MudiError
from mudi.toyworld.world import (
    COLOURS,
    PALETTE,
    RESOLUTION,
    SHAPES,
    Identity,
    ObjectSpec,
    render_scene,
    sample_scene,
    shape_mask,
)

VERDICTS = ("missing", "extra", "duplicate", "blend", "wrong_shape", "wrong_colour", "correct")
_PALETTE_RGB = np.array([PALETTE[c] for c in COLOURS], np.float32)  # (K, 3)


@dataclass(frozen=True)
class DetectedObject(Identity):
    """One object found in an image. ``mask`` is ``(H, W)`` bool, ``box_xyxy`` absolute pixels (exclusive
    right/bottom); ``votes`` counts palette votes over the whole object (for diagnosis)."""

    shape: str
    top: str
    bottom: str | None
    mask: np.ndarray
    box_xyxy: tuple[int, int, int, int]
    votes: dict

    def matches(self, spec: ObjectSpec) -> bool:
        return (self.shape, self.top, self.bottom) == (spec.shape, spec.top, spec.bottom)


@dataclass(frozen=True)
class CheckResult:
    """``verdict`` (one of :data:`VERDICTS`), the detections, and for each expected object the index of
    the detection matched to it (None when the counts differ)."""

    verdict: str
    objects: tuple[DetectedObject, ...]
    assignment: tuple[int, ...] | None

    @property
    def is_correct(self) -> bool:
        return self.verdict == "correct"


# ------------------------------------------------------------------------------------------- detection
def as_rgb_uint8(image, resolution: int = RESOLUTION) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB array of ``resolution`` px from a PIL image, a uint8 array, or a float array
    in [0, 1] (diffusers' ``output_type="np"``); other sizes are box-downscaled."""
    from PIL import Image

    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise MudiError(f"the checker needs an (H, W, 3) RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise MudiError(f"the checker needs uint8 or float images in [0, 1], got {arr.dtype}")
        arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    if arr.shape[:2] != (resolution, resolution):
        arr = np.asarray(Image.fromarray(arr).resize((resolution, resolution), Image.BOX))
    return arr


def background_colour(image: np.ndarray) -> np.ndarray:
    """Median RGB of the one-pixel border, ``(3,)`` float32."""
    border = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    return np.median(border.astype(np.float32), axis=0)


def classify_shape(mask: np.ndarray) -> str:
    """The shape in :data:`~mudi.toyworld.world.SHAPES` whose template best overlaps (IoU) a component's
    ``(h, w)`` bool mask cropped to its box; templates are the world's own shapes, centred in the box, side
    ``max(h, w)`` ± 0.5 px. Rounded corners of a blurred square still read as a square, not a circle."""
    ious = shape_ious(mask)
    return max(SHAPES, key=lambda shape: ious[shape])  # ties: the first of SHAPES


def shape_ious(mask: np.ndarray) -> dict[str, float]:
    """Per shape of :data:`~mudi.toyworld.world.SHAPES`, the best IoU of its template (centred in the box, side
    ``max(h, w)`` ± 0.5 px) with the ``(h, w)`` bool mask cropped to its box."""
    h, w = mask.shape
    side = max(h, w)
    out = {}
    for shape in SHAPES:
        best = -1.0
        for ds in (-0.5, 0.0, 0.5):
            template = shape_mask(ObjectSpec(shape, COLOURS[0], None, side + ds, w / 2, h / 2), (h, w))
            best = max(best, float((template & mask).sum() / max(1, (template | mask).sum())))
        out[shape] = best
    return out


def _vote(labels: np.ndarray, confident: np.ndarray) -> tuple[str | None, Counter]:
    votes = Counter(COLOURS[k] for k in labels[confident])
    return (votes.most_common(1)[0][0] if votes else None), votes


def unmix(rgb: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read each pixel as ``alpha * colour + (1 - alpha) * bg`` (an anti-aliased edge): ``(labels, alpha,
    residual)``, each ``(H, W)``: the palette index whose background-to-colour line passes nearest the pixel,
    its ``alpha`` (≈ coverage: 0 = background, 1 = the flat colour) and the distance to that line."""
    d = _PALETTE_RGB - bg  # (K, 3)
    v = rgb - bg  # (H, W, 3)
    alpha = np.clip(v @ d.T / (d * d).sum(-1), 0.0, 1.2)  # (H, W, K)
    resid = np.linalg.norm(v[:, :, None, :] - alpha[..., None] * d, axis=-1)
    labels = resid.argmin(-1)
    pick = labels[..., None]
    return labels, np.take_along_axis(alpha, pick, -1)[..., 0], np.take_along_axis(resid, pick, -1)[..., 0]


def detect_objects(image, min_area: int = 12, min_alpha: float = 0.45, min_distance: float = 25.0
                   ) -> list[DetectedObject]:
    """Objects in ``image`` (anything :func:`as_rgb_uint8` takes), largest first.

    A pixel is object when it is at least ``min_distance`` (RGB Euclidean) from the background and at
    least ``min_alpha`` of the way from the background to a palette colour (:func:`unmix`; 0.45 ≈ the
    half-covered pixels the world's masks include); components under ``min_area`` pixels are specks.
    Colours are voted by the confident pixels only (alpha ≥ 0.75, within 60 of the colour's line).
    """
    rgb = as_rgb_uint8(image).astype(np.float32)
    bg = background_colour(rgb)
    labels, alpha, resid = unmix(rgb, bg)
    fg = (np.linalg.norm(rgb - bg, axis=-1) >= min_distance) & (alpha >= min_alpha)
    comp, n = ndimage.label(fg)  # 4-connected
    row_c = np.arange(rgb.shape[0])[:, None] + 0.5
    found = []
    for i in range(1, n + 1):
        m = comp == i
        if m.sum() < min_area:
            continue
        ys, xs = np.nonzero(m)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        confident = m & (alpha >= 0.75) & (resid < 60.0)
        if not confident.any():
            confident = m
        mid = (y0 + y1) / 2
        top, _ = _vote(labels, confident & (row_c < mid - 1.0))
        bottom, _ = _vote(labels, confident & (row_c > mid + 1.0))
        everywhere, votes = _vote(labels, confident)
        top = top or everywhere
        bottom = bottom or top
        found.append(DetectedObject(shape=classify_shape(m[y0:y1, x0:x1]), top=top,
                                    bottom=None if bottom == top else bottom, mask=m,
                                    box_xyxy=(int(x0), int(y0), int(x1), int(y1)), votes=dict(votes)))
    found.sort(key=lambda o: -int(o.mask.sum()))
    return found


# ------------------------------------------------------------------------------------------- verdicts
def _attribute_matches(det: DetectedObject, spec: ObjectSpec) -> int:
    return int(det.shape == spec.shape) + int(det.top == spec.top) + int(det.bottom == spec.bottom)


def _mismatch(det: DetectedObject, spec: ObjectSpec, others: list[ObjectSpec]) -> str | None:
    """None when ``det`` is ``spec``; else ``blend`` (it shows an attribute of another expected object that
    ``spec`` does not have), ``wrong_shape`` or ``wrong_colour``."""
    if det.matches(spec):
        return None
    foreign_colours = {c for o in others for c in o.colours} - set(spec.colours)
    foreign_shapes = {o.shape for o in others} - {spec.shape}
    wrong_colours = set(det.colours) - set(spec.colours)
    if wrong_colours & foreign_colours or (det.shape != spec.shape and det.shape in foreign_shapes):
        return "blend"
    return "wrong_shape" if det.shape != spec.shape else "wrong_colour"


def check_image(image, expected: list[ObjectSpec] | tuple[ObjectSpec, ...], **detect_kwargs) -> CheckResult:
    """The verdict for ``image`` against the ``expected`` objects (identities; size and position ignored)."""
    if not expected:
        raise MudiError("check_image needs at least one expected object")
    found = tuple(detect_objects(image, **detect_kwargs))
    if len(found) < len(expected):
        return CheckResult("missing", found, None)
    if len(found) > len(expected):
        return CheckResult("extra", found, None)
    best = max(itertools.permutations(range(len(found))),
               key=lambda perm: sum(_attribute_matches(found[j], e) for j, e in zip(perm, expected)))
    if len(expected) > 1 and any(sum(d.matches(e) for d in found) > 1 for e in expected):
        return CheckResult("duplicate", found, tuple(best))
    problems = {_mismatch(found[j], e, [o for o in expected if o is not e]) for j, e in zip(best, expected)}
    for verdict in ("blend", "wrong_shape", "wrong_colour"):
        if verdict in problems:
            return CheckResult(verdict, found, tuple(best))
    return CheckResult("correct", found, tuple(best))


def summarize(results: list[CheckResult]) -> dict:
    """``{"accuracy": fraction correct, "n": count, "verdicts": {verdict: count}}``."""
    counts = Counter(r.verdict for r in results)
    n = len(results)
    return {"accuracy": counts["correct"] / n if n else float("nan"), "n": n,
            "verdicts": {v: counts[v] for v in VERDICTS if counts[v]}}


# ------------------------------------------------------------------------------------------- calibration
def calibrate(num_images: int = 500, seed: int = 0) -> dict:
    """The checker on ``num_images`` ground-truth renders with 1 object and as many with 2:
    ``{1: summary, 2: summary}`` (see :func:`summarize`)."""
    out = {}
    for num_objects in (1, 2):
        rng = np.random.default_rng([seed, num_objects])
        results = []
        for _ in range(num_images):
            scene = sample_scene(rng, two_object_prob=float(num_objects == 2))
            results.append(check_image(render_scene(scene)[0], scene.objects))
        out[num_objects] = summarize(results)
    return out
