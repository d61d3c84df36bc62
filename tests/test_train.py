"""`mudi train` on the tiny backbones: objective, composition sampling, prior, outputs, resume, errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

import mudi.cli
from mudi.errors import MudiError
from mudi.training.config import TrainConfig
from mudi.training.loop import train as run
from mudi.training.signals import TrainingStopped
from mudi.training.trainer import LoraTrainer

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "mudi" / "samples"
SUBJECTS = [str(SAMPLES / "dog6"), str(SAMPLES / "cat2")]
KW = dict(subjects=SUBJECTS, rank=4, report_to="none", progress=False, device="cpu")


def _images(pipe, seed=0):
    return pipe("A photo of olis corgi", num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(seed)).images


@pytest.fixture(scope="module")
def prior_dir(tmp_path_factory) -> Path:
    """A prior set in the authors' class_metadata.jsonl format, two classes, with masks."""
    d = tmp_path_factory.mktemp("prior")
    rows = [{"id": {"a": "dog", "b": "cat"}}]
    for letter, src in (("a", "dog2"), ("b", "cat2")):
        for k in range(2):
            shutil.copy(SAMPLES / src / f"0{k}.jpg", d / f"{letter}0{k}.jpg")
            shutil.copy(SAMPLES / src / "masks" / f"0{k}.png", d / f"mask_{letter}0{k}.png")
            rows.append({"id": letter, "file_name": f"{letter}0{k}.jpg", "mask_path": f"mask_{letter}0{k}.png",
                         "text": f"prior photo of a {'dog' if letter == 'a' else 'cat'}"})
    (d / "class_metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.mark.parametrize("backbone", ["tiny-sd", "tiny-sd2", "tiny-sdxl", "tiny-flux"])
def test_two_steps_write_outputs_that_reload_exactly(backbone, tmp_path):
    out = tmp_path / "lora"
    trainer = run(TrainConfig(backbone=backbone, output_dir=str(out), max_train_steps=2, learning_rate=1e-2,
                              export="none" if backbone == "tiny-flux" else "kohya", **KW))
    assert trainer.global_step == 2
    trained = _images(trainer.backbone.pipeline)
    from mudi.adapters.registry import load_backbone

    fresh = load_backbone(backbone)
    base = _images(fresh.pipeline)
    fresh.pipeline.load_lora_weights(str(out))
    # bit-exact: the reloaded LoRA runs through the same peft layers and pipeline call as the trained one
    np.testing.assert_array_equal(_images(fresh.pipeline), trained)
    assert not np.array_equal(base, trained)  # the LoRA really changed the model
    meta = json.loads((out / "mudi_subjects.json").read_text())
    assert [s["phrase"] for s in meta["subjects"]] == ["olis corgi", "ult russian blue"]
    assert [Path(s["path"]).name for s in meta["subjects"]] == ["dog6", "cat2"]
    assert meta["family"] == trainer.backbone.family
    card = (out / "README.md").read_text()
    assert all(s["identifier"] in card for s in meta["subjects"]) and "load_lora_weights" in card
    assert (out / "train_config.yaml").is_file()
    if backbone != "tiny-flux":
        from safetensors.torch import load_file

        kohya = load_file(str(out / "pytorch_lora_weights_kohya.safetensors"))
        assert kohya and all(k.startswith("lora_unet_") for k in kohya)
        assert any(k.endswith(".alpha") for k in kohya)


def test_loss_decreases_on_a_fixed_batch(tmp_path):
    trainer = LoraTrainer(TrainConfig(backbone="tiny-sd", output_dir=str(tmp_path), composition="none",
                                      learning_rate=2e-2, **{**KW, "rank": 8}))
    batch = trainer.draw_batch()
    losses = [trainer.train_step(batch, generator=torch.Generator().manual_seed(0))["loss"] for _ in range(30)]
    assert np.mean(losses[-5:]) < 0.9 * losses[0], losses
    assert np.mean(losses[10:15]) < losses[0]


def test_composed_fraction_matches_probability():
    from mudi.core.segmix import SegMixParams
    from mudi.data.subjects import load_subjects
    from mudi.training.data import SampleSource

    subjects = load_subjects(SUBJECTS + [str(SAMPLES / "dog2")])
    src = SampleSource(subjects, 64, mode="segmix", composition_prob=0.3, max_composed_subjects=3,
                       segmix=SegMixParams())
    rng = np.random.default_rng(0)
    draws = [src.draw(rng) for _ in range(1500)]
    composed = [d for d in draws if d.num_subjects > 1]
    frac = len(composed) / len(draws)
    assert abs(frac - 0.3) < 3 * np.sqrt(0.3 * 0.7 / len(draws)), frac
    assert {d.num_subjects for d in composed} == {2, 3}
    for d in composed:  # every composed subject is named exactly once in its prompt
        assert sum(d.prompt.count(s.phrase) for s in subjects) == d.num_subjects
        assert d.image.shape == (64, 64, 3)
    single = [d for d in draws if d.num_subjects == 1]
    assert {d.prompt for d in single} == {f"A photo of {s.phrase}." for s in subjects}  # no captions: template
    cut = SampleSource(subjects, 64, mode="cutmix", composition_prob=1.0)
    assert "on the left" in cut.draw(np.random.default_rng(1)).prompt


def test_prior_batches_are_present_composed_and_weighted(tmp_path, prior_dir):
    seen = []

    def callback(trainer, batch, losses):
        seen.append((batch, losses))

    run(TrainConfig(backbone="tiny-sd", output_dir=str(tmp_path), max_train_steps=3, class_data_dir=str(prior_dir),
                    prior_loss_weight=0.5, composition_prob=1.0, **KW), callback=callback)
    for batch, losses in seen:
        assert len(batch["prior"]) == len(batch["instance"]) == 2
        assert all(s.num_subjects == 2 for s in batch["prior"])  # Seg-Mixed priors, class names only
        assert all("dog" in s.prompt and "cat" in s.prompt and "ult" not in s.prompt for s in batch["prior"])
        assert losses["loss"] == pytest.approx(losses["instance_loss"] + 0.5 * losses["prior_loss"], rel=1e-5)
    assert len({p for b, _ in seen for p in [s.prompt for s in b["prior"]]}) >= 1


def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path):
    from safetensors.torch import load_file

    cfg = dict(backbone="tiny-sd", max_train_steps=4, checkpointing_steps=100, learning_rate=1e-2,
               composition_prob=0.5, seed=3, **KW)
    run(TrainConfig(output_dir=str(tmp_path / "a"), **cfg))

    def interrupt(trainer, batch, losses):
        if trainer.global_step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: the run stops at this step boundary

    with pytest.raises(TrainingStopped, match="stopped at step 2 of 4"):
        run(TrainConfig(output_dir=str(tmp_path / "b"), **cfg), callback=interrupt)
    assert (tmp_path / "b" / "checkpoint-2" / "state.json").is_file()
    assert not (tmp_path / "b" / "pytorch_lora_weights.safetensors").exists()
    run(TrainConfig(output_dir=str(tmp_path / "b"), resume_from_checkpoint="latest", **cfg))
    a = load_file(str(tmp_path / "a" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(tmp_path / "b" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_limit_and_text_cache(tmp_path):
    calls = []
    trainer = LoraTrainer(TrainConfig(backbone="tiny-sd", output_dir=str(tmp_path), composition_prob=0.5,
                                      checkpoints_total_limit=2, checkpointing_steps=1, **KW))
    encode = trainer.backbone.encode_prompts
    trainer.backbone.encode_prompts = lambda prompts: calls.append(list(prompts)) or encode(prompts)
    prompts = set()
    for _ in range(4):
        batch = trainer.draw_batch()
        prompts |= {s.prompt for s in batch["instance"]}
        trainer.train_step(batch)
        trainer.global_step += 1
        trainer.save_checkpoint()
    assert sorted(p for c in calls for p in c) == sorted(prompts)  # each distinct prompt encoded once
    assert [p.name for p in sorted(tmp_path.glob("checkpoint-*"))] == ["checkpoint-3", "checkpoint-4"]


def test_kl_regularizer_is_zero_at_init_then_positive(tmp_path):
    trainer = LoraTrainer(TrainConfig(backbone="tiny-sd", output_dir=str(tmp_path), kl_weight=2.0,
                                      learning_rate=1e-2, composition="none", **KW))
    batch = trainer.draw_batch()
    first = trainer.train_step(batch, generator=torch.Generator().manual_seed(0))
    # exact: with B = 0 the LoRA branch adds exactly 0.0 to every base layer, so both outputs are the same bits
    assert first["kl_loss"] == 0.0  # LoRA B starts at zero: the LoRA model equals the base model
    assert first["loss"] == pytest.approx(first["instance_loss"])
    second = trainer.train_step(batch, generator=torch.Generator().manual_seed(0))
    assert second["kl_loss"] > 0
    assert second["loss"] == pytest.approx(second["instance_loss"] + 2.0 * second["kl_loss"], rel=1e-5)


def test_cli_runs_from_config_with_overrides(tmp_path, capsys):
    cfg = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    rc = mudi.cli.main(["train", "--config", str(cfg), "--subjects", *SUBJECTS, "--output_dir", str(tmp_path),
                        "--no_progress", "max_train_steps=2", "segmix.allow_overlap=false"])
    assert rc == 0, capsys.readouterr().err
    saved = (tmp_path / "train_config.yaml").read_text()
    assert "max_train_steps: 2" in saved and "allow_overlap: false" in saved
    assert (tmp_path / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.parametrize("argv,message", [
    (["max_train_step=3"], "did you mean 'max_train_steps'"),
    (["--resolution", "60"], "not a multiple of 8"),
    (["--composition", "segmix", "--backbone", "tiny-sdx"], "did you mean 'tiny-sdxl'"),
    (["--with_prior_preservation"], "--class_data_dir"),
])
def test_bad_input_is_one_clear_line(argv, message, tmp_path, capsys):
    rc = mudi.cli.main(["train", "--subjects", *SUBJECTS, "--output_dir", str(tmp_path), "--report_to", "none",
                        "--device", "cpu", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err


def test_bad_subjects_prior_and_checkpoint(tmp_path):
    with pytest.raises(MudiError, match="needs at least 2 subjects"):
        LoraTrainer(TrainConfig(backbone="tiny-sd", output_dir=str(tmp_path), **{**KW, "subjects": SUBJECTS[:1]}))
    # one subject is fine for plain DreamBooth
    LoraTrainer(TrainConfig(backbone="tiny-sd", output_dir=str(tmp_path), composition="none",
                            **{**KW, "subjects": SUBJECTS[:1]}))
    empty = tmp_path / "empty_prior"
    empty.mkdir()
    with pytest.raises(MudiError, match="is empty"):
        LoraTrainer(TrainConfig(backbone="tiny-sd", output_dir=str(tmp_path), class_data_dir=str(empty), **KW))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(MudiError, match="not sdxl"):
        LoraTrainer(TrainConfig(backbone="sdxl", pretrained_model_name_or_path=str(tmp_path),
                                output_dir=str(tmp_path / "o"), **KW))
    with pytest.raises(MudiError, match="not a training checkpoint"):
        run(TrainConfig(backbone="tiny-sd", output_dir=str(tmp_path / "o"), resume_from_checkpoint=str(tmp_path),
                        max_train_steps=1, **KW))


def test_a_non_finite_loss_stops_the_run_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path):
    def poison(trainer, batch, losses):
        if trainer.global_step == 2:  # weights gone bad after step 2 (as an overflow would leave them)
            with torch.no_grad():
                next(iter(trainer.trainable.values())).fill_(float("nan"))

    cfg = TrainConfig(backbone="tiny-sd", output_dir=str(tmp_path), max_train_steps=5, checkpointing_steps=2, **KW)
    with pytest.raises(MudiError, match=r"loss became nan at step 3 \(sd15, mixed_precision no.*--resume_from_checkpoint"):
        run(cfg, callback=poison)
    assert (tmp_path / "checkpoint-2").is_dir()
    assert not (tmp_path / "pytorch_lora_weights.safetensors").exists()
