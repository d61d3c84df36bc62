"""`mudi generate` on tiny backbones: γ = 0 / --init none reproduce the plain pipeline, the init's latent
effect, explicit boxes, FLUX packing, LoRA loading and an in-process CLI run writing every output."""

import json
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mudi.adapters.registry import load_backbone
from mudi.cli import main as cli_main
from mudi.core.geometry import mask_to_box, normalized_to_pixel_box
from mudi.core.init_latents import masked_correlation
from mudi.data.subjects import load_subjects
from mudi.sampling.images import _generators, _pipeline_call, generate_images, resolve_prompt
from mudi.sampling.init import build_initial_latents, compose_init

SAMPLES = Path(str(files("mudi") / "samples"))
FAMILIES = ["tiny-sd", "tiny-sdxl", "tiny-flux"]
SIZE = 64


@pytest.fixture(scope="module")
def subjects():
    subs = load_subjects([SAMPLES / "dog6", SAMPLES / "cat2"])
    for s in subs:
        s.cutouts(max_side=SIZE)
    return subs


@pytest.fixture(scope="module", params=FAMILIES)
def backbone(request):
    return load_backbone(request.param)


def _plain(bb, prompt, seeds, steps=2):
    """The unmodified diffusers pipeline with one generator per seed."""
    kwargs = dict(prompt=[prompt] * len(seeds), num_inference_steps=steps, height=SIZE, width=SIZE,
                  generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="np")
    if bb.family != "flux":
        kwargs["negative_prompt"] = ["sticker, collage."] * len(seeds)
    images = bb.pipeline(**kwargs).images
    return [(np.asarray(im) * 255).round().clip(0, 255).astype(np.uint8) for im in images]


def test_gamma_zero_and_init_none_reproduce_the_plain_pipeline(backbone, subjects):
    seeds = [7, 8]
    plain = _plain(backbone, "a photo of a dog and a cat", seeds)
    zero = generate_images(backbone, "a photo of a dog and a cat", seeds, subjects, gamma=0.0, num_inference_steps=2,
                           height=SIZE, width=SIZE, batch_size=2, progress=False)
    none = generate_images(backbone, "a photo of a dog and a cat", seeds, init="none", num_inference_steps=2,
                           height=SIZE, width=SIZE, batch_size=2, progress=False)
    shifted = generate_images(backbone, "a photo of a dog and a cat", seeds, subjects, gamma=3.0,
                              num_inference_steps=2, height=SIZE, width=SIZE, batch_size=2, progress=False)
    for k in range(2):
        # bit-exact: gamma 0 passes the same seeded noise through the pipeline's own latents= path
        assert np.array_equal(zero[k].image, plain[k]) and np.array_equal(none[k].image, plain[k])
        assert not np.array_equal(shifted[k].image, plain[k])
    assert zero[0].composition is not None and none[0].composition is None and none[0].gamma == 0.0


def test_initial_latents_are_the_mean_shift_and_grow_with_gamma(backbone, subjects):
    seeds = [1, 2, 3]
    comps = [compose_init(subjects, s, (SIZE, SIZE))[0] for s in seeds]
    gens = lambda: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    noise, info0 = build_initial_latents(backbone, comps, gens(), 0.0, 30)
    assert noise.shape == (3, backbone.latent_channels, SIZE // 8, SIZE // 8)
    assert torch.equal(noise, backbone.initial_noise(3, SIZE, SIZE, gens()))
    coef = info0["signal_coefficient"]
    assert 0.05 < coef < 0.1  # SDXL-like first-step survival (FLUX: the SNR-matched equivalent)
    corr_in, corr_out = [], []
    for gamma in (0.5, 1.0, 2.0, 4.0, 8.0):
        z, info = build_initial_latents(backbone, comps, gens(), gamma, 30)
        E, M = info["init_latents"], info["latent_mask"]
        assert M.shape == (3, 1, SIZE // 8, SIZE // 8) and 0 < M.mean() < 1
        for c, m in zip(comps, M):  # the latent mask is the union mask of x_init on the latent grid
            area = torch.nn.functional.avg_pool2d(torch.from_numpy(c.union_mask).float()[None], 8)[0]
            assert torch.equal(m[0], (area >= 0.5).float())
        torch.testing.assert_close(z, noise + gamma * coef * E * M)
        assert torch.equal(z[(M == 0).expand_as(z)], noise[(M == 0).expand_as(z)])
        corr_in.append(masked_correlation(z, E * M, M))
        corr_out.append(masked_correlation(z, E, M, inside=False))
    assert all(b > a for a, b in zip(corr_in, corr_in[1:])), corr_in
    assert max(abs(c) for c in corr_out) < 0.25  # pure noise outside the mask: no shift there


def test_flux_latents_are_packed(subjects):
    bb = load_backbone("tiny-flux")
    comps = [compose_init(subjects, s, (SIZE, SIZE))[0] for s in (0, 1)]
    z, _ = build_initial_latents(bb, comps, [torch.Generator().manual_seed(s) for s in (0, 1)], 2.0, 4)
    packed = bb.to_pipeline_latents(z)
    assert packed.shape == (2, (SIZE // 16) ** 2, 4 * bb.latent_channels)
    assert torch.equal(bb.from_pipeline_latents(packed, SIZE, SIZE), z)


def test_explicit_boxes_place_each_subject_where_asked(subjects):
    bb = load_backbone("tiny-sdxl")
    boxes = [(0.0, 0.25, 0.45, 1.0), (0.55, 0.0, 1.0, 0.6)]
    out = generate_images(bb, "x", [0, 1], subjects, gamma=2.0, boxes=boxes, num_inference_steps=1, height=SIZE,
                          width=SIZE, progress=False)
    for r in out:
        assert r.layout == "boxes"
        for i, box in enumerate(boxes):
            x0, y0, x1, y1 = normalized_to_pixel_box(box, (SIZE, SIZE))
            mx0, my0, mx1, my1 = mask_to_box(r.composition.masks[i])
            assert x0 <= mx0 and y0 <= my0 and mx1 <= x1 and my1 <= y1
            assert (mx1 - mx0 >= 0.9 * (x1 - x0)) or (my1 - my0 >= 0.9 * (y1 - y0))  # fills its box on one axis


def test_resolve_prompt_n_subjects_and_count_prefix():
    phrases = ["olis corgi", "hta chow chow", "pkd cat"]
    assert resolve_prompt("[V1], [V2] and [V3] in the jungle", phrases, True) == \
        "3 objects: olis corgi, hta chow chow and pkd cat in the jungle"
    assert resolve_prompt("", phrases[:2]) == "A photo of olis corgi and hta chow chow."
    assert resolve_prompt("3 animals: [V1]", phrases, True, "animals") == "3 animals: olis corgi"
    with pytest.raises(Exception, match=r"uses \[V4\]"):
        resolve_prompt("[V4]", phrases)


def test_cli_writes_images_sidecars_inits_and_grid(tmp_path):
    out = tmp_path / "gen"
    rc = cli_main(["generate", "--backbone", "tiny-sdxl", "--subjects", str(SAMPLES / "dog6"), str(SAMPLES / "cat2"),
                   str(SAMPLES / "dog2"), "--prompt", "[V1], [V2] and [V3] in the pool", "--count-prefix",
                   "--num_images", "3", "--batch_size", "2", "--steps", "2", "--seed", "5", "--out", str(out)])
    assert rc == 0
    stems = [f"{k:04d}_seed{5 + k}" for k in range(3)]
    for stem in stems:
        meta = json.loads((out / f"{stem}.json").read_text())
        assert meta["prompt"] == "3 objects: olis corgi, ult russian blue and hta chow chow in the pool"
        assert meta["gamma"] == 2.0 and meta["init"] == "mean_shifted" and meta["layout"] == "random"
        assert meta["negative_prompt"] == "sticker, collage." and meta["backbone"] == "tiny-sdxl"
        assert len(meta["boxes_xyxy"]) == 3 and meta["versions"]["torch"]
        img = np.asarray(Image.open(out / f"{stem}.png"))
        assert img.shape == (SIZE, SIZE, 3)
        assert (out / "init" / f"{stem}.png").is_file() and (out / "init" / f"{stem}_mask.png").is_file()
    assert (out / "grid" / "grid.png").is_file() and (out / "generate_config.yaml").is_file()
    assert sorted(p.name for p in out.glob("*.png")) == [f"{s}.png" for s in stems]


def test_cli_layout_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "layout.json"
    bad.write_text(json.dumps({"olis": [0, 0, 0.5, 1]}))
    rc = cli_main(["generate", "--backbone", "tiny-sd", "--subjects", str(SAMPLES / "dog6"), str(SAMPLES / "cat2"),
                   "--layout", str(bad), "--steps", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "layout.json: no box for subject(s)" in err and len(err.strip().splitlines()) == 1
    rc = cli_main(["generate", "--backbone", "tiny-sd", "--prompt", "a dog", "--out", str(tmp_path / "o")])
    assert rc == 2 and "needs the subjects' segmented reference images" in capsys.readouterr().err


def test_lora_with_subjects_file_is_loaded_and_weighted(tmp_path, subjects):
    from peft import LoraConfig

    trained = load_backbone("tiny-sd")
    torch.manual_seed(0)
    trained.denoiser.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=trained.lora_target_modules(),
                                            init_lora_weights=False))
    from peft.utils import get_peft_model_state_dict

    lora_dir = tmp_path / "lora"
    trained.save_lora(str(lora_dir), get_peft_model_state_dict(trained.denoiser))
    (lora_dir / "mudi_subjects.json").write_text(json.dumps({"subjects": [
        {"name": s.name, "identifier": s.identifier, "phrase": s.phrase, "path": str(s.root)} for s in subjects]}))
    common = ["generate", "--backbone", "tiny-sd", "--prompt", "[V1] and [V2]", "--num_images", "1", "--steps", "2"]
    assert cli_main([*common, "--subjects", str(SAMPLES / "dog6"), str(SAMPLES / "cat2"),
                     "--out", str(tmp_path / "base")]) == 0
    # with the LoRA, the subjects (phrases and init images) come from its mudi_subjects.json
    assert cli_main([*common, "--lora", str(lora_dir), "--out", str(tmp_path / "lora1")]) == 0
    assert cli_main([*common, "--lora", str(lora_dir), "--lora_weights", "0", "--out", str(tmp_path / "lora0")]) == 0
    read = lambda d: np.asarray(Image.open(tmp_path / d / "0000_seed0.png"))  # noqa: E731
    assert not np.array_equal(read("base"), read("lora1"))
    # bit-exact: a LoRA at weight 0 adds exactly 0.0 in every adapted layer
    assert np.array_equal(read("base"), read("lora0"))
    meta = json.loads((tmp_path / "lora1" / "0000_seed0.json").read_text())
    assert meta["prompt"] == "olis corgi and ult russian blue"
    assert meta["lora"][0]["weight"] == 1.0 and meta["subjects"] == [s.name for s in subjects]


@pytest.mark.parametrize("name", ["tiny-sdxl", "tiny-flux"])
def test_the_shift_survives_sampling(name, subjects):
    """The composition is still in the sampler's *final* latents, more so for larger γ. For FLUX (first sigma
    1, where forward noising would erase any shift) this shows the SNR-matched coefficient at work."""
    bb = load_backbone(name)
    seeds = list(range(6))
    comps = [compose_init(subjects, s, (SIZE, SIZE))[0] for s in seeds]
    _, ref = build_initial_latents(bb, comps, _generators(bb, seeds), 1.0, 4)
    E, M = ref["init_latents"], ref["latent_mask"]
    corr = []
    for gamma in (0.0, 1.0, 3.0):
        z, _ = build_initial_latents(bb, comps, _generators(bb, seeds), gamma, 4)
        out = _pipeline_call(bb, ["a photo"] * 6, _generators(bb, seeds), z, None, 4, None, SIZE, SIZE, "latent")
        if bb.family == "flux":
            out = bb.from_pipeline_latents(out, SIZE, SIZE)
        corr.append(masked_correlation(out.float(), E * M, M))
    assert corr[0] < corr[1] < corr[2], corr
    if name == "tiny-flux":  # tiny FLUX's VAE latents are large enough (std ~0.45) for a strong effect
        assert corr[2] - corr[0] > 0.2, corr


def test_lora_subjects_from_one_benchmark_pair_folder(benchmark_dir):
    """`mudi train` on a benchmark pair folder lists that folder for both subjects; it is read once."""
    from mudi.data.manifests import subjects_of_manifest

    pair = benchmark_dir / "pairs" / "actionfigure_2_and_dog0"
    if not pair.is_dir():
        pytest.skip(f"{pair} not found")
    rows = [{"name": "dog0", "identifier": "hta", "path": str(pair)},
            {"name": "actionfigure_2", "identifier": "olis", "path": str(pair)}]
    subs = subjects_of_manifest(rows)
    assert [s.identifier for s in subs] == ["hta", "olis"]
    assert [s.phrase for s in subs] == ["hta corgi", "olis harry potter toy"]


def test_cli_relative_sizes(tmp_path):
    out = tmp_path / "rel"
    assert cli_main(["generate", "--backbone", "tiny-sd", "--subjects", str(SAMPLES / "dog6"), str(SAMPLES / "cat2"),
                     "--relative-sizes", "1", "2", "--num_images", "2", "--steps", "1", "--out", str(out),
                     "--segmix.scale", "height"]) == 0  # height: exact height ratios (fit: the authors' factor)
    for k in range(2):
        meta = json.loads((out / f"{k:04d}_seed{k}.json").read_text())
        h = [b[3] - b[1] for b in meta["boxes_xyxy"]]
        assert meta["layout"] == "relative" and meta["relative_sizes"] == [1.0, 2.0]
        assert h[1] / h[0] == pytest.approx(2.0, rel=0.1)


def test_skip_existing_resumes_a_generation(tmp_path):
    out = tmp_path / "g"
    argv = ["generate", "--backbone", "tiny-sd", "--subjects", str(SAMPLES / "dog6"), str(SAMPLES / "cat2"),
            "--num_images", "3", "--batch_size", "2", "--steps", "2", "--device", "cpu", "--output_dir", str(out)]
    assert cli_main(argv) == 0
    first = {p.name: np.asarray(Image.open(p)).astype(int) for p in out.glob("0*.png")}
    (out / "0001_seed1.png").unlink()
    stamp = (out / "0000_seed0.png").stat().st_mtime_ns
    assert cli_main(argv + ["--skip_existing"]) == 0
    assert (out / "0000_seed0.png").stat().st_mtime_ns == stamp  # kept, not made again
    again = {p.name: np.asarray(Image.open(p)).astype(int) for p in out.glob("0*.png")}
    assert again.keys() == first.keys()
    # the missing one is the same image, up to the float rounding of a batch of 1 instead of 2
    assert np.abs(again["0001_seed1.png"] - first["0001_seed1.png"]).max() <= 2
