"""Contact sheets and overlays a person can look at (PIL only)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60)]


def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # very old Pillow
        return ImageFont.load_default()


def draw_boxes(image: Image.Image, boxes_xyxy: Sequence[Sequence[float]], labels: Sequence[str] | None = None,
               width: int = 3) -> Image.Image:
    """A copy of ``image`` with coloured boxes (and labels) drawn on it."""
    out = image.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    font = _font(max(10, out.width // 40))
    for k, box in enumerate(boxes_xyxy):
        color = PALETTE[k % len(PALETTE)]
        d.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=color, width=width)
        if labels:
            d.text((box[0] + 4, box[1] + 2), labels[k], fill=color, font=font)
    return out


def overlay_mask(image: Image.Image, mask: np.ndarray, color=(230, 25, 75), alpha: float = 0.45) -> Image.Image:
    arr = np.asarray(image.convert("RGB")).astype(np.float32)
    m = mask.astype(bool)
    arr[m] = arr[m] * (1 - alpha) + np.asarray(color, np.float32) * alpha
    return Image.fromarray(arr.astype(np.uint8))


def contact_sheet(tiles: Sequence[Image.Image], captions: Sequence[str] | None = None, thumb: int = 256,
                  columns: int | None = None, caption_lines: int = 3) -> Image.Image:
    """Grid of thumbnails (``thumb`` px on the longer side) with wrapped captions under each."""
    n = len(tiles)
    if n == 0:
        raise ValueError("contact_sheet needs at least one image")
    columns = columns or min(n, max(1, int(np.ceil(np.sqrt(n)))))
    rows = int(np.ceil(n / columns))
    font = _font(11)
    cap_h = 14 * caption_lines + 6 if captions else 0
    sheet = Image.new("RGB", (columns * (thumb + 8) + 8, rows * (thumb + cap_h + 8) + 8), (245, 245, 245))
    d = ImageDraw.Draw(sheet)
    chars = max(8, thumb // 6)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        x, y = 8 + c * (thumb + 8), 8 + r * (thumb + cap_h + 8)
        t = tile.convert("RGB").copy()
        t.thumbnail((thumb, thumb))
        sheet.paste(t, (x + (thumb - t.width) // 2, y + (thumb - t.height) // 2))
        if captions:
            text = captions[i]
            lines = textwrap.wrap(text, chars)[:caption_lines]
            for j, line in enumerate(lines):
                d.text((x, y + thumb + 4 + 14 * j), line, fill=(20, 20, 20), font=font)
    return sheet
