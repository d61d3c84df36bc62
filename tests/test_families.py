"""Issue 26's families (SD3.5, FLUX.2, Qwen-Image, Z-Image) on their tiny builds: train (Seg-Mix, prior, DCO) →
generate (init on and off) → evaluate through the CLI; the LoRA reloads in the family's own diffusers pipeline with
identical output; the ComfyUI export's keys; γ = 0 is the plain pipeline bit for bit. The Backbone contract itself
is tests/test_backbones.py (it picks up every ``tiny-*`` registry entry)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mudi.adapters.registry import load_backbone
from mudi.cli import main
from mudi.data.subjects import load_subjects
from mudi.errors import MudiError
from mudi.sampling.images import generate_images
from mudi.sampling.init import build_initial_latents, compose_init
from mudi.training.config import TrainConfig
from mudi.training.loop import train as run

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "mudi" / "samples"
SUBJECTS = [str(SAMPLES / "dog6"), str(SAMPLES / "cat2")]
FAMILIES = ["tiny-sd3", "tiny-flux2", "tiny-flux2-dev", "tiny-qwen-image", "tiny-z-image"]
#: The kohya-style names ComfyUI's ``model_lora_keys_unet`` maps for each family (comfy/lora.py): SD3 and FLUX
#: ``lora_transformer_<diffusers module, dots as _>`` (OneTrainer's format). A family missing here has no export and
#: says so.
COMFY_KEY = {"tiny-sd3": re.compile(r"^lora_transformer_transformer_blocks_\d+_attn_(to_[qkv]|to_out_0|add_[qkv]_proj"
                                    r"|to_add_out)\.(lora_down\.weight|lora_up\.weight|alpha)$"),
             # FLUX.1 (tiny-flux, issue 26's export for the older family): double blocks and single blocks
             "tiny-flux": re.compile(r"^lora_transformer_(single_)?transformer_blocks_\d+_attn_(to_[qkv]|to_out_0|add_[qkv]_proj"
                                     r"|to_add_out)\.(lora_down\.weight|lora_up\.weight|alpha)$"),
             # Qwen-Image: ComfyUI's model keeps diffusers' names; its generic kohya map reads lora_unet_<name>
             "tiny-qwen-image": re.compile(r"^lora_unet_transformer_blocks_\d+_attn_(to_[qkv]|to_out_0)"
                                           r"\.(lora_down\.weight|lora_up\.weight|alpha)$"),
             # Z-Image: ComfyUI maps diffusers' names (z_image_to_diffusers: layers and both refiners) as lycoris_<name>
             "tiny-z-image": re.compile(r"^lycoris_(layers|noise_refiner|context_refiner)_\d+_attention_(to_[qkv]|to_out_0)"
                                        r"\.(lora_down\.weight|lora_up\.weight|alpha)$")}
COMFY_PREFIX = {"tiny-sd3": "lora_transformer_", "tiny-qwen-image": "lora_unet_", "tiny-z-image": "lycoris_"}
_CACHE: dict = {}


def _bb(name):
    if name not in _CACHE:
        _CACHE[name] = load_backbone(name)
    return _CACHE[name]


@pytest.fixture(scope="module")
def prior_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("prior")
    rows = [{"id": {"a": "dog", "b": "cat"}}]
    for letter, src in (("a", "dog2"), ("b", "cat2")):
        shutil.copy(SAMPLES / src / "00.jpg", d / f"{letter}00.jpg")
        shutil.copy(SAMPLES / src / "masks" / "00.png", d / f"mask_{letter}00.png")
        rows.append({"id": letter, "file_name": f"{letter}00.jpg", "mask_path": f"mask_{letter}00.png",
                     "text": f"prior photo of a {'dog' if letter == 'a' else 'cat'}"})
    (d / "class_metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _images(pipe, seed=0):
    return pipe(prompt="A photo of olis corgi", num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(seed)).images


@pytest.mark.parametrize("name", FAMILIES)
def test_cli_train_with_prior_and_dco_generate_with_and_without_init_evaluate(name, tmp_path, prior_dir):
    lora, gen = tmp_path / "lora", tmp_path / "gen"
    assert main(["train", "--backbone", name, "--subjects", *SUBJECTS, "--max_train_steps", "2", "--rank", "2",
                 "--train_batch_size", "1", "--composition_prob", "1", "--loss", "dco",
                 "--with_prior_preservation", "--class_data_dir", str(prior_dir), "--report_to", "none",
                 "--device", "cpu", "--output_dir", str(lora), "--no-progress"]) == 0
    manifest = json.loads((lora / "mudi_subjects.json").read_text())
    assert manifest["backbone"] == name and manifest["family"] == _bb(name).family
    for init in ("mean_shifted", "none"):
        out = gen / init
        assert main(["generate", "--backbone", name, "--lora", str(lora), "--num_images", "2", "--init", init,
                     "--num_inference_steps", "2", "--device", "cpu", "--output_dir", str(out)]) == 0
        meta = json.loads(sorted(out.glob("0*.json"))[0].read_text())
        assert meta["init"] == init and "olis corgi" in meta["prompt"]
    shifted, plain = (sorted((gen / i).glob("0*.png")) for i in ("mean_shifted", "none"))
    assert len(shifted) == len(plain) == 2
    from PIL import Image

    assert not np.array_equal(np.asarray(Image.open(shifted[0])), np.asarray(Image.open(plain[0])))
    assert main(["evaluate", "--images", str(gen / "mean_shifted"), "--subjects", *SUBJECTS, "--detector",
                 "tiny-owlv2", "--embedders", "tiny-dinov2", "--text-scorers", "tiny-clip", "--threshold", "0",
                 "--device", "cpu"]) == 0
    summary = json.loads((gen / "mean_shifted" / "evaluation" / "summary.json").read_text())
    assert summary["num_images"] == 2 and "dnc_dino" in summary["means"]


@pytest.mark.parametrize("name", FAMILIES)
def test_lora_reloads_in_the_family_pipeline_and_exports_comfy_keys(name, tmp_path):
    out = tmp_path / "lora"
    trainer = run(TrainConfig(backbone=name, output_dir=str(out), max_train_steps=2, learning_rate=1e-2, rank=4,
                              train_batch_size=1, subjects=SUBJECTS, report_to="none", progress=False, device="cpu",
                              export="kohya" if name in COMFY_KEY else "none"))
    trained = _images(trainer.backbone.pipeline)
    fresh = load_backbone(name)
    base = _images(fresh.pipeline)
    fresh.pipeline.load_lora_weights(str(out))  # the family's own diffusers loader
    # bit-exact: the reloaded LoRA runs through the same peft layers and pipeline call as the trained one
    np.testing.assert_array_equal(_images(fresh.pipeline), trained)
    assert not np.array_equal(base, trained)
    assert type(trainer.backbone.pipeline).__name__ in (out / "README.md").read_text()
    from safetensors.torch import load_file

    saved = load_file(str(out / "pytorch_lora_weights.safetensors"))
    targets = trainer.backbone.lora_target_modules()
    assert saved and all(k.startswith("transformer.") for k in saved)
    assert all(any(f".{t}.lora_" in k for t in targets) for k in saved)  # the family's diffusers-example targets
    if name not in COMFY_KEY:
        with pytest.raises(MudiError, match="--export kohya is not available"):
            trainer.backbone.to_kohya(saved)
        return
    comfy = load_file(str(out / "pytorch_lora_weights_kohya.safetensors"))
    assert len(comfy) == len(saved) * 3 // 2  # down, up, alpha per layer
    bad = [k for k in comfy if not COMFY_KEY[name].match(k)]
    assert not bad, bad[:3]
    _assert_same_tensors(saved, comfy, COMFY_PREFIX[name])


def _assert_same_tensors(saved, comfy, prefix):
    """The export holds the diffusers file's tensors under ComfyUI's names: lora_A is down, lora_B is up."""
    for key, value in saved.items():
        module, _, kind = key[len("transformer."):].rpartition(".lora_")
        name = prefix + module.replace(".", "_")
        assert torch.equal(comfy[f"{name}.lora_{'down' if kind == 'A.weight' else 'up'}.weight"], value)


@pytest.mark.parametrize("name", FAMILIES)
def test_gamma_zero_is_the_plain_pipeline_and_the_shift_is_in_the_family_latents(name):
    bb = _bb(name)
    subjects = load_subjects(SUBJECTS)
    kw = dict(num_inference_steps=2, height=64, width=64, progress=False)
    plain = generate_images(bb, "a photo of a dog and a cat", [0, 1], init="none", **kw)
    zero = generate_images(bb, "a photo of a dog and a cat", [0, 1], subjects, gamma=0.0, **kw)
    shifted = generate_images(bb, "a photo of a dog and a cat", [0, 1], subjects, gamma=3.0, **kw)
    for a, b, c in zip(plain, zero, shifted):
        np.testing.assert_array_equal(a.image, b.image)
        assert not np.array_equal(a.image, c.image)
    comps = [compose_init(subjects, s, (64, 64))[0] for s in (0, 1)]
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    z, info = build_initial_latents(bb, comps, gens, 3.0, 28)
    expected = info["noise"] + 3.0 * info["signal_coefficient"] * info["init_latents"] * info["latent_mask"]
    torch.testing.assert_close(z, expected)
    # the sampler starts from pure noise (σ = 1), which the SNR-matched coefficient assumes
    sched = type(bb.pipeline.scheduler).from_config(bb.pipeline.scheduler.config)
    extra = {"mu": 0.5} if sched.config.get("use_dynamic_shifting") else {}
    sched.set_timesteps(bb.default_num_inference_steps, **extra)
    assert float(sched.sigmas[0]) == pytest.approx(1.0)


@pytest.mark.parametrize("name", FAMILIES)
def test_prompts_of_different_lengths_batch_as_each_alone(name):
    """The trainer encodes each prompt alone and pads variable-length text (Qwen-Image, Z-Image) to the longest,
    with the family's mask: the denoiser then sees each sample as if it had been alone."""
    from mudi.training.trainer import cat_text

    bb = _bb(name)
    texts = [bb.encode_prompts([p]) for p in ("a", "a photo of olis corgi and ult russian blue in a garden")]
    batch = {k: cat_text([t[k] for t in texts]) for k in texts[0]}
    if "prompt_embeds_mask" in batch:  # variable-length text: the short prompt really was padded
        assert not bool(batch["prompt_embeds_mask"].bool().all())
    s = bb.default_resolution // bb.vae_scale_factor
    x = torch.randn(2, bb.latent_channels, s, s, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.7, 0.3])
    with torch.no_grad():
        joint = bb.predict(x, t, batch)
        alone = torch.cat([bb.predict(x[i:i + 1], t[i:i + 1], texts[i]) for i in range(2)])
    torch.testing.assert_close(joint, alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("preset", ["attention", "diffusers"])
def test_flux1_exports_comfy_keys_too(preset, tmp_path):
    out = tmp_path / "lora"
    trainer = run(TrainConfig(backbone="tiny-flux", output_dir=str(out), max_train_steps=1, rank=2, train_batch_size=1,
                              subjects=SUBJECTS, report_to="none", progress=False, device="cpu", export="kohya",
                              lora_target_modules=[preset]))
    from safetensors.torch import load_file

    saved = load_file(str(out / "pytorch_lora_weights.safetensors"))
    comfy = load_file(str(out / "pytorch_lora_weights_kohya.safetensors"))
    assert len(comfy) == len(saved) * 3 // 2 and any("single_transformer_blocks" in k for k in comfy)
    bad = [k for k in comfy if not COMFY_KEY["tiny-flux"].match(k)]
    assert not bad, bad[:3]
    _assert_same_tensors(saved, comfy, "lora_transformer_")
    assert trainer.backbone.family == "flux"


def test_the_new_families_reach_the_demo_and_the_help_texts():
    from mudi.commands.demo import DemoConfig, demo_run_config
    from mudi.sampling.config import GenerateConfig

    for name in FAMILIES:
        assert demo_run_config(DemoConfig(backbone=name)).backbone == name
    for config in (TrainConfig, GenerateConfig):
        help_text = config.__dataclass_fields__["backbone"].metadata["help"]
        assert all(name in help_text for name in FAMILIES + ["sd3", "flux2", "qwen-image", "z-image"])


@pytest.mark.parametrize("name,pipeline_class", [("sd3", "StableDiffusion3Pipeline"), ("flux2", "Flux2KleinPipeline"),
                                                 ("flux2", "Flux2Pipeline"),
                                                 ("qwen-image", "QwenImagePipeline"), ("z-image", "ZImagePipeline")])
def test_real_checkpoints_fail_in_one_line_and_are_recognized(name, pipeline_class, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MudiError, match="huggingface-cli download mudi-test/not-a-model") as e:
        load_backbone(name, "mudi-test/not-a-model")
    assert "\n" not in str(e.value)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": pipeline_class}))
    with pytest.raises(MudiError, match=f"use --backbone {name} or"):  # a checkpoint of this family, given to sdxl
        load_backbone("sdxl", str(tmp_path))


@pytest.mark.parametrize("name", FAMILIES)
def test_gradient_checkpointing_and_cached_latents_train_the_same_lora(name, tmp_path):
    from safetensors.torch import load_file

    kw = dict(backbone=name, max_train_steps=1, rank=2, train_batch_size=2, subjects=SUBJECTS, report_to="none",
              progress=False, device="cpu", learning_rate=1e-2)
    run(TrainConfig(output_dir=str(tmp_path / "a"), **kw))
    run(TrainConfig(output_dir=str(tmp_path / "b"), gradient_checkpointing=True, cache_latents=True, **kw))
    a, b = (load_file(str(tmp_path / d / "pytorch_lora_weights.safetensors")) for d in "ab")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny-sd3", "tiny-flux2", "tiny-qwen-image", "tiny-z-image"])
def test_mudi_merge_concatenates_two_lora_of_the_family(name, tmp_path):
    for s in SUBJECTS:
        assert main(["train", "--backbone", name, "--subjects", s, "--composition", "none", "--max_train_steps", "1",
                     "--rank", "2", "--report_to", "none", "--device", "cpu", "--no-progress",
                     "--output_dir", str(tmp_path / Path(s).name)]) == 0
    out = tmp_path / "merged"
    assert main(["merge", "--backbone", name, "--lora", *(str(tmp_path / Path(s).name) for s in SUBJECTS),
                 "--method", "concat", "--device", "cpu", "--output_dir", str(out)]) == 0
    fresh = load_backbone(name)
    base = _images(fresh.pipeline)
    fresh.pipeline.load_lora_weights(str(out))  # the merged file is the family's diffusers format too
    assert not np.array_equal(_images(fresh.pipeline), base)
