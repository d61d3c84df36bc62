"""GrabCut adapter and the shared mask clean-up: synthetic subjects with known masks."""

import time

import numpy as np
import pytest

from mudi.adapters.base import Segmenter
from mudi.adapters.grabcut import GrabCutSegmenter
from mudi.adapters.mask_cleanup import clean_mask, count_components, fill_holes, largest_component
from mudi.core.geometry import mask_iou


def _scene(h=240, w=320, seed=0):
    """A textured two-tone background with an off-centre ellipse 'subject' of another colour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    truth = ((yy - h * 0.55) / (h * 0.3)) ** 2 + ((xx - w * 0.45) / (w * 0.2)) ** 2 <= 1
    img = np.empty((h, w, 3), np.float32)
    img[:] = (70, 120, 170)
    img[:, w // 2:] = (90, 140, 110)
    img[truth] = (200, 80, 60)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), truth


def test_grabcut_recovers_a_known_mask_with_and_without_a_box():
    seg = GrabCutSegmenter()
    assert isinstance(seg, Segmenter)
    img, truth = _scene()
    ys, xs = np.nonzero(truth)
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    with_box, no_box = seg.segment([img, img], [box, None])
    assert with_box.shape == truth.shape and with_box.dtype == bool
    assert mask_iou(with_box, truth) > 0.95
    assert mask_iou(no_box, truth) > 0.9


def test_grabcut_works_at_bounded_resolution_on_a_large_photo():
    img, truth = _scene(120, 90, seed=1)
    big = np.repeat(np.repeat(img, 25, axis=0), 25, axis=1)  # 3000 x 2250
    big_truth = np.repeat(np.repeat(truth, 25, axis=0), 25, axis=1)
    t = time.perf_counter()
    mask = GrabCutSegmenter(max_side=256).segment([big], [None])[0]
    elapsed = time.perf_counter() - t
    assert mask.shape == big.shape[:2]
    assert mask_iou(mask, big_truth) > 0.9
    assert elapsed < 10.0  # a full-resolution cut would take minutes


def test_grabcut_box_covering_the_whole_image_still_works():
    img, truth = _scene(seed=2)
    mask = GrabCutSegmenter().segment([img], [(0.0, 0.0, 320.0, 240.0)])[0]
    assert mask_iou(mask, truth) > 0.8


def test_grabcut_rejects_bad_settings():
    from mudi.errors import MudiError

    with pytest.raises(MudiError, match="max_side"):
        GrabCutSegmenter(max_side=8)
    with pytest.raises(MudiError, match="uint8"):
        GrabCutSegmenter().segment([np.zeros((10, 10), np.uint8)], [None])


def test_clean_up_keeps_the_largest_component_and_fills_holes():
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[5:8, 5:8] = False      # a hole
    m[15:17, 15:17] = True   # a speck
    assert count_components(m) == 2
    assert count_components(m, min_area_fraction=0.1) == 1
    big = largest_component(m)
    assert not big[15:17, 15:17].any() and big[2:5, 2:12].all()
    assert fill_holes(m)[5:8, 5:8].all()
    cleaned = clean_mask(m)
    want = np.zeros((20, 20), bool)
    want[2:12, 2:12] = True
    assert (cleaned == want).all()
    assert not clean_mask(np.zeros((5, 5), bool)).any()
