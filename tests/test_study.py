"""More than two subjects end to end: Seg-Mix over five subjects composes pairs from all five over time (more
per sample as an option), the study's subject orders are uniform over every combination and order, its
success rule, and `mudi benchmark`'s num_subjects study on count_ablation with the tiny models (table, plot,
prompts with the count prefix, γ by N, resume)."""

from __future__ import annotations

import csv
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from PIL import Image

from mudi.benchmark.config import BenchmarkConfig, StudySettings
from mudi.benchmark.runner import run_benchmark
from mudi.benchmark.study import is_success, study_template, subject_orders
from mudi.cli import main as cli_main
from mudi.errors import MudiError
from mudi.training.config import TrainConfig
from mudi.training.loop import train
from tests.helpers import make_subject_dir

IDS = ["sks", "zwx", "qrv", "plk", "mnt"]


def _compositions(tmp_path: Path, steps: int, **kw) -> list[list[int]]:
    """The subjects (by index, caption order) of every instance sample of a short Seg-Mix run on 5 subjects."""
    folders = [str(make_subject_dir(tmp_path, f"s{k}", ident, color=(40 * k, 200 - 30 * k, 90)))
               for k, ident in enumerate(IDS)]
    seen: list[list[int]] = []

    def callback(trainer, batch, losses):
        for s in batch["instance"]:
            found = [IDS.index(w) for w in re.findall(r"\b(" + "|".join(IDS) + r")\b", s.prompt)]
            assert len(found) == s.num_subjects and len(set(found)) == len(found), s.prompt
            seen.append(found)

    train(TrainConfig(backbone="tiny-sd", subjects=folders, composition_prob=1.0, max_train_steps=steps,
                      resolution=64, rank=4, learning_rate=1e-3, report_to="none", progress=False, device="cpu",
                      output_dir=str(tmp_path / "run"), checkpointing_steps=1000, **kw), callback=callback)
    return seen


def test_five_subject_segmix_samples_pairs_from_all_five_over_time(tmp_path):
    seen = _compositions(tmp_path, steps=30)
    assert len(seen) == 60 and all(len(c) == 2 for c in seen)  # pairs, as the paper (B.9)
    assert Counter(c[0] for c in seen).keys() == set(range(5))  # every subject is drawn as the own subject
    pairs = Counter(frozenset(c) for c in seen)
    assert set(pairs) == {frozenset(p) for p in itertools.combinations(range(5), 2)}  # all 10 pairs occur


def test_more_subjects_per_sample_as_an_option(tmp_path):
    seen = _compositions(tmp_path, steps=10, max_composed_subjects=5)
    sizes = Counter(len(c) for c in seen)
    assert set(sizes) <= {2, 3, 4, 5} and len(sizes) >= 3  # 2..5 subjects per composition


def test_subject_orders_are_every_combination_and_order_uniformly():
    orders = subject_orders(5, 2, 40, seed=0)
    assert Counter(orders) == {p: 2 for p in itertools.permutations(range(5), 2)}  # 20 ordered pairs, twice each
    assert sorted(subject_orders(5, 5, 120, seed=3)) == sorted(itertools.permutations(range(5)))
    assert subject_orders(5, 3, 7, seed=1) == subject_orders(5, 3, 7, seed=1) != subject_orders(5, 3, 7, seed=2)
    assert study_template("{subjects} are in the jungle.", 3) == "[V1], [V2], [V3] are in the jungle."
    with pytest.raises(MudiError, match="cannot compose 6 of 5"):
        subject_orders(5, 6, 1, seed=0)


def test_the_success_rule():
    good = {"num_detections": 3, "dnc": {"dnc_ds": 0.8}, "failures": {"dnc_ds": []}}
    assert is_success(good, 3, "dnc_ds", 0.7)
    assert not is_success(good, 3, "dnc_ds", 0.85)  # below the threshold
    assert not is_success({**good, "num_detections": 2}, 3, "dnc_ds", 0.7)  # a subject missing
    assert not is_success({**good, "failures": {"dnc_ds": ["mixed"]}}, 3, "dnc_ds", 0.7)
    assert not is_success({**good, "failures": {"dnc_ds": ["duplicate"]}}, 3, "dnc_ds", 0.7)
    assert not is_success(good, 3, "dnc_dino", 0.7)  # a metric that was not computed


TINY = dict(backbone="tiny-sd", num_inference_steps=2, height=64, width=64, batch_size=4, use_priors=False,
            progress=False, device="cpu",
            train={"max_train_steps": 2, "resolution": 64, "rank": 4, "learning_rate": 1e-2, "report_to": "none",
                   "train_batch_size": 1, "device": "cpu"},
            evaluate={"detector": "tiny-owlv2", "embedders": ["tiny-dinov2"], "text_scorers": [], "threshold": 0.0,
                      "batch_size": 4})


def test_the_num_subjects_study_on_tiny_models(benchmark_dir, tmp_path, capsys):
    out = tmp_path / "study"
    config = BenchmarkConfig(benchmark_dir=str(benchmark_dir), output_dir=str(out),
                             study=StudySettings(kind="num_subjects", num_images=2), **TINY)
    tables = run_benchmark(config)
    assert tables["counts"] == {"train": 2, "generate": 8, "evaluate": 8, "skipped": 0}
    rows = tables["rows"]
    assert [(r["method"], r["num_subjects"]) for r in rows] == [(m, n) for m in ("mudi", "dreambooth")
                                                                for n in (2, 3, 4, 5)]
    assert all(r["num_images"] == 2 and 0.0 <= r["success_rate"] <= 1.0 for r in rows)
    assert tables["metric"] == "dnc_dino" and tables["min_dnc"] == 0.7
    res = out / "results"
    md = (res / "num_subjects.md").read_text()
    assert "| Method | N=2 | N=3 | N=4 | N=5 |" in md and "| MuDI (Ours) |" in md and "| DB |" in md
    with open(res / "num_subjects.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8 and all(0.0 <= float(r["success_rate"]) <= 1.0 for r in table)
    assert json.loads((res / "num_subjects.json").read_text())["num_subjects"] == [2, 3, 4, 5]
    assert Image.open(res / "num_subjects.png").size == (480, 300)
    phrases = ["olis harry potter toy", "hta blue drink can", "ult red monster plush", "amg white robot toy",
               "lun beige teddy bear"]
    for method, init in (("mudi", "mean_shifted"), ("dreambooth", "none")):
        for n in (2, 3, 4, 5):
            for meta_file in sorted((out / "study-num_subjects" / method / f"n{n}" / "meta").glob("*.json")):
                meta = json.loads(meta_file.read_text())
                named = [p for p in phrases if p in meta["prompt"]]
                assert meta["prompt"].startswith(f"{n} objects: ") and meta["prompt"].endswith(" are in the jungle.")
                assert len(named) == n == len(set(meta["subject_indices"])) and meta["init"] == init
                if init == "mean_shifted":  # the init composes the image's own subjects; γ 2 up to 3, then 3
                    assert meta["gamma"] == (2.0 if n <= 3 else 3.0) and len(meta["boxes_normalized"]) == n
            scores = json.loads((out / "study-num_subjects" / method / f"n{n}" / "scores.json").read_text())
            assert len(scores["images"]) == 2 and all("dnc_dino" in e["dnc"] for e in scores["images"])
    trained = sorted(p.name.split("-")[0] for p in (out / "count_ablation" / "train").iterdir())
    assert trained == ["none", "segmix"]  # one LoRA per method, the benchmark's own training cells

    # the same run from the CLI with a YAML file: everything finished, nothing is redone
    cfg_file = tmp_path / "study.yaml"
    cfg_file.write_text(yaml.safe_dump({"benchmark_dir": str(benchmark_dir), "output_dir": str(out), **TINY,
                                        "study": {"kind": "num_subjects", "num_images": 2}}))
    capsys.readouterr()
    assert cli_main(["benchmark", "--config", str(cfg_file)]) == 0
    printed = capsys.readouterr().out
    assert "trained 0, generated 0, evaluated 0 stage(s), skipped 18" in printed
    assert cli_main(["benchmark", "--config", str(cfg_file), "--study.num_subjects", "2", "7"]) == 2
    assert "count_ablation has only 5 subjects" in capsys.readouterr().err
