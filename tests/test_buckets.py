"""Aspect-ratio buckets (issue 28, ``aspect_buckets``): the bucket list, every photo at the bucket nearest its
aspect, one size per micro-batch (instance and prior samples), square compositions, the recipe's per-sample
distribution, bit-exact resume, latent caching and DataLoader workers, and nothing changed when off."""

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
from safetensors.torch import load_file

from mudi.data.subjects import load_subjects
from mudi.errors import MudiError
from mudi.training.batches import draw_micro_batch
from mudi.training.buckets import bucket_tolerance, log_aspect, make_buckets, nearest_bucket, training_buckets
from mudi.training.config import TrainConfig
from mudi.training.data import SampleSource
from mudi.training.loop import train
from mudi.training.signals import TrainingStopped
from mudi.training.trainer import LoraTrainer
from tests.helpers import make_subject_dir

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "mudi" / "samples"
SIZES_WH = {"wide": (96, 48), "tall": (48, 96), "square": (80, 80)}
KW = dict(backbone="tiny-sd", rank=4, report_to="none", progress=False, device="cpu", learning_rate=1e-2,
          composition_prob=0.5, seed=3, checkpointing_steps=1000, max_train_steps=4)


@pytest.fixture(scope="module")
def varied(tmp_path_factory) -> list[str]:
    """Three subjects whose photos are 2:1 landscape, 1:2 portrait and square (width x height)."""
    root = tmp_path_factory.mktemp("varied")
    return [str(make_subject_dir(root, name, ident, size=SIZES_WH[name], n=2, color=col))
            for name, ident, col in (("wide", "zwx", (200, 30, 30)), ("tall", "qrv", (30, 200, 30)),
                                     ("square", "plk", (30, 30, 200)))]


@pytest.fixture(scope="module")
def prior_dir(tmp_path_factory) -> Path:
    """A square prior set of one class, in the authors' class_metadata.jsonl format."""
    d = tmp_path_factory.mktemp("prior")
    rows = [{"id": {"a": "toy"}}]
    for k in range(2):
        shutil.copy(SAMPLES / "dog2" / f"0{k}.jpg", d / f"a0{k}.jpg")
        shutil.copy(SAMPLES / "dog2" / "masks" / f"0{k}.png", d / f"mask_a0{k}.png")
        rows.append({"id": "a", "file_name": f"a0{k}.jpg", "mask_path": f"mask_a0{k}.png", "text": "a toy"})
    (d / "class_metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _lora(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "pytorch_lora_weights.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("resolution,step,max_ratio", [(64, 8, 2.0), (512, 8, 2.0), (1024, 64, 2.0), (1024, 8, 3.0),
                                                       (768, 16, 1.5)])
def test_bucket_list_properties(resolution, step, max_ratio):
    buckets = make_buckets(resolution, step, max_ratio)
    assert buckets == make_buckets(resolution, step, max_ratio)  # deterministic
    assert (resolution, resolution) in buckets
    assert len(set(buckets)) == len(buckets) and {(w, h) for h, w in buckets} == set(buckets)  # portrait twins
    assert [w / h for h, w in buckets] == sorted(w / h for h, w in buckets)
    for h, w in buckets:
        assert h % step == 0 or (h, w) == (resolution, resolution)
        assert w % step == 0 or (h, w) == (resolution, resolution)
        assert h * w <= resolution ** 2  # never more memory than the square
        assert h * w >= resolution ** 2 - step * max(h, w)  # the tallest side that fits: area about R²
        assert max(h, w) / min(h, w) <= max_ratio
    if resolution >= 512:
        assert max(w / h for h, w in buckets) > max_ratio * 0.9  # the ladder reaches the ratio


def test_bucket_step_must_be_a_multiple_of_the_pixel_multiple():
    cfg = TrainConfig(aspect_buckets=True, bucket_step=12)
    with pytest.raises(MudiError, match="bucket_step 12 is not a multiple of the backbone's pixel multiple 8"):
        training_buckets(cfg, 8, 64)
    assert training_buckets(TrainConfig(), 8, 64) is None
    assert training_buckets(TrainConfig(aspect_buckets=True, bucket_step=64), 16, 1024) == make_buckets(1024, 64)
    with pytest.raises(MudiError, match="bucket_max_ratio 0.5 must be >= 1"):
        TrainConfig(bucket_max_ratio=0.5)


def test_every_photo_trains_at_its_nearest_bucket_within_tolerance(varied, tmp_path):
    trainer = LoraTrainer(TrainConfig(output_dir=str(tmp_path), subjects=varied, aspect_buckets=True,
                                      loss_mask="all", soft_alpha=0.5, **KW))
    buckets = make_buckets(64, 8, 2.0)
    tol = bucket_tolerance(buckets, 2.0)
    assert tol == pytest.approx(math.log(2.0) - math.log(80 / 48))  # the outermost bucket is 48x80
    seen = set()
    for index in range(40):
        for s in trainer.draw_batch(index)["instance"]:
            hw = s.image.shape[:2]
            assert s.mask is not None and s.mask.shape == hw  # the loss mask is cropped with the photo
            if s.num_subjects > 1:
                assert hw == (64, 64)  # compositions stay on the square canvas
                continue
            w, h = SIZES_WH[trainer.subjects[s.subject].name]
            assert hw == nearest_bucket((h, w), buckets)
            assert abs(log_aspect(hw) - log_aspect((h, w))) <= tol + 1e-12
            seen.add(hw)
    assert seen == {(48, 80), (80, 48), (64, 64)}


def test_micro_batches_hold_one_size_with_their_priors_and_square_compositions(varied, prior_dir, tmp_path):
    trainer = LoraTrainer(TrainConfig(output_dir=str(tmp_path), subjects=varied, aspect_buckets=True,
                                      class_data_dir=str(prior_dir), **KW))
    kinds = set()
    for index in range(40):
        batch = trainer.draw_batch(index)
        sizes = {s.image.shape for s in batch["instance"] + batch["prior"]}
        assert len(sizes) == 1, sizes
        composed = [s.num_subjects > 1 for s in batch["instance"]]
        if any(composed):
            assert sizes == {(64, 64, 3)}
            assert all(p.num_subjects > 1 for p, c in zip(batch["prior"], composed) if c)
        kinds.update((next(iter(sizes)), c) for c in composed)
    assert {k for k, _ in kinds} == {(48, 80, 3), (80, 48, 3), (64, 64, 3)}
    assert ((64, 64, 3), True) in kinds and ((64, 64, 3), False) in kinds  # square photos share with compositions


def test_each_sample_keeps_the_recipes_distribution(varied):
    """The first sample picks the bucket, the rest are drawn conditioned on it: every sample alone is still a
    composition with probability composition_prob and of each subject equally often."""
    subjects = load_subjects(varied)
    src = SampleSource(subjects, 64, composition_prob=0.5, buckets=make_buckets(64, 8))
    cfg = TrainConfig(subjects=varied, aspect_buckets=True, train_batch_size=2, composition_prob=0.5)
    second = [draw_micro_batch(src, None, subjects, cfg, np.random.default_rng([7, k]), 0)["instance"][1]
              for k in range(1500)]
    assert np.mean([s.num_subjects > 1 for s in second]) == pytest.approx(0.5, abs=0.05)
    own = np.bincount([s.subject for s in second], minlength=3) / len(second)
    assert own == pytest.approx([1 / 3] * 3, abs=0.05)


def test_resume_with_buckets_is_bit_exact(varied, prior_dir, tmp_path):
    cfg = dict(KW, subjects=varied, aspect_buckets=True, class_data_dir=str(prior_dir), soft_alpha=0.5,
               loss_mask="all")
    train(TrainConfig(output_dir=str(tmp_path / "a"), **cfg))

    def interrupt(trainer, batch, losses):
        if trainer.global_step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: the run stops at this step boundary

    with pytest.raises(TrainingStopped, match="stopped at step 2 of 4"):
        train(TrainConfig(output_dir=str(tmp_path / "b"), **cfg), callback=interrupt)
    train(TrainConfig(output_dir=str(tmp_path / "b"), resume_from_checkpoint="latest", **cfg))
    assert _same(_lora(tmp_path / "a"), _lora(tmp_path / "b"))


@pytest.mark.parametrize("option", [{"cache_latents": True}, {"dataloader_num_workers": 2}])
def test_latent_caching_and_workers_stay_exact_with_buckets(option, varied, tmp_path):
    cfg = dict(KW, subjects=varied, aspect_buckets=True, center_crop=True)
    train(TrainConfig(output_dir=str(tmp_path / "plain"), **cfg))
    seen = []
    train(TrainConfig(output_dir=str(tmp_path / "o"), **{**cfg, **option}),
          callback=lambda trainer, batch, losses: seen.append(len(trainer.latent_cache)))
    assert _same(_lora(tmp_path / "o"), _lora(tmp_path / "plain"))
    if option.get("cache_latents"):
        assert seen[-1] == 6  # every photo, centre-cropped at its own bucket, encoded once


@pytest.mark.parametrize("backbone", ["tiny-sdxl", "tiny-flux"])
def test_other_families_train_at_non_square_buckets(backbone, varied, tmp_path):
    sizes = []
    train(TrainConfig(output_dir=str(tmp_path), subjects=varied, aspect_buckets=True,
                      **{**KW, "backbone": backbone, "max_train_steps": 3, "composition_prob": 0.0}),
          callback=lambda trainer, batch, losses: sizes.append(batch["instance"][0].image.shape[:2]))
    assert any(h != w for h, w in sizes)
    assert all(h % 16 == 0 and w % 16 == 0 for h, w in sizes) or backbone != "tiny-flux"


def test_square_photos_at_batch_1_train_exactly_as_without_buckets(tmp_path):
    """The bucketed path reduces to the recipe's: square photos land in the square bucket, and a batch of one
    draws nothing more — the same LoRA bit for bit (with buckets off the loop is untouched)."""
    cfg = dict(KW, subjects=[str(SAMPLES / "dog6"), str(SAMPLES / "cat2")], train_batch_size=1)
    train(TrainConfig(output_dir=str(tmp_path / "off"), **cfg))
    train(TrainConfig(output_dir=str(tmp_path / "on"), aspect_buckets=True, **cfg))
    assert _same(_lora(tmp_path / "on"), _lora(tmp_path / "off"))


def test_resume_refuses_switching_buckets(varied, tmp_path):
    cfg = dict(KW, subjects=varied, max_train_steps=2, checkpointing_steps=1)
    train(TrainConfig(output_dir=str(tmp_path), aspect_buckets=True, **cfg))
    with pytest.raises(MudiError, match="aspect_buckets: True → False"):
        train(TrainConfig(output_dir=str(tmp_path), resume_from_checkpoint="latest", **{**cfg, "max_train_steps": 3}))
