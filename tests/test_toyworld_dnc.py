"""The real Detect-and-Compare path on toy images (issue 24, item 6): the registered ``toyworld`` detector and
embedder inside ``scoring.evaluator.DncEvaluator``, on constructed images whose answer is known."""

import numpy as np
import pytest
import torch

from mudi.adapters import registry
from mudi.adapters.base import Detector, Embedder
from mudi.data.subjects import load_subjects
from mudi.scoring.evaluator import DncEvaluator
from mudi.toyworld import SUBJECTS_DIR
from mudi.toyworld.dnc import EMBEDDING_DIM
from mudi.toyworld.evaluate import toy_subjects
from mudi.toyworld.sets import subject_folders
from mudi.toyworld.world import ObjectSpec, Scene, render_scene


def _image(*specs, background=(255, 255, 255)):
    return render_scene(Scene(tuple(specs), background))[0]


def _evaluator(set_name):
    folders = subject_folders(SUBJECTS_DIR, set_name)
    return (DncEvaluator(load_subjects(folders), registry.load("detector", "toyworld", device="cpu", batch_size=4),
                         {"dnc_toyworld": registry.load("embedder", "toyworld", device="cpu", batch_size=4)}),
            toy_subjects(folders))


def test_the_toy_detector_and_embedder_are_registered_and_keep_their_protocols():
    det, emb = registry.load("detector", "toyworld"), registry.load("embedder", "toyworld")
    assert isinstance(det, Detector) and isinstance(emb, Embedder) and emb.name == "toyworld"
    a = ObjectSpec("square", "red", "yellow", 12, 9, 10)
    b = ObjectSpec("circle", "blue", None, 10, 24, 22)
    image = _image(a, b, background=(230, 236, 240))
    (found,) = det.detect([image], [["red yellow square", "blue circle"]], threshold=0.4)
    boxes = sorted(d.box_xyxy for d in found)
    assert boxes == [(3.0, 4.0, 15.0, 16.0), (19.0, 17.0, 29.0, 27.0)] and {d.score for d in found} == {1.0}
    big = np.kron(image, np.ones((4, 4, 1), np.uint8))  # other sizes: boxes in the input's own pixels
    assert sorted(d.box_xyxy for d in det.detect([big], [["x"]], 0.4)[0]) == [tuple(4 * v for v in bx)
                                                                              for bx in boxes]
    rows = emb.embed([image[4:16, 3:15], _image(ObjectSpec("square", "red", "yellow", 14)), image[17:27, 19:29],
                      np.full((20, 20, 3), 255, np.uint8)])
    assert rows.dtype == torch.float32 and rows.shape == (4, EMBEDDING_DIM)
    assert torch.allclose(rows[:3].norm(dim=1), torch.ones(3)) and float(rows[3].norm()) == 0.0  # nothing there
    cos = rows[:3] @ rows[:3].T
    assert cos[0, 1] > 0.99 and cos[0, 2] < 0.3  # same identity (crop or photo); no colour shared, shapes alike


@pytest.mark.parametrize("set_name", ["shared_colour", "same_shape"])
def test_dnc_ranks_a_correct_render_above_identity_mixing_and_counts_a_missing_subject(set_name):
    evaluator, (a, b) = _evaluator(set_name)
    left, right = dict(size=13, cx=8.5, cy=10), dict(size=13, cx=23.5, cy=21)
    swapped_top = ObjectSpec(b.shape, a.top, b.bottom, **right)  # b takes a's top colour
    images = {
        "correct": _image(a.spec(**left), b.spec(**right)),
        "correct, other order and background": _image(b.spec(**left), a.spec(**right), background=(240, 232, 228)),
        "colour-swapped": _image(a.spec(**left), swapped_top),
        "duplicate": _image(a.spec(**left), a.spec(**right)),
        "missing": _image(a.spec(**left)),
    }
    scores = dict(zip(images, evaluator.score_images(list(images.values()))))
    dnc = {k: v.dnc["dnc_toyworld"] for k, v in scores.items()}
    assert dnc["correct"]["score"] > 0.95 and dnc["correct"]["failures"] == []
    assert dnc["correct, other order and background"]["score"] > 0.95
    assert dnc["correct"]["assignment"] != dnc["correct, other order and background"]["assignment"]
    for mixed in ("colour-swapped", "duplicate"):
        assert dnc[mixed]["score"] < dnc["correct"]["score"] - 0.2, mixed
        assert "mixed" in dnc[mixed]["failures"], mixed
    assert "duplicate" in dnc["duplicate"]["failures"]
    assert dnc["missing"]["score"] == 0.0 and dnc["missing"]["failures"] == ["count"]  # D&C's count error
    assert len(scores["missing"].detections) == 1
