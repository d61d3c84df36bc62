"""Textual Inversion (issue 25, item 1): ``train_lora: false`` with ``train_modifier_tokens`` trains only a new token
embedding per subject in every text encoder of the family; the denoiser and every old embedding row stay bit for
bit; the folder holds the token files (no LoRA), which diffusers' ``load_textual_inversion`` reads where the
pipeline has it, and mudi's generate path loads (and unloads) on every family. Seg-Mix composes for it as for a
LoRA; ``ti`` is a benchmark method."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mudi.adapters import registry
from mudi.core.methods import METHODS
from mudi.errors import MudiError
from mudi.samples import SAMPLES_DIR
from mudi.sampling.images import _pipeline_call
from mudi.sampling.loras import check_lora_family, lora_path, loras_applied
from mudi.sampling.modifier_tokens import token_encoders, token_files
from mudi.training.config import TrainConfig
from mudi.training.loop import train
from tests.test_benchmark import PAIR, TINY, _config, bench  # noqa: F401 (bench: the fixture)

SUBJECTS = [str(SAMPLES_DIR / "dog6"), str(SAMPLES_DIR / "dog2")]
FAMILIES = ["tiny-sd", "tiny-sdxl", "tiny-flux", "tiny-sd3", "tiny-flux2", "tiny-qwen-image", "tiny-z-image"]


def _load(family: str):
    return registry.load_backbone(family, None, torch.device("cpu"), torch.float32)


def _ti_config(family: str, out: Path, **kw) -> TrainConfig:
    values = dict(backbone=family, subjects=SUBJECTS, output_dir=str(out), train_modifier_tokens=True,
                  train_lora=False, max_train_steps=2, learning_rate=1e-2, train_batch_size=1, resolution=32,
                  report_to="none", progress=False, device="cpu")
    return TrainConfig(**{**values, **kw})


def _image(backbone, prompt: str) -> np.ndarray:
    return _pipeline_call(backbone, [prompt], [torch.Generator().manual_seed(0)], None, None, 2, None, 32, 32)[0]


def _sizes(backbone) -> dict[str, tuple[int, int]]:
    return {k: (len(tok), enc.get_input_embeddings().weight.shape[0]) for k, tok, enc in token_encoders(backbone)}


@pytest.mark.parametrize("family", FAMILIES)
def test_textual_inversion_trains_only_the_new_rows_and_mudi_loads_them(family, tmp_path):
    bb = _load(family)
    encoders = token_encoders(bb)
    denoiser_before = {n: p.detach().clone() for n, p in bb.denoiser.named_parameters()}
    emb_before = {key: enc.get_input_embeddings().weight.detach().clone() for key, _, enc in encoders}
    others_before = {key: {n: p.detach().clone() for n, p in enc.named_parameters()
                           if p is not enc.get_input_embeddings().weight} for key, _, enc in encoders}
    trainer = train(_ti_config(family, tmp_path / "ti"), backbone=bb)

    assert all(torch.equal(p, denoiser_before[n]) for n, p in bb.denoiser.named_parameters())  # no LoRA, no change
    assert not any("lora_" in n for n, _ in bb.denoiser.named_parameters())
    for key, tok, enc in encoders:
        weight = enc.get_input_embeddings().weight
        old = emb_before[key].shape[0]
        assert torch.equal(weight[:old].to(emb_before[key].dtype), emb_before[key])  # every old row, bit for bit
        ids = [tok.convert_tokens_to_ids(t) for t in ("<olis>", "<hta>")]
        rows = next(r for r in trainer.tokens.rows if r.key == key)
        assert rows.ids == ids and rows.param.shape == (2, weight.shape[1])  # only (subjects, D) numbers train
        assert all(not torch.equal(rows.param[k], rows.initial[k]) for k in range(2)), key  # the new rows trained
        others = {n: p for n, p in enc.named_parameters() if p is not weight}
        # a causal LM's untied output head grows with the vocabulary (unused: the pipeline reads hidden states)
        assert all(torch.equal(p[:others_before[key][n].shape[0]], others_before[key][n]) for n, p in others.items())

    out = tmp_path / "ti"
    files = token_files(out)
    assert [f.name for f in files] == ["modifier_token_hta.safetensors", "modifier_token_olis.safetensors"]
    assert not (out / "pytorch_lora_weights.safetensors").exists()
    assert set(load_file(str(files[1]))) == {key for key, _, _ in encoders}
    card = (out / "README.md").read_text()
    assert "Textual Inversion" in card and "load_textual_inversion" in card and "load_lora_weights" not in card
    trained = _image(bb, "<olis> dog and <hta> dog")

    fresh = _load(family)
    sizes = _sizes(fresh)
    plain = _image(fresh, "olis dog and hta dog")
    check_lora_family([str(out)], family)  # a TI folder passes generate's checks
    with loras_applied(fresh, [str(out)]):  # mudi's generate path: the identifiers are written as the tokens
        got = _image(fresh, "olis dog and hta dog")
    np.testing.assert_allclose(got, trained, atol=1e-6)
    assert not np.array_equal(got, plain)  # the embeddings change the image
    assert _sizes(fresh) == sizes  # unloaded again: tokenizers and embedding matrices as they came
    np.testing.assert_array_equal(_image(fresh, "olis dog and hta dog"), plain)


@pytest.mark.parametrize("family", ["tiny-sd", "tiny-sdxl", "tiny-flux"])
def test_textual_inversion_files_reload_in_plain_diffusers(family, tmp_path):
    bb = _load(family)
    train(_ti_config(family, tmp_path / "ti"), backbone=bb)
    trained = _image(bb, "<olis> dog and <hta> dog")
    fresh = _load(family)
    for f in token_files(tmp_path / "ti"):  # the README's recipe: one load_textual_inversion per key
        state = load_file(str(f))
        for key, tok, enc in token_encoders(fresh):
            fresh.pipeline.load_textual_inversion(state[key], token=f"<{f.stem.split('_')[-1]}>", text_encoder=enc,
                                                  tokenizer=tok)
    np.testing.assert_allclose(_image(fresh, "<olis> dog and <hta> dog"), trained, atol=1e-6)


def test_seg_mix_composes_for_textual_inversion(tmp_path):
    cfg = _ti_config("tiny-sd", tmp_path / "ti", composition="segmix", composition_prob=1.0, train_batch_size=2)
    trainer = train(cfg, backbone=_load("tiny-sd"))
    batch = trainer.draw_batch(0)
    assert all(s.num_subjects == 2 for s in batch["instance"])
    assert all("olis" in s.prompt and "hta" in s.prompt for s in batch["instance"])
    metrics = [json.loads(line) for line in (tmp_path / "ti" / "metrics.jsonl").read_text().splitlines()]
    assert [m["composed_fraction"] for m in metrics] == [1.0, 1.0]  # the trained steps saw compositions
    assert len(token_files(tmp_path / "ti")) == 2


def test_a_resumed_textual_inversion_run_equals_an_uninterrupted_one(tmp_path):
    train(_ti_config("tiny-sd", tmp_path / "full", max_train_steps=3), backbone=_load("tiny-sd"))
    train(_ti_config("tiny-sd", tmp_path / "part", max_train_steps=2, checkpointing_steps=2), backbone=_load("tiny-sd"))
    train(_ti_config("tiny-sd", tmp_path / "part", max_train_steps=3, resume_from_checkpoint="latest"),
          backbone=_load("tiny-sd"))
    for name in ("modifier_token_olis.safetensors", "modifier_token_hta.safetensors"):
        a, b = load_file(str(tmp_path / "full" / name)), load_file(str(tmp_path / "part" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same code path: bit for bit


def test_textual_inversion_options_are_checked_and_its_folder_is_no_lora(tmp_path):
    with pytest.raises(MudiError, match="trains nothing"):
        TrainConfig(train_lora=False)
    with pytest.raises(MudiError, match="no LoRA"):
        TrainConfig(train_lora=False, train_modifier_tokens=True, loss="dco")
    train(_ti_config("tiny-sd", tmp_path / "ti"), backbone=_load("tiny-sd"))
    with pytest.raises(MudiError, match="token embeddings only"):  # merge, modular, iterate need a LoRA
        lora_path(tmp_path / "ti")


def test_ti_is_a_benchmark_method():
    ti = METHODS["ti"]
    assert ti.label == "TI" and ti.composition == "none" and ti.init == "none"
    assert ti.train["train_modifier_tokens"] is True and ti.train["train_lora"] is False
    TrainConfig(**ti.train)  # its recipe is a valid training config


def test_the_benchmark_trains_and_resumes_ti_and_custom_diffusion(bench, tmp_path, capsys):  # noqa: F811
    """Both token methods as benchmark cells on the tiny SD: trained, generated with their tokens, scored, a table row
    each under the paper's labels; a second run skips every cell (their units verify the token files)."""
    from mudi.benchmark.runner import run_benchmark

    train_values = {**TINY["train"], "max_train_steps": 2, "checkpointing_steps": 2, "resolution": 32}
    cfg = _config(bench, tmp_path / "b", methods=["ti", "custom-diffusion"], num_seeds=1, height=32, width=32,
                  num_prompts=1, train=train_values, evaluate={**TINY["evaluate"], "embedders": ["tiny-dinov2"]})
    run_benchmark(cfg)
    table = (tmp_path / "b" / "results" / "results.md").read_text()
    assert "| TI |" in table and "| Custom Diffusion |" in table
    metas = {m: json.loads(next((tmp_path / "b" / PAIR / m / "meta").glob("*.json")).read_text())
             for m in ("ti", "custom-diffusion")}
    ti_dir, cd_dir = Path(metas["ti"]["lora"]), Path(metas["custom-diffusion"]["lora"])
    assert ti_dir != cd_dir and len(token_files(ti_dir)) == 2 and len(token_files(cd_dir)) == 2
    assert not (ti_dir / "pytorch_lora_weights.safetensors").exists()
    assert (cd_dir / "pytorch_lora_weights.safetensors").is_file()
    capsys.readouterr()
    run_benchmark(cfg)
    assert "trained 0, generated 0, evaluated 0" in capsys.readouterr().out


def test_mudi_run_trains_each_recipe_method_apart(tmp_path):
    """``mudi run`` with DreamBooth, TI and Custom Diffusion: one training folder per recipe (``train/none``,
    ``train/ti``, ``train/custom-diffusion``), each method's images from its own, a row each in the report."""
    from mudi.cli import main
    from tests.test_run import RUN, _write_run

    cfg = _write_run(tmp_path, methods=["dreambooth", "ti", "custom-diffusion"], num_images=1,
                     train={**RUN["train"], "max_train_steps": 2})
    assert main(["run", str(cfg)]) == 0
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "train").iterdir()) == ["custom-diffusion", "none", "ti"]
    assert len(token_files(run / "train" / "ti")) == 2
    assert not (run / "train" / "ti" / "pytorch_lora_weights.safetensors").exists()
    assert (run / "train" / "custom-diffusion" / "pytorch_lora_weights.safetensors").is_file()
    assert not token_files(run / "train" / "none")
    for m in ("dreambooth", "ti", "custom-diffusion"):
        assert list((run / "generate" / m / "p00").glob("[0-9]*.png")), m
    report = (run / "report.html").read_text()
    assert "TI" in report and "Custom Diffusion" in report
    assert main(["run", str(cfg)]) == 0  # everything done: the token-only unit verifies its files


@pytest.mark.parametrize("family, keys", [
    ("tiny-sd", ["clip_l"]), ("tiny-sdxl", ["clip_l", "clip_g"]), ("tiny-flux", ["clip_l", "t5xxl"]),
    ("tiny-sd3", ["clip_l", "clip_g", "t5xxl"]), ("tiny-flux2", ["qwen3_4b"]), ("tiny-flux2-dev", ["mistral3_24b"]),
    ("tiny-qwen-image", ["qwen25_7b"]), ("tiny-z-image", ["qwen3_4b"])])
def test_token_files_use_comfyuis_embedding_keys(family, keys):
    """Each file key is the ``embedding_key`` the matching ComfyUI text encoder reads (comfy/text_encoders)."""
    assert [k for k, _, _ in token_encoders(_load(family))] == keys


def test_step_selection_sees_textual_inversion_snapshots(tmp_path):
    """Snapshots of a TI run hold token files only; step selection lists them (and the final folder) by step."""
    from mudi.scoring.step_selection import find_snapshots

    train(_ti_config("tiny-sd", tmp_path / "ti", max_train_steps=2, save_steps=1), backbone=_load("tiny-sd"))
    found = find_snapshots(tmp_path / "ti", final_step=2)
    assert [step for step, _ in found] == [1, 2]
    assert found[0][1].name == "snapshot-1" and len(token_files(found[0][1])) == 2


def test_the_row_hook_replaces_only_the_new_tokens_called_any_way():
    """The forward hook puts the trained rows at the new tokens' positions, whether the embedding is called with
    ids positionally or by keyword; other ids (also ids above the new ones) keep the frozen matrix's rows."""
    from mudi.training.modifier_tokens import TokenRows, _substitute_rows

    emb = torch.nn.Embedding(12, 3)
    param = torch.nn.Parameter(torch.full((2, 3), 7.0))
    emb.register_forward_hook(_substitute_rows(TokenRows("k", param, param.detach().clone(), [5, 8])),
                              with_kwargs=True)
    ids = torch.tensor([[1, 5, 8, 11]])
    for out in (emb(ids), emb(input=ids)):
        assert torch.equal(out[0, 1:3], param.detach()) and torch.equal(out[0, [0, 3]], emb.weight[[1, 11]].detach())
    emb(ids).sum().backward()
    assert param.grad is not None and emb.weight.grad is not None and not emb.weight.grad[[5, 8]].any()


def test_unloading_restores_each_encoder_even_when_two_share_a_tokenizer(tmp_path):
    """Two text encoders behind one tokenizer (as tiny builds share one), the second with spare rows beyond the
    vocabulary (as T5's and Qwen's matrices have): after loading and unloading a token each is back to its own
    size — the second is neither left grown nor cut to the tokenizer's length."""
    from types import SimpleNamespace

    from transformers import CLIPTextConfig, CLIPTextModel

    from mudi.adapters.tiny_tokenizer import build_tiny_clip_tokenizer
    from mudi.sampling.modifier_tokens import (
        load_modifier_tokens,
        save_modifier_tokens,
        unload_modifier_tokens,
    )

    tokenizer = build_tiny_clip_tokenizer()
    torch.manual_seed(0)
    encoders = [CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer) + spare, hidden_size=8, intermediate_size=16,
                                             num_hidden_layers=1, num_attention_heads=2)).eval() for spare in (0, 8)]
    pipe = SimpleNamespace(tokenizer=tokenizer, text_encoder=encoders[0], text_encoder_2=encoders[1])
    bb = SimpleNamespace(pipeline=pipe, family="test", token_embedding_encoders=[
        ("clip_l", "tokenizer", "text_encoder"), ("clip_g", "tokenizer", "text_encoder_2")])
    sizes = [e.get_input_embeddings().weight.shape[0] for e in encoders]
    save_modifier_tokens(tmp_path, {"olis": {"clip_l": torch.ones(8), "clip_g": torch.full((8,), 2.0)}})
    assert load_modifier_tokens(bb, tmp_path) == ["olis"]
    grown = [e.get_input_embeddings().weight.shape[0] for e in encoders]
    assert grown[0] == sizes[0] + 1 and grown[1] == sizes[1]  # the new id falls in the second's spare rows
    unload_modifier_tokens(bb, ["olis"])
    assert [e.get_input_embeddings().weight.shape[0] for e in encoders] == sizes
    assert "<olis>" not in tokenizer.get_vocab()
