"""`mudi prior`: tiny backbone → scripted detector/segmenter → single-subject filter → resumable prior folder."""

import json

import numpy as np
import pytest

from mudi.adapters.base import Detection
from mudi.cli import main as cli_main
from mudi.data.subjects import find_subjects
from mudi.segmentation.prior import PriorConfig, judge_prior
from mudi.segmentation.prior import make_prior_set as run


class CountingDetector:
    """Image index k of each call gets ``script[n]`` detections (n counts images over all calls)."""

    def __init__(self, script):
        self.script, self.n, self.queries = script, 0, []

    def detect(self, images, queries, threshold):
        out = []
        for _im, q in zip(images, queries):
            self.queries.append(list(q))
            k = self.script[self.n % len(self.script)]
            self.n += 1
            out.append([Detection((2.0 * j, 2.0, 2.0 * j + 30, 40.0), 0.9, 0, q[0]) for j in range(k)])
        return out


class TwoBlobsEveryThird:
    def __init__(self):
        self.n = 0

    def segment(self, images, boxes):
        out = []
        for im in images:
            m = np.zeros(im.shape[:2], bool)
            m[10:40, 10:40] = True
            if self.n % 3 == 2:
                m[50:60, 50:60] = True  # a second component
            self.n += 1
            out.append(m)
        return out


def test_judge_prior():
    one = [Detection((0, 0, 1, 1), 0.9, 0, "dog")]
    m = np.zeros((64, 64), bool)
    m[10:30, 10:30] = True
    assert judge_prior(one, m, 0.01) == "kept"
    assert judge_prior(one * 2, m, 0.01) == "2 detections"
    assert judge_prior([], None, 0.01) == "0 detections"
    two = m.copy()
    two[40:50, 40:50] = True
    assert judge_prior(one, two, 0.01, use_single_component=True) == "2 mask components"
    assert judge_prior(one, two) == "kept"  # the authors keep SAM's mask as it is
    assert judge_prior(None, m, 0.5).startswith("mask covers")


def test_prior_generates_filters_and_resumes(tmp_path):
    from mudi.adapters.registry import load_backbone

    backbone = load_backbone("tiny-sd")
    out = tmp_path / "priors"
    # mudi 0.x's filter, one try per image (the authors' defaults: tests/test_authors_recipe.py)
    cfg = PriorConfig(output_dir=str(out), classes=["corgi", "harry potter toy"], num_images=3, backbone="tiny-sd",
                      num_inference_steps=2, generation_batch_size=2, backend="owlv2+sam", max_tries=1,
                      use_class_noun_query=True, use_single_component=True, caption="",
                      prompt="A photo of {}, simple background, full body shot.")
    det = CountingDetector([1, 1, 1, 2, 1, 0])  # image 4 has two detections, image 6 none
    seg = TwoBlobsEveryThird()
    summary = run(cfg, det, seg, backbone)
    assert det.queries[0] == ["corgi"] and ["harry potter toy", "toy"] in det.queries
    assert sum(s["kept"] for s in summary.values()) + sum(s["rejected"] for s in summary.values()) == 6
    progress = json.loads((out / "prior_progress.json").read_text())
    reasons = [r.get("reason", "kept") for c in progress["classes"].values() for _, r in sorted(
        c["images"].items(), key=lambda kv: int(kv[0]))]
    assert reasons.count("kept") == sum(s["kept"] for s in summary.values()) >= 2
    assert "2 detections" in reasons and "0 detections" in reasons
    subjects = find_subjects(out)
    assert {s.class_name for s in subjects} <= {"corgi", "harry potter toy"}
    for s in subjects:
        assert s.source == "prior"
        for i in range(len(s.images)):
            rgb, mask = s.load(i)
            assert rgb.shape == (64, 64, 3) and mask.shape == (64, 64) and mask.any()
            assert s.images[i].caption == f"A photo of {s.class_name}, simple background, full body shot."
    first = (out / "a00.png").read_bytes()
    # resume: nothing left to do, no model is called
    again = run(cfg, det, seg, backbone)
    assert again == summary and det.n == 6
    # more images: only the new indices are generated; old ones are untouched
    more = run(PriorConfig(**{**cfg.__dict__, "num_images": 4}), det, seg, backbone)
    assert det.n == 8 and sum(s["kept"] + s["rejected"] for s in more.values()) == 8
    assert (out / "a00.png").read_bytes() == first


def test_same_seed_same_image_whatever_the_batch(tmp_path):
    from mudi.adapters.registry import load_backbone

    backbone = load_backbone("tiny-sd")
    outs = []
    for bs in (1, 3):
        out = tmp_path / f"b{bs}"
        cfg = PriorConfig(output_dir=str(out), classes=["dog"], num_images=3, backbone="tiny-sd",
                          num_inference_steps=2, generation_batch_size=bs, backend="grabcut", max_tries=1)
        run(cfg, CountingDetector([1]), TwoBlobsEveryThird(), backbone)
        outs.append((out / "a01.png").read_bytes())
    assert outs[0] == outs[1]


def test_prior_cli_offline_with_tiny_models(tmp_path, capsys):
    out = tmp_path / "p"
    code = cli_main(["prior", "--output_dir", str(out), "--classes", "dog", "--num_images", "2",
                     "--backbone", "tiny-sd", "--backend", "tiny-owlv2+tiny-sam", "--set", "num_inference_steps=2",
                     "--set", "threshold=0.99", "--set", "max_tries=2"])
    text = capsys.readouterr().out
    assert "dog" in text and "prior folder" in text
    progress = json.loads((out / "prior_progress.json").read_text())
    assert len(progress["classes"]["dog"]["images"]) == 2
    # the deterministic tiny OWLv2 finds many boxes in these noise images: nothing is kept, and that is an error
    assert code == 1 and "no image kept for ['dog']" in text
    assert all(r["reason"].endswith("detections") for r in progress["classes"]["dog"]["images"].values())


def test_prior_needs_classes(tmp_path):
    from mudi.errors import MudiError

    with pytest.raises(MudiError, match="no classes"):
        run(PriorConfig(output_dir=str(tmp_path / "x")))
