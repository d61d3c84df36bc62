"""The toy world: 32×32 RGB scenes of one or two flat-coloured shapes, their captions and masks.

Pure numpy/PIL. A scene is a background colour and a list of :class:`ObjectSpec`; :func:`render_scene`
draws it with 4× supersampling (anti-aliased edges) and returns the image with one bool mask per object
(pixels at least half covered). Two-coloured objects are split at their vertical centre: ``top`` above,
``bottom`` below. Every sampler takes an explicit ``np.random.Generator``, so a seed gives the same data.

Captions name objects as "<top> [<bottom>] <shape>": ``"a photo of a red blue square and a green circle."``;
plain white scenes sometimes add ``", simple background"`` (the Seg-Mix caption's suffix).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from mudi.errors import MudiError

RESOLUTION = 32
SUPERSAMPLE = 4
SHAPES = ("circle", "square", "triangle")
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 170, 50),
    "blue": (35, 70, 225),
    "yellow": (245, 215, 30),
    "purple": (150, 45, 200),
    "cyan": (30, 200, 215),
}
COLOURS = tuple(PALETTE)
WHITE = (255, 255, 255)
SIZE_RANGE = (9, 16)  # object side (bounding square) in pixels, inclusive
MIN_GAP = 2  # pixels between the bounding boxes of two objects
# Never in pretraining captions: the words DreamBooth/MuDI binds to subjects.
IDENTIFIERS = ("olis", "hta", "zwx", "sks", "vrs", "bnha", "qpt", "mek")


def check_identity(shape: str, top: str, bottom: str | None) -> None:
    """A one-line :class:`MudiError` unless ``shape`` is in :data:`SHAPES`, ``top`` and ``bottom`` (None = one
    colour) in :data:`PALETTE` and distinct."""
    if shape not in SHAPES:
        raise MudiError(f"shape {shape!r} is not one of {SHAPES}")
    for c in (top, bottom):
        if c is not None and c not in PALETTE:
            raise MudiError(f"colour {c!r} is not one of {COLOURS}")
    if bottom == top:
        raise MudiError(f"object with top and bottom both {top!r}: give bottom=None for one colour")


class Identity:
    """What an object *is* (its ``shape``, ``top`` and ``bottom`` colour; not where or how large), in words:
    shared by the world's objects, the checker's detections and the personalization subjects."""

    shape: str
    top: str
    bottom: str | None

    @property
    def colours(self) -> tuple[str, ...]:
        """``(top,)`` or ``(top, bottom)``."""
        return (self.top,) if self.bottom is None else (self.top, self.bottom)

    @property
    def phrase(self) -> str:
        """``"red blue square"`` / ``"green circle"``."""
        return " ".join([*self.colours, self.shape])


@dataclass(frozen=True)
class ObjectSpec(Identity):
    """One object: ``shape`` in :data:`SHAPES`, ``top`` colour, ``bottom`` colour (None = one colour),
    ``size`` (side of its bounding square, pixels) and centre ``(cx, cy)`` in pixels (may be fractional)."""

    shape: str
    top: str
    bottom: str | None = None
    size: float = 12.0
    cx: float = 16.0
    cy: float = 16.0

    def __post_init__(self) -> None:
        check_identity(self.shape, self.top, self.bottom)
        if self.size <= 1:
            raise MudiError(f"object size {self.size} must be > 1 pixel")

    @property
    def box_xyxy(self) -> tuple[float, float, float, float]:
        h = self.size / 2
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)

    def same_identity(self, other: ObjectSpec) -> bool:
        """Same shape and colours (size and position ignored)."""
        return (self.shape, self.top, self.bottom) == (other.shape, other.top, other.bottom)


@dataclass(frozen=True)
class Scene:
    """A background RGB and its objects (drawn in order; the sampler never lets them overlap)."""

    objects: tuple[ObjectSpec, ...]
    background: tuple[int, int, int] = WHITE
    simple_background: bool = False  # caption says ", simple background" (only meaningful on white)


# ---------------------------------------------------------------------------------------------- rendering
def _supersampled(spec: ObjectSpec, hw: tuple[int, int], ss: int) -> np.ndarray:
    """``(H*ss, W*ss)`` bool: the supersampled pixels inside the shape, on an ``hw`` canvas."""
    y = ((np.arange(hw[0] * ss) + 0.5) / ss)[:, None]  # pixel-centre coordinates in output pixels
    x = ((np.arange(hw[1] * ss) + 0.5) / ss)[None, :]
    h = spec.size / 2
    if spec.shape == "circle":
        return (x - spec.cx) ** 2 + (y - spec.cy) ** 2 <= h * h
    inside_box = (np.abs(x - spec.cx) <= h) & (np.abs(y - spec.cy) <= h)
    if spec.shape == "square":
        return inside_box
    # triangle: apex at top centre, base along the bottom edge of the bounding square
    frac = (y - (spec.cy - h)) / spec.size  # 0 at apex, 1 at base
    return inside_box & (np.abs(x - spec.cx) <= h * frac)


def shape_mask(spec: ObjectSpec, hw: tuple[int, int] = (RESOLUTION, RESOLUTION),
               supersample: int = SUPERSAMPLE) -> np.ndarray:
    """``(H, W)`` bool: the pixels ``spec`` covers at least half of, alone on an ``hw`` canvas."""
    ss = int(supersample)
    cov = _supersampled(spec, hw, ss).reshape(hw[0], ss, hw[1], ss).mean(axis=(1, 3))
    return cov >= 0.5


def render_scene(scene: Scene, resolution: int = RESOLUTION, supersample: int = SUPERSAMPLE
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(image (H, W, 3) uint8, [mask (H, W) bool per object])``, H = W = ``resolution``.

    Each object's mask is where it covers at least half of a pixel (later objects hide earlier ones).
    """
    ss = int(supersample)
    n = resolution * ss
    canvas = np.empty((n, n, 3), np.float32)
    canvas[:] = np.asarray(scene.background, np.float32)
    owner = np.full((n, n), -1, np.int16)
    ys = (np.arange(n) + 0.5) / ss
    for i, spec in enumerate(scene.objects):
        cov = _supersampled(spec, (resolution, resolution), ss)
        colour = np.empty((n, 3), np.float32)  # per row: top colour above cy, bottom colour below
        colour[:] = PALETTE[spec.top]
        if spec.bottom is not None:
            colour[ys >= spec.cy] = PALETTE[spec.bottom]
        canvas = np.where(cov[..., None], colour[:, None, :], canvas)
        owner[cov] = i
    image = canvas.reshape(resolution, ss, resolution, ss, 3).mean(axis=(1, 3))
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    masks = []
    for i in range(len(scene.objects)):
        frac = (owner == i).reshape(resolution, ss, resolution, ss).mean(axis=(1, 3))
        masks.append(frac >= 0.5)
    return image, masks


# ----------------------------------------------------------------------------------------------- captions
def caption_objects(objects: tuple[ObjectSpec, ...] | list[ObjectSpec] | list[str],
                    simple_background: bool = False) -> str:
    """``"a photo of a red blue square and a green circle."``: the objects (or their phrases) in the order
    given."""
    phrases = [o if isinstance(o, str) else o.phrase for o in objects]
    if not phrases:
        raise MudiError("a caption needs at least one object")
    body = " and ".join(f"a {p}" for p in phrases)
    return f"a photo of {body}{', simple background' if simple_background else ''}."


def caption_scene(scene: Scene) -> str:
    return caption_objects(scene.objects, scene.simple_background)


def caption_vocabulary() -> list[str]:
    """Every word (and punctuation mark) a pretraining caption can contain."""
    return ["a", "photo", "of", "and", "simple", "background", ",", ".", *COLOURS, *SHAPES]


# ----------------------------------------------------------------------------------------------- sampling
def sample_background(rng: np.random.Generator, white_prob: float = 0.5) -> tuple[int, int, int]:
    """White, or a pale tint (each channel 215–250, chroma at most ~25)."""
    if rng.random() < white_prob:
        return WHITE
    base = rng.uniform(225, 245)
    tint = rng.uniform(-12, 12, size=3)
    return tuple(int(v) for v in np.clip(np.rint(base + tint), 215, 250))


def sample_identity(rng: np.random.Generator, two_colour_prob: float = 0.6) -> tuple[str, str, str | None]:
    """``(shape, top, bottom or None)`` uniformly over shapes and colours."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    top = COLOURS[rng.integers(len(COLOURS))]
    bottom = None
    if rng.random() < two_colour_prob:
        others = [c for c in COLOURS if c != top]
        bottom = others[rng.integers(len(others))]
    return shape, top, bottom


def _boxes_apart(a: ObjectSpec, b: ObjectSpec, gap: float) -> bool:
    ax0, ay0, ax1, ay1 = a.box_xyxy
    bx0, by0, bx1, by1 = b.box_xyxy
    return ax1 + gap <= bx0 or bx1 + gap <= ax0 or ay1 + gap <= by0 or by1 + gap <= ay0


def place_objects(rng: np.random.Generator, identities: list[tuple[str, str, str | None]],
                  size_range: tuple[float, float] = SIZE_RANGE, resolution: int = RESOLUTION,
                  margin: float = 1.0, gap: float = MIN_GAP, max_tries: int = 200) -> tuple[ObjectSpec, ...]:
    """Random integer sizes and positions for ``identities``, inside the canvas and ``gap`` pixels apart."""
    lo, hi = size_range
    for _ in range(max_tries):
        placed: list[ObjectSpec] = []
        for shape, top, bottom in identities:
            size = float(rng.integers(int(lo), int(hi) + 1))
            h = size / 2
            cx = float(rng.uniform(margin + h, resolution - margin - h))
            cy = float(rng.uniform(margin + h, resolution - margin - h))
            spec = ObjectSpec(shape, top, bottom, size, round(cx * 2) / 2, round(cy * 2) / 2)
            if all(_boxes_apart(spec, p, gap) for p in placed):
                placed.append(spec)
            else:
                break
        if len(placed) == len(identities):
            return tuple(placed)
    raise MudiError(f"could not place {len(identities)} objects of sizes {size_range} on a {resolution}px "
                    "canvas; use smaller sizes or fewer objects")


def sample_scene(rng: np.random.Generator, two_object_prob: float = 0.6, two_colour_prob: float = 0.6,
                 simple_background_prob: float = 0.5) -> Scene:
    """One random scene: 1 or 2 objects (two distinct identities), a background, the caption flag."""
    n = 2 if rng.random() < two_object_prob else 1
    identities = [sample_identity(rng, two_colour_prob)]
    while len(identities) < n:
        cand = sample_identity(rng, two_colour_prob)
        if cand != identities[0]:
            identities.append(cand)
    objects = place_objects(rng, identities)
    background = sample_background(rng)
    simple = background == WHITE and rng.random() < simple_background_prob
    return Scene(objects, background, simple)


def sample_dataset(num_images: int, seed: int, **scene_kwargs) -> tuple[np.ndarray, list[str], list[Scene]]:
    """``(images (N, 32, 32, 3) uint8, captions, scenes)``: ``num_images`` scenes drawn from ``seed``
    (deterministic)."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, **scene_kwargs) for _ in range(num_images)]
    images = np.zeros((len(scenes), RESOLUTION, RESOLUTION, 3), np.uint8)
    for i, s in enumerate(scenes):
        images[i] = render_scene(s)[0]
    return images, [caption_scene(s) for s in scenes], scenes


# ----------------------------------------------------------------------------------------------- subjects
@dataclass(frozen=True)
class ToySubject(Identity):
    """A personalization subject: one identity of the world bound to an identifier word."""

    name: str
    identifier: str
    shape: str
    top: str
    bottom: str | None = None

    def __post_init__(self) -> None:
        check_identity(self.shape, self.top, self.bottom)

    @property
    def identity(self) -> dict[str, str]:
        """The ``toyworld`` key of its subject.yaml (:mod:`mudi.data.toyworld_identity`)."""
        return {"shape": self.shape, "top": self.top, **({"bottom": self.bottom} if self.bottom else {})}

    def spec(self, size: float = 12.0, cx: float = 16.0, cy: float = 16.0) -> ObjectSpec:
        return ObjectSpec(self.shape, self.top, self.bottom, size, cx, cy)

    @property
    def descriptive_class(self) -> str:
        """The world's own words for it ("red yellow square"): the descriptive class of Sec. 4.1."""
        return self.phrase


# The demo pair: two squares sharing a yellow bottom half, red vs blue top (the paper's "similar subjects").
DEMO_SUBJECTS = (ToySubject("red_yellow_square", "olis", "square", "red", "yellow"),
                 ToySubject("blue_yellow_square", "hta", "square", "blue", "yellow"))


def render_subject(subject: ToySubject, num_images: int, rng: np.random.Generator,
                   size_range: tuple[float, float] = (11, 16)) -> list[tuple[np.ndarray, np.ndarray]]:
    """``num_images`` reference renders ``[(image (32, 32, 3) uint8, mask (32, 32) bool)]`` of one subject:
    random size, position and background shade."""
    out = []
    for _ in range(num_images):
        (spec,) = place_objects(rng, [(subject.shape, subject.top, subject.bottom)], size_range=size_range)
        image, (mask,) = render_scene(Scene((spec,), sample_background(rng)))
        out.append((image, mask))
    return out


def write_subject_folder(subject: ToySubject, folder: str | Path, num_images: int = 4, seed: int = 0,
                         class_noun: str | None = None, descriptive_class: str | None = None) -> Path:
    """Write a native mudi subject folder: ``subject.yaml`` (with the identity under its ``toyworld`` key, what
    the checker reads), ``00.png …`` and ``masks/00.png …`` (white = subject).

    ``class_noun`` defaults to the shape ("square"); ``descriptive_class`` to the subject's colours and shape
    ("red yellow square", the paper's recipe: descriptive classes for similar subjects).
    """
    if num_images < 1:
        raise MudiError(f"num_images must be >= 1, got {num_images}")
    folder = Path(folder)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    class_noun = class_noun or subject.shape
    meta = {"name": subject.name, "identifier": subject.identifier, "class_noun": class_noun,
            "descriptive_class": descriptive_class or subject.descriptive_class, "toyworld": subject.identity}
    (folder / "subject.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    for i, (image, mask) in enumerate(render_subject(subject, num_images, np.random.default_rng(seed))):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"{i:02d}.png")
    return folder
