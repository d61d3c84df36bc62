"""Plain data types shared by the core functions.

Conventions: images are RGB ``uint8`` arrays of shape ``(H, W, 3)``; masks are ``bool`` arrays of shape
``(H, W)``; boxes are ``(x0, y0, x1, y1)`` in absolute pixels with ``x1``/``y1`` exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from PIL import Image

BoxXYXY = tuple[int, int, int, int]
PYRAMID_STEP = 0.75  # Cutout resize pyramid: each level is 3/4 of the one above
PYRAMID_LEVELS = 6


@dataclass(frozen=True)
class Cutout:
    """One segmented subject, cropped to its mask's bounding box.

    ``rgb``: ``(h, w, 3)`` uint8; ``mask``: ``(h, w)`` bool, true on the subject; the mask touches all four
    borders of the crop (it is the tight box).
    """

    rgb: np.ndarray
    mask: np.ndarray

    def __post_init__(self) -> None:
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.rgb.dtype != np.uint8:
            raise ValueError(f"Cutout.rgb must be (h, w, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}")
        if self.mask.shape != self.rgb.shape[:2] or self.mask.dtype != bool:
            raise ValueError(f"Cutout.mask must be ({self.rgb.shape[0]}, {self.rgb.shape[1]}) bool, "
                             f"got {self.mask.shape} {self.mask.dtype}")
        if not self.mask.any():
            raise ValueError("Cutout.mask is empty")

    @property
    def size_hw(self) -> tuple[int, int]:
        return self.mask.shape[0], self.mask.shape[1]

    @cached_property
    def pil_rgb(self) -> Image.Image:
        return Image.fromarray(self.rgb, "RGB")

    @cached_property
    def pil_mask(self) -> Image.Image:
        return Image.fromarray(self.mask.astype(np.uint8) * 255, "L")

    def _level(self, k: int) -> tuple[Image.Image, Image.Image]:
        """Pyramid level ``k``: the cutout at ``PYRAMID_STEP ** k`` of its size (antialiased; the mask kept soft,
        0..255), built lazily."""
        cache = self.__dict__.setdefault("_levels", {})
        if k not in cache:
            if k == 0:
                cache[k] = (self.pil_rgb, self.pil_mask)
            else:
                h, w = self.size_hw
                f = PYRAMID_STEP ** k
                size = (max(1, round(w * f)), max(1, round(h * f)))
                cache[k] = (self.pil_rgb.resize(size, Image.BILINEAR), self.pil_mask.resize(size, Image.BILINEAR))
        return cache[k]

    def resized_pil(self, size_hw: tuple[int, int], threshold: int = 122) -> tuple[Image.Image, Image.Image]:
        """The RGB and the mask resized to ``size_hw`` (bilinear, antialiased), as PIL images; the mask is
        binary (0/255): the resized soft mask ``> threshold`` (the authors paste where the mask is > 122).

        The resize starts from the smallest cached pyramid level still at least as large as the target, so
        every resize shrinks by less than ``1 / PYRAMID_STEP``: the antialiased result is the same to within
        rounding, and its cost no longer grows with how far the cutout is shrunk.
        """
        h, w = size_hw
        f = min(h / self.size_hw[0], w / self.size_hw[1])
        k = 0
        while k < PYRAMID_LEVELS and PYRAMID_STEP ** (k + 1) >= f:
            k += 1
        rgb, mask = self._level(k)
        soft = mask.resize((w, h), Image.BILINEAR)
        return rgb.resize((w, h), Image.BILINEAR), soft.point(lambda v: 255 if v > threshold else 0)


@dataclass
class Composition:
    """A composed training or initialisation image.

    All per-subject lists are in *prompt order* (the order the subjects were given in), not left-to-right.

    - ``image``: ``(H, W, 3)`` uint8 composite.
    - ``masks``: ``(N, H, W)`` bool, each subject's *visible* pixels after occlusion by subjects above it.
    - ``union_mask``: ``(H, W)`` bool, any subject (``masks.any(0)``).
    - ``boxes_xyxy``: each subject's pasted extent (before occlusion), so each visible mask lies in its box.
    - ``prompt``: the caption, naming each subject exactly once.
    - ``left_to_right`` / ``stacking``: subject indices from left to right, and from bottom to top.
    - ``background``: the plain background's RGB.
    """

    image: np.ndarray
    masks: np.ndarray
    union_mask: np.ndarray
    boxes_xyxy: list[BoxXYXY]
    prompt: str
    left_to_right: list[int] = field(default_factory=list)
    stacking: list[int] = field(default_factory=list)
    background: tuple[int, int, int] = (255, 255, 255)
