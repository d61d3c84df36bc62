"""OWLv2 and SAM load from a local folder through their real `from_pretrained` (offline: the tiny models are
saved with `save_pretrained` first) and behave exactly like the models that were saved."""

import numpy as np

from mudi.adapters.owlv2 import Owlv2Detector
from mudi.adapters.sam import SamSegmenter


def _image(h=48, w=80, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    img[10:40, 20:60] = (200, 40, 40)
    return img


def test_owlv2_local_folder_roundtrip(tmp_path):
    tiny = Owlv2Detector.build_tiny()
    tiny.model.save_pretrained(tmp_path / "owl")
    tiny.processor.save_pretrained(tmp_path / "owl")
    loaded = Owlv2Detector.from_pretrained(str(tmp_path / "owl"))
    imgs, queries = [_image(), _image(64, 40, 1)], [["toy", "dog"], ["toy"]]
    a = tiny.detect(imgs, queries, threshold=0.0)
    b = loaded.detect(imgs, queries, threshold=0.0)
    assert [len(x) for x in a] == [len(x) for x in b] and sum(len(x) for x in a) > 0
    for da, db in zip(a, b):
        for x, y in zip(da, db):
            assert x.query == y.query and abs(x.score - y.score) < 1e-5
            assert np.allclose(x.box_xyxy, y.box_xyxy, atol=1e-3)


def test_sam_local_folder_roundtrip(tmp_path):
    tiny = SamSegmenter.build_tiny()
    tiny.model.save_pretrained(tmp_path / "sam")
    tiny.processor.save_pretrained(tmp_path / "sam")
    loaded = SamSegmenter.from_pretrained(str(tmp_path / "sam"))
    imgs, boxes = [_image(), _image(64, 40, 1)], [(20, 10, 60, 40), None]
    for ma, mb in zip(tiny.segment(imgs, boxes), loaded.segment(imgs, boxes)):
        assert ma.shape == mb.shape and ma.dtype == bool and np.array_equal(ma, mb)
