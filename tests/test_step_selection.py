"""Choosing the training step by score (issue 25, item 5): every snapshot is rendered on validation prompts and seeds
disjoint from the evaluation seeds, a registered scorer judges it, the best is kept, resumably, and `mudi run`'s
report shows the score-vs-step curve."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from PIL import Image

from mudi.adapters import registry
from mudi.cli import main
from mudi.errors import MudiError
from mudi.pipeline import RunConfig
from mudi.samples import SAMPLES_DIR
from mudi.scoring.step_selection import (
    CURVE_FILE,
    SELECTION_FILE,
    StepSelectionConfig,
    check_disjoint_seeds,
    read_selection,
    select_step,
)
from tests.test_benchmark import PAIR, TINY, _config, bench  # noqa: F401 (bench: the fixture)

PREFERRED = {4: 0.2, 8: 0.9, 12: 0.5}  # the scripted scorer likes step 8 best
SEEN: list[tuple[int, list[str]]] = []
NEGATIVES: set = set()  # the negative prompts the snapshots were rendered with


def scripted_scorer(st, cfg, images: Path, folder: Path, label: str) -> float:
    step = int(re.search(r"step-(\d+)", str(images)).group(1))
    SEEN.append((step, sorted(p.name for p in images.glob("[0-9]*.png"))))
    NEGATIVES.update(json.loads(p.read_text()).get("negative_prompt") for p in images.glob("[0-9]*.json"))
    return PREFERRED[step]


@pytest.fixture
def test_scorer():
    registry.register("scorer", "test-step", scripted_scorer, replace=True)
    SEEN.clear()
    NEGATIVES.clear()
    yield "test-step"
    registry.unregister("scorer", "test-step")


def _fake_lora(folder: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(1)}, str(folder / "pytorch_lora_weights.safetensors"))
    return folder


def test_select_step_keeps_the_snapshot_the_scorer_prefers_and_resumes(tmp_path, test_scorer):
    train = _fake_lora(tmp_path / "train")
    for step in (4, 8):
        _fake_lora(train / f"snapshot-{step}")
    rendered = []

    def render(lora, prompt, seeds, folder):
        rendered.append((lora.name, tuple(seeds)))
        folder.mkdir(parents=True, exist_ok=True)
        for s in seeds:
            Image.new("RGB", (8, 8)).save(folder / f"{s:04d}_seed{s}.png")

    cfg = StepSelectionConfig(use=True, prompts=["[V1] and [V2]."], num_seeds=2, seed=50, scorer=test_scorer)
    out = tmp_path / "sel"
    rec = select_step(train, out, cfg, 12, evaluation_seeds=[0, 1], render=render,
                      score=lambda images, folder, label: scripted_scorer(None, None, images, folder, label),
                      say=lambda _: None)
    assert rec["steps"] == [4, 8, 12] and rec["scores"] == [0.2, 0.9, 0.5]
    assert rec["best_step"] == 8 and Path(rec["best_lora"]) == train / "snapshot-8"
    assert all(seeds == (50, 51) for _, seeds in rendered) and len(rendered) == 3
    assert read_selection(out)["best_step"] == 8 and (out / CURVE_FILE).is_file()
    rendered.clear()
    select_step(train, out, cfg, 12, [0, 1], render, lambda i, f, label: PREFERRED[int(f.parent.parent.name[5:])],
                say=lambda _: None)
    assert rendered == []  # every snapshot scored already: nothing rendered again


def test_validation_seeds_must_be_disjoint_from_the_evaluation_seeds(tmp_path):
    check_disjoint_seeds([10, 11], [0, 1, 2])
    with pytest.raises(MudiError, match="meet the evaluation seeds at \\[1\\]"):
        check_disjoint_seeds([1, 2], [0, 1])
    with pytest.raises(MudiError, match="step_selection seeds"):
        RunConfig(num_images=4, seed=0, step_selection=StepSelectionConfig(use=True, seed=3))
    with pytest.raises(MudiError, match="did you mean"):
        StepSelectionConfig(scorer="dnk")


def test_mudi_run_generates_with_the_chosen_snapshot_and_reports_the_curve(tmp_path, test_scorer):
    run_file = tmp_path / "run.in.yaml"
    run_file.write_text(yaml.safe_dump({
        "subjects": [str(SAMPLES_DIR / "dog6"), str(SAMPLES_DIR / "dog2")], "output_dir": str(tmp_path / "run"),
        "backbone": "tiny-sd", "methods": ["mudi"], "prompts": ["[V1] and [V2] on a beach."], "num_images": 2,
        "device": "cpu", "segmix_preview": 1, "segment": {"backend": "grabcut"},
        "train": {"max_train_steps": 12, "save_steps": 4, "rank": 4, "train_batch_size": 1, "resolution": 32,
                  "checkpointing_steps": 12, "report_to": "none", "progress": False},
        "generate": {"num_inference_steps": 2, "batch_size": 2, "height": 32, "width": 32},
        "evaluate": {"detector": "tiny-owlv2", "embedders": ["tiny-dinov2"], "text_scorers": [], "threshold": 0.0},
        "step_selection": {"use": True, "scorer": test_scorer, "prompts": ["[V1] and [V2] in snow."],
                           "num_seeds": 1, "seed": 1000}}))
    assert main(["run", str(run_file)]) == 0
    run = tmp_path / "run"
    sel = read_selection(run / "train" / "segmix" / "step-selection")
    assert sel["steps"] == [4, 8, 12] and sel["best_step"] == 8
    # the validation images used seed 1000 only, never the evaluation seeds 0 and 1
    assert sorted(s for s, _ in SEEN) == [4, 8, 12] and all(names == ["0000_seed1000.png"] for _, names in SEEN)
    evaluation = {p.name for p in (run / "generate" / "mudi" / "p00").glob("[0-9]*.png")}
    assert evaluation == {"0000_seed0.png", "0001_seed1.png"}
    meta = json.loads(next((run / "generate" / "mudi" / "p00").glob("*.json")).read_text())
    assert "snapshot-8" in json.dumps(meta)  # generation used the chosen snapshot
    assert NEGATIVES == {meta["negative_prompt"]} and meta["negative_prompt"]  # rendered as MuDI's images are
    text = (run / "report.html").read_text()
    assert "class='step-selection'" in text and "<b>step 8</b>" in text
    assert (run / "train" / "segmix" / "step-selection" / CURVE_FILE).is_file()
    assert json.loads((run / "train" / "segmix" / "step-selection" / SELECTION_FILE).read_text())["status"] == "done"


def test_the_benchmark_chooses_the_step_per_cell_and_shows_the_curve(bench, tmp_path, test_scorer):  # noqa: F811
    from mudi.benchmark.runner import run_benchmark

    train = {**TINY["train"], "max_train_steps": 12, "save_steps": 4, "checkpointing_steps": 12, "resolution": 32}
    cfg = _config(bench, tmp_path / "b", methods=["mudi"], num_seeds=1, height=32, width=32, train=train,
                  evaluate={**TINY["evaluate"], "embedders": ["tiny-dinov2"]},
                  step_selection=StepSelectionConfig(use=True, scorer=test_scorer, prompts=["[V1] and [V2]."],
                                                     num_seeds=1, seed=77))
    tables = run_benchmark(cfg)
    assert tables["step_selection"][f"{PAIR}/mudi"]["best_step"] == 8
    assert all(names == ["0077_seed77.png"] for _, names in SEEN)  # validation seed only, never seed 0
    cell = tmp_path / "b" / PAIR / "mudi"
    meta = json.loads(next((cell / "meta").glob("*.json")).read_text())
    assert meta["lora"].endswith("snapshot-8")  # the cell's images come from the chosen snapshot
    md = (tmp_path / "b" / "results" / "per_pair.md").read_text()
    assert "## Step selection" in md and "**0.900**" in md and (cell / "step-selection" / CURVE_FILE).is_file()
    with pytest.raises(MudiError, match="meet the evaluation seeds"):
        _config(bench, tmp_path / "c", num_seeds=10, step_selection=StepSelectionConfig(use=True, seed=5))


def test_dnc_scores_the_snapshots_in_the_benchmark(bench, tmp_path):  # noqa: F811
    """The registered D&C scorer returns the first embedder's mean D&C score, with the benchmark's models."""
    from mudi.benchmark.runner import run_benchmark

    train = {**TINY["train"], "max_train_steps": 4, "save_steps": 2, "checkpointing_steps": 4, "resolution": 32}
    cfg = _config(bench, tmp_path / "b", methods=["dreambooth"], num_seeds=1, height=32, width=32, train=train,
                  evaluate={**TINY["evaluate"], "embedders": ["tiny-dinov2"], "threshold": 0.0},
                  step_selection=StepSelectionConfig(use=True, scorer="dnc", prompts=["[V1] and [V2]."],
                                                     num_seeds=1, seed=77))
    sel = run_benchmark(cfg)["step_selection"][f"{PAIR}/dreambooth"]
    assert sel["steps"] == [2, 4] and all(isinstance(v, float) for v in sel["scores"])
    summary = json.loads((tmp_path / "b" / PAIR / "dreambooth" / "step-selection" / "step-2" / "eval" / "p00"
                          / "summary.json").read_text())
    assert sel["scores"][0] == pytest.approx(summary["means"]["dnc_dino"])


def test_mudi_run_selects_with_the_toy_checker(tmp_path):
    """``step_selection.scorer: toyworld``: the toy world's checker scores each snapshot (its success rate)."""
    from mudi.toyworld import SUBJECTS_DIR

    run_file = tmp_path / "run.in.yaml"
    run_file.write_text(yaml.safe_dump({
        "subjects": [str(SUBJECTS_DIR / "red_yellow_square"), str(SUBJECTS_DIR / "blue_yellow_square")],
        "output_dir": str(tmp_path / "run"), "backbone": "tiny-sd", "methods": ["mudi"], "scorers": ["toyworld"],
        "prompts": ["[V1] and [V2]."], "num_images": 1, "device": "cpu", "segmix_preview": 1,
        "segment": {"backend": "grabcut"},
        "train": {"max_train_steps": 2, "save_steps": 1, "rank": 4, "train_batch_size": 1, "resolution": 32,
                  "report_to": "none", "progress": False},
        "generate": {"num_inference_steps": 2, "height": 32, "width": 32},
        "step_selection": {"use": True, "scorer": "toyworld", "prompts": ["[V1] and [V2]."], "num_seeds": 1}}))
    assert main(["run", str(run_file)]) == 0
    sel = read_selection(tmp_path / "run" / "train" / "segmix" / "step-selection")
    assert sel["steps"] == [1, 2] and all(0.0 <= v <= 1.0 for v in sel["scores"]) and sel["scorer"] == "toyworld"


def test_snapshots_are_rendered_with_the_methods_generation_settings():
    """Step selection renders a snapshot as the method's own images: no negative prompt for DreamBooth (Appendix
    A.1) unless the run sets one, the run's for MuDI, region control for DB+Region."""
    c = RunConfig(methods=["mudi", "dreambooth", "db-region"])
    assert c.method_generation("dreambooth") == {"negative_prompt": "", "init": "none"}
    assert c.method_generation("mudi") == {"init": "auto"}
    assert c.method_generation("db-region") == {"negative_prompt": "", "region_control": True, "init": "none"}
    own = RunConfig(methods=["dreambooth"], generate={"negative_prompt": "blurry"})
    assert own.method_generation("dreambooth") == {"init": "none"}
