"""Reading reference images and masks robustly.

Every reader applies the EXIF orientation, accepts RGB, RGBA, LA, L, P, CMYK, 16-bit and float PNG/TIFF,
JPEG, PNG and WebP, and raises :class:`MudiError` naming the file for anything unreadable or truncated.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mudi.errors import MudiError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()  # decode now: a truncated file fails here, not later in a worker
    except FileNotFoundError:
        raise MudiError(f"{path}: file not found") from None
    except Image.DecompressionBombError as e:  # before OSError: PIL's limit on pixels, not a broken file
        raise MudiError(f"{path}: too large to decode safely ({e}); downscale it (a few megapixels is plenty for "
                        "a reference photo)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MudiError(f"{path}: unreadable or truncated image ({e}); re-export or remove it") from None
    return img


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer or float single-channel images to 8-bit L, scaled by their range."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            scale = 65535.0
        elif img.mode == "I":
            scale = 65535.0 if arr.max() > 255 else 255.0
        else:
            scale = 1.0 if arr.max() <= 1.0 else 255.0
        return Image.fromarray(np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return img


def read_image(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, Image.Image]:
    """Read an image as ``(rgb (H, W, 3) uint8, alpha (H, W) bool or None, oriented PIL image)``.

    ``alpha`` is returned only when the file has a real (not fully opaque) alpha channel.
    """
    path = Path(path)
    raw = _open(path)
    img = ImageOps.exif_transpose(raw)
    img = _to_8bit(img)
    alpha = None
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        a = np.asarray(img.getchannel("A"))
        if a.min() < 255:
            alpha = a >= 128
        img = img.convert("RGBA").convert("RGB") if img.mode != "RGBA" else img.convert("RGB")
    elif img.mode != "RGB":
        img = img.convert("RGB")  # L, CMYK, YCbCr, 1, ...
    return np.asarray(img), alpha, raw


def read_mask(path: str | Path, image_path: str | Path | None = None,
              image_size_wh: tuple[int, int] | None = None, raw_image: Image.Image | None = None) -> np.ndarray:
    """Read a mask as ``(H, W)`` bool (> 127 of 255 after conversion to 8-bit grey; JPEG masks are lossy).

    The mask's own EXIF orientation is applied. If its size matches the *un-rotated* image instead (a mask
    drawn on raw pixels), the image's orientation is applied to it too. A size mismatch or an empty mask
    raises :class:`MudiError`.
    """
    path = Path(path)
    raw = _open(path)
    m = ImageOps.exif_transpose(raw)
    if m.mode == "P" and "transparency" in m.info:
        m = m.convert("RGBA")
    if m.mode in ("RGBA", "LA"):
        a = np.asarray(m.getchannel("A"))
        arr = a if a.min() < 255 else np.asarray(m.convert("L"))
    else:
        arr = np.asarray(_to_8bit(m).convert("L"))
    mask = arr > 127
    orientation = raw_image.getexif().get(0x0112, 1) if raw_image is not None else 1
    if image_size_wh is not None and (mask.shape[1], mask.shape[0]) != tuple(image_size_wh):
        if raw_image is not None and (mask.shape[1], mask.shape[0]) == raw_image.size:
            carrier = _apply_orientation(Image.fromarray(mask.astype(np.uint8) * 255), orientation)
            mask = np.asarray(carrier) > 127
        if (mask.shape[1], mask.shape[0]) != tuple(image_size_wh):
            iw, ih = image_size_wh
            raise MudiError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                            f"{Path(image_path).name if image_path else ''} is {iw}x{ih}; "
                            "re-export the mask at the image's size")
    if not mask.any():
        raise MudiError(f"{path}: mask is empty (no pixel > 127); redraw it or delete it and run `mudi segment`")
    if (raw_image is not None and orientation in _TRANSPOSE and raw.getexif().get(0x0112, 1) == 1
            and raw_image.size[0] == raw_image.size[1]):
        mask = _square_mask_orientation(mask, raw_image, orientation, path)
    return mask


def _edge_agreement(mask: np.ndarray, grey: np.ndarray) -> float:
    """Mean image gradient along the mask's outline: high when the outline follows the photo's edges."""
    gy, gx = np.gradient(grey.astype(np.float32))
    strength = np.hypot(gx, gy)
    outline = mask ^ np.roll(mask, 1, 0) | mask ^ np.roll(mask, 1, 1)
    return float(strength[outline].mean()) if outline.any() else 0.0


def _square_mask_orientation(mask: np.ndarray, raw_image: Image.Image, orientation: int, path: Path) -> np.ndarray:
    """A square photo with an EXIF rotation: its mask may have been drawn on the displayed photo or on the raw
    pixels, and the sizes cannot tell. Keep the reading whose outline follows the photo's edges better."""
    side = 256
    shown = np.asarray(ImageOps.exif_transpose(raw_image).convert("L").resize((side, side), Image.BILINEAR))
    as_given = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((side, side), Image.NEAREST)) > 127
    rotated = _apply_orientation(Image.fromarray(mask.astype(np.uint8) * 255), orientation)
    as_raw = np.asarray(rotated.resize((side, side), Image.NEAREST)) > 127
    if _edge_agreement(as_raw, shown) > 1.25 * _edge_agreement(as_given, shown):
        log.warning(
            "note: %s follows the photo's edges only with the photo's EXIF rotation applied to it (it was drawn on "
            "the raw pixels); using it rotated", path)
        return np.asarray(rotated) > 127
    return mask


_TRANSPOSE = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_270],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_90],
}


def _apply_orientation(img: Image.Image, orientation: int) -> Image.Image:
    for t in _TRANSPOSE.get(orientation, []):
        img = img.transpose(t)
    return img


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))
