"""Seg-Mix / Cut-Mix invariants (Algorithm 1 generalised to N subjects)."""

import numpy as np
import pytest

from mudi.core.geometry import make_cutout, mask_to_box
from mudi.core.segmix import SegMixParams, compose_cutmix, compose_segmix
from mudi.errors import MudiError

BG = np.array([255, 255, 255], np.uint8)


def synthetic_cutout(seed: int, h: int = 120, w: int = 90):
    """A subject of a random saturated colour (never white) on a random background, with an ellipse mask."""
    rng = np.random.default_rng(seed)
    H, W = h + 40, w + 40
    rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:H, :W]
    mask = ((yy - H / 2) / (h / 2)) ** 2 + ((xx - W / 2) / (w / 2)) ** 2 <= 1
    color = np.array([(37 * seed) % 200, 50 + (91 * seed) % 150, 20], np.uint8)
    rgb[mask] = color
    return make_cutout(rgb, mask)


def phrases(n):
    return [f"v{i} thing{i}" for i in range(n)]


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_background_outside_union_and_masks_inside_boxes(n):
    cuts = [synthetic_cutout(i + 1) for i in range(n)]
    for seed in range(6):
        comp = compose_segmix(cuts, phrases(n), (256, 320), np.random.default_rng(seed))
        assert comp.image.shape == (256, 320, 3) and comp.image.dtype == np.uint8
        assert comp.masks.shape == (n, 256, 320) and comp.masks.dtype == bool
        assert (comp.image[~comp.union_mask] == BG).all()
        assert np.array_equal(comp.union_mask, comp.masks.any(0))
        # visible masks are disjoint
        assert comp.masks.sum(0).max() <= 1
        for i in range(n):
            x0, y0, x1, y1 = comp.boxes_xyxy[i]
            assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 256
            outside = comp.masks[i].copy()
            outside[y0:y1, x0:x1] = False
            assert not outside.any()
            # pixels under a visible mask are the subject's colour, pasted exactly
            if comp.masks[i].any():
                vals = comp.image[comp.masks[i]]
                expected = cuts[i].rgb[cuts[i].mask][0]
                assert (np.abs(vals.astype(int) - expected.astype(int)).max(1) <= 40).mean() > 0.9


def test_prompt_names_each_identifier_once():
    for n in range(2, 6):
        comp = compose_segmix([synthetic_cutout(i + 1) for i in range(n)], phrases(n), (256, 256),
                              np.random.default_rng(0))
        for p in phrases(n):
            assert comp.prompt.count(p) == 1
        assert comp.prompt.endswith(", simple background.")


def test_same_seed_same_output_different_seed_different_layout():
    cuts = [synthetic_cutout(1), synthetic_cutout(2)]
    a = compose_segmix(cuts, phrases(2), (256, 256), np.random.default_rng(7))
    b = compose_segmix(cuts, phrases(2), (256, 256), np.random.default_rng(7))
    c = compose_segmix(cuts, phrases(2), (256, 256), np.random.default_rng(8))
    assert np.array_equal(a.image, b.image) and a.boxes_xyxy == b.boxes_xyxy
    assert a.boxes_xyxy != c.boxes_xyxy


def test_random_order_and_stacking_vary():
    cuts = [synthetic_cutout(1), synthetic_cutout(2)]
    orders = {tuple(compose_segmix(cuts, phrases(2), (128, 128), np.random.default_rng(s)).left_to_right)
              for s in range(30)}
    stacks = {tuple(compose_segmix(cuts, phrases(2), (128, 128), np.random.default_rng(s)).stacking)
              for s in range(30)}
    assert orders == {(0, 1), (1, 0)} and stacks == {(0, 1), (1, 0)}


def test_overlap_happens_with_large_margins_and_never_without_overlap():
    cuts = [synthetic_cutout(1, 150, 150), synthetic_cutout(2, 150, 150)]
    overlapping = 0
    for s in range(40):
        comp = compose_segmix(cuts, phrases(2), (256, 256), np.random.default_rng(s),
                              SegMixParams(max_margin_frac=0.5))
        a, b = comp.boxes_xyxy
        overlapping += min(a[2], b[2]) > max(a[0], b[0])
        comp2 = compose_segmix(cuts, phrases(2), (256, 256), np.random.default_rng(s),
                               SegMixParams(allow_overlap=False))
        a, b = comp2.boxes_xyxy
        assert min(a[2], b[2]) <= max(a[0], b[0])
    assert overlapping > 5


@pytest.mark.parametrize("sizes", [(1, 2), (2, 1), (1, 1, 3)])
def test_relative_sizes_are_honoured(sizes):
    n = len(sizes)
    cuts = [synthetic_cutout(i + 1, 100, 60) for i in range(n)]
    for s in range(5):
        comp = compose_segmix(cuts, phrases(n), (512, 512), np.random.default_rng(s),
                              SegMixParams(scale="height", relative_sizes=sizes))
        heights = [b[3] - b[1] for b in comp.boxes_xyxy]
        for i in range(n):
            ratio = (heights[i] / heights[0]) / (sizes[i] / sizes[0])
            assert abs(ratio - 1) < 0.1


def test_relative_sizes_count_must_match():
    with pytest.raises(MudiError, match="relative sizes"):
        compose_segmix([synthetic_cutout(1), synthetic_cutout(2)], phrases(2), (128, 128),
                       np.random.default_rng(0), SegMixParams(relative_sizes=(1, 2, 3)))


def test_size_too_small_is_a_clear_error():
    with pytest.raises(MudiError, match="too small"):
        compose_segmix([synthetic_cutout(i) for i in range(1, 4)], phrases(3), (12, 12), np.random.default_rng(0))


def test_count_prefix():
    comp = compose_segmix([synthetic_cutout(i) for i in range(1, 4)], phrases(3), (128, 128),
                          np.random.default_rng(0), SegMixParams(use_count_prefix=True))
    assert comp.prompt.startswith("3 objects: a photo of ")


def test_cutmix_splits_at_seams():
    rng = np.random.default_rng(0)
    imgs = [np.full((60, 80, 3), c, np.uint8) for c in (10, 120, 240)]
    for n in (2, 3):
        comp = compose_cutmix(imgs[:n], phrases(n), (64, 96), rng)
        assert comp.masks.sum(0).min() == 1 and comp.masks.sum(0).max() == 1  # strips tile the canvas
        for k, i in enumerate(comp.left_to_right):
            x0, y0, x1, y1 = comp.boxes_xyxy[i]
            assert (y0, y1) == (0, 64)
            assert (comp.image[:, x0:x1] == imgs[i][0, 0]).all()  # each strip is one whole image
            if k + 1 < n:
                nxt = comp.boxes_xyxy[comp.left_to_right[k + 1]]
                assert nxt[0] == x1  # adjacent at the seam
        if n == 2:
            left, right = (phrases(2)[i] for i in comp.left_to_right)
            assert comp.prompt == f"A photo of {left} on the left and {right} on the right."


def test_mask_to_box_and_cutout_tight():
    m = np.zeros((50, 40), bool)
    m[10:20, 5:30] = True
    assert mask_to_box(m) == (5, 10, 30, 20)
    c = make_cutout(np.zeros((50, 40, 3), np.uint8), m)
    assert c.size_hw == (10, 25) and c.mask.all()
    big = make_cutout(np.zeros((50, 40, 3), np.uint8), m, max_side=10)
    assert max(big.size_hw) == 10


def test_pyramid_resize_matches_direct_resize():
    from PIL import Image

    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(base).resize((300, 400), Image.BILINEAR))  # smooth content
    yy, xx = np.mgrid[:400, :300]
    mask = ((yy - 200) / 200) ** 2 + ((xx - 150) / 150) ** 2 <= 1  # curved edges: many partial pixels
    cut = make_cutout(big, mask)
    for h, w in ((380, 285), (200, 150), (90, 68), (31, 23)):
        rgb, m = cut.resized_pil((h, w))
        direct = np.asarray(cut.pil_rgb.resize((w, h), Image.BILINEAR)).astype(int)
        assert rgb.size == (w, h) and m.size == (w, h)
        assert np.abs(np.asarray(rgb).astype(int) - direct).mean() < 4.0  # < 1.6% of the range
        assert set(np.unique(np.asarray(m))) <= {0, 255}  # binary at every pyramid level
