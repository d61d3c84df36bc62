"""Region control (Mix-of-Show's regionally controllable sampling, "DB+Region"): the UNet cross-attention rewrite
at the processor level, one whole-image region = the plain pipeline (bit for bit on the UNet families, a stated
tolerance on the MMDiT ones), processors restored, the CLI and the benchmark's ``db-region`` method."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from mudi.adapters.registry import load_backbone
from mudi.cli import main as cli_main
from mudi.core.methods import METHODS
from mudi.data.subjects import load_subjects
from mudi.errors import MudiError
from mudi.sampling.images import _generators, _pipeline_call, generate_images
from mudi.sampling.regions import (
    RegionCrossAttnProcessor,
    Regions,
    box_masks,
    encode_region_prompts,
    make_regions,
    region_prompts,
    regions_applied,
    token_grid,
)
from mudi.sampling.regions_mmdit import FluxRegionProcessor, SD3RegionProcessor, joint_mask
from tests.test_benchmark import PAIR, _config, bench  # noqa: F401  (bench: the benchmark folder fixture)

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "mudi" / "samples"
PROMPT = "a photo of a dog and a cat"
SIZE = 64


def _call(bb, seeds=(7, 8)):
    """One pipeline call as ``generate_images`` makes it (CFG on: the pipeline batches [negative; positive])."""
    return _pipeline_call(bb, [PROMPT] * len(seeds), _generators(bb, seeds), None, "sticker, collage.", 2, None,
                          SIZE, SIZE)


def _processors(bb):
    return [getattr(m, "processor", None) for m in bb.denoiser.modules()]


# ------------------------------------------------------------------------------------------ the processor itself
def test_grid_and_box_masks():
    assert token_grid(64, 64, 64) == (8, 8) and token_grid(8, 32, 64) == (2, 4)
    with pytest.raises(MudiError, match="match no downscale"):
        token_grid(7, 64, 64)
    m = box_masks(torch.tensor([[[0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 1.0, 1.0], [0.6, 0.6, 0.61, 0.61]]]), 2, 2)
    assert m[0, 0].tolist() == [True, False, True, False] and m[0, 1].all()
    assert m[0, 2].tolist() == [False, False, False, True]  # smaller than a cell: the cell of its centre


def test_the_rewrite_is_global_outside_and_regional_inside():
    torch.manual_seed(0)
    attn = Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4).eval()
    inner = AttnProcessor2_0()
    n, seq = 2, 16  # two images; a 4x4 token grid of a 32x32 image
    hidden = torch.randn(2 * n, seq, 8)  # [negative; positive], as the pipeline batches them
    context = torch.randn(2 * n, 5, 6)
    left, right = torch.randn(1, 5, 6), torch.randn(1, 5, 6)
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 1.0], [0.25, 0.0, 1.0, 0.5]]] * n, dtype=torch.float64)
    proc = RegionCrossAttnProcessor(inner, Regions([left, right], boxes, 32, 32))
    with torch.no_grad():
        out = proc(attn, hidden, context)
        plain = inner(attn, hidden, context)
        regional = []
        for emb in (left, right):
            c = context.clone()
            c[n:] = emb.expand(n, -1, -1)
            regional.append(inner(attn, hidden, c))
    grid = box_masks(boxes[:1], 4, 4)[0]
    a, b = grid[0], grid[1]
    assert torch.equal(out[:n], plain[:n])  # the negative half stays global
    cond = out[n:]
    assert torch.equal(cond[:, ~(a | b)], plain[n:, ~(a | b)])  # outside every box: the global output, exactly
    assert torch.equal(cond[:, a & ~b], regional[0][n:, a & ~b])
    assert torch.equal(cond[:, b & ~a], regional[1][n:, b & ~a])
    both = a & b
    assert both.any()
    torch.testing.assert_close(cond[:, both], (regional[0][n:, both] + regional[1][n:, both]) / 2)  # averaged


def test_joint_mask_pattern():
    # FLUX order [text; image]: 2 global text tokens, one region of 1 token, a 1x2 image grid (region: the left)
    masks = torch.tensor([[[True, False]]])
    m = joint_mask(masks, 0, 1, 2, [1], text_first=True)[0, 0].int().tolist()
    assert m == [[1, 1, 0, 1, 1],   # global text: itself and every image token
                 [1, 1, 0, 1, 1],
                 [0, 0, 1, 1, 0],   # the region's text: itself and its image token
                 [0, 0, 1, 1, 1],   # image token in the region: the region's text and the image
                 [1, 1, 0, 1, 1]]   # image token outside: the global text and the image
    sd3 = joint_mask(masks, 0, 1, 2, [1], text_first=False)[0, 0]  # [image; text]: the same, reordered
    order = [3, 4, 0, 1, 2]
    assert torch.equal(sd3, torch.tensor(m, dtype=torch.bool)[order][:, order])


# ------------------------------------------------------------------------------------------- whole pipelines
def _plain_and_whole_image_region(bb, processor: type) -> tuple[np.ndarray, np.ndarray]:
    """The plain pipeline's images, and the same call with one region covering the image, prompted as the whole
    (the family's ``processor`` installed meanwhile)."""
    plain = _call(bb)
    regions = make_regions(bb, encode_region_prompts(bb, [PROMPT]), [[(0.0, 0.0, 1.0, 1.0)]] * 2, SIZE, SIZE)
    with regions_applied(bb, regions):
        assert any(isinstance(p, processor) for p in _processors(bb))
        whole = _call(bb)
    return plain, whole


@pytest.mark.parametrize("name", ["tiny-sd", "tiny-sd2", "tiny-sdxl"])
def test_one_whole_image_region_is_the_plain_pipeline_bit_for_bit(name):
    bb = load_backbone(name)
    before = _processors(bb)
    # the same attention call with the same embeddings, mixed as global·0 + region·1: the same code path
    plain, whole = _plain_and_whole_image_region(bb, RegionCrossAttnProcessor)
    assert torch.equal(torch.from_numpy(whole), torch.from_numpy(plain))
    # a regional prompt of its own changes the picture; afterwards every processor is the original again
    other = make_regions(bb, encode_region_prompts(bb, ["a photo of a red car"]), [[(0.0, 0.0, 0.5, 1.0)]] * 2,
                         SIZE, SIZE)
    with regions_applied(bb, other):
        changed = _call(bb)
    assert not np.array_equal(changed, plain)
    assert all(a is b for a, b in zip(_processors(bb), before))
    assert np.array_equal(_call(bb), plain)


@pytest.mark.parametrize("name", ["tiny-flux", "tiny-sd3"])
def test_mmdit_one_whole_image_region_matches_the_plain_pipeline(name):
    bb = load_backbone(name)
    before = _processors(bb)
    mmdit = FluxRegionProcessor if name == "tiny-flux" else SD3RegionProcessor
    plain, whole = _plain_and_whole_image_region(bb, mmdit)
    # the same mathematics, but the attention reduces over extra (masked) text tokens: not bit for bit.
    # Measured on CPU float32: tiny-flux 0, tiny-sd3 2.7e-6 (images in [0, 1]).
    np.testing.assert_allclose(whole, plain, rtol=0, atol=1e-4)
    other = make_regions(bb, encode_region_prompts(bb, ["a photo of a red car"]), [[(0.0, 0.0, 0.5, 1.0)]] * 2,
                         SIZE, SIZE)
    with regions_applied(bb, other):
        changed = _call(bb)
    assert np.abs(changed - plain).max() > 1e-3
    assert all(a is b for a, b in zip(_processors(bb), before)) and not bb.denoiser._forward_pre_hooks
    assert np.array_equal(_call(bb), plain)


def test_processors_are_restored_after_an_error():
    bb = load_backbone("tiny-sd")
    before = _processors(bb)
    regions = make_regions(bb, encode_region_prompts(bb, [PROMPT]), [[(0.0, 0.0, 1.0, 1.0)]] * 3, SIZE, SIZE)
    with pytest.raises(MudiError, match="denoiser batch"), regions_applied(bb, regions):
        _call(bb)  # two images for regions of three
    assert all(a is b for a, b in zip(_processors(bb), before))


def test_region_prompts_and_an_unsupported_denoiser():
    assert region_prompts("a photo of {subject}", ["olis corgi"]) == ["a photo of olis corgi"]
    assert region_prompts("as written", ["x", "y"]) == ["as written", "as written"]

    class Plain:
        family = "plain"
        denoiser = torch.nn.Linear(2, 2)

    regions = Regions([torch.zeros(1, 1, 1)], torch.zeros(1, 1, 4), 8, 8)
    with pytest.raises(MudiError, match="region control is implemented for UNet families"):
        with regions_applied(Plain(), regions):
            pass


def test_generate_images_with_region_control_and_no_init():
    bb = load_backbone("tiny-sd")
    subjects = load_subjects([SAMPLES / "dog6", SAMPLES / "cat2"])
    kw = dict(init="none", num_inference_steps=2, height=SIZE, width=SIZE, progress=False)
    plain = generate_images(bb, PROMPT, [3], **kw)
    region = generate_images(bb, PROMPT, [3], subjects, region_control=True, **kw)
    r = region[0]
    assert r.region_control and r.init == "none" and r.gamma == 0.0 and r.layout == "random"
    assert len(r.boxes_normalized) == 2 and not np.array_equal(r.image, plain[0].image)
    with pytest.raises(MudiError, match="region control needs the subjects"):
        generate_images(bb, PROMPT, [3], region_control=True, **kw)


# --------------------------------------------------------------------------------------------- CLI, benchmark
def test_cli_generate_region_control(tmp_path):
    out = tmp_path / "gen"
    rc = cli_main(["generate", "--backbone", "tiny-sd", "--subjects", str(SAMPLES / "dog6"), str(SAMPLES / "cat2"),
                   "--init", "none", "--region_control", "--region_prompt", "a photo of {subject}, in a garden",
                   "--num_images", "1", "--steps", "2", "--out", str(out)])
    assert rc == 0
    meta = json.loads((out / "0000_seed0.json").read_text())
    assert meta["region_control"] is True and meta["init"] == "none" and len(meta["boxes_xyxy"]) == 2
    assert (out / "init" / "0000_seed0_mask.png").is_file()  # the layout whose boxes the regions are


def test_db_region_method_in_the_benchmark(bench, tmp_path):  # noqa: F811
    assert METHODS["db-region"].label == "DB+Region" and METHODS["db-region"].composition == "none"
    out = tmp_path / "run"
    tables = _run_benchmark(bench, out)
    assert tables["methods"]["db-region"]["num_images"] == 1
    meta = json.loads((out / PAIR / "db-region" / "meta" / "p00_seed0.json").read_text())
    assert meta["region_control"] is True and meta["init"] == "none" and meta["negative_prompt"] is None
    assert len(meta["boxes_normalized"]) == 2
    assert "| DB+Region |" in (out / "results" / "results.md").read_text()


def _run_benchmark(bench_dir, out):
    from mudi.benchmark.runner import run_benchmark

    return run_benchmark(_config(bench_dir, out, methods=["db-region"], num_seeds=1))


def test_mudi_run_db_region_shares_dreamboths_lora(tmp_path):
    import yaml

    from tests.test_run import RUN

    run = {**RUN, "methods": ["dreambooth", "db-region"], "num_images": 1, "output_dir": str(tmp_path / "run"),
           "train": {**RUN["train"], "max_train_steps": 2, "checkpointing_steps": 2}}
    path = tmp_path / "run.in.yaml"
    path.write_text(yaml.safe_dump(run))
    assert cli_main(["run", str(path)]) == 0
    gen = tmp_path / "run" / "generate"
    db = json.loads((gen / "dreambooth" / "p00" / "0000_seed0.json").read_text())
    region = json.loads((gen / "db-region" / "p00" / "0000_seed0.json").read_text())
    assert "region_control" not in db and region["region_control"] is True
    assert db["lora"][0]["path"] == region["lora"][0]["path"]  # one training: train/none
    assert region["init"] == "none" and len(region["boxes_xyxy"]) == 2


def test_an_unsupported_family_is_refused_before_any_model_loads():
    """FLUX.2, Qwen-Image and Z-Image have no region-control processor: each config says so at once."""
    from mudi.benchmark.config import BenchmarkConfig
    from mudi.pipeline import RunConfig
    from mudi.sampling.config import GenerateConfig

    for name in ("tiny-flux2", "qwen-image", "z-image"):
        with pytest.raises(MudiError, match="region control is implemented for"):
            GenerateConfig(backbone=name, region_control=True)
        with pytest.raises(MudiError, match="method db-region"):
            BenchmarkConfig(backbone=name, methods=["db-region"])
        with pytest.raises(MudiError, match="method db-region"):
            RunConfig(backbone=name, methods=["db-region"])
    GenerateConfig(backbone="tiny-sd3", region_control=True)  # supported families pass
    BenchmarkConfig(backbone="tiny-flux2", methods=["dreambooth"])  # and a method without it anywhere
