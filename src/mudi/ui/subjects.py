"""Subjects in the UI's workspace: create them from uploaded photos, segment them, review their masks (accept,
reject, redraw a box and re-segment). Imports no gradio; the page calls these through the worker."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mudi.data.images import read_image, read_mask
from mudi.data.subjects import Subject, create_subject_folder, find_subjects, mask_path_for
from mudi.errors import MudiError
from mudi.io import OutputLock, save_image_atomic
from mudi.samples import sample_subject_dirs
from mudi.segmentation.config import SegmentConfig, parse_backend
from mudi.segmentation.detect import load_models
from mudi.segmentation.folder import OUTPUT_DIR, SegmentResult, segment_subjects
from mudi.ui.state import Workspace, read_review, set_review, slugify, unique_name

log = logging.getLogger(__name__)
PREVIEW_SIDE = 256  # mask review thumbnails
EDITOR_SIDE = 512  # the photo shown for drawing a box
REMOVED_DIR = "removed"  # photos taken out of a subject go to SUBJECT/segment/removed/
MASK_COLOR = np.array([40, 220, 40], np.float32)
_SEGMENTERS: dict[tuple[str, str], Any] = {}  # box-prompted segmenters, loaded once per UI process


def load_workspace_subjects(ws: Workspace) -> list[Subject]:
    """Every subject folder of the workspace (a broken one is logged and left out)."""
    out = []
    for folder in ws.subject_dirs():
        try:
            out.extend(find_subjects(folder))
        except MudiError as e:
            log.warning("mudi ui: skipping %s: %s", folder, e)
    return out


def subject_label(s: Subject) -> str:
    """``olis corgi · dog6 · 4 photos, 4 masks``."""
    masks = sum(1 for im in s.images if im.mask_path is not None)
    return f"{s.phrase} · {s.name} · {len(s.images)} photos, {masks} masks"


def create_subject(ws: Workspace, photos: list[str | Path], identifier: str, class_noun: str,
                   descriptive_class: str = "", name: str = "") -> Subject:
    """A new subject folder in ``WORKSPACE/subjects/`` from uploaded photo files."""
    identifier = (identifier or "").strip()
    taken = {s.identifier: s.name for s in load_workspace_subjects(ws)}
    if identifier in taken:
        raise MudiError(f"the identifier {identifier!r} is taken by subject {taken[identifier]!r}; give each "
                        "subject its own rare word")
    base = slugify(name or f"{identifier}-{descriptive_class or class_noun}", "subject")
    folder = ws.subjects_dir / unique_name(ws.subjects_dir, base)
    return create_subject_folder(folder, list(photos), identifier, class_noun, descriptive_class or None,
                                 name=folder.name)


def add_sample_subjects(ws: Workspace) -> list[Path]:
    """Copy the bundled sample subjects (photos and masks) into the workspace; existing ones are kept."""
    added = []
    for src in sample_subject_dirs():
        dst = ws.subjects_dir / src.name
        if not dst.exists():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", OUTPUT_DIR))
            added.append(dst)
    return added


def segment(subject_dirs: list[Path], backend: str, device: str = "auto", overwrite: bool = False) -> SegmentResult:
    """``mudi segment`` on the subjects (only photos without a mask, unless ``overwrite``)."""
    if not subject_dirs:
        raise MudiError("no subjects ticked; tick the subjects to segment at the top of the page")
    result = segment_subjects(SegmentConfig(subjects=[str(p) for p in subject_dirs], backend=backend,
                                            device=device, overwrite=overwrite))
    roots = {s.name: Path(s.root) for p in subject_dirs for s in find_subjects(p)}
    for r in result.images:  # a fresh mask (or none) is unreviewed again
        if r.subject in roots and r.status != "kept_user_mask":
            set_review(roots[r.subject], r.image, None)
    return result


# ------------------------------------------------------------------------------------------------ review
@dataclass
class PhotoRow:
    """One reference photo under review."""

    subject_root: Path
    subject: str
    image: str
    mask_path: Path | None
    verdict: str | None

    @property
    def image_path(self) -> Path:
        return self.subject_root / self.image

    @property
    def caption(self) -> str:
        state = self.verdict or ("mask, not reviewed" if self.mask_path else "no mask")
        return f"{self.subject}/{self.image} · {state}"


def photo_rows(subject_dirs: list[Path]) -> list[PhotoRow]:
    """Every photo of the subjects with its mask (if any) and review verdict."""
    rows = []
    for root in subject_dirs:
        for s in find_subjects(root):
            review = read_review(root)
            for im in s.images:
                mask = im.mask_path if im.mask_path is not None and Path(im.mask_path).is_file() else None
                rows.append(PhotoRow(Path(root), s.name, im.path.name, mask, review.get(im.path.name)))
    return rows


def _load(row: PhotoRow) -> tuple[np.ndarray, np.ndarray | None]:
    rgb, alpha, raw = read_image(row.image_path)
    if row.mask_path is not None:
        return rgb, read_mask(row.mask_path, row.image_path, (rgb.shape[1], rgb.shape[0]), raw)
    return rgb, alpha


def _scaled(rgb: np.ndarray, mask: np.ndarray | None, side: int) -> tuple[Image.Image, np.ndarray | None, float]:
    h, w = rgb.shape[:2]
    scale = min(1.0, side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = Image.fromarray(rgb).resize(size, Image.BILINEAR) if scale < 1 else Image.fromarray(rgb)
    small = None
    if mask is not None:
        m = Image.fromarray(mask.astype(np.uint8) * 255)
        small = np.asarray(m.resize(size, Image.BILINEAR) if scale < 1 else m) >= 128
    return img, small, scale


def _overlay(img: Image.Image, mask: np.ndarray | None, verdict: str | None) -> Image.Image:
    arr = np.asarray(img.convert("RGB")).astype(np.float32)
    if mask is not None:
        arr[mask] = 0.5 * arr[mask] + 0.5 * MASK_COLOR
        arr[~mask] *= 0.45
    out = Image.fromarray(arr.astype(np.uint8))
    draw = ImageDraw.Draw(out)
    if mask is None:
        draw.rectangle([0, 0, out.width - 1, 18], fill=(200, 30, 30))
        draw.text((4, 3), "no mask", fill=(255, 255, 255))
    color = {"accepted": (40, 180, 40), "rejected": (200, 30, 30)}.get(verdict or "")
    if color:
        draw.rectangle([0, 0, out.width - 1, out.height - 1], outline=color, width=4)
    return out


def mask_preview(row: PhotoRow, side: int = PREVIEW_SIDE) -> Image.Image:
    """The photo with its mask in green (background darkened); a red band when it has no mask."""
    rgb, mask = _load(row)
    img, small, _ = _scaled(rgb, mask, side)
    return _overlay(img, small, row.verdict)


def editor_view(row: PhotoRow, corners_xy: list[tuple[float, float]] = (), side: int = EDITOR_SIDE
                ) -> tuple[Image.Image, float]:
    """The photo at most ``side`` px with its mask and the box being drawn (``corners_xy`` in the view's
    pixels), and the view's scale (view px = photo px × scale)."""
    rgb, mask = _load(row)
    img, small, scale = _scaled(rgb, mask, side)
    out = _overlay(img, small, row.verdict)
    draw = ImageDraw.Draw(out)
    for x, y in corners_xy:
        draw.line([x - 8, y, x + 8, y], fill=(255, 60, 60), width=2)
        draw.line([x, y - 8, x, y + 8], fill=(255, 60, 60), width=2)
    if len(corners_xy) == 2:
        (x0, y0), (x1, y1) = corners_xy
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=(255, 60, 60), width=3)
    return out, scale


def accept_mask(row: PhotoRow) -> None:
    if row.mask_path is None:
        raise MudiError(f"{row.subject}/{row.image} has no mask to accept; segment it or draw a box first")
    set_review(row.subject_root, row.image, "accepted")


def reject_mask(row: PhotoRow) -> None:
    """Delete the photo's mask file (Seg-Mix then refuses the subject until it has a new one)."""
    with OutputLock(row.subject_root / OUTPUT_DIR, "segmentation"):
        if row.mask_path is not None:
            Path(row.mask_path).unlink(missing_ok=True)
        set_review(row.subject_root, row.image, "rejected")


def remove_photo(row: PhotoRow) -> Path:
    """Take a photo (and its mask) out of the subject, into ``SUBJECT/segment/removed/``."""
    dest = row.subject_root / OUTPUT_DIR / REMOVED_DIR
    with OutputLock(row.subject_root / OUTPUT_DIR, "segmentation"):
        remaining = [p for p in find_subjects(row.subject_root)[0].images if p.path.name != row.image]
        if not remaining:
            raise MudiError(f"{row.image} is the last photo of {row.subject}; a subject needs at least one")
        dest.mkdir(parents=True, exist_ok=True)
        if row.mask_path is not None:
            shutil.move(str(row.mask_path), str(dest / f"mask_{Path(row.mask_path).name}"))
        shutil.move(str(row.image_path), str(dest / row.image))
        set_review(row.subject_root, row.image, None)
    return dest / row.image


def box_from_corners(corners_xy: list[tuple[float, float]], scale: float, size_wh: tuple[int, int]
                     ) -> tuple[float, float, float, float]:
    """The box ``(x0, y0, x1, y1)`` in photo pixels from two corners clicked on a view scaled by ``scale``."""
    if len(corners_xy) != 2:
        raise MudiError("click two opposite corners of the box on the photo first")
    (ax, ay), (bx, by) = ((x / scale, y / scale) for x, y in corners_xy)
    w, h = size_wh
    x0, x1 = sorted((min(max(ax, 0), w), min(max(bx, 0), w)))
    y0, y1 = sorted((min(max(ay, 0), h), min(max(by, 0), h)))
    if x1 - x0 < 4 or y1 - y0 < 4:
        raise MudiError("the box is too small; click two opposite corners around the subject")
    return x0, y0, x1, y1


def _segmenter(backend: str, device: str) -> Any:
    name = parse_backend(backend)[1]  # a drawn box replaces the detector
    if (name, device) not in _SEGMENTERS:
        _SEGMENTERS[(name, device)] = load_models(name, device=device)[1]
    return _SEGMENTERS[(name, device)]


def resegment_with_box(row: PhotoRow, box_xyxy: tuple[float, float, float, float], backend: str,
                       device: str = "auto") -> Path:
    """Cut the subject out of the photo inside ``box_xyxy`` (photo pixels) and write it as the photo's mask."""
    subject = find_subjects(row.subject_root)[0]
    rgb = read_image(row.image_path)[0]
    mask = np.asarray(_segmenter(backend, device).segment([rgb], [tuple(float(v) for v in box_xyxy)])[0], bool)
    if not mask.any():
        raise MudiError(f"nothing was cut out of {row.image} in that box; draw it closer around the subject")
    target = mask_path_for(subject, row.image_path)
    with OutputLock(row.subject_root / OUTPUT_DIR, "segmentation"):
        save_image_atomic(target, mask)
        set_review(row.subject_root, row.image, None)
    return target


def resegment_in_view(row: PhotoRow, corners_xy: list[tuple[float, float]], backend: str, device: str = "auto"
                      ) -> tuple[float, float, float, float]:
    """:func:`resegment_with_box` with the box clicked on :func:`editor_view`'s picture; returns the box in
    photo pixels."""
    rgb = read_image(row.image_path)[0]
    scale = min(1.0, EDITOR_SIDE / max(rgb.shape[:2]))
    box = box_from_corners(corners_xy, scale, (rgb.shape[1], rgb.shape[0]))
    resegment_with_box(row, box, backend, device)
    return box
