"""Everything mudi draws for a person to look at (PIL, and one inline SVG): boxes, masks, thumbnails, grids,
contact sheets, the segmentation review sheet, charts, the loss curve. One palette: :data:`PALETTE`."""

from __future__ import annotations

import math
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


def _chart_frame(size: tuple[int, int], title: str, y_range: tuple[float, float], ticks: int = 5,
                 integer: bool = False) -> tuple[Image.Image, ImageDraw.ImageDraw, tuple[int, int, int, int]]:
    """A white canvas with a title, a y axis from ``y_range[0]`` to ``y_range[1]`` with ``ticks`` grid lines
    (integer labels with ``integer``), and the plot area ``(x0, y0, x1, y1)`` in pixels."""
    img = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(img)
    font = _font(11)
    W, H = size
    area = (44, 24, W - 12, H - 34)
    x0, y0, x1, y1 = area
    if title:
        d.text((x0, 5), title, fill=(20, 20, 20), font=font)
    lo, hi = y_range
    for k in range(ticks + 1):
        v = lo + (hi - lo) * k / ticks
        y = y1 - (y1 - y0) * k / ticks
        d.line([(x0, y), (x1, y)], fill=(225, 225, 225))
        d.text((4, y - 6), f"{v:.0f}" if integer else f"{v:.2f}", fill=(90, 90, 90), font=font)
    d.line([(x0, y0), (x0, y1), (x1, y1)], fill=(60, 60, 60))
    return img, d, area


def histogram_chart(counts: Sequence[int], edges: Sequence[float], title: str = "", marker: float | None = None,
                    marker_label: str = "", size: tuple[int, int] = (480, 260)) -> Image.Image:
    """Bars of a histogram (``counts[i]`` images in ``[edges[i], edges[i + 1])``), the x axis labelled at its
    ends and middle, and an optional vertical ``marker`` line (e.g. the lowest kept score) with its label."""
    counts = [int(c) for c in counts]
    edges = [float(e) for e in edges]
    if len(edges) != len(counts) + 1 or not counts:
        raise ValueError(f"histogram_chart needs len(edges) == len(counts) + 1, got {len(edges)} and {len(counts)}")
    top = max(1, max(counts))
    top = top if top <= 5 else 5 * -(-top // 5)  # a multiple of 5: integer grid lines
    img, d, (x0, y0, x1, y1) = _chart_frame(size, title, (0, top), min(5, top), integer=True)
    font = _font(11)
    lo, hi = edges[0], edges[-1]

    def x_of(v: float) -> float:
        return x0 + (x1 - x0) * (min(max(v, lo), hi) - lo) / ((hi - lo) or 1.0)

    for c, a, b in zip(counts, edges[:-1], edges[1:]):
        if c:
            d.rectangle([x_of(a) + 1, y1 - (y1 - y0) * c / top, x_of(b) - 1, y1 - 1], fill=PALETTE[2])
    for v in (lo, (lo + hi) / 2, hi):
        d.text((x_of(v) - 10, y1 + 4), f"{v:.2f}", fill=(60, 60, 60), font=font)
    if marker is not None:
        xm = x_of(marker)
        d.line([(xm, y0), (xm, y1)], fill=PALETTE[0], width=2)
        if marker_label:
            d.text((min(xm + 3, x1 - 6 * len(marker_label)), y0 + 2), marker_label, fill=PALETTE[0], font=font)
    return img


def line_chart(series: dict[str, Sequence[float | None]], x_labels: Sequence[str], title: str = "",
               y_range: tuple[float, float] = (0.0, 1.0), x_title: str = "",
               size: tuple[int, int] = (480, 300)) -> Image.Image:
    """One coloured line with dots per entry of ``series`` (``None`` = no point) over the categories
    ``x_labels``, with a legend; values are clamped to ``y_range``."""
    n = len(x_labels)
    if n == 0:
        raise ValueError("line_chart needs at least one x label")
    img, d, (x0, y0, x1, y1) = _chart_frame(size, title, y_range)
    font = _font(11)
    lo, hi = y_range

    def xy(i: int, v: float) -> tuple[float, float]:
        x = x0 + (x1 - x0) * ((i + 0.5) / n)
        return x, y1 - (y1 - y0) * (min(max(v, lo), hi) - lo) / ((hi - lo) or 1.0)

    for i, label in enumerate(x_labels):
        d.text((xy(i, lo)[0] - 8, y1 + 4), str(label), fill=(60, 60, 60), font=font)
    if x_title:
        d.text((x1 - 8 * len(x_title), y1 + 18), x_title, fill=(90, 90, 90), font=font)
    for k, (name, values) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        points = [xy(i, float(v)) for i, v in enumerate(values) if v is not None]
        if len(points) > 1:
            d.line(points, fill=color, width=2)
        for x, y in points:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        d.rectangle([x0 + 8, y0 + 6 + 14 * k, x0 + 18, y0 + 14 + 14 * k], fill=color)
        d.text((x0 + 22, y0 + 4 + 14 * k), name, fill=(20, 20, 20), font=font)
    return img


def loss_curve_svg(rows: list[dict], width: int = 560, height: int = 220, key: str = "loss") -> str:
    """An inline SVG of ``key`` against ``step`` (raw, faint; a running mean over ~5% of the steps, bold)."""
    pts = [(float(r["step"]), float(r[key])) for r in rows if key in r and math.isfinite(float(r[key]))]
    if not pts:
        return "<p>no loss recorded yet</p>"
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    win = max(1, len(ys) // 20)
    smooth = np.convolve(ys, np.ones(win) / win, mode="valid") if len(ys) >= win else ys
    sx = xs[win - 1:] if len(ys) >= win else xs
    lo, hi = float(ys.min()), float(ys.max())
    hi = hi if hi > lo else lo + 1e-6
    x0, x1 = float(xs.min()), float(xs.max()) if xs.max() > xs.min() else float(xs.min()) + 1
    pad = 40

    def xy(x: float, y: float) -> str:
        return (f"{pad + (x - x0) / (x1 - x0) * (width - pad - 10):.1f},"
                f"{height - pad + 10 - (y - lo) / (hi - lo) * (height - pad):.1f}")

    raw = " ".join(xy(x, y) for x, y in zip(xs, ys))
    avg = " ".join(xy(x, y) for x, y in zip(sx, smooth))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="loss-curve">'
            f'<rect width="100%" height="100%" fill="#fff"/>'
            f'<polyline fill="none" stroke="#9ecae1" stroke-width="1" points="{raw}"/>'
            f'<polyline fill="none" stroke="#08519c" stroke-width="2" points="{avg}"/>'
            f'<text x="{pad}" y="14" font-size="11">{key}: {hi:.4f} (max) … {lo:.4f} (min)</text>'
            f'<text x="{pad}" y="{height - 8}" font-size="11">step {int(x0)}</text>'
            f'<text x="{width - 80}" y="{height - 8}" font-size="11">step {int(x1)}</text></svg>')
