"""Mask and box geometry (pure numpy / PIL)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mudi.core.types import BoxXYXY, Cutout


def mask_to_box(mask: np.ndarray) -> BoxXYXY:
    """Tight box ``(x0, y0, x1, y1)`` (exclusive ends) of a non-empty ``(H, W)`` bool mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask_to_box: the mask is empty")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def box_iou(a: BoxXYXY, b: BoxXYXY) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression: boxes ``(N, 4)`` xyxy, best score first; a box overlapping a kept one
    by more than ``iou_threshold`` (IoU) is dropped. Returns the kept indices, best first."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        ix = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = ix * iy
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[iou <= iou_threshold]
    return keep


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def make_cutout(rgb: np.ndarray, mask: np.ndarray, max_side: int | None = None) -> Cutout:
    """Crop an image and its mask to the mask's tight box; optionally downscale so the longer side
    is at most ``max_side`` (keeps large phone photos cheap to compose)."""
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"image is {rgb.shape[1]}x{rgb.shape[0]} but mask is {mask.shape[1]}x{mask.shape[0]}")
    x0, y0, x1, y1 = mask_to_box(mask)
    crop_rgb, crop_mask = rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    h, w = crop_mask.shape
    if max_side is not None and max(h, w) > max_side:
        s = max_side / max(h, w)
        crop_rgb, crop_mask = resize_rgb_mask(crop_rgb, crop_mask, (max(1, round(h * s)), max(1, round(w * s))))
        if not crop_mask.any():  # a sliver that vanished when downscaled: keep its centre pixel
            crop_mask[crop_mask.shape[0] // 2, crop_mask.shape[1] // 2] = True
    return Cutout(np.ascontiguousarray(crop_rgb), np.ascontiguousarray(crop_mask))


def resize_rgb_mask(rgb: np.ndarray, mask: np.ndarray, size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize an RGB image (bilinear, antialiased) and its bool mask (area-averaged, threshold 0.5)."""
    h, w = size_hw
    out_rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
    m = Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.BILINEAR)
    return out_rgb, np.asarray(m) >= 128


def resize_mask(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    h, w = size_hw
    m = Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.BILINEAR)
    return np.asarray(m) >= 128


def normalized_to_pixel_box(box: tuple[float, float, float, float], size_hw: tuple[int, int]) -> BoxXYXY:
    """Convert a normalised ``(x0, y0, x1, y1)`` in [0, 1] to pixels of an ``(H, W)`` canvas."""
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ValueError(f"box {list(box)} is not a normalised xyxy box with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    h, w = size_hw
    px = (round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h))
    return px[0], px[1], max(px[2], px[0] + 1), max(px[3], px[1] + 1)
