"""Layouts of x_init: layout JSON parsing, boxes honoured, relative sizes (Sec. 4.2, App. A.1, C.1)."""

import json

import numpy as np
import pytest

from mudi.core.geometry import mask_to_box, normalized_to_pixel_box
from mudi.core.layout import compose_in_boxes, compose_layout, fit_box, parse_layout
from mudi.core.types import Cutout
from mudi.data.layouts import load_layout
from mudi.errors import MudiError

KEYS = [["olis", "dog6", "olis corgi"], ["hta", "dog2", "hta chow chow"]]


def _cutout(h, w, color):
    yy, xx = np.mgrid[:h, :w]
    mask = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2 <= 1.0
    mask[h // 2, :] = True  # touch the left/right borders
    mask[:, w // 2] = True  # and top/bottom
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    rgb[:] = color
    return Cutout(rgb, mask)


def test_parse_layout_accepts_every_documented_form():
    a, b = [0.0, 0.1, 0.5, 0.9], [0.5, 0.2, 1.0, 1.0]
    expected = [tuple(a), tuple(b)]
    assert parse_layout([a, b], KEYS) == expected
    assert parse_layout({"boxes": [a, b]}, KEYS) == expected
    assert parse_layout({"hta": b, "olis": a}, KEYS) == expected
    assert parse_layout({"[V2]": b, "V1": a}, KEYS) == expected
    assert parse_layout({"DOG6": a, "hta chow chow": b}, KEYS) == expected
    assert parse_layout({"subjects": [{"name": "dog2", "box": b}, {"name": "olis", "box": a}]}, KEYS) == expected


@pytest.mark.parametrize("data, message", [
    ([[0, 0, 0.5, 0.5]], r"1 box\(es\) for 2 subject\(s\)"),
    ([[0, 0, 0.5, 0.5], [0, 0, 512, 512]], "not normalised.*look like pixels"),
    ([[0, 0, 0.5, 0.5], [0.6, 0.2, 0.4, 0.9]], "box 2.*empty: need x0 < x1"),
    ([[0, 0, 0.5, 0.5], [0, 0, 0.5]], "box 2: expected a box \\[x0, y0, x1, y1\\]"),
    ([[0, 0, 0.5, 0.5], ["a", 0, 1, 1]], "four numbers"),
    ({"olis": [0, 0, 0.5, 0.5], "rex": [0, 0, 1, 1]}, "unknown subject 'rex'"),
    ({"olis": [0, 0, 0.5, 0.5]}, "no box for subject\\(s\\) \\['hta'\\]"),
    ({"olis": [0, 0, 0.5, 0.5], "V1": [0, 0, 1, 1], "hta": [0, 0, 1, 1]}, "more than one box"),
    ({"subjects": [{"box": [0, 0, 1, 1]}]}, "subjects\\[0\\] needs 'name' and 'box'"),
    ("boxes", "must be a list of boxes or a mapping"),
])
def test_parse_layout_errors_are_clear(data, message):
    with pytest.raises(MudiError, match=message) as e:
        parse_layout(data, KEYS, source="my_layout.json")
    assert str(e.value).startswith("my_layout.json")


def test_load_layout_file_errors(tmp_path):
    with pytest.raises(MudiError, match="layout file not found"):
        load_layout(tmp_path / "missing.json", KEYS)
    bad = tmp_path / "bad.json"
    bad.write_text('{"boxes": [[0, 0, 1, 1],]}')
    with pytest.raises(MudiError, match=r"bad.json: not valid JSON .*line 1"):
        load_layout(bad, KEYS)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"V1": [0, 0, 0.5, 1], "V2": [0.5, 0, 1, 1]}))
    assert load_layout(good, KEYS) == [(0, 0, 0.5, 1), (0.5, 0, 1, 1)]


def test_fit_box_keeps_aspect_and_centres():
    assert fit_box((10, 20), (0, 0, 100, 100)) == (0, 25, 100, 75)
    assert fit_box((40, 10), (10, 0, 110, 200)) == (35, 0, 85, 200)


def test_explicit_boxes_place_each_subject_where_asked():
    cutouts = [_cutout(60, 40, (200, 30, 30)), _cutout(30, 50, (30, 30, 200)), _cutout(40, 40, (30, 200, 30))]
    boxes = [(0.05, 0.1, 0.45, 0.95), (0.55, 0.55, 0.95, 0.9), (0.6, 0.05, 0.9, 0.45)]
    size_hw = (96, 128)
    comp = compose_in_boxes(cutouts, ["x", "y", "z"], boxes, size_hw)
    assert comp.image.shape == (96, 128, 3) and comp.masks.shape == (3, 96, 128)
    assert comp.prompt == "a photo of a x, a y and a z, simple background."
    for i, (cut, box) in enumerate(zip(cutouts, boxes)):
        px = normalized_to_pixel_box(box, size_hw)
        mx0, my0, mx1, my1 = mask_to_box(comp.masks[i])
        assert px[0] <= mx0 and px[1] <= my0 and mx1 <= px[2] and my1 <= px[3]
        fx0, fy0, fx1, fy1 = comp.boxes_xyxy[i]
        assert (fx1 - fx0 == px[2] - px[0]) or (fy1 - fy0 == px[3] - px[1])  # fills the box on one axis
        assert abs((fx1 - fx0) / (fy1 - fy0) - cut.size_hw[1] / cut.size_hw[0]) < 0.1
        assert abs((fx0 + fx1) - (px[0] + px[2])) <= 1 and abs((fy0 + fy1) - (px[1] + px[3])) <= 1
        assert (mx0, my0, mx1, my1) == (fx0, fy0, fx1, fy1)  # mask fills the fitted rectangle
        colors = comp.image[comp.masks[i]]
        assert (colors == cut.rgb[0, 0]).all()
    assert not comp.masks.sum(0).max() > 1 and (comp.union_mask == comp.masks.any(0)).all()
    assert (comp.image[~comp.union_mask] == 255).all()
    assert comp.left_to_right == [0, 2, 1] or comp.left_to_right == [0, 1, 2]


def test_overlapping_boxes_keep_the_smaller_subject_on_top():
    cutouts = [_cutout(50, 50, (200, 0, 0)), _cutout(20, 20, (0, 0, 200))]
    comp = compose_in_boxes(cutouts, ["a", "b"], [(0, 0, 1, 1), (0.4, 0.4, 0.6, 0.6)], (64, 64))
    assert comp.stacking == [0, 1]
    alone = compose_in_boxes(cutouts[1:], ["b"], [(0.4, 0.4, 0.6, 0.6)], (64, 64))
    assert (comp.masks[1] == alone.masks[0]).all()  # fully visible on top of the large subject
    assert comp.masks[0].sum() < compose_in_boxes(cutouts[:1], ["a"], [(0, 0, 1, 1)], (64, 64)).masks[0].sum()


def test_relative_sizes_fix_the_height_ratio():
    cutouts = [_cutout(40, 30, (200, 0, 0)), _cutout(40, 30, (0, 0, 200))]
    for seed in range(5):
        comp = compose_layout(cutouts, ["a", "b"], (128, 128), np.random.default_rng(seed), relative_sizes=[1, 2])
        h0 = comp.boxes_xyxy[0][3] - comp.boxes_xyxy[0][1]
        h1 = comp.boxes_xyxy[1][3] - comp.boxes_xyxy[1][1]
        assert h1 / h0 == pytest.approx(2.0, rel=0.06)


def test_compose_layout_random_is_deterministic_and_checks_arguments():
    cutouts = [_cutout(40, 30, (200, 0, 0)), _cutout(30, 40, (0, 0, 200))]
    a = compose_layout(cutouts, ["a", "b"], (64, 64), np.random.default_rng(3))
    b = compose_layout(cutouts, ["a", "b"], (64, 64), np.random.default_rng(3))
    assert (a.image == b.image).all() and a.boxes_xyxy == b.boxes_xyxy
    with pytest.raises(MudiError, match="either a box layout or relative sizes"):
        compose_layout(cutouts, ["a", "b"], (64, 64), np.random.default_rng(0), boxes=[(0, 0, 1, 1)] * 2,
                       relative_sizes=[1, 2])
    with pytest.raises(MudiError, match="3 relative sizes for 2 subjects"):
        compose_layout(cutouts, ["a", "b"], (64, 64), np.random.default_rng(0), relative_sizes=[1, 2, 3])
