"""Layouts drawn on the page: two clicks on the canvas make one subject's box; the boxes become a layout JSON
file for ``mudi generate --layout`` (docs/generate.md, "Layout JSON"). Imports no gradio."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from mudi.core.layout import NormBox, parse_layout
from mudi.errors import MudiError
from mudi.io import write_json_atomic
from mudi.visualize import PALETTE

CANVAS_SIDE = 384  # the canvas is square, as the generated images are by default
GRID_STEPS = 8


def box_from_clicks(first_xy: Sequence[float], second_xy: Sequence[float], side: int = CANVAS_SIDE) -> NormBox:
    """The normalised ``(x0, y0, x1, y1)`` box spanned by two clicks on a ``side`` × ``side`` canvas (any two
    opposite corners, clipped to the canvas)."""
    xs = sorted(min(max(float(v), 0.0), side) / side for v in (first_xy[0], second_xy[0]))
    ys = sorted(min(max(float(v), 0.0), side) / side for v in (first_xy[1], second_xy[1]))
    return round(xs[0], 4), round(ys[0], 4), round(xs[1], 4), round(ys[1], 4)


def layout_data(boxes: Sequence[NormBox | None], identifiers: Sequence[str]) -> dict[str, list[float]]:
    """``{identifier: [x0, y0, x1, y1]}`` — the keyed form of a layout file, one box per subject."""
    if len(boxes) != len(identifiers):
        raise MudiError(f"{len(boxes)} box(es) for {len(identifiers)} subjects")
    missing = [ident for ident, b in zip(identifiers, boxes) if b is None]
    if missing:
        raise MudiError(f"draw a box for every subject: {', '.join(missing)} has none yet (two clicks on the canvas)")
    return {ident: [float(v) for v in b] for ident, b in zip(identifiers, boxes)}


def write_layout(path: Path, boxes: Sequence[NormBox | None], identifiers: Sequence[str]) -> Path:
    """Check the boxes as ``mudi generate`` will (:func:`mudi.core.layout.parse_layout`), then write them."""
    data = layout_data(boxes, identifiers)
    parse_layout(data, [[ident] for ident in identifiers], source="the drawn layout")
    write_json_atomic(path, data)
    return path


def draw_layout(boxes: Sequence[NormBox | None], labels: Sequence[str], pending_xy: Sequence[float] | None = None,
                side: int = CANVAS_SIDE) -> Image.Image:
    """The canvas: a light grid, each subject's box in its colour with its label, and the first corner of a
    box being drawn (a cross)."""
    img = Image.new("RGB", (side, side), (250, 250, 250))
    d = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=max(12, side // 26))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for k in range(1, GRID_STEPS):
        t = round(k * side / GRID_STEPS)
        d.line([(t, 0), (t, side)], fill=(228, 228, 228))
        d.line([(0, t), (side, t)], fill=(228, 228, 228))
    for k, box in enumerate(boxes):
        if box is None:
            continue
        color = PALETTE[k % len(PALETTE)]
        x0, y0, x1, y1 = (v * side for v in box)
        d.rectangle([x0, y0, x1 - 1, y1 - 1], outline=color, width=3)
        d.text((x0 + 5, y0 + 4), labels[k] if k < len(labels) else f"V{k + 1}", fill=color, font=font)
    if pending_xy is not None:
        x, y = pending_xy
        d.line([(x - 10, y), (x + 10, y)], fill=(0, 0, 0), width=2)
        d.line([(x, y - 10), (x, y + 10)], fill=(0, 0, 0), width=2)
    return img
