"""`mudi segment`: status logic with a scripted detector, user masks kept, corrupt images reported."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mudi.adapters.base import Detection
from mudi.cli import main as cli_main
from mudi.core.geometry import mask_iou
from mudi.data.images import read_mask
from mudi.data.subjects import find_subjects
from mudi.segmentation.config import SegmentConfig
from mudi.segmentation.folder import segment_subjects as run


def _disc_image(h=48, w=64, cx=30, cy=22, r=12, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (40, 90, 200)
    img[mask] = (230, 180, 30)
    img = np.clip(img.astype(int) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
    return img, mask


def _native(tmp_path: Path, name="dog6", n=3) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "subject.yaml").write_text("identifier: olis\nclass_noun: dog\ndescriptive_class: corgi\n")
    for i in range(n):
        img, _ = _disc_image(seed=i)
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    return folder


class ScriptedDetector:
    """Returns scripted detections per image file order; records the queries it was asked."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = []

    def detect(self, images, queries, threshold):
        self.calls.append([list(q) for q in queries])
        out = []
        for _ in images:
            dets = self.script.pop(0)
            out.append([d for d in dets if d.score >= threshold])
        return out


class BoxSegmenter:
    """Fills the given box (or a tiny 1-pixel mask when asked for ``tiny``)."""

    def __init__(self, tiny=False):
        self.tiny = tiny
        self.boxes = []

    def segment(self, images, boxes):
        out = []
        for im, box in zip(images, boxes):
            self.boxes.append(box)
            m = np.zeros(im.shape[:2], bool)
            if self.tiny:
                m[0, 0] = True
            elif box is None:
                m[5:-5, 5:-5] = True
            else:
                x0, y0, x1, y1 = (int(round(v)) for v in box)
                m[y0:y1, x0:x1] = True
            out.append(m)
        return out


def _det(box, score, q=0, query="dog"):
    return Detection(box_xyxy=box, score=score, query_index=q, query=query)


def test_status_logic_with_scripted_detector(tmp_path):
    folder = _native(tmp_path, n=3)
    detector = ScriptedDetector([
        [_det((10, 8, 40, 30), 0.9)],                                          # ok
        [],                                                                     # no_detection
        [_det((2, 2, 12, 12), 0.3, 1, "corgi"), _det((18, 10, 42, 34), 0.8)],  # multiple: takes 0.8
    ])
    seg = BoxSegmenter()
    result = run(SegmentConfig(subjects=[str(folder)], threshold=0.2, batch_size=2), detector, seg)
    status = {r.image: r for r in result.images}
    assert status["00.png"].status == "ok"
    assert status["01.png"].status == "no_detection"
    assert status["02.png"].status == "multiple_detections"
    assert "0.80" in status["02.png"].note and status["02.png"].num_detections == 2
    # queries are the class noun and the descriptive class; batches of 2 then 1
    assert detector.calls == [[["dog", "corgi"]] * 2, [["dog", "corgi"]]]
    # the chosen (highest-scoring) box was segmented
    assert seg.boxes == [(10, 8, 40, 30), (18, 10, 42, 34)]
    assert (folder / "masks" / "00.png").is_file() and (folder / "masks" / "02.png").is_file()
    assert not (folder / "masks" / "01.png").exists()
    mask = read_mask(folder / "masks" / "02.png")
    assert mask[10:34, 18:42].all() and mask.sum() == 24 * 24
    report = json.loads((folder / "segment" / "segment_report.json").read_text())
    assert report["counts"]["ok"] == 1 and report["counts"]["no_detection"] == 1
    assert Image.open(folder / "segment" / "segment_preview.png").size == (3 * 192, 3 * (192 + 14))
    # the subject loader now finds the written masks
    subject = find_subjects(folder)[0]
    assert [im.mask_path is not None for im in subject.images] == [True, False, True]


def test_tiny_mask_is_reported_and_not_written(tmp_path):
    folder = _native(tmp_path, n=1)
    result = run(SegmentConfig(subjects=[str(folder)]), ScriptedDetector([[_det((10, 8, 40, 30), 0.9)]]),
                 BoxSegmenter(tiny=True))
    assert [r.status for r in result.images] == ["tiny_mask"]
    assert not (folder / "masks").exists()


def test_user_masks_are_kept_unless_overwrite(tmp_path):
    folder = _native(tmp_path, n=2)
    (folder / "masks").mkdir()
    user = np.zeros((48, 64), bool)
    user[1:5, 1:5] = True
    Image.fromarray(user.astype(np.uint8) * 255).save(folder / "masks" / "00.png")
    seg = BoxSegmenter()
    result = run(SegmentConfig(subjects=[str(folder)], backend="grabcut"), None, seg)
    assert [r.status for r in result.images] == ["kept_user_mask", "ok"]
    assert len(seg.boxes) == 1 and seg.boxes[0] is None  # no detector: the segmenter gets no box
    assert (read_mask(folder / "masks" / "00.png") == user).all()
    result = run(SegmentConfig(subjects=[str(folder)], backend="grabcut", overwrite=True), None, BoxSegmenter())
    assert [r.status for r in result.images] == ["ok", "ok"]
    assert not (read_mask(folder / "masks" / "00.png") == user).all()


def test_corrupt_image_is_reported_by_name_and_the_run_continues(tmp_path, capsys):
    folder = _native(tmp_path, n=2)
    (folder / "01.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    code = cli_main(["segment", str(folder), "--backend", "grabcut"])
    out = capsys.readouterr().out
    assert code == 1
    assert "01.png" in out and "failed" in out
    assert (folder / "masks" / "00.png").is_file()
    report = json.loads((folder / "segment" / "segment_report.json").read_text())
    assert {r["image"]: r["status"] for r in report["images"]} == {"00.png": "ok", "01.png": "error"}


def test_cli_grabcut_segments_a_synthetic_subject_offline(tmp_path, capsys):
    folder = _native(tmp_path, n=2)
    assert cli_main(["segment", str(folder), "--backend", "grabcut"]) == 0
    out = capsys.readouterr().out
    assert "2 images: ok 2" in out
    _, truth = _disc_image()
    assert mask_iou(read_mask(folder / "masks" / "00.png"), truth) > 0.9
    # a second run keeps them (they are user masks now)
    assert cli_main(["segment", str(folder), "--backend", "grabcut"]) == 0
    assert "kept_user_mask 2" in capsys.readouterr().out


def test_benchmark_pair_folder_masks_are_picked_up_by_the_loader(tmp_path):
    folder = tmp_path / "dog6_and_dog2"
    folder.mkdir()
    rows = [{"id": {"a": "olis corgi", "b": "hta chow chow"}}]
    for letter in "ab":
        img, _ = _disc_image(seed=ord(letter))
        Image.fromarray(img).convert("RGB").save(folder / f"{letter}00.jpg", quality=95)
        rows.append({"id": letter, "file_name": f"{letter}00.jpg", "text": f"A photo of {letter}"})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    result = run(SegmentConfig(subjects=[str(folder)], backend="grabcut"), None, BoxSegmenter())
    assert [r.status for r in result.images] == ["ok", "ok"]
    assert (folder / "mask_a00.png").is_file() and (folder / "mask_b00.png").is_file()
    subjects = find_subjects(folder)
    assert [s.images[0].mask_path.name for s in subjects] == ["mask_a00.png", "mask_b00.png"]
    assert subjects[0].load(0)[1] is not None
    assert subjects[0].images[0].caption == "A photo of a"


def test_tiny_models_end_to_end(tmp_path):
    folder = _native(tmp_path, n=2)
    result = run(SegmentConfig(subjects=[str(folder)], backend="tiny-owlv2+tiny-sam", threshold=0.0))
    assert len(result.images) == 2
    assert {r.status for r in result.images} <= {"ok", "multiple_detections", "tiny_mask", "no_detection"}
    for r in result.images:
        if r.mask_path:
            assert read_mask(r.mask_path).shape == (48, 64)


def test_bad_backend_is_a_one_line_error(tmp_path, capsys):
    folder = _native(tmp_path, n=1)
    assert cli_main(["segment", str(folder), "--backend", "owlv2+samm"]) == 2
    assert "unknown backend" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["owlv2+sam"])
def test_missing_weights_name_checkpoint_and_grabcut(tmp_path, backend, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = _native(tmp_path, n=1)
    missing = str(tmp_path / "no-such-owlv2")
    assert cli_main(["segment", str(folder), "--backend", backend, "--detector-model", missing]) == 2
    err = capsys.readouterr().err
    assert "no-such-owlv2" in err and "grabcut" in err and "download" in err


class GroupSegmenter(BoxSegmenter):
    """A segmenter with ``segment_group``: records each group call's image count and boxes."""

    def __init__(self):
        super().__init__()
        self.groups = []
        self.references = []

    def segment_group(self, images, boxes, references=()):
        self.groups.append((len(images), list(boxes)))
        self.references.append([(rgb.shape, mask.shape, int(mask.sum())) for rgb, mask in references])
        return self.segment(images, boxes)


def test_a_segmenter_with_segment_group_gets_all_photos_of_a_subject_at_once(tmp_path):
    folder = _native(tmp_path, n=5)
    other = _native(tmp_path, name="cat2", n=3)
    (other / "subject.yaml").write_text("identifier: ult\nclass_noun: cat\n")
    (folder / "masks").mkdir()
    Image.fromarray(np.ones((48, 64), np.uint8) * 255).save(folder / "masks" / "01.png")  # a user mask
    seg = GroupSegmenter()
    result = run(SegmentConfig(subjects=[str(folder), str(other)], backend="grabcut", batch_size=2), None, seg)
    # one call per subject with every photo still to segment, whatever the batch size; user masks kept
    assert seg.groups == [(4, [None] * 4), (3, [None] * 3)]
    # and the user's mask of that subject came along as a reference (the other subject has none)
    assert seg.references == [[((48, 64, 3), (48, 64), 48 * 64)], []]
    assert sorted(r.status for r in result.images) == ["kept_user_mask"] + ["ok"] * 7
    # a segmenter without it still gets batches of batch_size
    plain = BoxSegmenter()
    run(SegmentConfig(subjects=[str(other)], backend="grabcut", batch_size=2, overwrite=True), None, plain)
    assert len(plain.boxes) == 3
