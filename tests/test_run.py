"""``mudi run``: one pipeline from a run file, skipped when done, resumed when partial, redone when asked.

A real ``mudi run`` process (forked from tests/zygote.py) is SIGKILLed in the middle of training, rerun, and must
end with the same LoRA, images and scores as an uninterrupted run; changing a setting redoes exactly the units
downstream of it; ``--from`` / ``--only`` redo parts; run-file paths are relative to the file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from mudi.cli import main
from mudi.config import load_config
from mudi.errors import MudiError
from mudi.pipeline import RunConfig, run_pipeline
from mudi.pipeline.report import SECTIONS, report_sections
from mudi.samples import SAMPLES_DIR
from mudi.visualize import loss_curve_svg
from tests.zygote_client import Zygote

RUN = {
    "subjects": [str(SAMPLES_DIR / "dog6"), str(SAMPLES_DIR / "dog2")],
    "backbone": "tiny-sd", "methods": ["mudi"], "prompts": ["[V1] and [V2] on a beach."], "num_images": 2,
    "device": "cpu", "segmix_preview": 2,
    "segment": {"backend": "grabcut"},  # the bundled masks are kept: fast
    "train": {"max_train_steps": 12, "rank": 4, "train_batch_size": 1, "learning_rate": 1e-3,
              "checkpointing_steps": 4, "report_to": "none", "progress": False, "composition_prob": 0.5},
    "generate": {"num_inference_steps": 3, "batch_size": 2},
    "evaluate": {"detector": "tiny-owlv2", "embedders": ["tiny-dinov2"], "text_scorers": ["tiny-clip"],
                 "threshold": 0.0},
}


def _write_run(folder: Path, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.in.yaml"
    path.write_text(yaml.safe_dump({**RUN, "output_dir": str(folder / "run"), **changes}))
    return path


def _results(run: Path) -> dict:
    lora = load_file(str(run / "train" / "segmix" / "pytorch_lora_weights.safetensors"))
    images = {p.relative_to(run).as_posix(): np.asarray(Image.open(p))
              for p in sorted((run / "generate").rglob("[0-9]*.png"))}  # the images, their inits and masks
    scores = json.loads((run / "evaluate" / "mudi" / "p00" / "summary.json").read_text())["means"]
    return {"lora": lora, "images": images, "scores": scores}


def _assert_same(a: dict, b: dict) -> None:
    assert a["lora"].keys() == b["lora"].keys()
    assert all(torch.equal(a["lora"][k], b["lora"][k]) for k in a["lora"])
    assert a["images"].keys() == b["images"].keys() and len(a["images"]) == 6
    assert all(np.array_equal(a["images"][k], b["images"][k]) for k in a["images"])
    assert a["scores"] == b["scores"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plain")
    assert main(["run", str(_write_run(folder))]) == 0
    return folder / "run"


def test_killed_mid_training_then_rerun_equals_an_uninterrupted_run(uninterrupted, tmp_path):
    cfg = _write_run(tmp_path)
    run = tmp_path / "run"
    zygote = Zygote()
    try:
        log = tmp_path / "log.txt"
        pid = zygote.start(["run", str(cfg)], log, slow_checkpoint=0.5)
        first = run / "train" / "segmix" / "checkpoint-4"
        deadline = time.time() + 300
        while not first.is_dir() and time.time() < deadline:
            time.sleep(0.02)
        assert first.is_dir(), log.read_text()[-3000:]
        os.kill(pid, signal.SIGKILL)  # in the middle of training: steps 5-8 or the next checkpoint's write
        assert zygote.wait() == -signal.SIGKILL
        assert not (run / "train" / "segmix" / "pytorch_lora_weights.safetensors").exists()
        assert json.loads((run / "train" / "segmix" / "stage.json").read_text())["status"] == "running"
        assert not (run / "generate").exists()
        zygote.start(["run", str(cfg)], log)
        assert zygote.wait() == 0, log.read_text()[-3000:]
    finally:
        zygote.close()
    text = log.read_text()
    assert "segment: done already, skipped" in text and "train segmix: resuming the unfinished run" in text
    history = [json.loads(x) for x in (run / "train" / "segmix" / "train_history.jsonl").read_text().splitlines()]
    assert [h["event"] for h in history] == ["start", "resume"] and history[1]["step"] >= 4
    _assert_same(_results(run), _results(uninterrupted))


def test_a_changed_setting_redoes_exactly_the_units_after_it(uninterrupted, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    before = _results(run)
    train_marker = (run / "train" / "segmix" / "stage.json").read_text()
    cfg = _write_run(tmp_path, generate={**RUN["generate"], "num_inference_steps": 2})
    assert main(["run", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "train segmix: done already, skipped" in out and "segment: done already, skipped" in out
    assert "generate mudi p00: redone from scratch (its settings changed)" in out
    assert "evaluate mudi p00: redone from scratch (its settings changed)" in out
    assert (run / "train" / "segmix" / "stage.json").read_text() == train_marker
    after = _results(run)
    assert all(torch.equal(before["lora"][k], after["lora"][k]) for k in before["lora"])
    made = [k for k in before["images"] if "/init/" not in k]
    assert len(made) == 2 and not any(np.array_equal(before["images"][k], after["images"][k]) for k in made)
    meta = json.loads(next((run / "generate" / "mudi" / "p00").glob("0000_*.json")).read_text())
    assert meta["num_inference_steps"] == 2

    # nothing changed: every unit skipped, the report rewritten
    assert main(["run", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "redone" not in out and "resuming" not in out and out.count("done already, skipped") == 5


def test_from_and_only_redo_parts(uninterrupted, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    cfg = _write_run(tmp_path)
    before = _results(run)
    assert main(["run", str(cfg), "--only", "generate"]) == 0
    out = capsys.readouterr().out
    assert "generate mudi p00: redone from scratch (--only generate)" in out and "evaluate mudi" not in out
    _assert_same(_results(run), before)  # same settings, same seeds: the same images again
    assert main(["run", str(cfg), "--from", "evaluate"]) == 0
    out = capsys.readouterr().out
    assert "evaluate mudi p00: redone from scratch (--from evaluate)" in out
    assert "generate mudi p00: done already, skipped" in out

    fresh = tmp_path / "fresh"
    with pytest.raises(MudiError, match="--only evaluate: the earlier stage segment"):
        run_pipeline(load_config(RunConfig, _write_run(fresh), ["only=evaluate"]), say=lambda _: None)


def test_report_of_a_run_has_every_section(uninterrupted):
    text = (uninterrupted / "report.html").read_text()
    assert report_sections(text) == list(SECTIONS)
    assert "kept_user_mask" in text and "class=\"loss-curve\"" in text and "class='pair'" in text
    assert "dnc_tiny-dinov2" in text or "dnc_" in text
    assert "backbone: tiny-sd" in text and "torch" in text
    assert "src=\"file:" not in text and "data:image/jpeg;base64," in text  # self-contained


def test_run_file_paths_are_relative_to_the_file_and_blocks_are_checked(tmp_path):
    (tmp_path / "subjects").mkdir()
    shutil.copytree(SAMPLES_DIR / "dog6", tmp_path / "subjects" / "dog6")
    path = tmp_path / "runs" / "r.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"subjects": ["../subjects/dog6"], "output_dir": "out",
                                    "generate": {"vae": "madebyollin/sdxl-vae-fp16-fix"}}))
    cfg = load_config(RunConfig, path)
    assert Path(cfg.subjects[0]) == tmp_path / "runs" / ".." / "subjects" / "dog6"
    assert Path(cfg.output_dir) == tmp_path / "runs" / "out"
    assert cfg.generate["vae"] == "madebyollin/sdxl-vae-fp16-fix"  # a hub id stays a hub id
    with pytest.raises(MudiError, match="train.output_dir is set by the run itself"):
        RunConfig(train={"output_dir": "x"})
    with pytest.raises(MudiError, match="max_train_step"):
        RunConfig(train={"max_train_step": 10})
    with pytest.raises(MudiError, match="needs a benchmark pair"):
        RunConfig(methods=["mudi", "mudi-no-desc"])


def test_loss_curve_svg_draws_the_losses():
    svg = loss_curve_svg([{"step": i, "loss": 1.0 / i} for i in range(1, 41)])
    assert svg.startswith("<svg") and svg.count("<polyline") == 2
    assert "1.0000 (max)" in svg and "0.0250 (min)" in svg
    assert "no loss" in loss_curve_svg([])


def test_train_launch_runs_training_in_its_own_process_with_the_same_result(uninterrupted, tmp_path, capsys):
    """``train_launch`` (e.g. ``accelerate launch --multi_gpu``) runs ``<launcher> -m mudi.cli train``; with a
    plain python as the launcher the LoRA is bit-identical to the in-process one."""
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    cfg = _write_run(tmp_path, train_launch=sys.executable)
    assert main(["run", str(cfg), "--from", "train"]) == 0
    assert "train segmix: redone from scratch (--from train)" in capsys.readouterr().out
    assert (run / "train" / "segmix" / "run_train_request.yaml").is_file()
    _assert_same(_results(run), _results(uninterrupted))
    bad = _write_run(tmp_path / "bad", train_launch="no-such-launcher --x")
    with pytest.raises(MudiError, match="no-such-launcher not found"):
        run_pipeline(load_config(RunConfig, bad), say=lambda _: None)


def test_the_toy_world_checker_as_a_scorer(tmp_path):
    """``scorers: [toyworld]`` judges every image with the toy world's checker (here a tiny random model's noise,
    so no success is expected) and the report shows the success table; D&C is not run."""
    from mudi.toyworld import SUBJECTS_DIR
    from mudi.toyworld.evaluate import read_result

    cfg = _write_run(tmp_path, subjects=[str(SUBJECTS_DIR / "red_yellow_square"), str(SUBJECTS_DIR / "blue_yellow_square")],
                     scorers=["toyworld"], num_images=2, segmix_preview=1,
                     train={**RUN["train"], "max_train_steps": 2, "resolution": 32},
                     generate={**RUN["generate"], "height": 32, "width": 32})
    assert main(["run", str(cfg)]) == 0
    run = tmp_path / "run"
    result = read_result(run / "evaluate" / "mudi" / "p00")
    assert result["n"] == 2 and sum(result["verdicts"].values()) == 2 and set(result["images"]) == {
        "0000_seed0.png", "0001_seed1.png"}
    assert not (run / "evaluate" / "mudi" / "p00" / "summary.json").exists()  # no D&C
    text = (run / "report.html").read_text()
    assert "class='toy'" in text and "95% interval" in text
    with pytest.raises(MudiError, match="did you mean 'toyworld'"):
        RunConfig(scorers=["toyworl"])


def test_a_launcher_that_exits_0_without_a_lora_does_not_mark_training_done(uninterrupted, tmp_path):
    """Issue 21, item 3: a unit is done only when its outputs exist and verify. A ``train_launch`` that exits 0
    without writing the LoRA is a one-line error at training, its marker stays ``running``, and the next run with
    a working launcher resumes training instead of failing at generation."""
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    silent = _write_run(tmp_path, train_launch=f"{sys.executable} -c pass")  # `python -c pass -m mudi.cli ...`: 0
    with pytest.raises(MudiError, match="train segmix: the work finished but pytorch_lora_weights.safetensors is "
                                        "missing"):
        run_pipeline(load_config(RunConfig, silent, ["from_stage=train"]), say=lambda _: None)
    assert json.loads((run / "train" / "segmix" / "stage.json").read_text())["status"] == "running"
    said: list[str] = []
    run_pipeline(load_config(RunConfig, _write_run(tmp_path)), say=said.append)
    assert "  train segmix: resuming the unfinished run" in said
    _assert_same(_results(run), _results(uninterrupted))


def test_editing_an_input_file_redoes_the_units_that_read_it(uninterrupted, tmp_path, capsys):
    """Issue 21, item 5: fingerprints cover the content of every input file. Editing a layout JSON's boxes (same
    file name, same size) redoes generation; editing a copied subject's caption in subject.yaml redoes every unit."""
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    layout = tmp_path / "layout.json"
    layout.write_text(json.dumps({"boxes": [[0.05, 0.30, 0.50, 0.95], [0.50, 0.20, 0.95, 0.95]]}))
    cfg = _write_run(tmp_path, generate={**RUN["generate"], "layout": str(layout)})
    assert main(["run", str(cfg)]) == 0
    capsys.readouterr()
    first = _results(run)["images"]
    layout.write_text(json.dumps({"boxes": [[0.05, 0.10, 0.50, 0.75], [0.50, 0.40, 0.95, 0.95]]}))
    assert main(["run", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "generate mudi p00: redone from scratch (its settings changed)" in out
    assert "train segmix: done already, skipped" in out
    moved = _results(run)["images"]
    assert any(not np.array_equal(first[k], moved[k]) for k in first if "/init/" in k)

    subjects = tmp_path / "subjects"
    shutil.copytree(SAMPLES_DIR / "dog6", subjects / "dog6")
    shutil.copytree(SAMPLES_DIR / "dog2", subjects / "dog2")
    cfg = _write_run(tmp_path, subjects=[str(subjects / "dog6"), str(subjects / "dog2")])
    assert main(["run", str(cfg)]) == 0
    capsys.readouterr()
    meta = yaml.safe_load((subjects / "dog6" / "subject.yaml").read_text())
    first_photo = sorted(p.name for p in (subjects / "dog6").glob("*.jpg"))[0]
    meta["captions"] = {**(meta.get("captions") or {}), first_photo: "a photo of olis dog on grass"}
    (subjects / "dog6" / "subject.yaml").write_text(yaml.safe_dump(meta))
    assert main(["run", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "segment: redone from scratch (its settings changed)" in out
    assert "train segmix: redone from scratch (its settings changed)" in out
