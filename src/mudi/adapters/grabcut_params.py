"""The settings of :class:`mudi.adapters.grabcut.GrabCutSegmenter`: validated once, kept apart from the
algorithm (as PEFT keeps a tuner's ``config.py`` apart from its ``model.py``)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mudi.errors import MudiError, did_you_mean

Sides = tuple[float, float, float, float]


@dataclass(frozen=True)
class GrabCutParams:
    """How GrabCut initialises, cuts, chooses and upsamples (pixels are of the photo unless said otherwise).

    - ``max_side``: longer side of the working resolution every cut runs at (pixels, >= 32).
    - ``num_iterations``: GrabCut iterations per cut (>= 1).
    - ``box_padding``: the detector box is grown by this fraction of its size on each side (>= 0; 0: OWLv2
      boxes are tight, and on the benchmark photos any padding lowers the IoU, see docs/segment.md).
    - ``border_insets``: without a box, one rectangle initialisation per value, treating this fraction of each
      image side as background; a value is one fraction for every side or four ``(left, top, right, bottom)``,
      each in [0, 0.5). The default's third, 20 % at the bottom, is a ground prior for subjects standing on a
      floor or table. Stored as four fractions per rectangle.
    - ``use_saliency``: without a box, also try the border-saliency initialisation
      (:func:`~mudi.adapters.grabcut_cues.border_saliency_labels`).
    - ``use_focus``: without a box, also try the focus initialisation
      (:func:`~mudi.adapters.grabcut_cues.focus_saliency_labels`); off by default: no gain on the benchmark
      photos (third round: mean IoU 0.827 either way) at 15 % more time.
    - ``use_cleanup``: keep the largest connected component and fill holes (``mudi prior`` turns it off: the
      raw mask must show its components).
    - ``refine_ring``: without a box, every initialisation's cut is cut again from its own mask with a ring of
      this fraction of the longer side as probable background (in [0, 0.5); 0: no second cut).
    - ``refine_max_side``: longer side of the final coarse-to-fine cut around the chosen mask (ring 5 %,
      3 iterations); 0, or not above ``max_side``, skips it.
    - ``crop_bars``: without a box, cut uniform bars along the photo's sides (letterboxing, padding to a
      square) away first (:func:`~mudi.adapters.grabcut_cues.content_box`); they count as background.
    - ``consensus_weight``: in ``segment_group``, the weight of the colour agreement with the other photos
      against the photo's own colour separation (:func:`~mudi.adapters.grabcut_cues.choose_cuts_jointly`;
      >= 0, 0 chooses per photo).
    - ``guide_max_side``: the final mask is upsampled edge-aware
      (:func:`~mudi.adapters.grabcut_cues.guided_upsample`, guided by the photo at longer side at most this)
      instead of bilinearly; 0, or not above the mask's size, turns it off.
    - ``seed``: OpenCV RNG seed set before every cut (``cv2.grabCut`` has no generator argument).
    """

    max_side: int = 256
    num_iterations: int = 5
    box_padding: float = 0.0
    border_insets: tuple[float | Sequence[float], ...] = (0.04, 0.10, (0.10, 0.10, 0.10, 0.20))
    use_saliency: bool = True
    use_focus: bool = False
    use_cleanup: bool = True
    refine_ring: float = 0.10
    refine_max_side: int = 512
    crop_bars: bool = True
    consensus_weight: float = 2.0
    guide_max_side: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        for name in ("max_side", "num_iterations", "refine_max_side", "guide_max_side", "seed"):
            put(name, _integer(name, getattr(self, name)))
        for name in ("box_padding", "refine_ring", "consensus_weight"):
            put(name, _number(name, getattr(self, name)))
        for name in ("use_saliency", "use_focus", "use_cleanup", "crop_bars"):
            put(name, bool(getattr(self, name)))
        put("border_insets", _insets(self.border_insets))

        if self.max_side < 32:
            raise MudiError(f"GrabCutParams max_side must be >= 32 pixels, got {self.max_side}; the default "
                            "is 256")
        if self.num_iterations < 1:
            raise MudiError(f"GrabCutParams num_iterations must be >= 1, got {self.num_iterations}; the "
                            "default is 5")
        if self.box_padding < 0:
            raise MudiError(f"GrabCutParams box_padding must be >= 0 (a fraction of the box size), got "
                            f"{self.box_padding}; use 0 for the detector's box as it is")
        if any(not 0.0 <= v < 0.5 for sides in self.border_insets for v in sides):
            raise MudiError(f"GrabCutParams border_insets must be in [0, 0.5) (a fraction of the side), got "
                            f"{list(self.border_insets)}, e.g. (0.04, 0.10)")
        if not self.border_insets and not self.use_saliency and not self.use_focus:
            raise MudiError("GrabCutParams needs a box-free initialisation: give border_insets, use_saliency "
                            "or use_focus")
        if not 0.0 <= self.refine_ring < 0.5:
            raise MudiError(f"GrabCutParams refine_ring must be in [0, 0.5), got {self.refine_ring}; 0 turns "
                            "the second cut off")
        if self.refine_max_side < 0:
            raise MudiError(f"GrabCutParams refine_max_side must be >= 0 (0: off), got "
                            f"{self.refine_max_side}")
        if self.consensus_weight < 0:
            raise MudiError(f"GrabCutParams consensus_weight must be >= 0, got {self.consensus_weight}; 0 "
                            "chooses each photo's cut on its own")
        if self.guide_max_side < 0:
            raise MudiError(f"GrabCutParams guide_max_side must be >= 0 (0: off), got {self.guide_max_side}")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> GrabCutParams:
        """``GrabCutParams(**kwargs)``, with an unknown name rejected with a close-match suggestion."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in kwargs:
            if key not in names:
                raise MudiError(f"unknown GrabCut setting {key!r}; {did_you_mean(key, names)}"
                                f"choose from {names}")
        return cls(**kwargs)


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value).is_integer():
        raise MudiError(f"GrabCutParams {name} must be a whole number, got {value!r}")
    return int(value)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise MudiError(f"GrabCutParams {name} must be a finite number, got {value!r}")
    return float(value)


def _insets(insets: Any) -> tuple[Sides, ...]:
    """``border_insets`` as ``(left, top, right, bottom)`` fractions per rectangle (one number: every
    side)."""
    def sides(inset: Any) -> Sides:
        if isinstance(inset, numbers.Real):
            return (float(inset),) * 4
        four = tuple(float(v) for v in inset)
        if len(four) != 4:
            raise ValueError(inset)
        return four  # type: ignore[return-value]

    try:
        return tuple(sides(v) for v in insets)
    except (TypeError, ValueError):
        raise MudiError("GrabCutParams border_insets: each is a fraction or four (left, top, right, bottom), "
                        f"got {list(insets) if isinstance(insets, Sequence) else insets!r}") from None
