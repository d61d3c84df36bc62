"""Training hooks of modular customization and iterative training: LoRAs fused into the base before a new LoRA
trains on top (the KL reference is then the fused model), and fixed relative sizes per subject (Appendix C.1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mudi.adapters.registry import load_backbone
from mudi.data.subjects import load_subjects
from mudi.errors import MudiError
from mudi.training.config import TrainConfig
from mudi.training.data import SampleSource
from mudi.training.loop import train
from mudi.training.trainer import LoraTrainer
from tests.helpers import make_subject_dir

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "mudi" / "samples"
SUBJECTS = [str(SAMPLES / "dog6"), str(SAMPLES / "cat2")]
KW = dict(backbone="tiny-sd", subjects=SUBJECTS, rank=4, report_to="none", progress=False, device="cpu",
          learning_rate=1e-2, seed=3, checkpointing_steps=1000)


def _denoise(unet, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 8, 8, generator=g)
    text = torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([500]), encoder_hidden_states=text).sample


def test_base_loras_are_fused_and_are_the_kl_reference(tmp_path):
    first = tmp_path / "first"
    train(TrainConfig(output_dir=str(first), max_train_steps=2, **KW))
    ref = load_backbone("tiny-sd")
    ref.pipeline.load_lora_weights(str(first))
    expected = _denoise(ref.pipeline.unet)
    trainer = LoraTrainer(TrainConfig(output_dir=str(tmp_path / "second"), base_lora=[str(first)], kl_weight=1.0,
                                      **KW))
    unet = trainer.accelerator.unwrap_model(trainer.model)
    unet.disable_adapters()  # the new LoRA off: the fused model
    try:
        torch.testing.assert_close(_denoise(unet), expected, rtol=1e-4, atol=1e-5)
    finally:
        unet.enable_adapters()
    base = _denoise(load_backbone("tiny-sd").pipeline.unet)
    assert not torch.allclose(base, expected)  # the first LoRA really changed the model
    out = trainer.train_step(trainer.draw_batch())
    assert out["kl_loss"] == pytest.approx(0.0, abs=1e-8)  # new LoRA starts at B = 0: same as the fused model


def test_a_base_lora_of_another_family_is_refused(tmp_path):
    other = tmp_path / "xl"
    train(TrainConfig(output_dir=str(other), max_train_steps=1, **{**KW, "backbone": "tiny-sdxl"}))
    with pytest.raises(MudiError, match="trained for sdxl"):
        LoraTrainer(TrainConfig(output_dir=str(tmp_path / "o"), base_lora=[str(other)], **KW))


def test_fixed_relative_sizes_per_subject_in_training_compositions(tmp_path):
    folders = [make_subject_dir(tmp_path, name, ident, n=1, size=(96, 80)) for name, ident in (("a", "zwx"),
                                                                                              ("b", "qrv"))]
    subjects = load_subjects([str(f) for f in folders])
    cuts = [s.cutouts(max_side=256)[0] for s in subjects]  # one photo each: every composition uses it
    src = SampleSource(subjects, 256, composition_prob=1.0, relative_sizes=[2.0, 1.0])
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = src.compose(rng, int(rng.integers(2)))
        for k, box in enumerate(s.boxes_xyxy):  # caption order: the own subject first
            subject = s.subject if k == 0 else 1 - s.subject
            h, w = cuts[subject].size_hw
            m = 32 * 256 // 1024  # the authors' 32 px margin at 1024, scaled with the 256 px canvas
            max_factor = min((256 / 2 - m) / w, (256 - m) / h)
            scale = [1.0, 0.5][subject]  # s = r / max(r): the authors' factor = max_factor * s
            assert (box[3] - box[1], box[2] - box[0]) == (int(h * max_factor * scale), int(w * max_factor * scale))


def test_relative_size_from_subject_yaml(tmp_path):
    a = make_subject_dir(tmp_path, "big", "zwx")
    b = make_subject_dir(tmp_path, "small", "qrv")
    (b / "subject.yaml").write_text((b / "subject.yaml").read_text() + "relative_size: 0.5\n")
    trainer = LoraTrainer(TrainConfig(output_dir=str(tmp_path / "o"), **{**KW, "subjects": [str(a), str(b)]}))
    assert trainer.instances.relative_sizes == [1.0, 0.5]
    (b / "subject.yaml").write_text((b / "subject.yaml").read_text().replace("0.5", "-1"))
    with pytest.raises(MudiError, match="relative_size"):
        load_subjects([str(b)])
