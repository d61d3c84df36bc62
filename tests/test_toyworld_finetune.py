"""benchmarks/toyworld_finetune.py: continued training of a pretrained toy model's denoiser — resumable to the
same weights, refuses a work folder made with other settings, trains on two-object scenes only when asked, and
writes a pipeline that loads."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

SCRIPT = str(Path(__file__).parents[1] / "benchmarks" / "toyworld_finetune.py")


def _finetune(monkeypatch, source: Path, out: Path, *extra: str) -> None:
    argv = [SCRIPT, "--work", str(source / "work"), "--pipeline", str(source / "pipeline_fp32"), "--out", str(out),
            "--steps", "4", "--warmup", "2", "--score_every", "100", "--score_images", "1",
            "--checkpoint_every", "2", *extra]
    monkeypatch.setattr("sys.argv", argv)
    runpy.run_path(SCRIPT, run_name="__main__")


def _source_run(out: Path):
    """A tiny pretraining run (half its scenes with two objects) for the script to continue; its config."""
    import torch

    from mudi.toyworld import pretrain

    torch.set_num_threads(1)
    cfg = pretrain.PretrainConfig(num_images=32, vae_steps=2, vae_batch_size=4, steps=4, batch_size=4,
                                  warmup_steps=2, checkpoint_every=2, two_object_prob=0.5)
    pretrain.run(cfg, out)
    return cfg


def test_finetune_resumes_to_the_same_model_and_loads(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from mudi.toyworld import pretrain

    cfg = _source_run(tmp_path / "source")
    _finetune(monkeypatch, tmp_path / "source", tmp_path / "straight", "--two_object_only")

    real_save, calls = pretrain.atomic_save, []

    def crash_after_first_checkpoint(obj, path):
        real_save(obj, path)
        calls.append(path)
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(pretrain, "atomic_save", crash_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        _finetune(monkeypatch, tmp_path / "source", tmp_path / "resumed", "--two_object_only")
    assert torch.load(calls[0], weights_only=False)["step"] == 2
    monkeypatch.setattr(pretrain, "atomic_save", real_save)
    _finetune(monkeypatch, tmp_path / "source", tmp_path / "resumed", "--two_object_only")
    for name in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        a = load_file(tmp_path / "straight" / "pipeline_fp32" / name)
        b = load_file(tmp_path / "resumed" / "pipeline_fp32" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    unet = "unet/diffusion_pytorch_model.safetensors"
    source, tuned = (load_file(tmp_path / run / "pipeline_fp32" / unet) for run in ("source", "straight"))
    assert any(not torch.equal(source[k], tuned[k]) for k in source)  # it trained
    log = [json.loads(line) for line in (tmp_path / "straight" / "work" / "log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 0 and log[-1]["step"] == 4 and set(log[-1]["scores_seed1"]) == {"1", "2"}
    pipe = pretrain.load_toyworld_pipeline(tmp_path / "straight" / "pipeline")
    assert pipe.tokenizer.model_max_length == cfg.text_length
    for name in ("vae/config.json", "tokenizer/tokenizer_config.json", "model_index.json"):  # as pretraining writes
        written = (tmp_path / "straight" / "pipeline" / name).read_text()
        assert json.loads(written) == json.loads((tmp_path / "source" / "pipeline" / name).read_text()), name


def test_finetune_refuses_other_settings_and_draws_two_object_scenes_only(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from mudi.toyworld.world import sample_dataset

    _source_run(tmp_path / "source")
    _finetune(monkeypatch, tmp_path / "source", tmp_path / "ft", "--two_object_only")
    with pytest.raises(SystemExit, match="other settings"):
        _finetune(monkeypatch, tmp_path / "source", tmp_path / "ft")  # without --two_object_only
    with pytest.raises(SystemExit, match="other settings"):
        _finetune(monkeypatch, tmp_path / "source", tmp_path / "ft", "--two_object_only", "--stage", "5")
    _finetune(monkeypatch, tmp_path / "source", tmp_path / "ft5", "--two_object_only", "--stage", "5")
    unet = "pipeline_fp32/unet/diffusion_pytorch_model.safetensors"
    four, five = load_file(tmp_path / "ft" / unet), load_file(tmp_path / "ft5" / unet)
    assert any(not torch.equal(four[k], five[k]) for k in four)  # another stage draws other batches and noise
    pool = runpy.run_path(SCRIPT)["training_pool"]
    _, _, scenes = sample_dataset(32, 0, two_object_prob=0.5)
    counts = [len(s.objects) for s in scenes]
    assert set(counts) == {1, 2}
    assert [counts[i] for i in pool(scenes, True).tolist()] == [2] * counts.count(2)
    assert pool(scenes, False).tolist() == list(range(32))


def test_shared_step_schedule_and_batches():
    """The step the pretraining and the finetune share: warm-up then cosine to 10 %; batches drawn only from the
    pool, the same for the same (seed, stage, step), other for another stage; captions dropped to empty."""
    import math
    import types

    import torch

    from mudi.toyworld.denoiser_step import DenoiserData, cosine_lr, draw_batch

    assert cosine_lr(2.0, 0, 100, 10) == 2.0 * 0.1 * 1.0  # first warm-up step, cosine still at its top
    assert math.isclose(cosine_lr(2.0, 9, 100, 10), 2.0 * (0.1 + 0.45 * (1 + math.cos(math.pi * 0.09))))
    assert math.isclose(cosine_lr(2.0, 100, 100, 10), 0.2)  # decayed to 10 % of the peak
    mean = torch.arange(20, dtype=torch.float32)[:, None, None, None].expand(20, 4, 2, 2).clone()
    ids = torch.arange(20)[:, None].expand(20, 3).clone()
    pool = torch.tensor([3, 7, 11])
    data = DenoiserData(mean, torch.zeros_like(mean), 1.0, ids, torch.full((3,), -1), pool=pool)
    cfg = types.SimpleNamespace(seed=0, batch_size=64, caption_dropout_prob=0.25)
    b_ids, x0, noise, t = draw_batch(cfg, data, 1000, stage=4, step=7)
    assert set(x0[:, 0, 0, 0].long().tolist()) <= {3, 7, 11}  # zero posterior std: x0 is the image's index
    kept = b_ids[:, 0] != -1
    assert 0 < int((~kept).sum()) < 64 and torch.equal(b_ids[kept, 0], x0[kept, 0, 0, 0].long())
    again = draw_batch(cfg, data, 1000, stage=4, step=7)
    assert all(torch.equal(a, b) for a, b in zip((b_ids, x0, noise, t), again))
    assert not torch.equal(noise, draw_batch(cfg, data, 1000, stage=5, step=7)[2])
    assert int(t.min()) >= 0 and int(t.max()) < 1000
