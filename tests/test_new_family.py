"""A fifth, made-up model family registered at run time — its adapter lives in this file only — goes through
train → generate → evaluate via the CLI entry points: proof that mudi's workflows know families only through
the Backbone interface."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor

from mudi.adapters import registry
from mudi.adapters.tiny_backbones import build_tiny_sd_pipeline
from mudi.cli import main
from mudi.errors import MudiError

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "mudi" / "samples"


class MadeUpBackbone:
    """A family mudi has never heard of: a UNet pipeline that wants image sides in multiples of 32, takes no
    negative prompt, samples in 3 steps at guidance 2 by default and trains only the UNet's query/value."""

    family = "madeup"
    pipeline_class_name = "StableDiffusionPipeline"
    default_resolution = 64
    pixel_multiple = 32
    supports_negative_prompt = False
    frozen_components = ("vae", "text_encoder", "unet")
    default_num_inference_steps = 3
    default_guidance_scale = 2.0
    prediction_type = "epsilon"
    training_guidance_scale = 1.0
    segmix_preset = "legacy"  # a family may pick any Seg-Mix geometry
    train_vae_in_float32 = False
    calls: list[dict] = []

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.vae_scale_factor = int(pipeline.vae_scale_factor)
        self.latent_channels = int(pipeline.unet.config.in_channels)
        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)

    @property
    def device(self):
        return next(self.pipeline.unet.parameters()).device

    @property
    def dtype(self):
        return next(self.pipeline.unet.parameters()).dtype

    @property
    def denoiser(self):
        return self.pipeline.unet

    def lora_target_modules(self, preset=None):
        if preset not in (None, "qv"):
            raise MudiError(f"unknown madeup LoRA target preset {preset!r}")
        return ["to_q", "to_v"]

    def save_lora(self, output_dir, lora_state_dict, lora_metadata=None):
        StableDiffusionPipeline.save_lora_weights(output_dir, unet_lora_layers=lora_state_dict,
                                                  unet_lora_adapter_metadata=lora_metadata, safe_serialization=True)

    def to_kohya(self, lora_state_dict):
        raise MudiError("the madeup family has no kohya format")

    def encode_images(self, pixels, generator=None):
        return self.latents_from_distribution(self.encode_distribution(pixels), generator)

    def encode_distribution(self, pixels):
        return self.pipeline.vae.encode(pixels.to(self.device, self.dtype)).latent_dist.parameters

    def latents_from_distribution(self, parameters, generator=None):
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        dist = DiagonalGaussianDistribution(parameters)
        z = dist.mean if generator is None else dist.sample(generator=generator)
        return z * self.pipeline.vae.config.scaling_factor

    def repeated_blocks(self):
        return []

    def decode_latents(self, latents):
        return self.pipeline.vae.decode(latents / self.pipeline.vae.config.scaling_factor).sample.clamp(-1, 1)

    def encode_prompts(self, prompts):
        with torch.no_grad():
            embeds, _ = self.pipeline.encode_prompt(list(prompts), device=self.device, num_images_per_prompt=1,
                                                    do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds}

    def initial_noise(self, batch_size, height, width, generator):
        f = self.vae_scale_factor
        return randn_tensor((batch_size, self.latent_channels, height // f, width // f), generator=generator,
                            device=self.device, dtype=self.dtype)

    def first_step_signal_coefficient(self, num_inference_steps):
        s = type(self.pipeline.scheduler).from_config(self.pipeline.scheduler.config)
        s.set_timesteps(num_inference_steps)
        return math.sqrt(float(s.alphas_cumprod[int(s.timesteps[0])]))

    def to_pipeline_latents(self, latents):
        return latents

    def from_pipeline_latents(self, latents, height, width):
        return latents

    def sample_timesteps(self, batch_size, generator):
        return torch.randint(0, 1000, (batch_size,), generator=generator)

    def add_noise(self, latents, noise, timesteps):
        return self.noise_scheduler.add_noise(latents, noise, timesteps)

    def training_target(self, latents, noise, timesteps):
        return noise

    def predict(self, noisy_latents, timesteps, text, denoiser=None):
        unet = denoiser if denoiser is not None else self.denoiser
        return unet(noisy_latents, timesteps, encoder_hidden_states=text["prompt_embeds"]).sample


def build_madeup(device="cpu", dtype=None):
    return MadeUpBackbone(_Spying(build_tiny_sd_pipeline("epsilon", device)))


class _Spying:
    """The pipeline, recording the keywords of every call (attribute access falls through to it)."""

    def __init__(self, pipe):
        self.__dict__["_pipe"] = pipe

    def __call__(self, *args, **kwargs):
        MadeUpBackbone.calls.append({k: v for k, v in kwargs.items() if k != "latents"})
        return self._pipe(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __setattr__(self, name, value):
        setattr(self._pipe, name, value)


@pytest.fixture
def madeup():
    registry.register("backbone", "tiny-madeup", build_madeup)
    MadeUpBackbone.calls.clear()
    yield "tiny-madeup"
    registry.unregister("backbone", "tiny-madeup")


def test_a_family_registered_at_run_time_trains_generates_and_evaluates(madeup, tmp_path):
    subjects = [str(SAMPLES / "dog6"), str(SAMPLES / "cat2")]
    lora = tmp_path / "lora"
    assert main(["train", "--backbone", madeup, "--subjects", *subjects, "--max_train_steps", "2", "--rank", "2",
                 "--report_to", "none", "--device", "cpu", "--output_dir", str(lora), "--no-progress"]) == 0
    manifest = json.loads((lora / "mudi_subjects.json").read_text())
    assert manifest["family"] == "madeup" and manifest["backbone"] == madeup
    assert "StableDiffusionPipeline" in (lora / "README.md").read_text()
    from safetensors.torch import load_file

    keys = load_file(str(lora / "pytorch_lora_weights.safetensors"))
    assert keys and all(("to_q" in k or "to_v" in k) for k in keys)  # the family's own LoRA targets

    gen = tmp_path / "gen"
    assert main(["generate", "--backbone", madeup, "--lora", str(lora), "--num_images", "2", "--device", "cpu",
                 "--output_dir", str(gen)]) == 0
    calls = [c for c in MadeUpBackbone.calls if c.get("height") == 64]
    assert calls and all(c["num_inference_steps"] == 3 and c["guidance_scale"] == 2.0 for c in calls)
    assert all("negative_prompt" not in c for c in calls)  # the family takes none
    meta = json.loads(sorted(gen.glob("0*.json"))[0].read_text())
    assert meta["init"] == "mean_shifted" and "olis corgi" in meta["prompt"]

    assert main(["evaluate", "--images", str(gen), "--subjects", *subjects, "--detector", "tiny-owlv2",
                 "--embedders", "tiny-dinov2", "--text-scorers", "tiny-clip", "--threshold", "0",
                 "--device", "cpu"]) == 0
    summary = json.loads((gen / "evaluation" / "summary.json").read_text())
    assert summary["num_images"] == 2 and "dnc_dino" in summary["means"]


def test_the_family_size_rule_is_the_backbones(madeup, tmp_path, capsys):
    rc = main(["generate", "--backbone", madeup, "--subjects", str(SAMPLES / "dog6"), "--init", "none",
               "--height", "48", "--width", "64", "--device", "cpu", "--output_dir", str(tmp_path / "g")])
    assert rc == 2
    assert "not a multiple of 32" in capsys.readouterr().err
