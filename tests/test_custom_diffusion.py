"""Custom Diffusion as the paper's Appendix B.1 ran it (issue 25, item 3): LoRA on the cross-attention K/V
projections plus a modifier token per subject. Only those train (every other parameter, and every other row of the
embedding matrices, unchanged bit for bit); the files reload in plain diffusers (``load_lora_weights`` +
``load_textual_inversion``) and give the trained model's images; mudi's generate path loads both."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mudi.adapters import registry
from mudi.samples import SAMPLES_DIR
from mudi.sampling.loras import loras_applied
from mudi.sampling.modifier_tokens import token_encoders, token_files
from mudi.training.config import TrainConfig
from mudi.training.loop import train


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n.replace(".base_layer", ""): p.detach().clone() for n, p in module.named_parameters() if "lora_" not in n}


def _image(pipe, prompt: str) -> np.ndarray:
    return pipe(prompt=prompt, num_inference_steps=2, generator=torch.Generator().manual_seed(0), height=32, width=32,
                output_type="np", guidance_scale=1.0).images[0]


@pytest.mark.parametrize("family", ["tiny-sd", "tiny-sdxl"])
def test_custom_diffusion_trains_only_kv_and_the_tokens_and_reloads_in_diffusers(family, tmp_path):
    load = lambda: registry.load_backbone(family, None, torch.device("cpu"), torch.float32)  # noqa: E731
    bb = load()
    encoders = token_encoders(bb)
    before = {"unet": _snapshot(bb.pipeline.unet), **{key: _snapshot(enc) for key, _, enc in encoders}}
    vocab = {key: len(tok) for key, tok, _ in encoders}
    cfg = TrainConfig(backbone=family, subjects=[str(SAMPLES_DIR / "dog6"), str(SAMPLES_DIR / "dog2")],
                      output_dir=str(tmp_path / "cd"), lora_target_modules=["custom-diffusion"],
                      train_modifier_tokens=True, max_train_steps=2, save_steps=2, rank=4, learning_rate=1e-2,
                      train_batch_size=1, resolution=32, report_to="none", progress=False, device="cpu")
    trainer = train(cfg, backbone=bb)

    lora_names = [n for n, p in bb.pipeline.unet.named_parameters() if p.requires_grad]
    assert lora_names and all(".attn2.to_k.lora_" in n or ".attn2.to_v.lora_" in n for n in lora_names)
    after_unet = _snapshot(bb.pipeline.unet)
    assert after_unet.keys() == before["unet"].keys()
    assert all(torch.equal(after_unet[k], before["unet"][k]) for k in after_unet)  # the base UNet, bit for bit
    for key, tok, enc in encoders:
        after = _snapshot(enc)
        emb = next(k for k in after if k.endswith("token_embedding.weight"))
        assert [k for k in after if k != emb and not torch.equal(after[k], before[key][k])] == []
        n = vocab[key]
        assert after[emb].shape[0] == n + 2 and torch.equal(after[emb][:n], before[key][emb])  # old rows unchanged
        ids = [tok.convert_tokens_to_ids(t) for t in ("<olis>", "<hta>")]
        rows = next(r for r in trainer.tokens.rows if r.key == key)  # only these rows train: (subjects, D)
        assert ids == [n, n + 1] == rows.ids and rows.param.shape == (2, after[emb].shape[1])
        assert torch.equal(after[emb][n:], rows.initial.to(after[emb].dtype))  # the frozen matrix: as initialised
        assert not torch.equal(rows.param, rows.initial)  # the new rows trained

    out = tmp_path / "cd"
    files = token_files(out)
    assert [f.name for f in files] == ["modifier_token_hta.safetensors", "modifier_token_olis.safetensors"]
    assert set(load_file(str(files[1]))) == {key for key, _, _ in encoders}
    assert token_files(out / "snapshot-2")  # snapshots carry their tokens too
    prompt = "<olis> dog and <hta> dog"
    trained = _image(bb.pipeline, prompt)

    fresh = load()  # plain diffusers: load_lora_weights + load_textual_inversion
    fresh.pipeline.load_lora_weights(str(out))
    for f in files:
        state = load_file(str(f))
        for key, tok, enc in token_encoders(fresh):
            fresh.pipeline.load_textual_inversion(state[key], token=f"<{f.stem.split('_')[-1]}>", text_encoder=enc,
                                                  tokenizer=tok)
    np.testing.assert_allclose(_image(fresh.pipeline, prompt), trained, atol=1e-6)

    other = load()  # mudi's generate path: the LoRA folder brings its tokens; identifiers are written as tokens
    from mudi.sampling.images import _pipeline_call

    with loras_applied(other, [str(out)]):
        got = _pipeline_call(other, ["olis dog and hta dog"], [torch.Generator().manual_seed(0)], None, None, 2, 1.0,
                             32, 32)[0]
    np.testing.assert_allclose(got, trained, atol=1e-6)
    assert len(token_encoders(other)[0][1]) == vocab["clip_l"]  # unloaded again after the block


def test_custom_diffusion_is_a_benchmark_method():
    from mudi.core.methods import METHODS
    from mudi.errors import MudiError
    from mudi.pipeline import RunConfig

    spec = METHODS["custom-diffusion"]
    assert spec.label == "Custom Diffusion" and spec.train == {"lora_target_modules": ["custom-diffusion"],
                                                               "train_modifier_tokens": True}
    RunConfig(methods=["custom-diffusion"])  # mudi run trains it too (tests/test_textual_inversion.py)
    with pytest.raises(MudiError, match="text encoders take new tokens"):  # an adapter that declares none
        token_encoders(type("NoTokens", (), {"family": "no-tokens", "pipeline": None})())


def test_a_resumed_custom_diffusion_run_equals_an_uninterrupted_one(tmp_path):
    """The token rows are checkpointed with the LoRA: 1 step + resume to 2 equals 2 steps, bit for bit."""
    kw = dict(backbone="tiny-sd", subjects=[str(SAMPLES_DIR / "dog6"), str(SAMPLES_DIR / "dog2")],
              lora_target_modules=["custom-diffusion"], train_modifier_tokens=True, rank=4, learning_rate=1e-2,
              train_batch_size=1, resolution=32, report_to="none", progress=False, device="cpu",
              checkpointing_steps=1)
    train(TrainConfig(output_dir=str(tmp_path / "a"), max_train_steps=2, **kw))
    train(TrainConfig(output_dir=str(tmp_path / "b"), max_train_steps=1, **kw))
    train(TrainConfig(output_dir=str(tmp_path / "b"), max_train_steps=2, resume_from_checkpoint="latest", **kw))
    for name in ("pytorch_lora_weights.safetensors", "modifier_token_olis.safetensors"):
        a, b = load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_modifier_tokens_train_under_mixed_precision(tmp_path):
    """bf16 weights: the token rows train in float32 and the text encoder still sees its own dtype."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # this process's other tests set up float32
    try:
        trainer = _train_bf16(tmp_path)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert all(w.dtype == torch.float32 for w in trainer.tokens.trainable().values())
    assert len(token_files(tmp_path)) == 2


def _train_bf16(tmp_path):
    return train(TrainConfig(backbone="tiny-sdxl", subjects=[str(SAMPLES_DIR / "dog6"), str(SAMPLES_DIR / "dog2")],
                             output_dir=str(tmp_path), lora_target_modules=["custom-diffusion"],
                             train_modifier_tokens=True, max_train_steps=1, rank=4, train_batch_size=1,
                             resolution=32, report_to="none", progress=False, device="cpu", mixed_precision="bf16"))
