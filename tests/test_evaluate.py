"""`mudi evaluate`: exact D&C scores with a scripted detector and a palette (one-hot) embedder, outputs and
report, prompts in both orders, caching, and the whole pipeline on the real photos with tiny models."""

import csv
import importlib.util
import json
import math

import numpy as np
import pytest
import yaml
from PIL import Image

from mudi.adapters.base import Detection, Detector, Embedder
from mudi.errors import MudiError
from mudi.scoring.config import EvaluateConfig
from mudi.scoring.evaluator import DncEvaluator, crop_box, merge_detections, pad_to_white_square, score_images
from mudi.scoring.folder import evaluate_folder as run
from mudi.scoring.text import prompt_orders, prompt_template

PALETTE = [(220, 20, 60), (30, 144, 255), (50, 205, 50), (255, 165, 0), (148, 0, 211)]
SIDE = 32  # pixels per subject square
GREY = (128, 128, 128)


class ScriptedDetector:
    """Returns scripted boxes, one list per image, in the order images are passed (across calls)."""

    def __init__(self, boxes_per_image):
        self.script = list(boxes_per_image)
        self.calls = []

    def detect(self, images, queries, threshold):
        self.calls.append((len(images), [list(q) for q in queries], threshold))
        out = []
        for _ in images:
            boxes = self.script.pop(0)
            out.append([Detection(tuple(float(v) for v in b), 0.9 - 0.01 * k, 0, queries[0][0])
                        for k, b in enumerate(boxes)])
        return out


class PaletteEmbedder:
    """One-hot-like embedder: the fraction of each palette colour among a crop's pixels, L2-normalised.
    A crop of pure subject ``j`` embeds to ``e_j``; a crop a quarter ``i``, the rest ``j`` to
    ``(e_i + 3 e_j) / sqrt(10)``."""

    name = "palette"

    def __init__(self, n):
        self.colors = np.array(PALETTE[:n])
        self.calls = 0

    def embed(self, images):
        import torch

        self.calls += 1
        rows = []
        for im in images:
            px = np.asarray(im).reshape(-1, 3)
            v = np.array([(px == c).all(1).sum() for c in self.colors], dtype=np.float64)
            rows.append(v / max(np.linalg.norm(v), 1e-12))
        return torch.tensor(np.array(rows), dtype=torch.float32)


def make_reference_subjects(root, n, num_images=2):
    paths = []
    for j in range(n):
        d = root / f"subj{j}"
        d.mkdir(parents=True)
        for i in range(num_images):
            Image.new("RGB", (24 + 4 * i, 24), PALETTE[j]).save(d / f"{i:02d}.png")
        (d / "subject.yaml").write_text(yaml.safe_dump(
            {"name": f"subj{j}", "identifier": f"sks{j}", "class_noun": "toy" if j % 2 else "dog",
             "descriptive_class": f"color{j} toy" if j % 2 else None}))
        paths.append(d)
    return paths


def make_scene(slots):
    """A grey canvas with one square per slot; a slot is a subject index or ``(i, j)`` (a quarter i, the
    rest j)."""
    img = np.full((SIDE + 16, len(slots) * (SIDE + 8) + 8, 3), GREY, np.uint8)
    boxes = []
    for k, s in enumerate(slots):
        x0, y0 = 8 + k * (SIDE + 8), 8
        if isinstance(s, tuple):
            img[y0:y0 + SIDE, x0:x0 + SIDE // 4] = PALETTE[s[0]]
            img[y0:y0 + SIDE, x0 + SIDE // 4:x0 + SIDE] = PALETTE[s[1]]
        else:
            img[y0:y0 + SIDE, x0:x0 + SIDE] = PALETTE[s]
        boxes.append((x0, y0, x0 + SIDE, y0 + SIDE))
    return img, boxes


def cases(n):
    """name → (slots, expected score, expected failures) with S_GT = I (solid-colour references)."""
    # a quarter-subject-0 crop embeds to (e0 + 3 e1) / sqrt(10)
    mixed_row = math.sqrt(1 / 10 + (1 - 3 / math.sqrt(10)) ** 2)
    return {
        "good": (list(range(n)), 1.0, []),
        "swapped": (list(reversed(range(n))), 1.0, []),
        # subject 0 twice, subject 1 missing: the matched row of subject 1 is e0 → ||e1 - e0|| = sqrt(2)
        "duplicated": ([0, 0] + list(range(2, n)), 1 - math.sqrt(2), ["duplicate", "mixed"]),
        "missing": (list(range(n - 1)), 0.0, ["count"]),
        "extra": (list(range(n)) + [0], 0.0, ["count"]),
        # subject 1's square is a quarter subject 0: its matched row is (1, 3, 0, ...)/sqrt(10)
        "mixed": ([0, (0, 1)] + list(range(2, n)), 1 - mixed_row, ["mixed"]),
    }


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_exact_scores_for_good_swapped_duplicated_missing_mixed(tmp_path, n):
    from mudi.data.subjects import load_subjects

    subjects = load_subjects(make_reference_subjects(tmp_path, n))
    named = cases(n)
    scenes = [make_scene(slots) for slots, _, _ in named.values()]
    detector = ScriptedDetector([b for _, b in scenes])
    embedder = PaletteEmbedder(n)
    assert isinstance(detector, Detector) and isinstance(embedder, Embedder)
    results = score_images([im for im, _ in scenes], subjects, detector, embedder, batch_size=4)
    for (name, (_, expected, failures)), res in zip(named.items(), results):
        got = res.dnc["dnc_palette"]
        assert got["score"] == pytest.approx(expected, abs=1e-6), name
        assert got["failures"] == failures, name
    # queries: each subject's class phrase (detect_as) without repeats; the authors' threshold; batches of 4
    assert detector.calls[0][1][0] == list(dict.fromkeys(s.class_name for s in subjects))
    assert detector.calls[0][2] == 0.4
    assert [c[0] for c in detector.calls] == [4, 2]


def test_references_embedded_once_and_cached_on_disk(tmp_path):
    from mudi.data.subjects import load_subjects

    subjects = load_subjects(make_reference_subjects(tmp_path / "s", 2))
    scenes = [make_scene([0, 1]) for _ in range(5)]
    emb = PaletteEmbedder(2)
    ev = DncEvaluator(subjects, ScriptedDetector([b for _, b in scenes]), {"dnc_palette": emb}, batch_size=2,
                      cache_dir=tmp_path / "cache")
    assert emb.calls == 2  # one call per subject
    assert np.allclose(ev.s_gt["dnc_palette"], np.eye(2))
    ev.score_images([im for im, _ in scenes])
    assert emb.calls == 2 + 3  # then one call per batch of generated images
    assert len(list((tmp_path / "cache" / "palette").glob("*.npy"))) == 2
    emb2 = PaletteEmbedder(2)
    ev2 = DncEvaluator(subjects, ScriptedDetector([]), {"dnc_palette": emb2}, cache_dir=tmp_path / "cache")
    assert emb2.calls == 0 and np.allclose(ev2.s_gt["dnc_palette"], np.eye(2))
    # Changing a reference file changes its key.
    Image.new("RGB", (24, 24), PALETTE[1]).save(subjects[0].images[0].path)
    ev3 = DncEvaluator(subjects, ScriptedDetector([]), {"dnc_palette": emb2}, cache_dir=tmp_path / "cache")
    assert emb2.calls == 1 and ev3.s_gt["dnc_palette"][0, 1] > 0.4


def test_crops_are_padded_to_white_squares_and_merged_across_queries():
    img = np.zeros((20, 40, 3), np.uint8)
    c = crop_box(img, (5.2, 2.0, 15.0, 8.0))  # 10 wide (floor/ceil), 6 high
    assert c.shape == (10, 10, 3)
    assert (c[:2] == 255).all() and (c[2:8] == 0).all() and (c[8:] == 255).all()
    assert pad_to_white_square(np.zeros((3, 3, 3), np.uint8)).shape == (3, 3, 3)
    assert crop_box(img, (-10, -10, 100, 100)).shape == (40, 40, 3)  # clamped
    dets = [Detection((0, 0, 10, 10), 0.5, 0, "dog"), Detection((1, 1, 10, 10), 0.8, 1, "cat"),
            Detection((20, 0, 30, 10), 0.45, 0, "dog")]
    kept = merge_detections(dets, 0.5)
    assert [d.score for d in kept] == [0.8, 0.45]


def test_prompt_template_and_orders(tmp_path):
    from mudi.data.subjects import load_subjects

    s = load_subjects(make_reference_subjects(tmp_path, 3))  # phrases: sks0 dog, sks1 color1 toy, sks2 dog
    t = prompt_template("A photo of sks0 dog, sks1 color1 toy and sks2 dog in a park.", s)
    assert t == "A photo of [V1], [V2] and [V3] in a park."
    assert prompt_template("[V1] and [V2] and [V3] at the beach.", s) == "[V1] and [V2] and [V3] at the beach."
    assert prompt_template("A photo of a cat.", s) is None
    orders = prompt_orders("[V1] and [V2] at the beach.", ["monster toy", "can"])
    assert orders == ["monster toy and can at the beach.", "can and monster toy at the beach."]
    assert len(prompt_orders("[V1], [V2] and [V3].", ["a", "b", "c"])) == 6
    assert len(prompt_orders("[V1] [V2] [V3] [V4] [V5].", list("abcde"))) == 5  # rotations beyond 24


def _write_case_folder(tmp_path, n=2):
    subjects = make_reference_subjects(tmp_path / "subjects", n)
    images = tmp_path / "images"
    images.mkdir()
    boxes = []
    for name, (slots, _, _) in cases(n).items():
        img, b = make_scene(slots)
        Image.fromarray(img).save(images / f"{name}.png")
        boxes.append((name, b))
    (images / "good.json").write_text(json.dumps({"prompt": "A photo of sks0 dog and sks1 color1 toy on a bench."}))
    order = sorted(boxes)  # list_images sorts by name
    return subjects, images, [b for _, b in order], cases(n)


class FixedText:
    """Text scorer whose score is the prompt's length: checks which prompts were used and averaged."""

    def score(self, images, prompts):
        return [float(len(p)) for p in prompts]


def test_run_writes_json_csv_and_report(tmp_path):
    subjects, images, boxes, expected = _write_case_folder(tmp_path)
    cfg = EvaluateConfig(images=str(images), subjects=[str(p) for p in subjects], output_dir=str(tmp_path / "out"),
                         prompt="[V1] and [V2] in a garden.", batch_size=4)
    summary = run(cfg, detector=ScriptedDetector(boxes), embedders={"dnc_palette": PaletteEmbedder(2)},
                  text_scorers={"len": FixedText()})
    out = tmp_path / "out"
    for name, (_, score, failures) in expected.items():
        rec = json.loads((out / f"{name}.json").read_text())
        assert rec["metrics"]["dnc_palette"]["score"] == pytest.approx(score, abs=1e-6)
        assert rec["failures"] == failures
        assert len(rec["detections"]) == len(expected[name][0])
    good = json.loads((out / "good.json").read_text())
    # The sidecar prompt, rewritten with descriptive classes (no identifiers), in both orders.
    assert good["prompts"] == ["A photo of dog and color1 toy on a bench.", "A photo of color1 toy and dog on a bench."]
    assert good["text"]["len"] == pytest.approx(np.mean([len(p) for p in good["prompts"]]))
    assert json.loads((out / "mixed.json").read_text())["prompts"][0] == "dog and color1 toy in a garden."
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["image"] for r in rows] == sorted(f"{k}.png" for k in expected)
    assert {r["image"]: float(r["dnc_palette"]) for r in rows}["duplicated.png"] == pytest.approx(1 - math.sqrt(2), abs=1e-4)
    assert summary["failure_counts"] == {"count": 2, "duplicate": 1, "mixed": 2}
    assert summary["means"]["dnc_palette"] == pytest.approx(np.mean([v[1] for v in expected.values()]))
    html = (out / "report.html").read_text()
    assert html.count("data:image/jpeg;base64,") == len(expected) + 2  # images + one reference per subject
    assert "count error: 1 found, 2 expected" in html and "identity mixed" in html and "S_GT (dnc_palette)" in html
    # sorted by score, best first: a perfect image comes before the duplicated one
    assert html.index("good.png") < html.index("mixed.png") < html.index("duplicated.png")
    assert yaml.safe_load((out / "config.yaml").read_text())["threshold"] == 0.4


def test_config_validation_and_cli_errors(tmp_path, capsys):
    from mudi.cli import main

    with pytest.raises(MudiError, match="threshold"):
        EvaluateConfig(threshold=1.5)
    with pytest.raises(MudiError, match="embedders"):
        EvaluateConfig(embedders=[])
    subjects, images, _, _ = _write_case_folder(tmp_path)
    rc = main(["evaluate", "--images", str(images), "--subjects", *map(str, subjects), "--embedders", "dinov3"])
    assert rc == 2 and "unknown embedder 'dinov3'" in capsys.readouterr().err
    rc = main(["evaluate", "--images", str(tmp_path / "nope"), "--subjects", str(subjects[0])])
    assert rc == 2 and "no such folder" in capsys.readouterr().err
    rc = main(["evaluate", "--images", str(images), "--subjects", str(subjects[0]), "--set", "treshold=0.3"])
    assert rc == 2 and "did you mean 'threshold'" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("dreamsim") is not None, reason="dreamsim is installed")
def test_dreamsim_missing_is_a_clear_error():
    from mudi.adapters import registry

    with pytest.raises(MudiError, match=r"pip install 'mudi\[dreamsim\]'"):
        registry.load("embedder", "dreamsim")


def _tiny_detector_or_scripted(n_images, size_hw):
    """tiny OWLv2 once `mudi.adapters.owlv2` exists; until then two fixed boxes per image."""
    if importlib.util.find_spec("mudi.adapters.owlv2") is not None:
        from mudi.adapters import registry

        return registry.load("detector", "tiny-owlv2")
    h, w = size_hw
    return ScriptedDetector([[(0, h // 4, w // 2, 3 * h // 4), (w // 2, h // 4, w, 3 * h // 4)]] * n_images)


def test_real_photos_end_to_end_with_tiny_models(benchmark_dir, tmp_path):
    from mudi.adapters.clip import ClipScorer
    from mudi.adapters.dinov2 import Dinov2Embedder

    root = benchmark_dir / "dnc-examples"
    cfg = EvaluateConfig(images=str(root / "images"), subjects=[str(root / "references" / "monster_toy"),
                         str(root / "references" / "robot_toy")], class_nouns=["monster toy", "robot toy"],
                         output_dir=str(tmp_path / "out"), prompt="[V1] and [V2] on a table.", batch_size=5,
                         cache_dir=str(tmp_path / "cache"))
    summary = run(cfg, detector=_tiny_detector_or_scripted(5, (1024, 1024)),
                  embedders={"dnc_dino": Dinov2Embedder.build_tiny()}, text_scorers={"clip_score": ClipScorer.build_tiny()})
    assert summary["num_images"] == 5 and summary["queries"] == ["monster toy", "robot toy"]
    names = {"good", "mixed1", "mixed2", "single", "count"}
    assert {p.stem for p in (tmp_path / "out").glob("*.json")} >= names
    for name in names:
        rec = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        s = rec["metrics"]["dnc_dino"]["score"]
        assert math.isfinite(s) and (s == 0.0) == ("count" in rec["failures"])
        assert -1.0 <= rec["text"]["clip_score"] <= 1.0
        assert rec["prompts"] == ["monster toy and robot toy on a table.", "robot toy and monster toy on a table."]
    assert (tmp_path / "out" / "report.html").stat().st_size > 10_000
    assert np.asarray(summary["s_gt"]["dnc_dino"]).shape == (2, 2)


def test_cli_end_to_end_with_tiny_registry_models(tmp_path, capsys):
    from mudi.cli import main

    subjects, images, _, expected = _write_case_folder(tmp_path)
    rc = main(["evaluate", "--images", str(images), "--subjects", *map(str, subjects), "-o", str(tmp_path / "o"),
               "--detector", "tiny-owlv2", "--embedders", "tiny-dinov2", "tiny-clip", "--text-scorers", "tiny-clip",
               "--batch-size", "4", "--set", "matching=hungarian", "cache_dir=" + str(tmp_path / "c")])
    assert rc == 0, capsys.readouterr().err
    assert "6 images: dnc_dino=" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "o" / "summary.csv").open()))
    assert len(rows) == len(expected) and {"dnc_dino", "dnc_clip", "clip_score"} <= set(rows[0])
    for r in rows:  # whatever a random detector finds, the count rule holds
        assert ("count" in r["failures"]) == (int(r["num_detections"]) != 2)
        if "count" in r["failures"]:
            assert float(r["dnc_dino"]) == 0.0 and float(r["dnc_clip"]) == 0.0
    assert yaml.safe_load((tmp_path / "o" / "config.yaml").read_text())["matching"] == "hungarian"
