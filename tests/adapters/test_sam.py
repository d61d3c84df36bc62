"""SAM adapter: Segmenter contract on a tiny random SAM; best-of-three selection by predicted IoU."""

import numpy as np
import pytest
import torch

from mudi.adapters.base import Segmenter
from mudi.adapters.mask_cleanup import count_components
from mudi.adapters.sam import SamSegmenter


@pytest.fixture(scope="module")
def tiny():
    return SamSegmenter.build_tiny()


def test_tiny_sam_satisfies_the_contract_on_non_square_images(tiny):
    assert isinstance(tiny, Segmenter)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 64, 3), dtype=np.uint8), rng.integers(0, 256, (70, 30, 3), dtype=np.uint8),
              rng.integers(0, 256, (33, 33, 3), dtype=np.uint8)]
    masks = tiny.segment(images, [(5.0, 5.0, 30.0, 30.0), None, (0, 0, 10, 20)])
    assert [m.shape for m in masks] == [(40, 64), (70, 30), (33, 33)]
    assert all(m.dtype == bool for m in masks)
    for m in masks:  # clean-up: at most one component, no holes
        assert count_components(m) <= 1
    again = SamSegmenter(tiny.model, tiny.processor, batch_size=1).segment(images, [(5.0, 5.0, 30.0, 30.0), None,
                                                                                   (0, 0, 10, 20)])
    assert all((a == b).all() for a, b in zip(masks, again))  # batching does not change the result


def test_tiny_build_is_deterministic():
    a, b = SamSegmenter.build_tiny().model.state_dict(), SamSegmenter.build_tiny().model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


class _ThreeMasks(torch.nn.Module):
    """Stands in for SamModel: candidate 0 = top half, 1 = nothing, 2 = left half; IoU scores pick one."""

    def __init__(self, iou):
        super().__init__()
        self.iou = torch.tensor(iou)

    def forward(self, pixel_values=None, input_boxes=None, multimask_output=True):
        from types import SimpleNamespace

        b = pixel_values.shape[0]
        m = torch.full((b, 1, 3, 16, 16), -10.0)
        m[:, :, 0, :8, :] = 10.0
        m[:, :, 2, :, :8] = 10.0
        return SimpleNamespace(pred_masks=m, iou_scores=self.iou.expand(b, 1, 3))


@pytest.mark.parametrize("iou,expected", [([0.2, 0.1, 0.9], "left"), ([0.8, 0.1, 0.3], "top")])
def test_the_candidate_with_the_best_predicted_iou_is_kept(tiny, iou, expected):
    seg = SamSegmenter(_ThreeMasks(iou), tiny.processor, use_cleanup=False)
    mask = seg.segment([np.zeros((64, 64, 3), np.uint8)], [(0, 0, 64, 64)])[0]
    want = np.zeros((64, 64), bool)
    if expected == "left":
        want[:, :32] = True
    else:
        want[:32] = True
    assert (mask == want).mean() > 0.97  # bilinear upsampling blurs one row/column at the edge


def test_box_count_mismatch_is_an_error(tiny):
    from mudi.errors import MudiError

    with pytest.raises(MudiError, match="boxes"):
        tiny.segment([np.zeros((8, 8, 3), np.uint8)], [])
