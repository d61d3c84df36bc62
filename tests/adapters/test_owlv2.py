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


def _smooth(h, w):
    """Gradients and waves: resamplers differ most on pixel noise, which photos do not have."""
    yy, xx = np.mgrid[:h, :w]
    im = np.stack([xx * 255 / w, yy * 255 / h, 128 + 100 * np.sin(xx * 6 / w) * np.cos(yy * 5 / h)], -1)
    return np.clip(im, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("hw", [(40, 64), (70, 30), (200, 120)])
def test_fast_preprocessing_matches_the_processor(tiny, hw):
    from mudi.adapters.owlv2 import preprocess_images

    h, w = hw
    im = _smooth(h, w)
    ref = torch.as_tensor(np.asarray(tiny.processor(images=[im], return_tensors="pt")["pixel_values"]))
    fast = preprocess_images([im], tiny.processor.image_processor)
    assert fast.shape == ref.shape == (1, 3, 32, 32) and fast.dtype == torch.float32
    assert (fast - ref).abs().mean() < 0.05  # normalised units (std ~0.27): < 1.5 % of the [0, 1] range
    # the black padding lands on the same rows/columns as the processor's
    side = max(h, w)
    pad_rows, pad_cols = int(32 * (side - h) / side), int(32 * (side - w) / side)
    if pad_rows > 1:
        assert torch.allclose(fast[..., -pad_rows + 1:, :], ref[..., -pad_rows + 1:, :], atol=1e-5)
    if pad_cols > 1:
        assert torch.allclose(fast[..., -pad_cols + 1:], ref[..., -pad_cols + 1:], atol=1e-5)


def test_fast_and_processor_paths_give_the_same_detections(tiny):
    images = [_smooth(40, 64), _smooth(70, 30), _smooth(300, 600)]
    queries = [["dog", "corgi"], ["cat"], ["toy"]]
    slow = Owlv2Detector(tiny.model, tiny.processor, nms_iou=None, use_fast_preprocess=False)
    fast = Owlv2Detector(tiny.model, tiny.processor, nms_iou=None, use_fast_preprocess=True)
    # boxes: the tiny box head predicts each patch's own grid cell (same pixels on both paths); the scores
    # see the pixels, and the two resamplers' small differences move them only slightly
    for a, b in zip(slow.detect(images, queries, 0.0), fast.detect(images, queries, 0.0)):
        assert len(a) == len(b)
        assert np.allclose(sorted(d.box_xyxy for d in a), sorted(d.box_xyxy for d in b), atol=1e-3)
        by_box_a = {tuple(np.round(d.box_xyxy, 2)): d.score for d in a}
        by_box_b = {tuple(np.round(d.box_xyxy, 2)): d.score for d in b}
        assert by_box_a.keys() == by_box_b.keys()
        sa = np.array([by_box_a[k] for k in by_box_a])
        sb = np.array([by_box_b[k] for k in by_box_a])
        # the random tiny model amplifies pixel differences; still the scores agree closely and rank alike
        assert np.abs(sa - sb).mean() < 0.03 and np.corrcoef(sa, sb)[0, 1] > 0.99


def test_fast_path_keeps_boxes_in_original_pixels(tiny):
    model = _FixedOwl([[[0.5, 0.25, 0.5, 0.25], [0.5, 0.75, 0.5, 0.5]]], [[[5.0, -9.0], [-9.0, 3.0]]])
    det = Owlv2Detector(model, tiny.processor, nms_iou=None, use_fast_preprocess=True)
    wide = np.zeros((40, 64, 3), np.uint8)
    r_wide = det.detect([wide], [["dog", "corgi"]], threshold=0.5)[0]
    assert r_wide[0].box_xyxy == pytest.approx((16, 8, 48, 24))
    assert r_wide[1].box_xyxy == pytest.approx((16, 32, 48, 40))
