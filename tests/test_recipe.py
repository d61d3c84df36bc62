"""mudi's defaults are the authors' recipe (docs/differences.md): Seg-Mix geometry and captions measured over
thousands of compositions against the formulas of their code, prior Seg-Mix, the loss mask, DCO, gradient
accumulation with exact resume, loadable LoRA snapshots, and the D&C detector queries."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from mudi.core.segmix import SEGMIX_PRESETS, SegMixParams, SegMixSettings, compose_segmix
from mudi.data.subjects import load_subjects
from mudi.errors import MudiError
from mudi.scoring.evaluator import detection_queries
from mudi.training.config import TrainConfig
from mudi.training.data import SampleSource
from mudi.training.loop import train
from mudi.training.losses import dco_loss, per_sample_mse
from mudi.training.signals import TrainingStopped
from mudi.training.trainer import LoraTrainer

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "mudi" / "samples"
SUBJECTS = [str(SAMPLES / "dog6"), str(SAMPLES / "cat2")]
KW = dict(backbone="tiny-sd", subjects=SUBJECTS, rank=4, report_to="none", progress=False, device="cpu",
          learning_rate=1e-2, composition_prob=0.5, seed=5, checkpointing_steps=1000)
W = H = 256
N_COMPOSITIONS = 2000


@pytest.fixture(scope="module")
def pair_cutouts(benchmark_dir):
    subjects = load_subjects([str(benchmark_dir / "pairs" / "dog6_and_dog2")])
    return [s.cutouts(max_side=W) for s in subjects]


def _compositions(pair_cutouts, params: SegMixParams, n: int = N_COMPOSITIONS):
    rng = np.random.default_rng(2024)
    for _ in range(n):
        picks = [cs[int(rng.integers(len(cs)))] for cs in pair_cutouts]
        yield picks, compose_segmix(picks, ["A", "B"], (H, W), rng, params)


@pytest.mark.parametrize("preset", ["sdxl", "flux"])
def test_segmix_distributions_follow_the_authors_formulas(pair_cutouts, preset):
    params = SEGMIX_PRESETS[preset]
    lo, hi = params.scale_range
    max_margin = round(params.max_margin_frac * W)
    fit = round(32 * W / params.reference_resolution)  # the authors' 32 px at their resolution, scaled to W
    assert (params.reference_resolution, fit) == ({"sdxl": 1024, "flux": 512}[preset], {"sdxl": 8, "flux": 16}[preset])
    ratios, margins, ys, left0, top0, black = [], [], [], 0, 0, 0
    for picks, comp in _compositions(pair_cutouts, params):
        for c, box in zip(picks, comp.boxes_xyxy):
            h, w = c.size_hw
            max_factor = min((W / 2 - fit) / w, (H - fit) / h)
            bw, bh = box[2] - box[0], box[3] - box[1]
            factor = max(bh / h, bw / w)  # int() rounds down: the larger ratio is the closer one
            assert int(h * factor) in (bh, bh - 1) or int(w * factor) in (bw, bw - 1)  # one factor, aspect kept
            assert abs(bh / h - bw / w) * min(h, w) <= 1.0 + 1e-9
            ratios.append(factor / max_factor)
            ys.append(box[1] / max(1, H - bh))
        left, right = (comp.boxes_xyxy[i] for i in comp.left_to_right)
        margins += [left[0], W - right[2]]
        left0 += comp.left_to_right[0] == 0
        top0 += comp.stacking[-1] == 0
        is_black = comp.background == (0, 0, 0)
        black += is_black
        assert (comp.image[~comp.union_mask] == comp.background).all()
        assert comp.prompt.index("A") < comp.prompt.index("B")  # caption order is the given order
        if preset == "flux":
            assert f"{'black' if is_black else 'white'} simple background" in comp.prompt
            assert comp.prompt.startswith("a close out photo of a small A and a small B, ")
        else:
            assert comp.prompt == "a photo of a A and a B, simple background."
    ratios, margins, ys = np.array(ratios), np.array(margins), np.array(ys)
    assert ratios.min() >= lo - 0.02 and ratios.max() <= hi + 1e-9  # U(lo · max, hi · max), less rounding
    assert abs(ratios.mean() - (lo + hi) / 2) < 0.01
    assert abs(np.quantile(ratios, 0.25) - (lo + 0.25 * (hi - lo))) < 0.02
    assert margins.min() >= 1 and margins.max() <= max_margin  # U{1, W/4} (sdxl), U{1, W/8} (flux)
    assert abs(margins.mean() - (1 + max_margin) / 2) < 0.04 * max_margin
    assert abs(ys.mean() - 0.5) < 0.03 and ys.min() >= 0 and ys.max() <= 1  # y ~ U{0, H - h}
    n = N_COMPOSITIONS
    assert abs(left0 / n - 0.5) < 0.04 and abs(top0 / n - 0.5) < 0.04  # which is left / on top: 50 %
    assert abs(black / n - params.black_background_prob) < 0.03


def test_settings_resolve_a_preset_with_changes():
    s = SegMixSettings(preset="flux", max_margin_frac=0.2)
    p = s.resolve("sdxl")
    assert p.scale_range == (0.9, 1.0) and p.max_margin_frac == 0.2 and p.black_background_prob == 0.25
    assert SegMixSettings().resolve("flux") == SEGMIX_PRESETS["flux"]  # auto: the backbone's preset
    assert SegMixSettings().resolve("sdxl") == SegMixParams()
    with pytest.raises(MudiError, match="did you mean 'flux'"):
        SegMixSettings(preset="flx")
    with pytest.raises(MudiError, match="scale_range"):
        SegMixSettings(scale_range=(0.9, 0.5))


def test_prior_compositions_are_coupled_top_aligned_and_of_the_instance_class(tmp_path):
    prior_dir = tmp_path / "prior"
    prior_dir.mkdir()
    rows = [{"id": {"a": "Corgi", "b": "russian blue"}}]
    for letter, src in (("a", "dog6"), ("b", "cat2")):
        for k in range(2):
            shutil.copy(SAMPLES / src / f"0{k}.jpg", prior_dir / f"{letter}0{k}.jpg")
            shutil.copy(SAMPLES / src / "masks" / f"0{k}.png", prior_dir / f"mask_{letter}0{k}.png")
            rows.append({"id": letter, "file_name": f"{letter}0{k}.jpg", "mask_path": f"mask_{letter}0{k}.png"})
    (prior_dir / "class_metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    trainer = LoraTrainer(TrainConfig(output_dir=str(tmp_path / "o"), class_data_dir=str(prior_dir),
                                      **{**KW, "composition_prob": 0.5}))
    composed = 0
    for _ in range(30):
        batch = trainer.draw_batch()
        for inst, prior in zip(batch["instance"], batch["prior"]):
            own = trainer.subjects[inst.subject]
            assert inst.prompt.startswith(f"a photo of a {own.phrase}") or inst.num_subjects == 1
            assert (inst.num_subjects > 1) == (prior.num_subjects > 1)  # composed together
            assert trainer.priors.subjects[prior.subject].class_name.lower() == own.class_name.lower()
            if prior.num_subjects > 1:
                composed += 1
                other = [s.class_name for s in trainer.priors.subjects if s.class_name.lower() !=
                         own.class_name.lower()][0]
                assert prior.prompt == f"a photo of a {trainer.priors.subjects[prior.subject].class_name} and a " \
                                       f"{other}, simple background."
                assert prior.boxes_xyxy[0][1] == prior.boxes_xyxy[1][1]  # one top y
    assert composed >= 10


def test_loss_mask_is_the_bilinear_downsample_of_the_union_mask(tmp_path):
    trainer = LoraTrainer(TrainConfig(output_dir=str(tmp_path), soft_alpha=0.25, composition_prob=1.0,
                                      **{k: v for k, v in KW.items() if k != "composition_prob"}))
    samples = trainer.draw_batch()["instance"]
    w = trainer.loss_weights(samples, (8, 8))
    for s, got in zip(samples, w[:, 0].numpy()):
        m = s.mask.astype(np.float64)  # 64 px → 8 cells: bilinear (no antialias) averages pixels 8i+3, 8i+4
        expected = (m[3::8, 3::8] + m[4::8, 3::8] + m[3::8, 4::8] + m[4::8, 4::8]) / 4
        np.testing.assert_allclose(got, expected * 0.75 + 0.25, atol=1e-6)
    assert trainer.loss_weights(samples, (8, 8)) is not None
    off = LoraTrainer(TrainConfig(output_dir=str(tmp_path / "b"), **KW))
    assert off.loss_weights(samples, (8, 8)) is None  # soft_alpha 1: no weighting at all


def test_dco_and_weighted_mse_equal_their_formulas():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[0.0, 0.5], [0.5, 0.0]]]])
    target = torch.zeros_like(pred)
    weight = torch.tensor([[[[1.0, 0.5], [0.5, 1.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    losses = per_sample_mse(pred, target, weight)
    assert losses.tolist() == pytest.approx([(1 + 2 + 4.5 + 16) / 4, (0 + 0.25 + 0.25 + 0) / 4])
    assert per_sample_mse(pred, target, None).tolist() == pytest.approx([30 / 4, 0.125])
    lt, lr = torch.tensor([0.30, 0.10]), torch.tensor([0.25, 0.20])
    beta = 1000.0
    expected = np.mean([math.log1p(math.exp(beta * (a - b))) if beta * (a - b) < 50 else beta * (a - b)
                        for a, b in zip(lt.tolist(), lr.tolist())])
    assert float(dco_loss(lt, lr, beta)) == pytest.approx(expected, rel=1e-5)
    assert float(dco_loss(lr, lr, beta)) == pytest.approx(math.log(2))  # no change from the reference


def test_mse_loss_is_the_plain_mean_squared_error(tmp_path):
    trainer = LoraTrainer(TrainConfig(output_dir=str(tmp_path), **KW))
    batch = trainer.draw_batch()
    bb = trainer.backbone
    gen = torch.Generator().manual_seed(11)
    # the same draws, by hand: encode, noise, timesteps, prediction, MSE
    from mudi.training.data import to_pixels

    g2 = torch.Generator().manual_seed(11)
    with torch.no_grad():
        latents = bb.encode_images(to_pixels(batch["instance"]), generator=g2)
        noise = torch.randn(latents.shape, generator=g2, dtype=torch.float32)
        t = bb.sample_timesteps(latents.shape[0], g2)
        pred = bb.predict(bb.add_noise(latents, noise, t), t, trainer.encode_text([s.prompt for s in batch["instance"]]),
                          denoiser=trainer.model).float()
        expected = F.mse_loss(pred, bb.training_target(latents, noise, t))
    out = trainer.train_step(batch, generator=gen)
    # Two code paths (the trainer's masked/weighted reduction vs F.mse_loss) compute the same mean: they agree to
    # a few float32 ulps, and which way the last bit falls depends on the CPU's vector units and thread count.
    torch.testing.assert_close(torch.tensor(out["instance_loss"]), expected, rtol=1e-6, atol=1e-7)


def test_dco_trains_against_the_frozen_model(tmp_path):
    trainer = LoraTrainer(TrainConfig(output_dir=str(tmp_path), loss="dco", dco_beta=1000.0, **KW))
    first = trainer.train_step(trainer.draw_batch(), generator=torch.Generator().manual_seed(0))
    assert first["instance_loss"] == pytest.approx(math.log(2), abs=1e-3)  # LoRA B = 0: L_θ = L_ref
    out = [trainer.train_step(trainer.draw_batch())["instance_loss"] for _ in range(3)]
    assert all(math.isfinite(v) for v in out)


def test_accumulation_resumes_exactly(tmp_path):
    kw = {**KW, "train_batch_size": 1, "gradient_accumulation_steps": 2}
    train(TrainConfig(output_dir=str(tmp_path / "a"), max_train_steps=4, **kw))

    def stop(trainer, batches, losses):
        assert len(batches) == 2 and len(batches[0]["instance"]) == 1
        if trainer.global_step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingStopped):
        train(TrainConfig(output_dir=str(tmp_path / "b"), max_train_steps=4, **kw), callback=stop)
    train(TrainConfig(output_dir=str(tmp_path / "b"), max_train_steps=4, resume_from_checkpoint="latest", **kw))
    a = load_file(str(tmp_path / "a" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(tmp_path / "b" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    one = train(TrainConfig(output_dir=str(tmp_path / "c"), max_train_steps=4, **{**KW, "train_batch_size": 1}))
    c = load_file(str(tmp_path / "c" / "pytorch_lora_weights.safetensors"))
    assert not all(torch.equal(a[k], c[k]) for k in a)  # accumulation really adds micro-batches
    assert one.global_step == 4


def test_snapshots_are_loadable_loras_of_that_step(tmp_path):
    out = tmp_path / "run"
    live: dict[int, np.ndarray] = {}

    def render(pipe):
        return pipe("a photo of olis corgi", num_inference_steps=2, height=64, width=64, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images

    def capture(trainer, batch, losses):
        if trainer.global_step == 2:
            live[2] = render(trainer.backbone.pipeline)

    train(TrainConfig(output_dir=str(out), max_train_steps=4, save_steps=2, **KW), callback=capture)
    assert sorted(p.name for p in out.glob("snapshot-*")) == ["snapshot-2", "snapshot-4"]
    from mudi.adapters.registry import load_backbone

    fresh = load_backbone("tiny-sd")
    fresh.pipeline.load_lora_weights(str(out / "snapshot-2"))
    # bit-exact: the same peft LoRA layers with the same float32 weights run the same pipeline call
    np.testing.assert_array_equal(render(fresh.pipeline), live[2])
    final = load_file(str(out / "pytorch_lora_weights.safetensors"))
    snap = load_file(str(out / "snapshot-4" / "pytorch_lora_weights.safetensors"))
    assert all(torch.equal(final[k], snap[k]) for k in final)
    manifest = json.loads((out / "snapshot-2" / "mudi_subjects.json").read_text())
    assert manifest["step"] == 2 and [s["phrase"] for s in manifest["subjects"]] == ["olis corgi", "ult russian blue"]
    from mudi.cli import main

    assert main(["generate", "--backbone", "tiny-sd", "--lora", str(out / "snapshot-2"), "--num_images", "1",
                 "--steps", "2", "--device", "cpu", "--output_dir", str(tmp_path / "g")]) == 0


def test_detector_queries_are_the_class_phrases_on_every_benchmark_pair(benchmark_dir):
    for pair in sorted((benchmark_dir / "pairs").iterdir()):
        meta = json.loads((pair / "metadata.jsonl").read_text().splitlines()[0])["id"]
        phrases = [" ".join(v.split()[1:]) for v in meta.values()]  # "olis russian blue" → "russian blue"
        subjects = load_subjects([str(pair)])
        assert detection_queries(subjects) == list(dict.fromkeys(phrases)), pair.name
    assert "russian blue" in detection_queries(load_subjects([str(benchmark_dir / "pairs" / "cat2_and_pet_dog1")]))


def test_detect_as_in_subject_yaml(tmp_path):
    from tests.helpers import make_subject_dir

    d = make_subject_dir(tmp_path, "toy", "zwx", descriptive_class="red monster plush")
    (d / "subject.yaml").write_text((d / "subject.yaml").read_text() + "detect_as: plush toy\n")
    assert detection_queries(load_subjects([str(d)])) == ["plush toy"]


def test_sample_source_own_subject_first_and_random_crops(tmp_path):
    subjects = load_subjects(SUBJECTS)
    src = SampleSource(subjects, 64, composition_prob=1.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = src.draw(rng)
        assert s.prompt.startswith(f"a photo of a {subjects[s.subject].phrase} and a ")
    single = SampleSource(subjects, 64, composition_prob=0.0)
    crops = {single.single(np.random.default_rng(k), 0).image.tobytes() for k in range(8)}
    assert len(crops) > 1  # random crops (the authors'), not one centre crop
    centre = SampleSource(subjects, 64, composition_prob=0.0, center_crop=True)
    assert len({centre.single(np.random.default_rng(k), 0).image.tobytes()[:50] for k in range(1)}) == 1
