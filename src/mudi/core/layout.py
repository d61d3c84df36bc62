"""Layouts of the initial composition ``x_init`` (paper Sec. 4.2, Appendix A.1, B.5, C.1).

The composition the sampler starts from is "either random, manually set, or obtained by using LLM"
(Appendix A.1):

- **random**: a Seg-Mix composition (:func:`mudi.core.segmix.compose_segmix`), optionally with fixed
  *relative sizes* per subject (Appendix C.1);
- **boxes**: one normalised ``(x0, y0, x1, y1)`` box per subject, each subject's cut-out fitted inside its box
  (aspect ratio kept, centred) — from a JSON file or an LLM (:mod:`mudi.layout_llm`, Appendix B.5).

Layout JSON (``--layout PATH.json``, read by :func:`mudi.data.layouts.load_layout`) accepts any of::

    [[0.05, 0.3, 0.5, 0.95], [0.5, 0.2, 0.95, 0.95]]                  # boxes in subject order
    {"boxes": [[...], [...]]}                                          # same, wrapped
    {"olis": [...], "hta": [...]}                                      # keyed by identifier, name or "V1"
    {"subjects": [{"name": "olis", "box": [...]}, ...]}                # list of named entries

Boxes are normalised to the image: ``0 <= x0 < x1 <= 1``, ``0 <= y0 < y1 <= 1``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from mudi.core.geometry import normalized_to_pixel_box, resize_rgb_mask
from mudi.core.prompts import segmix_prompt
from mudi.core.segmix import SegMixParams, compose_segmix
from mudi.core.types import BoxXYXY, Composition, Cutout
from mudi.errors import MudiError

NormBox = tuple[float, float, float, float]
#: The smallest box side, as a fraction of the image: 1/32 is 2 latent cells of a 512 px SD image.
MIN_BOX_SIDE = 1 / 32
LAYOUT_EXAMPLE = '{"boxes": [[0.05, 0.3, 0.5, 0.95], [0.5, 0.2, 0.95, 0.95]]}'


def _parse_box(value: object, where: str) -> NormBox:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise MudiError(f"{where}: expected a box [x0, y0, x1, y1] of four numbers, got {value!r}")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise MudiError(f"{where}: box {value!r} must hold four numbers")
    x0, y0, x1, y1 = (float(v) for v in value)
    if not all(np.isfinite([x0, y0, x1, y1])):
        raise MudiError(f"{where}: box {value!r} holds a non-finite number")
    if not (0 <= x0 <= 1 and 0 <= y0 <= 1 and 0 <= x1 <= 1 and 0 <= y1 <= 1):
        hint = " (these look like pixels: divide by the image size)" if max(x0, y0, x1, y1) > 1 else ""
        raise MudiError(f"{where}: box {value!r} is not normalised: every value must be in [0, 1]{hint}")
    if not (x0 < x1 and y0 < y1):
        raise MudiError(f"{where}: box {value!r} is empty: need x0 < x1 and y0 < y1 (order is x0, y0, x1, y1)")
    if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
        raise MudiError(f"{where}: box {value!r} is {x1 - x0:.3g} x {y1 - y0:.3g} of the image; a subject needs at "
                        f"least {MIN_BOX_SIDE:.3g} of each side (a few latent cells) to be drawn")
    return x0, y0, x1, y1


def parse_layout(data: object, subject_keys: Sequence[Sequence[str]], source: str = "layout") -> list[NormBox]:
    """Boxes in subject order from parsed layout JSON (see the module docstring for the accepted forms).

    ``subject_keys[i]`` are the names that may refer to subject ``i`` (identifier, name, phrase, ``"V1"`` …);
    matching is case-insensitive and ignores ``[ ]`` around placeholders. ``source`` names the file in errors.
    """
    n = len(subject_keys)
    lookup: dict[str, int] = {}
    for i, keys in enumerate(subject_keys):
        for k in [*keys, f"V{i + 1}"]:
            lookup.setdefault(k.strip().strip("[]").lower(), i)

    def index_of(name: object) -> int:
        key = str(name).strip().strip("[]").lower()
        if key not in lookup:
            known = sorted({str(keys[0]) for keys in subject_keys if keys})
            raise MudiError(f"{source}: unknown subject {name!r}; use one of {known} or V1..V{n}")
        return lookup[key]

    if isinstance(data, dict) and "boxes" in data:
        if set(data) - {"boxes"}:
            raise MudiError(f"{source}: unexpected keys {sorted(set(data) - {'boxes'})} next to 'boxes'")
        data = data["boxes"]
    if isinstance(data, dict) and "subjects" in data:
        entries = data["subjects"]
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise MudiError(f"{source}: 'subjects' must be a list of {{\"name\": ..., \"box\": [...]}} entries")
        named = {}
        for k, e in enumerate(entries):
            if "name" not in e or "box" not in e:
                raise MudiError(f"{source}: subjects[{k}] needs 'name' and 'box', got keys {sorted(e)}")
            named[e["name"]] = e["box"]
        data = named
    if isinstance(data, list):
        if len(data) != n:
            raise MudiError(f"{source}: {len(data)} box(es) for {n} subject(s); give one box per subject in "
                            f"order, e.g. {LAYOUT_EXAMPLE}")
        return [_parse_box(b, f"{source}: box {k + 1}") for k, b in enumerate(data)]
    if isinstance(data, dict):
        boxes: list[NormBox | None] = [None] * n
        for name, value in data.items():
            i = index_of(name)
            if boxes[i] is not None:
                raise MudiError(f"{source}: subject {i + 1} ({name!r}) has more than one box")
            boxes[i] = _parse_box(value, f"{source}: box of {name!r}")
        missing = [str(subject_keys[i][0]) if subject_keys[i] else f"V{i + 1}" for i, b in enumerate(boxes)
                   if b is None]
        if missing:
            raise MudiError(f"{source}: no box for subject(s) {missing}; give one box per subject")
        return [b for b in boxes if b is not None]
    raise MudiError(f"{source}: a layout must be a list of boxes or a mapping, e.g. {LAYOUT_EXAMPLE}")


def fit_box(size_hw: tuple[int, int], box_xyxy: BoxXYXY) -> BoxXYXY:
    """The largest ``size_hw``-shaped rectangle inside ``box_xyxy``, centred (aspect ratio kept)."""
    h, w = size_hw
    x0, y0, x1, y1 = box_xyxy
    bw, bh = x1 - x0, y1 - y0
    s = min(bw / w, bh / h)
    fw, fh = max(1, min(bw, round(w * s))), max(1, min(bh, round(h * s)))
    fx, fy = x0 + (bw - fw) // 2, y0 + (bh - fh) // 2
    return fx, fy, fx + fw, fy + fh


def compose_in_boxes(cutouts: Sequence[Cutout], phrases: Sequence[str], boxes: Sequence[NormBox],
                     size_hw: tuple[int, int], params: SegMixParams = SegMixParams()) -> Composition:
    """Paste each subject's cut-out into its box (normalised xyxy), fitted with its aspect ratio and centred.

    Inputs are in prompt order, and so are the result's masks and boxes; ``boxes_xyxy`` are the fitted
    rectangles (inside the requested boxes). Larger boxes are pasted first so smaller subjects stay visible
    where boxes overlap; ``stacking`` records that order.
    """
    n = len(cutouts)
    if n == 0 or len(phrases) != n or len(boxes) != n:
        raise MudiError(f"compose_in_boxes needs one phrase and one box per cutout: got {n} cutouts, "
                        f"{len(phrases)} phrases, {len(boxes)} boxes")
    H, W = size_hw
    pixel_boxes = [normalized_to_pixel_box(b, size_hw) for b in boxes]
    fitted = [fit_box(c.size_hw, b) for c, b in zip(cutouts, pixel_boxes)]
    area = [(b[2] - b[0]) * (b[3] - b[1]) for b in pixel_boxes]
    stacking = sorted(range(n), key=lambda i: (-area[i], i))
    canvas = np.empty((H, W, 3), dtype=np.uint8)
    canvas[:] = np.asarray(params.background, dtype=np.uint8)
    label = np.full((H, W), -1, dtype=np.int8)
    for i in stacking:
        x0, y0, x1, y1 = fitted[i]
        rgb, mask = resize_rgb_mask(cutouts[i].rgb, cutouts[i].mask, (y1 - y0, x1 - x0))
        if not mask.any():
            mask[mask.shape[0] // 2, mask.shape[1] // 2] = True
        canvas[y0:y1, x0:x1][mask] = rgb[mask]
        label[y0:y1, x0:x1][mask] = i
    masks = np.stack([label == i for i in range(n)])
    left_to_right = sorted(range(n), key=lambda i: ((fitted[i][0] + fitted[i][2]) / 2, i))
    prompt = segmix_prompt(phrases, params.use_count_prefix, template=params.caption_template,
                           subject_prefix=params.subject_prefix)
    return Composition(canvas, masks, label >= 0, list(fitted), prompt, left_to_right, stacking,
                       tuple(params.background))


def compose_layout(cutouts: Sequence[Cutout], phrases: Sequence[str], size_hw: tuple[int, int],
                   rng: np.random.Generator, boxes: Sequence[NormBox] | None = None,
                   relative_sizes: Sequence[float] | None = None,
                   params: SegMixParams = SegMixParams()) -> Composition:
    """``x_init`` for one image: in the given ``boxes``, else a random Seg-Mix layout (with fixed
    ``relative_sizes`` per subject when given, Appendix C.1). Deterministic given ``rng``'s state."""
    if boxes is not None:
        if relative_sizes is not None:
            raise MudiError("give either a box layout or relative sizes, not both (boxes already fix the sizes)")
        return compose_in_boxes(cutouts, phrases, boxes, size_hw, params)
    if relative_sizes is not None:
        if len(relative_sizes) != len(cutouts):
            raise MudiError(f"{len(relative_sizes)} relative sizes for {len(cutouts)} subjects: give one per "
                            "subject in prompt order, e.g. --relative-sizes 1 2")
        params = dataclasses.replace(params, relative_sizes=tuple(float(r) for r in relative_sizes))
    return compose_segmix(cutouts, phrases, size_hw, rng, params)
