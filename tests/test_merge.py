"""`mudi merge` on tiny backbones: the weighted sum and the concatenation of ranks equal diffusers' multi-adapter
result, gradient fusion keeps each LoRA's outputs on its own activations better than the weighted sum (measured),
kohya files round-trip, the CLI writes every output, and bad inputs fail in one line."""

import json
import shutil
from importlib.resources import files
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mudi.adapters.registry import load_backbone
from mudi.cli import main as cli_main
from mudi.data.manifests import KOHYA_FILE, LORA_FILE, SUBJECTS_FILE, read_lora_subjects
from mudi.errors import MudiError
from mudi.merging.config import REPORT_FILE, MergeConfig
from mudi.merging.folder import merge_to_folder
from mudi.merging.formats import LowRankUpdate, load_lora_updates, remove_adapters
from mudi.merging.methods import concat_ranks, factorize_low_rank, weighted_sum
from mudi.sampling.loras import apply_loras
from mudi.training.config import TrainConfig
from mudi.training.loop import train

SAMPLES = Path(str(files("mudi") / "samples"))
FAMILIES = ["tiny-sd", "tiny-sdxl", "tiny-flux"]


def _train(out: Path, backbone: str, subject: str, **kw) -> str:
    train(TrainConfig(backbone=backbone, subjects=[str(SAMPLES / subject)], composition="none", max_train_steps=2,
                      learning_rate=1e-2, rank=kw.pop("rank", 4), device="cpu", report_to="none", progress=False,
                      output_dir=str(out), **kw))
    return str(out)


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    """Per family two single-subject LoRAs: A (dog6, rank 4; SD's also exported to kohya) and B (cat2, rank 2,
    lora_alpha 4 — scale 2 — on to_k / to_v only, so layers differ in rank and in which LoRA has them); for tiny-sd
    also C (cat2 with A's recipe: two LoRAs of one trainer, of comparable strength)."""
    root = tmp_path_factory.mktemp("loras")
    out = {}
    for fam in FAMILIES:
        a = _train(root / f"{fam}-a", fam, "dog6", export="kohya" if fam != "tiny-flux" else "none")
        b = _train(root / f"{fam}-b", fam, "cat2", rank=2, lora_alpha=4, lora_target_modules=["to_k", "to_v"])
        out[fam] = (a, b)
    out["tiny-sd-c"] = _train(root / "tiny-sd-c", "tiny-sd", "cat2")
    return out


@pytest.fixture(scope="module")
def backbones():
    return {fam: load_backbone(fam) for fam in FAMILIES}


def _denoise(bb) -> torch.Tensor:
    """The denoiser's output on fixed noisy latents, timestep and prompt."""
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, bb.latent_channels, 8, 8, generator=g)
    timesteps = bb.sample_timesteps(2, torch.Generator().manual_seed(1))
    with torch.no_grad():
        return bb.predict(latents, timesteps, bb.encode_prompts(["a photo of olis corgi", "a photo of a cat"]))


def _with_loras(bb, paths, weights=None) -> torch.Tensor:
    names = apply_loras(bb, paths, weights)
    try:
        return _denoise(bb)
    finally:
        remove_adapters(bb, names)


@pytest.mark.parametrize("family", FAMILIES)
def test_weighted_sum_and_concat_equal_diffusers_multi_adapter(family, loras, backbones, tmp_path):
    bb, paths, weights = backbones[family], list(loras[family]), [0.7, 1.3]
    base = _denoise(bb)
    reference = _with_loras(bb, paths, weights)  # diffusers: two adapters, set_adapters(adapter_weights=...)
    effect = float((reference - base).abs().max())
    assert effect > 1e-4, "the LoRAs must change the output for this test to mean anything"
    for method in ("concat", "weighted_sum"):
        out = tmp_path / method
        result = merge_to_folder(MergeConfig(lora=paths, lora_weights=weights, method=method, backbone=family,
                                             output_dir=str(out)), backbone=bb)
        assert not (getattr(bb.denoiser, "peft_config", None) or {}), "the merge left adapters in the backbone"
        merged = _with_loras(bb, [str(out)])
        err = float((merged - reference).abs().max())
        print(f"{family} {method}: max |merged - diffusers| = {err:.2e} (LoRA effect {effect:.2e})")
        assert err <= 1e-5 * max(1.0, float(reference.abs().max())), (method, err)
        report = result.report
        assert report["residual"] < 1e-6
        ranks = {k: v["rank"] for k, v in report["layers"].items()}
        assert max(ranks.values()) == 6 and min(ranks.values()) == 4  # to_k/to_v: 4 + 2; to_q/to_out: A's 4


def test_truncated_weighted_sum_reports_its_residual(loras, backbones, tmp_path):
    bb, paths = backbones["tiny-sd"], list(loras["tiny-sd"])
    result = merge_to_folder(MergeConfig(lora=paths, method="weighted_sum", rank=2, backbone="tiny-sd",
                                         output_dir=str(tmp_path / "r2")), backbone=bb)
    layers = result.report["layers"]
    assert all(v["rank"] == 2 for v in layers.values())
    assert 0 < result.report["residual"] < 1 and all(0 < v["relative_residual"] < 1 for v in layers.values())
    with safe_open(str(tmp_path / "r2" / LORA_FILE), "pt") as f:
        assert {tuple(f.get_slice(k).get_shape())[0] for k in f.keys() if k.endswith("lora_A.weight")} == {2}


def _layer_inputs(bb, path: str, prompt: str, names: list[str]) -> dict[str, torch.Tensor]:
    """The raw inputs of ``names`` while ``path`` alone generates ``prompt`` (2 steps) — captured by this test's
    own hooks, independent of mudi.merging.fusion."""
    adapters = apply_loras(bb, [path])
    rows: dict[str, list] = {n: [] for n in names}
    hooks = [bb.denoiser.get_submodule(n).register_forward_pre_hook(
        lambda m, args, n=n: rows[n].append(args[0].reshape(-1, args[0].shape[-1]).double())) for n in names]
    try:
        with torch.no_grad():
            bb.pipeline(prompt=[prompt], num_inference_steps=2, height=64, width=64, output_type="latent",
                        generator=[torch.Generator().manual_seed(123)])
    finally:
        for h in hooks:
            h.remove()
        remove_adapters(bb, adapters)
    return {n: torch.cat(v) for n, v in rows.items()}


def _relative_off(own: dict, merged: dict, X: dict) -> float:
    """``sqrt(Σ_l ‖(ΔW_own − M) X‖² / Σ_l ‖ΔW_own X‖²)`` from raw activations."""
    off = sum(float(((own[n] - merged[n]) @ X[n].T).square().sum()) for n in own)
    return (off / sum(float((own[n] @ X[n].T).square().sum()) for n in own)) ** 0.5


def _deltas(bb, path: str) -> dict[str, torch.Tensor]:
    names, updates = load_lora_updates(bb, [path])
    remove_adapters(bb, names)
    return {k: u.delta().double() for k, u in updates[0].items()}


def test_fusion_reproduces_each_lora_better_than_the_weighted_sum(loras, backbones, tmp_path):
    bb, paths = backbones["tiny-sd"], [loras["tiny-sd"][0], loras["tiny-sd-c"]]
    fused = merge_to_folder(MergeConfig(lora=paths, method="fusion", backbone="tiny-sd", num_activation_samples=4,
                                        num_inference_steps=3, output_dir=str(tmp_path / "fusion")), backbone=bb)
    merge_to_folder(MergeConfig(lora=paths, method="concat", backbone="tiny-sd",
                                output_dir=str(tmp_path / "sum")), backbone=bb)
    res = fused.report["output_residuals"]
    print("output residual on each LoRA's own activations (fusion / fusion before factorising / weighted sum):",
          [(round(f, 4), round(e, 4), round(w, 4)) for f, e, w in zip(res["fusion"], res["fusion_exact"],
                                                                     res["weighted_sum"])])
    for k in range(2):
        assert res["fusion"][k] < res["weighted_sum"][k], k
    assert fused.report["residual"] < 1e-6  # ΔW* = (Σ ΔW_i G_i)(Σ G_i + εI)⁻¹ has rank ≤ Σ r_i: exact at rank 0

    # Measured again from the written files on fresh activations (an unseen seed), with this test's own hooks.
    own_updates, fusion, plain = [_deltas(bb, p) for p in paths], _deltas(bb, str(tmp_path / "fusion")), \
        _deltas(bb, str(tmp_path / "sum"))
    names = sorted(plain)
    measured = []
    for k, (path, prompt) in enumerate(zip(paths, ["a photo of olis corgi", "a photo of ult cat"])):
        X = _layer_inputs(bb, path, prompt, names)
        own = {n: own_updates[k].get(n, torch.zeros_like(plain[n])) for n in names}
        measured.append((_relative_off(own, fusion, X), _relative_off(own, plain, X)))
    print("measured from the files, unseen seed (fusion, weighted sum):", [tuple(round(v, 4) for v in m)
                                                                          for m in measured])
    assert all(f < w for f, w in measured)


def test_fusion_lowers_the_total_residual_of_unlike_loras(loras, backbones, tmp_path):
    """A (rank 4, every projection) and B (rank 2, scale 2, to_k / to_v only): fusion minimises the sum of the
    squared output residuals, which must come out below the weighted sum's."""
    bb, paths = backbones["tiny-sd"], list(loras["tiny-sd"])
    r = merge_to_folder(MergeConfig(lora=paths, method="fusion", backbone="tiny-sd", num_activation_samples=2,
                                    num_inference_steps=2, output_dir=str(tmp_path / "f")), backbone=bb).report
    res, norms = r["output_residuals"], r["output_norms"]
    total = {k: sum((v * n) ** 2 for v, n in zip(res[k], norms)) ** 0.5 for k in res}
    print("absolute output residuals, summed over the LoRAs:", {k: round(v, 6) for k, v in total.items()},
          "per LoRA (fusion, weighted sum):", list(zip(res["fusion"], res["weighted_sum"])))
    assert total["fusion"] < total["weighted_sum"]


def test_fusion_at_low_rank_reports_the_factorisation(loras, backbones, tmp_path):
    bb, paths = backbones["tiny-flux"], list(loras["tiny-flux"])
    r = merge_to_folder(MergeConfig(lora=paths, method="fusion", rank=2, backbone="tiny-flux", num_activation_samples=2,
                                    num_inference_steps=2, output_dir=str(tmp_path / "f2")), backbone=bb).report
    assert all(v["rank"] <= 2 for v in r["layers"].values()) and 0 < r["residual"] < 1
    res = r["output_residuals"]
    assert all(f >= e - 1e-9 for f, e in zip(res["fusion"], res["fusion_exact"]))  # truncation only adds


def test_kohya_file_round_trips(loras, backbones, tmp_path):
    bb, (a, b) = backbones["tiny-sd"], loras["tiny-sd"]
    kohya = str(Path(a) / KOHYA_FILE)
    with safe_open(kohya, "pt") as f:
        assert all(k.startswith("lora_unet_") for k in f.keys()) and any(k.endswith(".alpha") for k in f.keys())
    names, (from_diffusers, from_kohya) = load_lora_updates(bb, [str(Path(a) / LORA_FILE), kohya])
    remove_adapters(bb, names)
    assert from_diffusers.keys() == from_kohya.keys() and len(from_kohya) == 32
    for k in from_diffusers:
        torch.testing.assert_close(from_kohya[k].delta(), from_diffusers[k].delta(), rtol=1e-6, atol=1e-8)
    # a kohya input merges like its diffusers original
    for name, first in (("d", a), ("k", kohya)):
        merge_to_folder(MergeConfig(lora=[first, b], method="concat", backbone="tiny-sd",
                                    output_dir=str(tmp_path / name)), backbone=bb)
    torch.testing.assert_close(_with_loras(bb, [str(tmp_path / "k")]), _with_loras(bb, [str(tmp_path / "d")]),
                               rtol=1e-5, atol=1e-6)


def test_text_encoder_layers_are_left_out_with_a_warning(loras, backbones, tmp_path, caplog):
    bb, (a, _) = backbones["tiny-sd"], loras["tiny-sd"]
    state = load_file(str(Path(a) / LORA_FILE))
    g = torch.Generator().manual_seed(0)
    state["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = torch.randn(4, 32, generator=g)
    state["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight"] = torch.randn(32, 4, generator=g)
    save_file(state, str(tmp_path / "with_te.safetensors"))
    with caplog.at_level("WARNING"):
        merge_to_folder(MergeConfig(lora=[str(tmp_path / "with_te.safetensors")], backbone="tiny-sd",
                                    output_dir=str(tmp_path / "m")), backbone=bb)
    assert "text_encoder" in caplog.text and "leaves those out" in caplog.text
    with safe_open(str(tmp_path / "m" / LORA_FILE), "pt") as f:
        assert all(k.startswith("unet.") for k in f.keys())
    assert not (getattr(bb.pipeline.text_encoder, "peft_config", None) or {})


def test_cli_fusion_writes_every_output(loras, tmp_path, capsys):
    a, b = loras["tiny-sd"]
    out = tmp_path / "merged"
    rc = cli_main(["merge", "--lora", a, b, "--method", "fusion", "--rank", "4", "--backbone", "tiny-sd",
                   "--num-activation-samples", "2", "--steps", "2", "--out", str(out), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "by fusion" in printed and "weighted sum:" in printed
    for name in (LORA_FILE, SUBJECTS_FILE, REPORT_FILE, "merge_config.yaml"):
        assert (out / name).is_file(), name
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["method"] == "fusion" and [x["weight"] for x in report["loras"]] == [1.0, 1.0]
    assert set(report["output_residuals"]) == {"fusion", "fusion_exact", "weighted_sum"}
    assert {r["identifier"] for r in read_lora_subjects([str(out)])} == {"olis", "ult"}
    manifest = json.loads((out / SUBJECTS_FILE).read_text())
    assert manifest["family"] == "sd15" and manifest["backbone"] == "tiny-sd"
    config = yaml.safe_load((out / "merge_config.yaml").read_text())
    assert config["device"] == "cpu" and config["dtype"] == "float32" and config["method"] == "fusion"
    bb = load_backbone("tiny-sd")
    apply_loras(bb, [str(out)])  # loads into the plain pipeline
    # the backbone is taken from the inputs' manifests when not given; rerunning into the merge's folder is fine
    assert cli_main(["merge", "--lora", a, b, "--out", str(out), "--device", "cpu"]) == 0


def _error(argv, capsys) -> str:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mudi merge: error: "), err
    return err


def test_bad_inputs_fail_in_one_line(loras, tmp_path, capsys):
    a, b = loras["tiny-sd"]
    flux_a, _ = loras["tiny-flux"]
    out = ["--out", str(tmp_path / "out"), "--device", "cpu"]
    assert "different models" in _error(["merge", "--lora", a, flux_a, *out], capsys)
    assert "trained for flux" in _error(["merge", "--lora", flux_a, "--backbone", "tiny-sd", *out], capsys)
    junk = tmp_path / "junk.safetensors"
    save_file({"foo.weight": torch.zeros(3, 3)}, str(junk))
    assert str(junk) in _error(["merge", "--lora", a, str(junk), "--backbone", "tiny-sd", *out], capsys)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    assert ".safetensors" in _error(["merge", "--lora", str(tmp_path / "weights.bin"), *out], capsys)
    assert "no such LoRA" in _error(["merge", "--lora", str(tmp_path / "nope"), *out], capsys)
    assert "--method concat" in _error(["merge", "--lora", a, b, "--method", "concat", "--rank", "4", *out], capsys)
    assert "one per LoRA" in _error(["merge", "--lora", a, b, "--lora_weights", "1", *out], capsys)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(Path(b) / LORA_FILE, bare / LORA_FILE)  # a LoRA from elsewhere: no mudi_subjects.json
    assert "--prompts" in _error(["merge", "--lora", a, str(bare), "--method", "fusion", "--backbone", "tiny-sd",
                                  *out], capsys)
    assert "--backbone" in _error(["merge", "--lora", str(bare), *out], capsys)
    assert "overwrite" in _error(["merge", "--lora", a, b, "--out", a], capsys)


def test_a_failed_load_leaves_the_backbone_clean(loras, backbones, tmp_path):
    bb = backbones["tiny-sd"]
    with pytest.raises(MudiError, match="does not fit"):
        load_lora_updates(bb, [loras["tiny-sd"][0], loras["tiny-flux"][0]])
    assert not (getattr(bb.denoiser, "peft_config", None) or {})


def test_merge_arithmetic_with_conv_kernels_and_negative_weights():
    g = torch.Generator().manual_seed(0)
    conv = [{"c": LowRankUpdate(torch.randn(r, 5, 3, 3, generator=g), torch.randn(7, r, 1, 1, generator=g), s)}
            for r, s in ((3, 0.5), (2, 2.0))]
    weights = [1.5, -0.75]
    exact = sum(w * u["c"].delta() for w, u in zip(weights, conv))
    cat = concat_ranks(conv, weights)["c"].update
    assert cat.A.shape == (5, 5, 3, 3) and cat.B.shape == (7, 5, 1, 1)
    torch.testing.assert_close(cat.delta(), exact, rtol=1e-5, atol=1e-5)
    svd = weighted_sum(conv, weights)["c"]
    torch.testing.assert_close(svd.update.delta(), exact, rtol=1e-5, atol=1e-5)
    low = factorize_low_rank(cat.up(), cat.down(), 2)
    s = torch.linalg.svdvals(exact.double())
    assert abs(low.residual - float(s[2:].square().sum().sqrt())) < 1e-6 * float(s[0])
    assert abs(low.norm - float(torch.linalg.matrix_norm(exact.double()))) < 1e-6 * float(s[0])
