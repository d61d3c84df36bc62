"""The web UI's plain-Python parts, without a browser: the workspace, subjects from uploads and the mask
review, drawn layouts, the training form, the job manager (a real tiny `mudi train` subprocess started,
watched, stopped and resumed), generation results, and `mudi ui` without gradio."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mudi.data.layouts import load_layout
from mudi.data.subjects import create_subject_folder, find_subjects
from mudi.errors import MudiError
from mudi.samples import SAMPLES_DIR
from mudi.ui import jobs, layouts, state, training
from mudi.ui import subjects as ui_subjects
from mudi.ui.config import UiConfig
from mudi.ui.generation import generated_rows, lora_choices, lora_info, score_table
from mudi.ui.state import Workspace
from tests.helpers import make_subject_dir

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture()
def ws(tmp_path) -> Workspace:
    return Workspace.open(tmp_path / "ws")


# ------------------------------------------------------------------------------------------------ workspace
def test_the_workspace_makes_its_folders_and_names(ws):
    assert all(p.is_dir() for p in (ws.subjects_dir, ws.runs_dir, ws.generations_dir, ws.layouts_dir))
    assert state.slugify(" Olis & Hta! ") == "olis-hta" and state.slugify("!!", "run") == "run"
    (ws.runs_dir / "a").mkdir()
    (ws.runs_dir / "a-2").mkdir()
    assert state.unique_name(ws.runs_dir, "a") == "a-3" and state.unique_name(ws.runs_dir, "b") == "b"
    for bad in ("../x", ".hidden", "", "a/b"):
        with pytest.raises(MudiError):
            ws.run_dir(bad)
    (ws.root / "file").write_text("x")
    with pytest.raises(MudiError, match="file"):
        Workspace.open(ws.root / "file")


def test_mask_review_is_recorded_per_photo(tmp_path):
    root = make_subject_dir(tmp_path, "toy", "zwx")
    state.set_review(root, "00.png", "accepted")
    state.set_review(root, "01.png", "rejected")
    state.set_review(root, "01.png", None)
    assert state.read_review(root) == {"00.png": "accepted"}
    with pytest.raises(MudiError):
        state.set_review(root, "00.png", "maybe")


# ------------------------------------------------------------------------------------------------ subjects
def test_a_subject_folder_from_uploaded_photos(tmp_path, ws):
    photos = sorted((SAMPLES_DIR / "dog6").glob("*.jpg"))
    s = create_subject_folder(tmp_path / "olis", photos, "olis", "dog", "corgi")
    assert (s.name, s.phrase, len(s.images)) == ("olis", "olis corgi", 4)
    assert (tmp_path / "olis" / "00.jpg").read_bytes() == photos[0].read_bytes()
    assert yaml.safe_load((tmp_path / "olis" / "subject.yaml").read_text())["descriptive_class"] == "corgi"
    with pytest.raises(MudiError, match="already holds"):
        create_subject_folder(tmp_path / "olis", photos, "olis", "dog")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(MudiError, match="broken.jpg"):
        create_subject_folder(tmp_path / "two", [photos[0], bad], "two", "dog")
    assert not (tmp_path / "two").exists()  # nothing written for a bad upload
    with pytest.raises(MudiError, match="one rare word"):
        create_subject_folder(tmp_path / "three", photos, "two words", "dog")
    # in the workspace: named after identifier and class; an identifier is used once
    made = ui_subjects.create_subject(ws, photos, "olis", "dog", "corgi")
    assert Path(made.root).name == "olis-corgi"
    with pytest.raises(MudiError, match="taken"):
        ui_subjects.create_subject(ws, photos, "olis", "cat")
    assert {p.name for p in ui_subjects.add_sample_subjects(ws)} == {"dog6", "dog2", "cat2"}
    assert ui_subjects.add_sample_subjects(ws) == []


def test_review_accept_reject_redraw_and_remove(tmp_path):
    root = make_subject_dir(tmp_path, "toy", "zwx", n=3, size=(96, 80))
    rows = ui_subjects.photo_rows([root])
    assert [r.image for r in rows] == ["00.png", "01.png", "02.png"] and all(r.mask_path for r in rows)
    assert ui_subjects.mask_preview(rows[0]).size == (96, 80)
    ui_subjects.accept_mask(rows[0])
    ui_subjects.reject_mask(rows[1])
    rows = ui_subjects.photo_rows([root])
    assert rows[1].mask_path is None and not (root / "masks" / "01.png").exists()
    assert [r.verdict for r in rows] == ["accepted", "rejected", None]
    with pytest.raises(MudiError, match="no mask"):
        ui_subjects.accept_mask(rows[1])
    # redraw: two clicks on the (unscaled) view, GrabCut inside the box writes a new mask
    view, scale = ui_subjects.editor_view(rows[1], [(10, 5), (85, 75)])
    assert scale == 1.0 and view.size == (96, 80)
    box = ui_subjects.resegment_in_view(rows[1], [(85, 75), (10, 5)], "grabcut", "cpu")
    assert box == (10, 5, 85, 75)
    mask = np.asarray(Image.open(root / "masks" / "01.png")) > 127
    assert mask.any() and not mask[:, :10].any()  # nothing outside the box
    assert ui_subjects.photo_rows([root])[1].verdict is None  # a new mask is unreviewed
    moved = ui_subjects.remove_photo(ui_subjects.photo_rows([root])[2])
    assert moved.is_file() and len(find_subjects(root)[0].images) == 2
    with pytest.raises(MudiError, match="two opposite corners"):
        ui_subjects.box_from_corners([(1, 1)], 1.0, (96, 80))


# ------------------------------------------------------------------------------------------------ layouts
def test_boxes_drawn_on_the_canvas_become_a_layout_file(tmp_path):
    side = layouts.CANVAS_SIDE
    assert layouts.box_from_clicks((side, side), (0, side / 2)) == (0.0, 0.5, 1.0, 1.0)  # any two corners
    assert layouts.box_from_clicks((-20, 10), (side * 0.5, side * 2)) == (0.0, round(10 / side, 4), 0.5, 1.0)
    boxes = [layouts.box_from_clicks((20, 120), (190, 370)), layouts.box_from_clicks((200, 60), (370, 370))]
    path = layouts.write_layout(tmp_path / "l.json", boxes, ["olis", "ult"])
    assert json.loads(path.read_text()) == {"olis": list(boxes[0]), "ult": list(boxes[1])}
    # `mudi generate --layout` reads it back, by identifier, whatever the subject order
    assert load_layout(path, [["ult"], ["olis"]]) == [boxes[1], boxes[0]]
    with pytest.raises(MudiError, match="ult has none"):
        layouts.write_layout(tmp_path / "m.json", [boxes[0], None], ["olis", "ult"])
    with pytest.raises(MudiError, match="at least"):
        layouts.write_layout(tmp_path / "m.json", [boxes[0], layouts.box_from_clicks((5, 5), (8, 8))], ["olis", "ult"])
    assert layouts.draw_layout(boxes, ["V1 olis", "V2 ult"], pending_xy=(5, 5)).size == (side, side)


# ------------------------------------------------------------------------------------------------ training form
def test_the_training_form_is_checked_like_the_cli(tmp_path, ws):
    a, b = make_subject_dir(tmp_path, "a", "aaa"), make_subject_dir(tmp_path, "b", "bbb", with_masks=False)
    form = {k: v for k, v in training.form_defaults("tiny-sd").items()}
    req = training.build_request([a, make_subject_dir(tmp_path, "c", "ccc")], "tiny-sd", form,
                                 "segmix.max_margin_frac=0.2\nseed=3", "cpu")
    assert req["max_train_steps"] == 30 and req["seed"] == 3 and req["segmix"]["max_margin_frac"] == 0.2
    assert req["validation_prompts"] == [training.VALIDATION_PROMPT] and req["report_to"] == "none"
    with pytest.raises(MudiError, match="mask"):
        training.build_request([a, b], "tiny-sd", form)
    with pytest.raises(MudiError, match="learning_rat"):  # the CLI's close-match error
        training.build_request([a, make_subject_dir(tmp_path, "d", "ddd")], "tiny-sd", form, "learning_rat=1")
    with pytest.raises(MudiError, match="at least two"):
        training.build_request([a], "tiny-sd", form)
    assert training.new_run_dir(ws, "", [a, b]).name == "a-b"
    assert training.form_defaults("sdxl")["max_train_steps"] == 1200


# ------------------------------------------------------------------------------------------------ jobs
def test_the_worker_runs_tasks_in_order_and_reports_errors():
    worker = jobs.Worker()
    seen = []
    ok = worker.submit("one", lambda: (time.sleep(0.05), seen.append(1), 42)[-1])
    bad = worker.submit("two", lambda: (_ for _ in ()).throw(MudiError("a fixable problem")))
    bug = worker.submit("three", lambda: 1 / 0)
    assert bug.wait(10) and ok.done and bad.done
    assert (ok.state, ok.result, seen) == ("done", 42, [1])
    assert (bad.state, bad.error) == ("failed", "a fixable problem")
    assert bug.state == "failed" and bug.error.startswith("ZeroDivisionError")


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_training_subprocess_is_started_watched_stopped_and_resumed(tmp_path):
    folder = tmp_path / "runs" / "tiny"
    request = {"backbone": "tiny-sd", "subjects": [str(SAMPLES_DIR / "dog6"), str(SAMPLES_DIR / "cat2")],
               "max_train_steps": 2000, "rank": 4, "resolution": 64, "learning_rate": 1e-3,
               "checkpointing_steps": 1000, "report_to": "none", "progress": False, "device": "cpu"}
    runs = jobs.TrainingRuns(env=ENV)
    runs.start(folder, request)
    with pytest.raises(MudiError, match="already running"):
        runs.start(folder, request)
    st = _wait(lambda: (s := runs.status(folder)).step >= 2 and s, 120, "the first steps")
    assert st.state == "running" and st.max_steps == 2000 and st.loss is not None and len(st.metrics) >= 2
    # a UI restarted meanwhile (no process handle) still sees it running, through the run's lock
    other = jobs.TrainingRuns(env=ENV).status(folder)
    assert other.state == "running" and other.pid == st.pid
    runs.stop(folder)
    st = _wait(lambda: (s := runs.status(folder)).state != "running" and s, 60, "the stop")
    assert (st.state, st.exit_code) == ("stopped", 130) and st.resumable, jobs.log_tail(folder)
    stopped_at = st.step
    assert (folder / f"checkpoint-{stopped_at}").is_dir()
    assert jobs.TrainingRuns().status(folder).state == "stopped"  # from the folder alone
    # resume exactly as the CLI would, with a shorter plan: it finishes
    runs.resume(folder, stopped_at + 2)
    st = _wait(lambda: (s := runs.status(folder)).state not in ("running", "starting") and s, 120, "the resume")
    assert (st.state, st.step, st.max_steps) == ("finished", stopped_at + 2, stopped_at + 2), jobs.log_tail(folder)
    assert jobs.TrainingRuns().status(folder).state == "finished"
    log = (folder / jobs.TRAIN_LOG).read_text()
    assert "--resume_from_checkpoint latest" in log and f"resumed from {folder / f'checkpoint-{stopped_at}'}" in log
    assert "resume_from_checkpoint latest" in jobs.resume_command(folder)


def test_run_status_from_the_folder_alone(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    assert jobs.run_status(folder).state == "new"
    (folder / "train.log").write_text("$ mudi train ...\nmudi train: error: the subjects have no masks\n")
    st = jobs.run_status(folder)
    assert st.state == "failed" and "no masks" in st.message
    (folder / "ui_train.yaml").write_text("max_train_steps: 3\n")
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "loss": 1.0 / i}) + "\n" for i in (1, 2, 3)))
    (folder / "pytorch_lora_weights.safetensors").write_bytes(b"")
    st = jobs.run_status(folder)
    assert (st.state, st.step, st.max_steps) == ("finished", 3, 3) and "step 3/3" in st.summary()
    (folder / "train_history.jsonl").write_text(json.dumps({"event": "resume", "changes": {
        "max_train_steps": {"from": 3, "to": 9}}}) + "\n")
    (folder / "checkpoint-3").mkdir()
    assert jobs.run_status(folder).state == "stopped"  # planned 9 steps, a checkpoint at 3
    (folder / ".mudi.lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": "x", "since": "then"}))
    assert jobs.lock_holder(folder) is None  # another host, or a pid that is gone: not running
    from mudi.io import OutputLock

    with OutputLock(folder):  # a live holder on this machine: the run is running
        assert jobs.lock_holder(folder) == os.getpid()
    assert jobs.lock_holder(folder) is None  # released


# ------------------------------------------------------------------------------------------------ generation
def test_generation_results_and_their_scores(tmp_path, ws):
    run = ws.runs_dir / "olis-ult"
    (run / "snapshot-5").mkdir(parents=True)
    for d in (run, run / "snapshot-5"):
        (d / "pytorch_lora_weights.safetensors").write_bytes(b"")
        (d / "mudi_subjects.json").write_text(json.dumps({"backbone": "tiny-sd", "subjects": [
            {"identifier": "olis", "phrase": "olis corgi", "path": "/x/dog6"},
            {"identifier": "ult", "phrase": "ult cat", "path": "/x/cat2"}]}))
    assert lora_choices(ws) == [("olis-ult", str(run)), ("olis-ult / snapshot-5", str(run / "snapshot-5"))]
    info = lora_info(run)
    assert (info.backbone, info.identifiers, info.labels) == ("tiny-sd", ["olis", "ult"], ["V1 olis corgi", "V2 ult cat"])
    gen = ws.generations_dir / "g"
    (gen / "evaluation").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(gen / "0000_seed7.png")
    (gen / "0000_seed7.json").write_text(json.dumps({"seed": 7, "prompt": "p"}))
    (gen / "evaluation" / "0000_seed7.json").write_text(json.dumps({
        "metrics": {"dnc_dino": {"score": 0.25}}, "text": {"clip_score": 0.5}, "failures": ["count"],
        "detections": [{}, {}]}))
    rows = generated_rows(gen)
    assert rows[0].caption == "seed 7 · dnc_dino 0.250 · clip_score 0.500 · count"
    assert score_table(rows) == (["image", "seed", "dnc_dino", "clip_score", "detections", "failures"],
                                 [["0000_seed7.png", 7, 0.25, 0.5, 2, "count"]])


# ------------------------------------------------------------------------------------------------ mudi ui
def test_the_config_and_the_cli_verb(tmp_path):
    assert UiConfig().host == "127.0.0.1" and UiConfig().is_local and not UiConfig(share=True).is_local
    with pytest.raises(MudiError, match="sdxl"):
        UiConfig(backbone="sdx")
    with pytest.raises(MudiError):
        UiConfig(port=0)
    code = "import sys, mudi.cli, mudi.commands.ui\nprint('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=ENV)
    assert out.stdout.strip() == "False"
    from mudi.cli import build_parser

    help_text = build_parser("ui")._subparsers._group_actions[0].choices["ui"].format_help()
    assert all(flag in help_text for flag in ("--workspace", "--host", "--port", "--share", "--backbone"))


def test_mudi_ui_without_gradio_is_one_line(tmp_path, monkeypatch, capsys):
    from mudi.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now raises ImportError
    assert main(["ui", "--workspace", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "mudi ui: error: the web UI needs gradio, which is not installed: pip install 'mudi[ui]'"


def test_the_page_builds(tmp_path):
    pytest.importorskip("gradio")
    from mudi.ui.app import build_app

    ws = Workspace.open(tmp_path / "ws")
    ui_subjects.add_sample_subjects(ws)
    demo = build_app(UiConfig(workspace=str(ws.root), backbone="tiny-sd", backend="grabcut", device="cpu"), ws)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"photos", "segment", "mask-gallery", "segmix-preview", "train-start", "train-stop", "train-resume",
            "loss-plot", "layout-canvas", "generate", "scores"} <= ids
    assert {"train-trains", "region-control"} <= ids  # What trains; region control (tests/test_ui_methods.py)
