"""The comparison methods in the web UI (issue 25, item 4): the Train tab's "What trains" choice gives a Textual
Inversion or Custom Diffusion run (the benchmark method's recipe), such a run is listed and generated from like a
LoRA, and region control is a checkbox of the Generate tab (any LoRA, the init's layout as the regions)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mudi.core.methods import METHODS
from mudi.errors import MudiError
from mudi.samples import SAMPLES_DIR
from mudi.training.config import TrainConfig
from mudi.training.loop import train
from mudi.ui import jobs, training
from mudi.ui.generation import generate_and_score, lora_choices
from mudi.ui.state import Workspace


@pytest.fixture()
def ws(tmp_path) -> Workspace:
    return Workspace.open(tmp_path / "ws")


def test_what_trains_gives_the_methods_recipes(tmp_path, ws):
    dirs = [SAMPLES_DIR / "dog6", SAMPLES_DIR / "dog2"]
    form = {**training.form_defaults("tiny-sd"), "trains": "ti"}
    form["learning_rate"] = training.trains_learning_rate("ti", form["learning_rate"])
    req = training.build_request(dirs, "tiny-sd", form, "", "cpu")
    assert req["train_lora"] is False and req["train_modifier_tokens"] is True
    assert req["learning_rate"] == METHODS["ti"].train["learning_rate"]  # the form showed the recipe's rate
    assert req["composition"] == "segmix"  # orthogonal: TI with Seg-Mix
    cd = training.build_request(dirs, "tiny-sd", {**training.form_defaults("tiny-sd"), "trains": "custom-diffusion"})
    assert cd["lora_target_modules"] == ["custom-diffusion"] and cd["train_modifier_tokens"] is True
    plain = training.build_request(dirs, "tiny-sd", {**training.form_defaults("tiny-sd"), "trains": "lora"})
    assert "train_modifier_tokens" not in plain and "train_lora" not in plain
    with pytest.raises(MudiError, match="what trains"):
        training.build_request(dirs, "tiny-sd", {**training.form_defaults("tiny-sd"), "trains": "mudi"})


def test_a_textual_inversion_run_is_listed_finished_and_generates_with_region_control(ws):
    run = ws.runs_dir / "ti-run"
    cfg = TrainConfig(backbone="tiny-sd", subjects=[str(SAMPLES_DIR / "dog6"), str(SAMPLES_DIR / "dog2")],
                      output_dir=str(run), train_modifier_tokens=True, train_lora=False, max_train_steps=2,
                      learning_rate=1e-2, train_batch_size=1, resolution=32, report_to="none", progress=False,
                      device="cpu")
    train(cfg)
    assert (run.name, str(run)) in lora_choices(ws)  # token files only: still a run to generate from
    assert jobs.run_status(run).state == "finished"  # its weights are the token files
    kw = dict(prompt="[V1] and [V2].", gamma=0.0, seed=0, num_images=1, num_inference_steps=2, score=False,
              device="cpu")
    plain = generate_and_score(ws, run, **kw)
    region = generate_and_score(ws, run, **kw, region_control=True)
    a = np.asarray(Image.open(next(plain.glob("[0-9]*.png"))))
    b = np.asarray(Image.open(next(region.glob("[0-9]*.png"))))
    assert a.shape == b.shape and not np.array_equal(a, b)  # the subjects' prompts went into their boxes
    meta = json.loads(next(region.glob("[0-9]*.json")).read_text())
    assert meta["region_control"] is True and "region_control" not in json.loads(next(plain.glob("[0-9]*.json")).read_text())

