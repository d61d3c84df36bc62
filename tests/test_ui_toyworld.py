"""mudi's toy model in the web UI, without a browser: the model choice ``toyworld`` and its recipe (read from
`mudi demo`'s run file), the toy subject sets added to the workspace with their identity, a real 2-step toy
training subprocess and a generation on CPU, and the toy checker's verdict under each image — on constructed
images whose verdict is known."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from PIL import Image

from mudi.config import load_yaml
from mudi.data.subjects import find_subjects
from mudi.errors import MudiError
from mudi.toyworld import MODEL_DIR, SUBJECTS_DIR
from mudi.toyworld.checker import VERDICTS
from mudi.toyworld.evaluate import toy_subject
from mudi.toyworld.world import ObjectSpec, Scene, render_scene
from mudi.ui import generation as gen
from mudi.ui import jobs, toy, training
from mudi.ui.config import TOY_CHOICE, UiConfig
from mudi.ui.state import Workspace
from tests.test_ui import ENV, _wait


@pytest.fixture()
def ws(tmp_path) -> Workspace:
    return Workspace.open(tmp_path / "ws")


# ------------------------------------------------------------------------------------------------ the choice
def test_the_toy_choice_takes_its_recipe_from_the_demo_run_file(tmp_path, ws):
    run_file = load_yaml(toy.TOY_RUN_FILE)
    recipe = toy.toy_recipe()
    assert recipe.model == str(MODEL_DIR.resolve()) and recipe.backbone == run_file["backbone"] == "sd15"
    assert recipe.train["resolution"] == run_file["train"]["resolution"] == 32
    assert recipe.generate["height"] == recipe.generate["width"] == 32 and recipe.generate["negative_prompt"] == ""
    assert recipe.prompt == run_file["prompts"][0] and training.validation_prompt_for(TOY_CHOICE) == recipe.prompt
    d = training.form_defaults(TOY_CHOICE)
    assert {k: d[k] for k in ("max_train_steps", "learning_rate", "rank", "checkpointing_steps")} == {
        k: run_file["train"][k] for k in ("max_train_steps", "learning_rate", "rank", "checkpointing_steps")}
    assert UiConfig(backbone=TOY_CHOICE).backbone == TOY_CHOICE
    with pytest.raises(MudiError):
        UiConfig(backbone="toyworl")
    # the request: the family and folder of the toy model, its resolution; the form's values win
    folders, _ = toy.add_toy_subjects(ws)
    req = training.build_request(folders, TOY_CHOICE, {**d, "max_train_steps": 3}, "", "cpu", recipe.prompt, ws=ws)
    assert (req["backbone"], req["pretrained_model_name_or_path"], req["resolution"], req["max_train_steps"]) == (
        "sd15", recipe.model, 32, 3)
    # the UI names the shipped folder itself; a path the page sends still has to be inside the workspace
    with pytest.raises(MudiError, match="outside the UI workspace"):
        training.build_request(folders, TOY_CHOICE, d, f"pretrained_model_name_or_path={MODEL_DIR}", "cpu", ws=ws)
    with pytest.raises(MudiError, match="outside the UI workspace"):
        training.build_request(folders, "sd15", d, f"pretrained_model_name_or_path={MODEL_DIR}", "cpu", ws=ws)
    assert toy.is_toy_model(MODEL_DIR) and not toy.is_toy_model(tmp_path) and not toy.is_toy_model(None)


# ------------------------------------------------------------------------------------------------ subjects
def test_the_toy_subject_sets_are_copied_with_their_identity(ws):
    folders, added = toy.add_toy_subjects(ws, "shared_colour")
    assert [p.name for p in folders] == ["red_yellow_square", "blue_yellow_square"] and added == folders
    for p in folders:
        assert all(p.parent == ws.subjects_dir for p in folders)
        shipped = SUBJECTS_DIR / p.name
        assert sorted(f.relative_to(p) for f in p.rglob("*") if f.is_file()) == sorted(
            f.relative_to(shipped) for f in shipped.rglob("*") if f.is_file())  # renders, masks, subject.yaml
        s = find_subjects(p)[0]
        assert all(im.mask_path is not None for im in s.images) and toy_subject(p) == toy_subject(shipped)
    assert toy.add_toy_subjects(ws, "shared_colour") == (folders, [])  # again: nothing new
    three, added = toy.add_toy_subjects(ws, "three")  # the demo pair is kept, one subject added
    assert three[:2] == folders and [p.name for p in added] == ["green_purple_circle"]
    assert toy_subject(three[2]).identifier == "zwx"
    pair, added = toy.add_toy_subjects(ws, "same_colours")  # the same circle is "olis" in this set
    assert [p.name for p in pair] == ["green_purple_circle-olis", "green_purple_triangle"] and added == pair
    assert toy_subject(pair[0]).identifier == "olis" and toy_subject(pair[0]).phrase == toy_subject(three[2]).phrase
    with pytest.raises(MudiError, match="shared_colour"):
        toy.add_toy_subjects(ws, "nope")
    assert [name for _, name in toy.toy_set_choices()][0] == "shared_colour"


# ------------------------------------------------------------------------------------------------ verdicts
def _toy_lora(workspace: Workspace, subjects, composition: str):
    """A LoRA folder as a toy run leaves it (its manifest names the toy model and the subjects)."""
    run = workspace.runs_dir / f"toy-{composition}"
    run.mkdir()
    (run / "pytorch_lora_weights.safetensors").write_bytes(b"")
    (run / "train_config.yaml").write_text(yaml.safe_dump({"composition": composition}))
    (run / "mudi_subjects.json").write_text(json.dumps({
        "backbone": "sd15", "pretrained_model_name_or_path": str(MODEL_DIR), "subjects": [
            {"identifier": toy_subject(p).identifier, "phrase": f"{toy_subject(p).identifier} x", "path": str(p)}
            for p in subjects]}))
    return run


def test_constructed_images_get_the_checkers_verdict_under_each(ws):
    folders, _ = toy.add_toy_subjects(ws)
    red, blue = (toy_subject(p) for p in folders)
    run = _toy_lora(ws, folders, "none")
    scenes = {  # image -> (scene, the verdict it must get)
        "0000_seed0.png": ((red.spec(11, 9, 16), blue.spec(11, 23, 16)), "correct"),
        "0001_seed1.png": ((red.spec(11, 9, 16), red.spec(11, 23, 16)), "duplicate"),
        "0002_seed2.png": ((blue.spec(12, 16, 16),), "missing"),
        "0003_seed3.png": ((red.spec(11, 9, 16), ObjectSpec("square", "blue", "green", 11, 23, 16)), "wrong_colour"),
    }
    out = ws.generations_dir / "constructed"
    out.mkdir()
    for k, (name, (objects, _)) in enumerate(scenes.items()):
        Image.fromarray(render_scene(Scene(objects))[0]).save(out / name)
        (out / name).with_suffix(".json").write_text(json.dumps({"seed": k, "prompt": "a photo of a olis and a hta."}))
    (out / "generate_config.yaml").write_text(yaml.safe_dump({"lora": [str(run)], "gamma": 0.0}))
    gen.score_folder(out, gen.lora_info(run), "cpu")
    rows = gen.generated_rows(out)
    assert [r.verdict for r in rows] == [v for _, v in scenes.values()]
    assert rows[0].caption.startswith("correct · seed 0 · dnc_toyworld ")
    assert rows[1].caption.startswith("identity mixing (duplicate) · seed 1")
    assert rows[3].caption.startswith("wrong colour · seed 3")
    headers, table = gen.score_table(rows)
    assert headers[:4] == ["image", "seed", "verdict", "dnc_toyworld"] and table[2][2] == "missing"
    assert table[0][3] > table[1][3]  # D&C with the toy detector and embedder agrees: correct above duplicate
    result = toy.read_verdicts(out / gen.EVALUATION_DIR)
    assert toy.verdict_counts_text(result) == (
        "1/4 correct (missing 1, identity mixing (duplicate) 1, wrong colour 1)")
    headers, table = toy.toy_summary_table(ws)
    assert table == [["constructed", "DreamBooth", run.name, 4, 1, 0.25,
                      "missing 1, identity mixing (duplicate) 1, wrong colour 1"]]
    # images of other models carry no verdict and no verdict column
    (out / gen.EVALUATION_DIR / "toyworld.json").unlink()
    assert "verdict" not in gen.score_table(gen.generated_rows(out))[0]
    assert toy.method_label(run, 1.0) == "DreamBooth + init γ 1"


# ------------------------------------------------------------------------------------------------ end to end
def test_the_toy_model_trains_and_generates_on_cpu_with_verdicts(ws):
    t0 = time.monotonic()
    folders, _ = toy.add_toy_subjects(ws)
    form = {**training.form_defaults(TOY_CHOICE), "max_train_steps": 2, "checkpointing_steps": 2,
            "validation_steps": 0}
    request = training.build_request(folders, TOY_CHOICE, form, "train_batch_size=2", "cpu", ws=ws)
    run = training.new_run_dir(ws, "", folders)
    runs = jobs.TrainingRuns(env=ENV)
    runs.start(run, request)
    st = _wait(lambda: (s := runs.status(run)).state not in ("new", "starting", "running") and s, 120, "the toy run")
    assert st.state == "finished", jobs.log_tail(run)
    info = gen.lora_info(run)
    assert toy.is_toy_model(info.pretrained_model_name_or_path) and info.backbone == "sd15"
    out = gen.generate_and_score(ws, run, toy.toy_recipe().prompt, 1.0, 0, 2, 3, device="cpu")
    assert {Image.open(p).size for p in out.glob("0*.png")} == {(32, 32)}  # the toy model's own resolution
    rows = gen.generated_rows(out)
    assert len(rows) == 2 and all(r.verdict in VERDICTS for r in rows)
    assert all(r.caption.startswith(toy.VERDICT_WORDS[r.verdict]) for r in rows)
    headers, table = toy.toy_summary_table(ws)
    assert table[0][:5] == [out.name, "MuDI (Seg-Mix + init γ 1)", run.name, 2, sum(r.verdict == "correct" for r in rows)]
    assert all(p.is_relative_to(ws.root) for p in out.rglob("*"))  # everything it wrote is in the workspace
    assert time.monotonic() - t0 < 60


def test_the_page_offers_the_toy_model_and_subjects(tmp_path):
    pytest.importorskip("gradio")
    from mudi.ui.app import build_app, header
    from mudi.ui.context import UiContext

    space = Workspace.open(tmp_path / "ws")
    toy.add_toy_subjects(space)
    demo = build_app(UiConfig(workspace=str(space.root), backbone=TOY_CHOICE, backend="grabcut", device="cpu"), space)
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    assert {"toy-set", "add-toy-subjects", "toy-summary", "train-backbone"} <= set(blocks)
    assert blocks["train-backbone"].value == TOY_CHOICE
    assert blocks["train-steps"].value == training.form_defaults(TOY_CHOICE)["max_train_steps"]
    assert toy.TOY_NOTE in header(UiContext(UiConfig(workspace=str(space.root), backbone=TOY_CHOICE), space))
