"""Everything mudi draws for a person to look at (PIL only): boxes, masks, thumbnails, grids, contact sheets,
the segmentation review sheet. One palette: :data:`PALETTE`."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

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


def numbered_boxes_thumbnail(rgb: np.ndarray, detections: Sequence[Any] = (), max_side: int = 320) -> Image.Image:
    """``rgb`` (``(H, W, 3)`` uint8) downscaled to ``max_side`` with each detection's box drawn and numbered in
    detection order (``detections``: objects with ``box_xyxy``)."""
    img = Image.fromarray(np.asarray(rgb))
    scale = min(1.0, max_side / max(img.size))
    if scale < 1.0:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 160))
    for k, d in enumerate(detections):
        x0, y0, x1, y1 = (v * scale for v in d.box_xyxy)
        color = PALETTE[k % len(PALETTE)]
        draw.rectangle([x0, y0, x1, y1], outline=color, width=width)
        draw.rectangle([x0, y0, x0 + 14, y0 + 14], fill=color)
        draw.text((x0 + 4, y0 + 1), str(k), fill="white")
    return img


def label_map(masks: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` bool masks → ``(H, W)`` uint8 label map: 0 = background, k = the k-th mask."""
    label = np.zeros(masks.shape[1:], dtype=np.uint8)
    for j, m in enumerate(masks):
        label[m] = j + 1
    return label


def image_grid(images: Sequence[np.ndarray], inits: Sequence[np.ndarray | None], thumb: int = 256) -> np.ndarray:
    """Generated images in the top row, their ``x_init`` below (when any), ``thumb`` px tiles, 8 per row."""
    def tile(a: np.ndarray | None) -> np.ndarray:
        if a is None:
            return np.full((thumb, thumb, 3), 255, dtype=np.uint8)
        im = Image.fromarray(a)
        s = thumb / max(im.size)  # fit the tile: shrink large images, enlarge small ones (pixel-exact)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))),
                       Image.LANCZOS if s < 1 else Image.NEAREST)
        canvas = np.full((thumb, thumb, 3), 255, dtype=np.uint8)
        arr = np.asarray(im)
        y, x = (thumb - arr.shape[0]) // 2, (thumb - arr.shape[1]) // 2
        canvas[y:y + arr.shape[0], x:x + arr.shape[1]] = arr
        return canvas

    per_row = min(8, len(images))
    rows = []
    has_init = any(i is not None for i in inits)
    for start in range(0, len(images), per_row):
        imgs = [tile(a) for a in images[start:start + per_row]]
        ins = [tile(a) for a in inits[start:start + per_row]]
        pad = per_row - len(imgs)
        imgs += [tile(None)] * pad
        ins += [tile(None)] * pad
        rows.append(np.concatenate(imgs, axis=1))
        if has_init:
            rows.append(np.concatenate(ins, axis=1))
    return np.concatenate(rows, axis=0)


def preview_thumbnail(rgb: np.ndarray, mask: np.ndarray | None, box: Any, tile: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Downscaled copies for the preview (the box is drawn later, so it is scaled here)."""
    h, w = rgb.shape[:2]
    s = tile / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    small = Image.fromarray(rgb).resize(size, Image.BILINEAR)
    small_mask = None
    if mask is not None:
        small_mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.BILINEAR)) >= 128
    if box is not None:
        draw = ImageDraw.Draw(small)
        draw.rectangle([v * s for v in box], outline=(255, 40, 40), width=2)
    return np.asarray(small), small_mask


def segment_preview(rows: Sequence[tuple[Any, np.ndarray | None, np.ndarray | None]], tile: int) -> Image.Image:
    """The review sheet of ``mudi segment``: one row per image (``(result, thumbnail, thumbnail mask)``, the
    result having ``subject``, ``image``, ``status``, ``mask_fraction``): image (+ chosen box), mask overlay,
    cut-out on white, with the status above."""
    label_h = 14
    sheet = Image.new("RGB", (3 * tile, max(1, len(rows)) * (tile + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for n, (res, small, small_mask) in enumerate(rows):
        y = n * (tile + label_h)
        draw.text((2, y + 1), f"{res.subject}/{res.image}: {res.status}"
                  + (f" ({res.mask_fraction:.1%})" if res.mask_fraction is not None else ""), fill=(0, 0, 0))
        if small is None:
            draw.text((2, y + label_h + tile // 2), "unreadable", fill=(200, 0, 0))
            continue
        sh, sw = small.shape[:2]
        sheet.paste(Image.fromarray(small), (0, y + label_h))
        if small_mask is not None:
            overlay = small.astype(np.float32)
            overlay[small_mask] = 0.5 * overlay[small_mask] + 0.5 * np.array([40, 220, 40], np.float32)
            overlay[~small_mask] *= 0.5
            cut = np.where(small_mask[..., None], small, 255).astype(np.uint8)
            sheet.paste(Image.fromarray(overlay.astype(np.uint8)), (tile, y + label_h))
            sheet.paste(Image.fromarray(cut), (2 * tile, y + label_h))
        else:
            draw.text((tile + 4, y + label_h + tile // 2), "no mask", fill=(200, 0, 0))
    return sheet


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
