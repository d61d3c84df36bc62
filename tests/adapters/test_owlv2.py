"""OWLv2 adapter: Detector contract on a tiny random model, boxes in original pixels of non-square images."""

import numpy as np
import pytest
import torch

from mudi.adapters.base import Detection, Detector
from mudi.adapters.owlv2 import Owlv2Detector


@pytest.fixture(scope="module")
def tiny():
    return Owlv2Detector.build_tiny(nms_iou=None)


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 64, 3), dtype=np.uint8), rng.integers(0, 256, (70, 30, 3), dtype=np.uint8)]


def test_tiny_detector_satisfies_the_contract(tiny):
    assert isinstance(tiny, Detector)
    images = _images()
    queries = [["dog", "corgi"], ["cat"]]
    results = tiny.detect(images, queries, threshold=0.0)
    assert len(results) == 2
    for im, q, dets in zip(images, queries, results):
        h, w = im.shape[:2]
        assert dets, "threshold 0 keeps every valid box"
        assert all(isinstance(d, Detection) for d in dets)
        scores = [d.score for d in dets]
        assert scores == sorted(scores, reverse=True)
        for d in dets:
            x0, y0, x1, y1 = d.box_xyxy
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert 0 <= d.query_index < len(q) and d.query == q[d.query_index]  # padded queries never leak
    high = tiny.detect(images, queries, threshold=0.5)
    assert all(d.score >= 0.5 for dets in high for d in dets)
    assert sum(map(len, high)) < sum(map(len, results))


def test_batched_equals_one_by_one(tiny):
    images = _images()
    queries = [["dog", "corgi"], ["cat"]]
    batched = tiny.detect(images, queries, 0.0)
    single = Owlv2Detector(tiny.model, tiny.processor, batch_size=1, nms_iou=None).detect(images, queries, 0.0)
    for a, b in zip(batched, single):
        assert len(a) == len(b)
        for da, db in zip(a, b):
            assert da.query_index == db.query_index
            assert da.score == pytest.approx(db.score, abs=1e-5)
            assert np.allclose(da.box_xyxy, db.box_xyxy, atol=1e-3)


def test_tiny_build_is_deterministic():
    a, b = Owlv2Detector.build_tiny(), Owlv2Detector.build_tiny()
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class _FixedOwl(torch.nn.Module):
    """Stands in for Owlv2ForObjectDetection: fixed boxes (cx, cy, w, h of the padded square) and logits."""

    def __init__(self, boxes, logits):
        super().__init__()
        self.boxes, self.logits = torch.tensor(boxes), torch.tensor(logits)

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None):
        from transformers.models.owlv2.modeling_owlv2 import Owlv2ObjectDetectionOutput

        b = pixel_values.shape[0]
        return Owlv2ObjectDetectionOutput(logits=self.logits.expand(b, -1, -1),
                                          pred_boxes=self.boxes.expand(b, -1, -1))


def test_boxes_come_back_in_original_pixels_of_non_square_images(tiny):
    # box 0: centre (0.5, 0.25), size 0.5 x 0.25 of the padded square; box 1 reaches into the padding
    model = _FixedOwl([[[0.5, 0.25, 0.5, 0.25], [0.5, 0.75, 0.5, 0.5]]], [[[5.0, -9.0], [-9.0, 3.0]]])
    det = Owlv2Detector(model, tiny.processor, nms_iou=None)
    wide = np.zeros((40, 64, 3), np.uint8)   # padded to 64 x 64 at the bottom
    tall = np.zeros((64, 32, 3), np.uint8)   # padded to 64 x 64 on the right
    big = np.zeros((300, 600, 3), np.uint8)  # padded to 600 x 600
    r_wide, r_tall, r_big = det.detect([wide, tall, big], [["dog", "corgi"]] * 3, threshold=0.5)
    assert [d.query for d in r_wide] == ["dog", "corgi"]
    assert r_wide[0].box_xyxy == pytest.approx((16, 8, 48, 24))
    assert r_wide[1].box_xyxy == pytest.approx((16, 32, 48, 40))  # clipped at the real bottom edge (40)
    assert r_tall[0].box_xyxy == pytest.approx((16, 8, 32, 24))   # clipped at the real right edge (32)
    assert r_big[0].box_xyxy == pytest.approx((150, 75, 450, 225))
    assert r_wide[0].score == pytest.approx(1 / (1 + np.exp(-5.0)), rel=1e-5)


def test_nms_drops_duplicates_of_one_object(tiny):
    model = _FixedOwl([[[0.5, 0.5, 0.5, 0.5], [0.51, 0.5, 0.5, 0.5], [0.15, 0.15, 0.2, 0.2]]],
                      [[[4.0], [3.0], [2.0]]])
    dets = Owlv2Detector(model, tiny.processor, nms_iou=0.3).detect([np.zeros((64, 64, 3), np.uint8)],
                                                                     [["dog"]], 0.5)[0]
    assert [round(d.score, 3) for d in dets] == [round(1 / (1 + np.exp(-s)), 3) for s in (4.0, 2.0)]


def test_query_count_mismatch_is_an_error(tiny):
    from mudi.errors import MudiError

    with pytest.raises(MudiError, match="query lists"):
        tiny.detect(_images(), [["dog"]], 0.1)
