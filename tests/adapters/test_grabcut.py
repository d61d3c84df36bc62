"""GrabCut adapter and the shared mask clean-up: synthetic subjects with known masks."""

import time

import numpy as np
import pytest

from mudi.adapters.base import Segmenter
from mudi.adapters.grabcut import GrabCutParams, GrabCutSegmenter
from mudi.adapters.grabcut_cues import (
    border_saliency,
    choose_cuts_jointly,
    colour_separation,
    content_box,
    guided_upsample,
)
from mudi.adapters.mask_cleanup import clean_mask, count_components, fill_holes, largest_component
from mudi.core.geometry import mask_iou
from mudi.errors import MudiError


def _scene(h=240, w=320, seed=0, centre=(0.55, 0.45), radii=(0.3, 0.2)):
    """A textured two-tone background with an off-centre ellipse 'subject' of another colour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    truth = ((yy - h * centre[0]) / (h * radii[0])) ** 2 + ((xx - w * centre[1]) / (w * radii[1])) ** 2 <= 1
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
    mask = GrabCutSegmenter(GrabCutParams(max_side=256)).segment([big], [None])[0]
    elapsed = time.perf_counter() - t
    assert mask.shape == big.shape[:2]
    assert mask_iou(mask, big_truth) > 0.9
    assert elapsed < 10.0  # a full-resolution cut would take minutes


def test_grabcut_box_covering_the_whole_image_still_works():
    img, truth = _scene(seed=2)
    mask = GrabCutSegmenter().segment([img], [(0.0, 0.0, 320.0, 240.0)])[0]
    assert mask_iou(mask, truth) > 0.8


@pytest.mark.parametrize("centre, radii", [
    ((0.7, 0.5), (0.32, 0.12)),   # stands on the bottom border (9 % of it), as objects on a table do
    ((0.3, 0.75), (0.12, 0.08)),  # small, in a corner: most of a border-inset rectangle is background
    ((0.5, 0.5), (0.48, 0.4)),    # nearly fills the frame
])
def test_box_free_grabcut_finds_subjects_where_photos_put_them(centre, radii):
    img, truth = _scene(seed=3, centre=centre, radii=radii)
    mask = GrabCutSegmenter().segment([img], [None])[0]
    assert mask_iou(mask, truth) > 0.9


def test_box_free_grabcut_keeps_the_initialisation_that_separates_colours_best():
    import cv2

    img, truth = _scene(seed=4, centre=(0.3, 0.75), radii=(0.12, 0.08))
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
    chosen = GrabCutSegmenter().segment([img], [None])[0]
    singles = [GrabCutSegmenter(GrabCutParams(border_insets=ins, use_saliency=sal)).segment([img], [None])[0]
               for ins, sal in (((), True), ((0.04,), False), ((0.10,), False))]
    best = max(colour_separation(lab, m) for m in singles)
    assert colour_separation(lab, chosen) == pytest.approx(best)
    assert mask_iou(chosen, truth) >= max(mask_iou(m, truth) for m in singles) - 1e-9


def test_border_saliency_and_colour_separation():
    img, truth = _scene(seed=5)
    sal = border_saliency(img)
    assert sal.shape == truth.shape and sal.dtype == np.float32
    assert np.median(sal[truth]) > 5 * np.median(sal[~truth]) + 1.0
    import cv2

    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
    assert colour_separation(lab, truth) > 0.9
    rng = np.random.default_rng(0)
    assert colour_separation(lab, rng.random(truth.shape) < 0.3) < 0.05  # a random split: same colours
    assert colour_separation(lab, np.zeros_like(truth)) == 0.0
    assert colour_separation(lab, np.ones_like(truth)) == 0.0


def test_grabcut_rejects_bad_settings():
    with pytest.raises(MudiError, match="max_side"):
        GrabCutParams(max_side=8)
    with pytest.raises(MudiError, match="border_insets"):
        GrabCutParams(border_insets=(0.6,))
    with pytest.raises(MudiError, match=r"four \(left, top, right, bottom\)"):
        GrabCutParams(border_insets=((0.1, 0.2),))
    with pytest.raises(MudiError, match="border_insets"):
        GrabCutParams(border_insets=((0.1, 0.1, 0.1, 0.5),))
    with pytest.raises(MudiError, match="box-free"):
        GrabCutParams(border_insets=(), use_saliency=False)
    with pytest.raises(MudiError, match="uint8"):
        GrabCutSegmenter().segment([np.zeros((10, 10), np.uint8)], [None])


@pytest.mark.parametrize("kwargs, match", [
    ({"max_side": 31}, "max_side must be >= 32"),
    ({"num_iterations": 0}, "num_iterations must be >= 1"),
    ({"box_padding": -0.1}, "box_padding must be >= 0"),
    ({"border_insets": (0.5,)}, r"border_insets must be in \[0, 0.5\)"),
    ({"border_insets": (-0.1,)}, r"border_insets must be in \[0, 0.5\)"),
    ({"border_insets": ("wide",)}, r"four \(left, top, right, bottom\)"),
    ({"refine_ring": 0.5}, r"refine_ring must be in \[0, 0.5\)"),
    ({"refine_ring": -0.1}, r"refine_ring must be in \[0, 0.5\)"),
    ({"refine_max_side": -1}, "refine_max_side must be >= 0"),
    ({"consensus_weight": -0.5}, "consensus_weight must be >= 0"),
    ({"guide_max_side": -1}, "guide_max_side must be >= 0"),
    ({"max_side": 256.5}, "max_side must be a whole number"),
    ({"num_iterations": True}, "num_iterations must be a whole number"),
    ({"seed": "0"}, "seed must be a whole number"),
    ({"box_padding": float("nan")}, "box_padding must be a finite number"),
    ({"border_insets": (), "use_saliency": False, "use_focus": False}, "needs a box-free initialisation"),
])
def test_grabcut_params_reject_bad_values_with_a_hint(kwargs, match):
    with pytest.raises(MudiError, match=match):
        GrabCutParams(**kwargs)


def test_grabcut_params_defaults_normalise_and_freeze():
    import dataclasses

    p = GrabCutParams()
    assert (p.max_side, p.num_iterations, p.box_padding) == (256, 5, 0.0)
    assert (p.refine_ring, p.refine_max_side) == (0.1, 512)
    assert (p.use_saliency, p.use_focus, p.use_cleanup, p.crop_bars) == (True, False, True, True)
    assert (p.consensus_weight, p.guide_max_side, p.seed) == (2.0, 1024, 0)
    assert p.border_insets == ((0.04,) * 4, (0.10,) * 4, (0.10, 0.10, 0.10, 0.20))  # four sides each
    q = GrabCutParams(max_side=300.0, border_insets=[0.2, [0.1, 0.1, 0.1, 0.3]], seed=np.int64(3))
    assert q.max_side == 300 and type(q.max_side) is int and type(q.seed) is int
    assert q.border_insets == ((0.2,) * 4, (0.1, 0.1, 0.1, 0.3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.max_side = 512  # type: ignore[misc]
    assert GrabCutParams(seed=1) == GrabCutParams(seed=1) and hash(GrabCutParams()) == hash(p)
    assert GrabCutSegmenter().params == p


def test_grabcut_build_takes_params_as_keywords():
    seg = GrabCutSegmenter.build(device="cpu", dtype=None, max_side=128, use_cleanup=False)
    assert seg.params == GrabCutParams(max_side=128, use_cleanup=False)
    with pytest.raises(MudiError, match="did you mean 'max_side'"):
        GrabCutSegmenter.build(max_sides=128)
    with pytest.raises(MudiError, match="GrabCutParams"):
        GrabCutSegmenter(256)  # type: ignore[arg-type]
    # as the registry calls it for `mudi segment` (device, dtype, batch size) and `mudi prior` (no clean-up)
    assert GrabCutSegmenter.build(device="cpu", dtype=None, batch_size=4).params == GrabCutParams()
    raw = GrabCutSegmenter.build(device="cpu", dtype=None, use_cleanup=False)
    assert isinstance(raw, GrabCutSegmenter) and raw.params.use_cleanup is False


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


def test_ring_labels_seed_a_cut_from_a_mask():
    import cv2

    from mudi.adapters.grabcut_cues import ring_labels

    m = np.zeros((100, 50), bool)
    m[40:60, 20:30] = True
    labels = ring_labels(m, 0.05)  # ring of 5 px (5 % of the longer side, 100)
    assert labels.dtype == np.uint8 and labels.shape == m.shape
    assert (labels[m] == cv2.GC_PR_FGD).all()
    assert labels[35, 25] == cv2.GC_PR_BGD and labels[40, 15] == cv2.GC_PR_BGD  # 5 px above / left
    assert labels[34, 25] == cv2.GC_BGD and labels[40, 14] == cv2.GC_BGD        # 6 px away
    assert labels[0, 0] == cv2.GC_BGD
    assert set(np.unique(labels)) == {cv2.GC_BGD, cv2.GC_PR_BGD, cv2.GC_PR_FGD}


def test_grabcut_is_deterministic_whatever_ran_before():
    """cv2.grabCut draws its k-means start from OpenCV's RNG; each cut reseeds it, so other cuts in between
    (which advance that RNG) change nothing."""
    import cv2

    img, _ = _scene(seed=6, centre=(0.6, 0.4), radii=(0.35, 0.25))
    seg = GrabCutSegmenter()
    first = seg.segment([img], [None])[0]
    cv2.setRNGSeed(12345)
    GrabCutSegmenter(GrabCutParams(seed=7)).segment([_scene(seed=7)[0]], [None])
    again = GrabCutSegmenter().segment([img], [None])[0]
    assert (first == again).all()


def test_coarse_to_fine_cut_sharpens_the_upsampled_outline():
    # a smooth disc on a two-tone noisy background at 2000 x 1600: the 256-px cut upsampled has ~8 px steps
    h, w = 2000, 1600
    rng = np.random.default_rng(8)
    yy, xx = np.mgrid[:h, :w]
    truth = (yy - 1050) ** 2 + (xx - 780) ** 2 <= 610 ** 2
    img = np.empty((h, w, 3), np.float32)
    img[:] = (60, 110, 170)
    img[:, w // 2:] = (90, 150, 100)
    img[truth] = (210, 90, 60)
    img += rng.normal(0, 8, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    coarse = GrabCutSegmenter(GrabCutParams(refine_max_side=0)).segment([img], [None])[0]
    fine = GrabCutSegmenter(GrabCutParams(refine_max_side=768)).segment([img], [None])[0]
    assert mask_iou(fine, truth) > mask_iou(coarse, truth)
    assert np.logical_xor(fine, truth).sum() < 0.7 * np.logical_xor(coarse, truth).sum()


def test_grabcut_rejects_bad_refinement_settings():
    from mudi.errors import MudiError

    with pytest.raises(MudiError, match="refine_ring"):
        GrabCutParams(refine_ring=0.7)
    with pytest.raises(MudiError, match="refine_max_side"):
        GrabCutParams(refine_max_side=-1)


def test_choose_cut_prefers_plausible_sizes_then_colour_separation():
    import cv2

    from mudi.adapters.grabcut_cues import choose_cut

    img, truth = _scene(seed=9)
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
    speck = np.zeros_like(truth)
    speck[tuple(np.argwhere(truth)[0])] = True  # one subject pixel: perfect separation, implausible size
    half = np.zeros_like(truth)
    half[:, : truth.shape[1] // 2] = True
    assert colour_separation(lab, speck) > colour_separation(lab, half)
    assert choose_cut(lab, [half, speck]) is half        # the speck separates better but is implausible
    assert choose_cut(lab, [half, speck, truth]) is truth  # among plausible ones, the best separation
    empty = np.zeros_like(truth)
    assert choose_cut(lab, [empty, speck]) is speck      # nothing plausible: best separation anyway


def _focus_scene(h=240, w=320, seed=10):
    """A sharp textured disc on a blurred copy of the same texture: only the focus differs."""
    import cv2

    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    blurred = cv2.GaussianBlur(texture, (0, 0), 4.0)
    yy, xx = np.mgrid[:h, :w]
    truth = (yy - 0.55 * h) ** 2 + (xx - 0.45 * w) ** 2 <= (0.25 * h) ** 2
    img = blurred.copy()
    img[truth] = texture[truth]
    return img, truth


def test_focus_map_separates_a_sharp_subject_from_a_blurred_background():
    from mudi.adapters.grabcut_cues import focus_map

    img, truth = _focus_scene()
    f = focus_map(img)
    assert f.shape == truth.shape and f.dtype == np.float32
    assert 0.0 <= f.min() and f.max() <= 1.0
    from scipy.ndimage import distance_transform_edt

    # pooling window: Gaussian of 3 % x 320 = 9.6 px; compare pixels 20 px inside / outside the outline
    core, far = distance_transform_edt(truth) > 20, distance_transform_edt(~truth) > 20
    assert f[core].min() > f[far].max()           # every in-focus pixel beats every blurred one
    assert f[truth].mean() - f[~truth].mean() > 0.5
    small = focus_map(img, out_hw=(60, 80))
    assert small.shape == (60, 80)
    flat = focus_map(np.full((50, 60, 3), 128, np.uint8))  # no detail anywhere: defined, no NaN
    assert np.isfinite(flat).all()


def test_focus_initialisation_finds_the_in_focus_subject():
    from mudi.adapters.grabcut_cues import focus_saliency_labels

    img, truth = _focus_scene(seed=11)
    import cv2

    labels = focus_saliency_labels(img, img)
    assert mask_iou(labels == cv2.GC_PR_FGD, truth) > 0.7
    only_focus = GrabCutSegmenter(GrabCutParams(border_insets=(), use_saliency=False, use_focus=True))
    with_focus = GrabCutSegmenter(GrabCutParams(use_focus=True))
    a, b = only_focus.segment([img], [None])[0], with_focus.segment([img], [None])[0]
    assert mask_iou(a, truth) > 0.8
    assert b.shape == truth.shape and b.dtype == bool


def _letterbox(img, left=0, right=0, top=0, bottom=0, colour=(0, 0, 0)):
    h, w = img.shape[:2]
    out = np.empty((h + top + bottom, w + left + right, 3), np.uint8)
    out[:] = colour
    out[top:top + h, left:left + w] = img
    return out


def test_content_box_finds_uniform_bars_and_nothing_else():
    img, _ = _scene(seed=3)
    assert content_box(img) == (0, 0, 320, 240)
    boxed = _letterbox(img, left=40, right=40)
    assert content_box(boxed) == (40, 0, 360, 240)
    boxed = _letterbox(img, top=30, bottom=12, colour=(255, 255, 255))
    assert content_box(boxed) == (0, 30, 320, 270)
    assert content_box(_letterbox(img, left=2)) == (0, 0, 322, 240)  # under 2 % of the width: not a bar
    # JPEG-like noise within the tolerance still counts as a bar; a textured border does not
    noisy = _letterbox(img, left=40)
    noisy[:, :40] += np.random.default_rng(0).integers(0, 4, (240, 40, 3), dtype=np.uint8)
    assert content_box(noisy)[0] == 40


def test_box_free_grabcut_ignores_letterbox_bars():
    img, truth = _scene(seed=4, centre=(0.5, 0.5), radii=(0.3, 0.25))
    boxed, boxed_truth = _letterbox(img, left=80, right=80), np.pad(truth, ((0, 0), (80, 80)))
    mask = GrabCutSegmenter().segment([boxed], [None])[0]
    assert mask.shape == boxed_truth.shape
    assert not mask[:, :80].any() and not mask[:, -80:].any()
    assert mask_iou(mask, boxed_truth) > 0.9


def _blob(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_choose_cuts_jointly_prefers_the_cut_that_looks_like_the_subject_elsewhere():
    """Photo 0 has a well-separated distractor (a flat cyan patch) and the subject (red, with some red in its
    background, so it separates less well); photos 1 and 2 show the same red subject. Alone, separation picks
    the distractor; jointly, the subject."""
    import cv2

    rng = np.random.default_rng(0)
    h, w = 80, 100
    labs, cands = [], []
    for k in range(3):
        img = np.empty((h, w, 3), np.float32)
        img[:] = (90, 130, 90)
        img[:, :12] = (200, 60, 50)  # red-ish strip in the background
        subject = _blob(h, w, 45, 55 + 5 * k, 18)
        img[subject] = (210, 50, 40)
        cand = [subject]
        if k == 0:
            patch = np.zeros((h, w), bool)
            patch[5:25, 70:95] = True
            img[patch] = (40, 220, 230)
            cand = [patch, subject]
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        labs.append(cv2.cvtColor(img, cv2.COLOR_RGB2LAB))
        cands.append(cand)
    assert colour_separation(labs[0], cands[0][0]) > colour_separation(labs[0], cands[0][1])
    assert choose_cuts_jointly(labs, cands, consensus_weight=0.0) == [0, 0, 0]
    assert choose_cuts_jointly(labs, cands, consensus_weight=2.0) == [1, 0, 0]
    assert choose_cuts_jointly(labs[:1], cands[:1], consensus_weight=2.0) == [0]  # one photo: separation
    with pytest.raises(MudiError, match="one non-empty candidate list per photo"):
        choose_cuts_jointly(labs, cands[:2])


def test_segment_group_matches_segment_for_boxes_and_without_consensus():
    imgs = [_scene(seed=s)[0] for s in (5, 6, 7)]
    ys, xs = np.nonzero(_scene(seed=6)[1])
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    boxes = [None, box, None]
    independent = GrabCutSegmenter(GrabCutParams(consensus_weight=0.0))
    grouped = independent.segment_group(imgs, boxes)
    alone = independent.segment(imgs, boxes)
    assert all((a == b).all() for a, b in zip(grouped, alone))
    joint = GrabCutSegmenter().segment_group(imgs, boxes)
    assert (joint[1] == alone[1]).all()  # a boxed photo is cut from its box either way
    for (_, truth), mask in zip((_scene(seed=s) for s in (5, 6, 7)), joint):
        assert mask.shape == truth.shape and mask_iou(mask, truth) > 0.9
    with pytest.raises(MudiError, match="2 images but 1 boxes"):
        GrabCutSegmenter().segment_group(imgs[:2], [None])
    with pytest.raises(MudiError, match="consensus_weight"):
        GrabCutParams(consensus_weight=-1)


def test_an_asymmetric_inset_rectangle_keeps_its_sides():
    """The ground-prior rectangle (20 % at the bottom) finds a subject in the upper part of the photo and
    marks the bottom band as background in its initialisation."""
    img, truth = _scene(seed=8, centre=(0.4, 0.5), radii=(0.25, 0.2))
    seg = GrabCutSegmenter(GrabCutParams(max_side=320, border_insets=((0.1, 0.1, 0.1, 0.2),),
                                         use_saliency=False, refine_ring=0.0))
    assert seg.params.border_insets == ((0.1, 0.1, 0.1, 0.2),)
    work = seg._prepare(img)
    mask = seg._box_free_candidates(work)[0]
    assert not mask[-int(0.2 * 240):].any()  # no second cut: the band stays background
    assert mask_iou(mask, truth) > 0.9


def test_guided_upsampling_snaps_a_coarse_mask_to_the_photo_edges():
    h = w = 400
    yy, xx = np.mgrid[:h, :w]
    truth = (yy - 210) ** 2 + (xx - 190) ** 2 <= 120 ** 2
    photo = np.where(truth[..., None], np.uint8(220), np.uint8(40)).repeat(3, axis=2)
    photo = np.clip(photo + np.random.default_rng(0).normal(0, 4, photo.shape), 0, 255).astype(np.uint8)
    import cv2

    coarse = cv2.resize(truth.astype(np.uint8), (25, 25), interpolation=cv2.INTER_AREA) > 0  # blocky, too big
    bilinear = cv2.resize(coarse.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_LINEAR) > 127
    guided = guided_upsample(coarse, photo, max_side=1024, radius=0.02)
    assert guided.shape == truth.shape and guided.dtype == bool
    assert mask_iou(guided, truth) > mask_iou(bilinear, truth) + 0.02
    assert mask_iou(guided, truth) > 0.97
    # GrabCut uses it for the final upsampling unless guide_max_side is 0
    with pytest.raises(MudiError, match="guide_max_side"):
        GrabCutParams(guide_max_side=-1)


def test_segment_group_takes_user_masks_as_references():
    """One photo alone picks a well-separated distractor; with a user-masked photo of the same subject as a
    reference, the subject."""
    rng = np.random.default_rng(1)
    h, w = 120, 160

    def photo(with_patch):
        img = np.empty((h, w, 3), np.float32)
        img[:] = (90, 130, 90)
        img[:, :20] = (200, 60, 50)  # red-ish strip in the background
        subject = _blob(h, w, 80, 56, 28)
        img[subject] = (210, 50, 40)
        if with_patch:
            img[8:40, 110:150] = (40, 220, 230)
        return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8), subject

    (img, truth), (ref, ref_mask) = photo(True), photo(False)
    seg = GrabCutSegmenter(GrabCutParams(max_side=160, refine_max_side=0, use_saliency=False, refine_ring=0.0,
                                         border_insets=((0.49, 0.02, 0.02, 0.49), (0.15, 0.35, 0.45, 0.05))))
    alone = seg.segment_group([img], [None])[0]
    anchored = seg.segment_group([img], [None], references=[(ref, ref_mask)])[0]
    assert mask_iou(anchored, truth) > 0.8 > mask_iou(alone, truth)
    with pytest.raises(MudiError, match="reference mask of size"):
        seg.segment_group([img], [None], references=[(ref, ref_mask[:10])])
