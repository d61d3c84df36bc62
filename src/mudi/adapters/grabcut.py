"""GrabCut (OpenCV) behind :class:`Segmenter`: subject masks offline, with no weights at all.

GrabCut (Rother et al., 2004) fits two colour mixtures, subject and background, and cuts the image graph
between them. It needs a box: the detector's box when there is one (``owlv2+grabcut``), else a two-pass
guess (``grabcut`` alone): a first cut inside an inset of the image border, then a second cut inside the
(padded) box of the first cut's largest component, which drops most of a cluttered background.

Photos are cut at a bounded working resolution (longer side ``max_side``) and the mask is upsampled to the
original size, so a 3000x3600 phone photo costs about the same as a 512x512 one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mudi.adapters.mask_cleanup import clean_mask, largest_component
from mudi.errors import MudiError


class GrabCutSegmenter:
    """Box-prompted (or box-free) GrabCut. ``segment`` returns one ``(H, W)`` bool mask per image.

    Args:
        max_side: longer side of the working resolution (pixels).
        num_iterations: GrabCut iterations per cut.
        box_padding: the detector box is grown by this fraction of its size on each side (0: OWLv2 boxes are
            tight; on the benchmark photos any padding lowers the IoU, see docs/segment.md).
        border_inset: without a box, the first cut treats this fraction of each image side as background.
        refine_padding: without a box, the first cut's box is grown by this fraction for the second cut.
        use_cleanup: keep the largest connected component and fill holes.
    """

    def __init__(self, max_side: int = 256, num_iterations: int = 5, box_padding: float = 0.0,
                 border_inset: float = 0.04, refine_padding: float = 0.08, use_cleanup: bool = True) -> None:
        if max_side < 32:
            raise MudiError(f"GrabCutSegmenter max_side must be >= 32 pixels, got {max_side}")
        if num_iterations < 1:
            raise MudiError(f"GrabCutSegmenter num_iterations must be >= 1, got {num_iterations}")
        if not 0.0 <= border_inset < 0.5:
            raise MudiError(f"GrabCutSegmenter border_inset must be in [0, 0.5), got {border_inset}")
        if box_padding < 0 or refine_padding < 0:
            raise MudiError(f"GrabCutSegmenter paddings must be >= 0, got {box_padding}, {refine_padding}")
        self.max_side = max_side
        self.num_iterations = num_iterations
        self.box_padding = box_padding
        self.border_inset = border_inset
        self.refine_padding = refine_padding
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
            cut = self._cut(bgr, box)
        else:
            iw, ih = int(sw * self.border_inset), int(sh * self.border_inset)
            cut = largest_component(self._cut(bgr, (iw, ih, sw - iw, sh - ih)))
            if cut.any():
                ys, xs = np.nonzero(cut)
                box = self._pad_box((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), sw, sh, self.refine_padding)
                cut = self._cut(bgr, box)
        if self.use_cleanup:
            cut = clean_mask(cut)
        if (sh, sw) == (h, w):
            return cut
        big = cv2.resize(cut.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_LINEAR)
        return big > 127

    @staticmethod
    def _pad_box(box: tuple[float, ...], w: int, h: int, padding: float) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = box
        px, py = (x1 - x0) * padding, (y1 - y0) * padding
        x0, y0 = max(0, int(np.floor(x0 - px))), max(0, int(np.floor(y0 - py)))
        x1, y1 = min(w, int(np.ceil(x1 + px))), min(h, int(np.ceil(y1 + py)))
        return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)

    def _cut(self, bgr: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """GrabCut initialised from a box: outside is background, inside probably subject. When the box
        leaves (almost) no background, a thin strip along the image border becomes *probable* background so
        the background colour model has samples."""
        import cv2

        h, w = bgr.shape[:2]
        x0, y0, x1, y1 = box
        labels = np.full((h, w), cv2.GC_BGD, np.uint8)
        labels[y0:y1, x0:x1] = cv2.GC_PR_FGD
        if (labels == cv2.GC_BGD).sum() < 0.02 * h * w:
            s = max(1, int(0.03 * max(h, w)))
            strip = np.zeros((h, w), bool)
            strip[:s], strip[-s:], strip[:, :s], strip[:, -s:] = True, True, True, True
            labels[strip & (labels == cv2.GC_PR_FGD)] = cv2.GC_PR_BGD
        if not (labels == cv2.GC_PR_FGD).any() or min(h, w) < 4:
            return labels != cv2.GC_BGD
        bgd_model, fgd_model = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.grabCut(bgr, labels, None, bgd_model, fgd_model, self.num_iterations, cv2.GC_INIT_WITH_MASK)
        return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
