"""Pure mask clean-up shared by the box-prompted segmenters (numpy + scipy.ndimage only).

SAM and GrabCut masks often carry specks (a bit of a similar-coloured background) and pinholes
(a specular highlight inside the subject). A reference subject is one connected object, so the clean-up
keeps the largest connected component and fills the holes inside it.
"""

from __future__ import annotations

import numpy as np


def count_components(mask: np.ndarray, min_area_fraction: float = 0.0) -> int:
    """Number of 8-connected components of a ``(H, W)`` bool mask, ignoring those smaller than
    ``min_area_fraction`` of the mask's total area (JPEG/resize specks)."""
    from scipy import ndimage

    labels, num = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if num == 0:
        return 0
    areas = np.bincount(labels.ravel())[1:]
    return int((areas >= min_area_fraction * areas.sum()).sum())


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a ``(H, W)`` bool mask (an empty mask stays empty)."""
    from scipy import ndimage

    labels, num = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if num <= 1:
        return mask.astype(bool, copy=True)
    areas = np.bincount(labels.ravel())
    areas[0] = 0
    return labels == int(areas.argmax())


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill every background region of a ``(H, W)`` bool mask that does not touch the image border."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(mask)


def clean_mask(mask: np.ndarray, keep_largest: bool = True, use_fill_holes: bool = True) -> np.ndarray:
    """Largest connected component, then holes filled; returns a new ``(H, W)`` bool mask."""
    out = np.asarray(mask, dtype=bool)
    if keep_largest:
        out = largest_component(out)
    if use_fill_holes:
        out = fill_holes(out)
    return out
