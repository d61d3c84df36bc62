"""Contract test of the Backbone interface: every registered tiny family through the same assertions (no test
here asks which family it has), plus registry errors."""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pytest
import torch

from mudi.adapters import registry
from mudi.adapters.base import Backbone, check_image_size
from mudi.adapters.registry import load_backbone
from mudi.errors import MudiError

TINY = [n for n in registry.names("backbone") if n.startswith("tiny-")]
_CACHE: dict = {}


def _bb(name):
    if name not in _CACHE:
        _CACHE[name] = load_backbone(name)
    return _CACHE[name]


@pytest.fixture(params=TINY)
def bb(request):
    backbone = _bb(request.param)
    backbone.registry_name = request.param
    return backbone


def _size(bb):
    return bb.default_resolution


def test_members_describe_the_family(bb):
    assert isinstance(bb, Backbone)
    assert bb.pixel_multiple % bb.vae_scale_factor == 0 and _size(bb) % bb.pixel_multiple == 0
    assert bb.pipeline_class_name == type(bb.pipeline).__name__
    for name in bb.frozen_components:
        assert isinstance(getattr(bb.pipeline, name), torch.nn.Module), name
    assert any(getattr(bb.pipeline, n) is bb.denoiser for n in bb.frozen_components)
    names = {n.rsplit(".", 1)[-1] for n, _ in bb.denoiser.named_modules()}
    for t in bb.lora_target_modules():
        assert t.split(".")[0] in names, t
    with pytest.raises(MudiError, match="unknown .*preset"):
        bb.lora_target_modules("no-such-preset")
    assert bb.default_num_inference_steps >= 1
    assert bb.default_guidance_scale is None or bb.default_guidance_scale > 0
    if bb.supports_negative_prompt:  # mudi passes one only where the pipeline takes it
        assert "negative_prompt" in inspect.signature(type(bb.pipeline).__call__).parameters
    assert bb.prediction_type in ("epsilon", "v_prediction", "flow_matching")
    blocks = bb.repeated_blocks()
    assert blocks and all(any(p is q for q in bb.denoiser.parameters()) for b in blocks for p in b.parameters())


def test_encode_decode_and_prompts(bb):
    s, f = _size(bb), bb.vae_scale_factor
    x = torch.rand(2, 3, s, s, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        lat = bb.encode_images(x)
        assert lat.shape == (2, bb.latent_channels, s // f, s // f)
        assert bb.decode_latents(lat).shape == x.shape
        # the latents are the pipeline's own (its scaling, shift or batch-norm statistics, its patches): the image
        # the pipeline decodes from its latent output is decode_latents' image of them
        kw = dict(prompt="a photo", num_inference_steps=2, height=s, width=s)
        out = bb.pipeline(generator=torch.Generator().manual_seed(1), output_type="latent", **kw).images
        image = bb.pipeline(generator=torch.Generator().manual_seed(1), output_type="pt", **kw).images
        decoded = bb.decode_latents(bb.from_pipeline_latents(out, s, s))
        torch.testing.assert_close(decoded / 2 + 0.5, image.reshape(decoded.shape), atol=1e-5, rtol=1e-4)
        # and encode_images applies the inverse normalization: decoding the posterior mean's latents is the VAE's
        # own decoding of that mean
        vae = bb.pipeline.vae
        video = next(vae.parameters()).ndim == 5  # a video VAE (Qwen-Image's) encodes one-frame videos
        raw = vae.encode(x.unsqueeze(2) if video else x).latent_dist.mean
        own = vae.decode(raw).sample.clamp(-1, 1)
        torch.testing.assert_close(bb.decode_latents(lat), own.reshape(x.shape), atol=1e-5, rtol=1e-4)
        a = bb.encode_images(x, generator=torch.Generator().manual_seed(3))
        b = bb.encode_images(x, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b) and not torch.equal(a, lat)  # a posterior sample, reproducible from its seed
        params = bb.encode_distribution(x)
        assert params.shape == (2, 2 * bb.latent_channels, s // f, s // f)
        torch.testing.assert_close(bb.latents_from_distribution(params, torch.Generator().manual_seed(3)), a,
                                   rtol=0, atol=0)  # what a latent cache keeps gives the same sample
    text = bb.encode_prompts(["a photo of olis dog", "a photo of hta cat"])
    assert all(v.shape[0] == 2 for v in text.values()) and "prompt_embeds" in text


def test_initial_noise_reproduces_pipeline_draws(bb):
    s = _size(bb)
    kw = dict(prompt="a photo of olis dog", num_inference_steps=3, height=s, width=s, output_type="np")
    a = bb.pipeline(generator=torch.Generator().manual_seed(7), **kw).images
    z = bb.initial_noise(1, s, s, generator=torch.Generator().manual_seed(7))
    assert z.shape == (1, bb.latent_channels, s // bb.vae_scale_factor, s // bb.vae_scale_factor)
    assert abs(float(z.std()) - 1) < 0.3
    b = bb.pipeline(latents=bb.to_pipeline_latents(z), **kw).images
    # bit-exact: the backbone's initial noise is the pipeline's own draw from the same generator
    np.testing.assert_array_equal(a, b)
    c = bb.pipeline(latents=bb.to_pipeline_latents(z + 0.5), **kw).images
    assert not np.array_equal(a, c)  # the latents are really used


def test_pipeline_latents_round_trip(bb):
    s, f = _size(bb), bb.vae_scale_factor
    z = torch.randn(2, bb.latent_channels, s // f, s // f, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(bb.from_pipeline_latents(bb.to_pipeline_latents(z), s, s), z)


def test_first_step_signal_coefficient(bb):
    # every tiny family's (or, for flow matching, its reference) schedule is SDXL's scaled-linear one
    c = bb.first_step_signal_coefficient(50)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    ab = torch.cumprod(1 - betas, 0)
    assert math.isclose(c, math.sqrt(float(ab[981])), rel_tol=1e-4)  # leading spacing, steps_offset=1: t0 = 981
    assert math.isclose(c, 0.0760, abs_tol=5e-4)
    assert bb.first_step_signal_coefficient(1000) < c  # more steps start later (t0 = 999)


def test_training_target_matches_the_prediction_type(bb):
    g = torch.Generator().manual_seed(1)
    s = _size(bb) // bb.vae_scale_factor
    x = torch.randn(3, bb.latent_channels, s, s, generator=g)
    eps = torch.randn(3, bb.latent_channels, s, s, generator=g)
    t = bb.sample_timesteps(3, torch.Generator().manual_seed(2))
    assert t.shape == (3,)
    torch.testing.assert_close(t, bb.sample_timesteps(3, torch.Generator().manual_seed(2)))
    noisy = bb.add_noise(x, eps, t)
    target = bb.training_target(x, eps, t)
    if bb.prediction_type == "flow_matching":
        sig = t.view(-1, 1, 1, 1)
        assert float(t.min()) > 0 and float(t.max()) <= 1
        torch.testing.assert_close(noisy, (1 - sig) * x + sig * eps)
        torch.testing.assert_close(target, eps - x)
    else:
        ab = bb.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        torch.testing.assert_close(noisy, ab.sqrt() * x + (1 - ab).sqrt() * eps)
        if bb.prediction_type == "v_prediction":
            torch.testing.assert_close(target, ab.sqrt() * eps - (1 - ab).sqrt() * x)
        else:
            assert torch.equal(target, eps)
    text = bb.encode_prompts(["a", "b", "c"])
    with torch.no_grad():
        pred = bb.predict(noisy, t, text)
    assert pred.shape == x.shape and torch.isfinite(pred).all()


def test_image_size_rule(bb):
    m = bb.pixel_multiple
    check_image_size(bb, 2 * m, 3 * m)
    with pytest.raises(MudiError, match=f"not a multiple of {m}"):
        check_image_size(bb, 2 * m + m // 2, 2 * m)


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
    with pytest.raises(MudiError, match="unknown kind of model"):
        registry.names("backbones")


def test_register_and_unregister_at_run_time():
    registry.register("detector", "my-detector", lambda device="cpu", dtype=None: ("built", device))
    try:
        assert registry.load("detector", "my-detector", device="cpu", batch_size=3) == ("built", "cpu")
        with pytest.raises(MudiError, match="registered already"):
            registry.register("detector", "my-detector", "x:y")
    finally:
        registry.unregister("detector", "my-detector")
    with pytest.raises(MudiError, match="unknown detector 'my-detector'"):
        registry.load("detector", "my-detector")


def test_missing_hub_checkpoint_names_download_command(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MudiError, match="huggingface-cli download mudi-test/not-a-model") as e:
        load_backbone("sdxl", "mudi-test/not-a-model")
    assert "\n" not in str(e.value)
