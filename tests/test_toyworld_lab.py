"""The toy lab (benchmarks/toyworld_lab.py, issue 24 item 3): the plan covers every method × set and the
ablations, Wilson intervals on known counts, and ``--quick`` end to end — trained, drawn, judged, reported, and
skipped when run again."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import toyworld_lab  # noqa: E402
import toyworld_lab_plan as plan_mod  # noqa: E402
import toyworld_lab_report as report  # noqa: E402
from mudi.core.methods import METHODS  # noqa: E402
from mudi.toyworld.sets import PAIRS, SUBJECT_SETS  # noqa: E402


def test_the_plan_enumerates_every_method_on_every_set_and_the_ablations(capsys):
    plan = plan_mod.build_plan([0, 1, 2], 64, 800)
    entries = {(c.arm.group, c.arm.method, c.set, c.seed) for c in plan.cells}
    for m in METHODS:
        for s in SUBJECT_SETS:
            assert all(("methods", m, s, seed) in entries for seed in (0, 1, 2)), (m, s)
    ablations = {c.arm.group for c in plan.cells} - {"methods"}
    assert ablations == set(plan_mod.GROUPS) - {"methods"}
    for c in plan.cells:  # the ablations run on the two most similar pairs (number of subjects: the 4-subject set)
        if c.arm.group == "num_subjects":
            assert c.set == "four" and c.sample_settings()["num_subjects"] == c.arm.num_subjects
        elif c.arm.group != "methods":
            assert c.set in PAIRS[:2]
    gammas = {c.sample_settings()["gamma"] for c in plan.cells if c.arm.group == "gamma"}
    assert gammas == {0.5, 1.0, 2.0, 3.0}
    # shared work: MuDI and Seg-Mix alone train one LoRA; the init ablation's "on" arm is MuDI's cell
    by = {(c.arm.group, c.arm.name, c.set, c.seed): c for c in plan.cells}
    mudi, segmix = by[("methods", "mudi", "shared_colour", 0)], by[("methods", "mudi-no-init", "shared_colour", 0)]
    assert mudi.train_key == segmix.train_key and mudi.key != segmix.key
    assert by[("init", "init on (MuDI)", "shared_colour", 0)].key == mudi.key
    assert by[("soft_alpha", "soft_alpha 1", "shared_colour", 0)].key == mudi.key  # mudi's default soft_alpha
    assert by[("loss", "DCO", "shared_colour", 0)].train_key != mudi.train_key
    assert len(plan.unique()) < len(plan.cells) and len(plan.trainings()) < len(plan.unique())
    # first seed before any second; the methods on the pairs first
    seeds = [c.seed for c in plan.unique()]
    assert seeds == sorted(seeds)
    assert plan.unique()[0].arm.group == "methods" and plan.unique()[0].set in PAIRS
    hours = plan.seconds() / 3600
    assert 2 < hours < 48
    assert toyworld_lab.main(["--plan"]) == 0
    out = capsys.readouterr().out
    assert "CPU hours" in out and "num_subjects" in out and f"{hours:.1f}" in out


def test_wilson_intervals_on_known_counts():
    s = report.pooled({0: ["correct"] * 5 + ["missing"] * 5})
    assert s["successes"] == 5 and s["n"] == 10
    assert s["interval95"] == pytest.approx([0.2366, 0.7634], abs=1e-4)
    s = report.pooled({0: ["blend"] * 10, 1: ["correct"] * 10})
    assert s["success_rate"] == 0.5 and s["per_seed"] == {"0": 0.0, "1": 1.0}
    assert s["interval95"] == pytest.approx([0.2993, 0.7007], abs=1e-4)
    assert s["verdicts"] == {"blend": 10, "correct": 10}
    zero = report.pooled({0: ["missing"] * 10})
    assert zero["interval95"][0] == 0.0 and zero["interval95"][1] == pytest.approx(0.2775, abs=1e-4)
    assert "[0.00, 0.28]" in report.fmt(zero) and report.failures(zero) == "missing 10"


def test_quick_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "lab"
    assert toyworld_lab.main(["--quick", "--out", str(out)]) == 0
    first = capsys.readouterr().out
    assert "trained 2, sampled 2 cell(s), skipped 0" in first
    results = json.loads((out / "results.json").read_text())
    assert results["cells_done"] == results["cells_planned"] == 2
    rows = results["tables"]["methods"]
    for method in ("dreambooth", "mudi"):
        s = rows[method]["shared_colour"]
        assert s["n"] == 4 and sum(s["verdicts"].values()) == 4
        assert 0.0 <= s["interval95"][0] <= s["success_rate"] <= s["interval95"][1] <= 1.0
    cells = sorted((out / "cells").iterdir())
    assert len(cells) == 2
    for cell in cells:
        v = json.loads((cell / "verdicts.json").read_text())
        assert len(v["verdicts"]) == 4 and v["image_seeds"] == [0, 1, 2, 3]
        assert (cell / "sheet.png").is_file() and (cell / "images.png").is_file()
    mudi = json.loads(next(c for c in cells if "-mean-" in c.name).joinpath("verdicts.json").read_text())
    assert mudi["init"] == "mean_shifted" and mudi["gamma"] == 1.0  # MuDI: the init at the default γ
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if p.name in ("cell.json", "verdicts.json")}
    # a second run skips every finished cell and training
    assert toyworld_lab.main(["--quick", "--out", str(out)]) == 0
    assert "trained 0, sampled 0 cell(s), skipped 2" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # --plan counts what the folder holds, writing nothing there or anywhere
    assert toyworld_lab.main(["--quick", "--out", str(out), "--plan"]) == 0
    assert f"in {out}: 2 of 2 cells finished; 0 left, about 0.0 CPU hours" in capsys.readouterr().out
    model = tmp_path / "model"  # the same weights with another model card: the same model, nothing to redo
    shutil.copytree(toyworld_lab.MODEL_DIR, model)
    (model / "MODEL_CARD.md").write_text("edited")
    assert toyworld_lab.main(["--quick", "--out", str(out), "--model", str(model), "--plan"]) == 0
    assert "2 of 2 cells finished" in capsys.readouterr().out
    (model / "unet" / "config.json").write_text((model / "unet" / "config.json").read_text() + " ")
    assert toyworld_lab.main(["--quick", "--out", str(out), "--model", str(model), "--plan"]) == 0
    assert "0 of 2 cells finished" in capsys.readouterr().out  # any other file is the model
    # ... and its report does not pass the earlier model's cells off as its own
    assert toyworld_lab.main(["--quick", "--out", str(out), "--model", str(model), "--report"]) == 0
    assert "0 of 2 cells finished" in (out / "results.md").read_text()
    capsys.readouterr()
    empty = tmp_path / "empty"
    assert toyworld_lab.main(["--quick", "--out", str(empty), "--plan", "--methods", "mudi-no-desc"]) == 0
    assert "0 of 1 cells finished; 1 left" in capsys.readouterr().out and not empty.exists()
    # --report writes docs-ready Markdown with the contact sheets beside it
    docs = tmp_path / "docs" / "lab.md"
    assert toyworld_lab.main(["--quick", "--out", str(out), "--report", str(docs)]) == 0
    text = docs.read_text()
    assert "| DB (`dreambooth`) |" in text and "[0.00," in text
    assert "Model: `src/mudi/toyworld/model` (weights digest " in text
    assert "![contact sheet](lab.png)" in text and "shared_colour · DB (`dreambooth`)" in text
    from PIL import Image

    assert Image.open(tmp_path / "docs" / "lab.png").size == (2 * 8 * 32, 2 * 2 * (32 + 2))  # 2 rows of 4 images


def test_quick_covers_textual_inversion_and_region_control(tmp_path, capsys):
    out = tmp_path / "lab"
    assert toyworld_lab.main(["--quick", "--out", str(out), "--methods", "ti", "db-region"]) == 0
    assert "trained 2, sampled 2 cell(s)" in capsys.readouterr().out
    loras = {p.name for p in (out / "lora").iterdir() if p.is_dir()}
    ti = next(out / "lora" / n for n in loras if (out / "lora" / n / "modifier_token_olis.safetensors").is_file())
    assert not (ti / "pytorch_lora_weights.safetensors").exists()  # TI: token embeddings only
    rows = json.loads((out / "results.json").read_text())["tables"]["methods"]
    assert rows["ti"]["shared_colour"]["n"] == rows["db-region"]["shared_colour"]["n"] == 4
    region = [json.loads(p.read_text()) for p in out.glob("cells/*/verdicts.json")]
    assert {v["method"]: v["region_control"] for v in region} == {"ti": False, "db-region": True}


def test_a_stopped_training_stops_the_lab_not_just_its_cell(tmp_path, monkeypatch, capsys):
    """Ctrl-C or SIGTERM inside a training (the trainer saves a checkpoint and raises TrainingStopped) ends the
    run with the signal's exit code; it is not one failed cell after which the next cell starts."""
    from mudi.training.signals import TrainingStopped

    tried = []

    def stopped(lab, cell):
        tried.append(cell.key)
        raise TrainingStopped("stopped at step 3 of 10; checkpoint saved", 15)

    monkeypatch.setattr(toyworld_lab, "run_cell", stopped)
    assert toyworld_lab.main(["--quick", "--out", str(tmp_path / "lab")]) == 143
    assert len(tried) == 1 and "rerun the same command" in capsys.readouterr().out
