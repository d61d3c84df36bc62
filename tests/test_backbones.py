"""Contract test of the Backbone Protocol over every registered tiny family, plus registry errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mudi.adapters.base import Backbone
from mudi.adapters.registry import TINY_BACKBONES, load_backbone
from mudi.adapters.tiny_backbones import TINY_RESOLUTION
from mudi.errors import MudiError

_CACHE: dict = {}


def _bb(name):
    if name not in _CACHE:
        _CACHE[name] = load_backbone(name)
    return _CACHE[name]


@pytest.fixture(params=TINY_BACKBONES)
def bb(request):
    backbone = _bb(request.param)
    backbone.registry_name = request.param
    return backbone


def test_protocol_and_shapes(bb):
    assert isinstance(bb, Backbone)
    assert bb.family in ("sd15", "sd2", "sdxl", "flux")
    assert bb.vae_scale_factor == 8
    assert bb.latent_channels == 4
    assert bb.denoiser is (bb.pipeline.transformer if bb.family == "flux" else bb.pipeline.unet)
    names = {n.rsplit(".", 1)[-1] for n, _ in bb.denoiser.named_modules()}
    for t in bb.lora_target_modules():
        assert t.split(".")[0] in names, t
    x = torch.rand(2, 3, TINY_RESOLUTION, TINY_RESOLUTION, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        lat = bb.encode_images(x)
        assert lat.shape == (2, 4, TINY_RESOLUTION // 8, TINY_RESOLUTION // 8)
        assert bb.decode_latents(lat).shape == x.shape
        # the VAE scaling (and FLUX shift) is applied: undoing it gives the raw posterior mean
        raw = bb.pipeline.vae.encode(x).latent_dist.mean
        shift = getattr(bb.pipeline.vae.config, "shift_factor", None) or 0.0
        torch.testing.assert_close(lat, (raw - shift) * bb.pipeline.vae.config.scaling_factor)
    text = bb.encode_prompts(["a photo of olis dog", "a photo of hta cat"])
    assert text["prompt_embeds"].shape[0] == 2
    if bb.family in ("sdxl", "flux"):
        assert text["pooled_prompt_embeds"].shape == (2, 32)


def test_initial_noise_reproduces_pipeline_draws(bb):
    kw = dict(prompt="a photo of olis dog", num_inference_steps=3, height=TINY_RESOLUTION, width=TINY_RESOLUTION,
              output_type="np")
    a = bb.pipeline(generator=torch.Generator().manual_seed(7), **kw).images
    z = bb.initial_noise(1, TINY_RESOLUTION, TINY_RESOLUTION, generator=torch.Generator().manual_seed(7))
    assert z.shape == (1, 4, TINY_RESOLUTION // 8, TINY_RESOLUTION // 8)
    assert abs(float(z.std()) - 1) < 0.3
    b = bb.pipeline(latents=bb.to_pipeline_latents(z), **kw).images
    np.testing.assert_array_equal(a, b)
    c = bb.pipeline(latents=bb.to_pipeline_latents(z + 0.5), **kw).images
    assert not np.array_equal(a, c)  # the latents are really used


def test_pipeline_latents_layout(bb):
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    p = bb.to_pipeline_latents(z)
    if bb.family == "flux":
        assert p.shape == (2, 16, 16)  # 4x4 tokens of 2x2x4 values
        torch.testing.assert_close(bb.from_pipeline_latents(p, 64, 64), z)
    else:
        assert p is z


def test_first_step_signal_coefficient(bb):
    c = bb.first_step_signal_coefficient(50)
    if bb.family != "flux":  # FLUX uses SDXL's default schedule, which has these settings too
        s = bb.pipeline.scheduler
        assert s.config.beta_schedule == "scaled_linear" and s.config.steps_offset == 1
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    ab = torch.cumprod(1 - betas, 0)
    assert math.isclose(c, math.sqrt(float(ab[981])), rel_tol=1e-4)  # leading spacing, steps_offset=1: t0 = 981
    assert math.isclose(c, 0.0760, abs_tol=5e-4)
    assert bb.first_step_signal_coefficient(1000) < c  # more steps start later (t0 = 999)


def test_training_target_matches_objective(bb):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 8, 8, generator=g)
    eps = torch.randn(3, 4, 8, 8, generator=g)
    t = bb.sample_timesteps(3, torch.Generator().manual_seed(2))
    assert t.shape == (3,)
    noisy = bb.add_noise(x, eps, t)
    target = bb.training_target(x, eps, t)
    if bb.family == "flux":
        s = t.view(-1, 1, 1, 1)
        assert float(t.min()) > 0 and float(t.max()) <= 1
        torch.testing.assert_close(noisy, (1 - s) * x + s * eps)
        torch.testing.assert_close(target, eps - x)
    else:
        ab = bb.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        torch.testing.assert_close(noisy, ab.sqrt() * x + (1 - ab).sqrt() * eps)
        if bb.family == "sd2":
            torch.testing.assert_close(target, ab.sqrt() * eps - (1 - ab).sqrt() * x)
        else:
            assert torch.equal(target, eps)
    text = bb.encode_prompts(["a", "b", "c"])
    with torch.no_grad():
        pred = bb.predict(noisy, t, text)
    assert pred.shape == x.shape and torch.isfinite(pred).all()


def test_tiny_builds_are_bit_identical_and_leave_global_rng_alone(bb):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    again = load_backbone(bb.registry_name)
    assert torch.equal(torch.get_rng_state(), before)
    for (k1, v1), (k2, v2) in zip(bb.denoiser.state_dict().items(), again.denoiser.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


def test_registry_errors(tmp_path):
    with pytest.raises(MudiError, match="did you mean 'sdxl'"):
        load_backbone("sdx1")
    with pytest.raises(MudiError, match="takes no checkpoint"):
        load_backbone("tiny-sd", "some/model")
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(MudiError, match="StableDiffusionPipeline checkpoint.*not sdxl"):
        load_backbone("sdxl", str(tmp_path))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(MudiError, match="--backbone flux"):
        load_backbone("sd15", str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MudiError, match="no model_index.json"):
        load_backbone("sd15", str(tmp_path / "empty"))


def test_missing_hub_checkpoint_names_download_command(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MudiError, match="huggingface-cli download mudi-test/not-a-model") as e:
        load_backbone("sdxl", "mudi-test/not-a-model")
    assert "\n" not in str(e.value)
