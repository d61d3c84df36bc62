"""`mudi modular` on tiny offline models: two single-subject LoRAs (a mudi run, and a bare file "from the
internet" without a manifest) → reference photos → fusion → Seg-Mix fine-tuning with KL → one LoRA. The chain
is stopped mid-training by a real SIGINT and resumed from its checkpoint; finished stages are skipped; the final
LoRA is exactly the merged one plus the fine-tuned one; fixed relative sizes reach the compositions."""

from __future__ import annotations

import json
import os
import shutil
import signal
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import mudi.modular.pipeline as pipeline
import mudi.modular.references as references
from mudi.adapters import registry
from mudi.cli import main as cli_main
from mudi.data.manifests import LORA_FILE, SUBJECTS_FILE, read_marker
from mudi.errors import MudiError
from mudi.modular.config import ModularConfig
from mudi.modular.pipeline import run_modular
from mudi.training.config import TrainConfig
from mudi.training.loop import train
from mudi.training.signals import TrainingStopped

SAMPLES = Path(str(files("mudi") / "samples"))
SEGMENTER = "test-ellipse"


class EllipseSegmenter:
    """A centred ellipse for every image but the last of each call (an empty mask: that photo is rejected)."""

    def segment(self, images, boxes):
        out = []
        for k, im in enumerate(images):
            h, w = im.shape[:2]
            yy, xx = np.mgrid[:h, :w]
            m = ((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.3 * w)) ** 2 <= 1
            out.append(m if k < len(images) - 1 else np.zeros_like(m))
        return out


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    """A mudi run of dog6 (with mudi_subjects.json) and a bare cat2 LoRA file with no manifest."""
    root = tmp_path_factory.mktemp("loras")
    registry.register("segmenter", SEGMENTER, lambda **kw: EllipseSegmenter(), replace=True)
    for name in ("dog6", "cat2"):
        train(TrainConfig(backbone="tiny-sd", subjects=[str(SAMPLES / name)], composition="none", max_train_steps=2,
                          rank=4, learning_rate=1e-2, report_to="none", progress=False, device="cpu",
                          output_dir=str(root / name)))
    (root / "downloads").mkdir()
    shutil.copy(root / "cat2" / LORA_FILE, root / "downloads" / "russian_blue.safetensors")
    yield str(root / "dog6"), str(root / "downloads" / "russian_blue.safetensors")
    registry.unregister("segmenter", SEGMENTER)


def _config(loras, out: Path, **kw) -> ModularConfig:
    values = dict(lora=list(loras), identifiers=["", "ult"], class_nouns=["", "cat"],
                  descriptive_classes=["", "russian blue"], backbone="tiny-sd", num_reference_images=3,
                  num_inference_steps=2, num_activation_samples=2, segmentation_backend=SEGMENTER, finetune_steps=4,
                  rank=4, learning_rate=1e-2, relative_sizes=[1.0, 2.0], output_dir=str(out), device="cpu",
                  progress=False, train={"report_to": "none", "train_batch_size": 2})
    return ModularConfig(**{**values, **kw})


def _denoise(unet) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([500]), encoder_hidden_states=text).sample


def test_the_chain_resumes_after_a_kill_and_writes_one_exact_lora(loras, tmp_path, monkeypatch, capsys):
    out = tmp_path / "modular"
    real_train = pipeline.train

    def stopped_at_step_2(cfg, **kw):
        def callback(trainer, batch, losses):
            if trainer.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: the step finishes, a checkpoint is saved
        return real_train(cfg, callback=callback)

    monkeypatch.setattr(pipeline, "train", stopped_at_step_2)
    with pytest.raises(TrainingStopped, match="stopped at step 2 of 4"):
        run_modular(_config(loras, out))
    ft = out / "finetune"
    assert (ft / "checkpoint-2").is_dir() and not (ft / LORA_FILE).exists()
    assert read_marker(ft / "stage.json")["status"] == "running" and not (out / "final").exists()
    for name, kept in (("dog6", ["00.png", "01.png"]), ("ult_russian_blue", ["00.png", "01.png"])):
        ref = out / "references" / name  # generated, segmented, reviewable
        assert sorted(p.name for p in ref.glob("*.png")) == kept
        assert sorted(p.name for p in (ref / "masks").glob("*.png")) == kept
        assert [p.name for p in (ref / "rejected").iterdir()] == ["02.png"]  # its mask was empty
        assert (ref / "segment" / "segment_preview.png").is_file() and (ref / "generate" / "grid" / "grid.png").is_file()
    cat = yaml.safe_load((out / "references" / "ult_russian_blue" / "subject.yaml").read_text())
    assert (cat["identifier"], cat["class_noun"], cat["descriptive_class"]) == ("ult", "cat", "russian blue")
    sidecar = json.loads((out / "references" / "dog6" / "generate" / "0000_seed0.json").read_text())
    assert sidecar["prompt"] == "a photo of olis corgi, simple background, full body shot."
    assert json.loads((out / "merged" / "merge_report.json").read_text())["method"] == "fusion"

    calls = {"generate": 0, "merge": 0}
    for mod, name, key in ((references, "generate_to_folder", "generate"), (pipeline, "merge_to_folder", "merge")):
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, _r=real, _k=key, **k: (calls.__setitem__(_k, calls[_k] + 1),
                                                                         _r(*a, **k))[1])
    boxes: list[tuple[int, int, int]] = []

    def recording(cfg, **kw):
        def callback(trainer, batch, losses):
            for s in batch["instance"]:
                assert s.num_subjects == 2  # composition probability 1: every sample is a Seg-Mix pair
                heights = [b[3] - b[1] for b in s.boxes_xyxy]  # caption order: the sample's own subject first
                boxes.append((s.subject, heights[0], heights[1]))
        return real_train(cfg, callback=callback)

    monkeypatch.setattr(pipeline, "train", recording)
    result = run_modular(_config(loras, out))
    assert calls == {"generate": 0, "merge": 1}  # references and merge done before; only the final concat ran
    assert result.stages == {"references/dog6": "skipped", "references/ult_russian_blue": "skipped", "merged": "skipped",
                             "finetune": "ran", "final": "ran"}
    history = [json.loads(x) for x in (ft / "train_history.jsonl").read_text().splitlines()]
    assert [(h["event"], h["step"]) for h in history] == [("start", 0), ("resume", 2)]
    assert len(boxes) == 4  # the two resumed steps, batch 2
    for own, first, second in boxes:  # relative sizes 1 : 2 (Appendix C.1): cat2 twice as tall as dog6
        dog, cat = (first, second) if own == 0 else (second, first)
        assert abs(cat - 2 * dog) <= 1, boxes
    cfg = yaml.safe_load((ft / "train_config.yaml").read_text())
    assert (cfg["composition"], cfg["composition_prob"], cfg["kl_weight"], cfg["relative_sizes"]) == \
        ("segmix", 1.0, 1.0, [1.0, 2.0])
    assert cfg["base_lora"] == [str(out / "merged")] and cfg["max_train_steps"] == 4

    # one LoRA, exactly the merged LoRA (fused, as the fine-tuning saw it) plus the fine-tuned one
    final = result.lora_dir
    report = json.loads((final / "merge_report.json").read_text())
    assert report["method"] == "concat" and report["max_rank"] == 4 + 4 + 4
    bb = registry.load_backbone("tiny-sd")
    bb.pipeline.load_lora_weights(str(final))
    ref = registry.load_backbone("tiny-sd")
    ref.pipeline.load_lora_weights(str(out / "merged"), adapter_name="merged")
    ref.pipeline.fuse_lora(adapter_names=["merged"], lora_scale=1.0)
    ref.pipeline.unload_lora_weights()
    ref.pipeline.load_lora_weights(str(ft), adapter_name="new")
    torch.testing.assert_close(_denoise(bb.pipeline.unet), _denoise(ref.pipeline.unet), rtol=1e-4, atol=1e-5)
    manifest = json.loads((final / SUBJECTS_FILE).read_text())
    assert [s["phrase"] for s in manifest["subjects"]] == ["olis corgi", "ult russian blue"]
    assert [Path(s["path"]).name for s in manifest["subjects"]] == ["dog6", "ult_russian_blue"]

    # the final LoRA generates with the mean-shifted init by itself (its manifest names the reference folders)
    gen = tmp_path / "gen"
    assert cli_main(["generate", "--backbone", "tiny-sd", "--lora", str(final), "--prompt", "[V1] and [V2] in a park",
                     "--num_images", "1", "--steps", "2", "--device", "cpu", "--out", str(gen)]) == 0
    meta = json.loads((gen / "0000_seed0.json").read_text())
    assert meta["init"] == "mean_shifted" and meta["prompt"] == "olis corgi and ult russian blue in a park"

    # a third run loads no model at all: every stage is finished
    monkeypatch.setattr(registry, "load_backbone", lambda *a, **k: pytest.fail("a model was loaded"))
    again = run_modular(_config(loras, out))
    assert set(again.stages.values()) == {"skipped"}
    capsys.readouterr()


def test_a_changed_setting_redoes_only_what_depends_on_it(loras, tmp_path, monkeypatch):
    out = tmp_path / "m"
    run_modular(_config(loras, out, finetune_steps=2, merge_method="weighted_sum"))
    first = (out / "final" / LORA_FILE).read_bytes()
    result = run_modular(_config(loras, out, finetune_steps=2, merge_method="weighted_sum", kl_weight=0.5))
    assert result.stages == {"references/dog6": "skipped", "references/ult_russian_blue": "skipped", "merged": "skipped",
                             "finetune": "ran", "final": "ran"}
    assert (out / "final" / LORA_FILE).read_bytes() != first
    assert yaml.safe_load((out / "finetune" / "train_config.yaml").read_text())["kl_weight"] == 0.5


def test_bad_inputs_fail_in_one_line_before_any_model_loads(loras, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(registry, "load_backbone", lambda *a, **k: pytest.fail("a model was loaded"))
    base = ["modular", "--lora", *loras, "--backbone", "tiny-sd", "--out", str(tmp_path / "o")]
    cases = [
        ([], "has no mudi_subjects.json"),  # the downloaded file names no subject
        (["--identifiers", "", "ult", "--class_nouns", "", "cat", "--relative_sizes", "1"], "1 --relative_sizes for 2"),
        (["--identifiers", "olis", "olis", "--class_nouns", "dog", "cat"], "identifier 'olis'"),
        (["--identifiers", "", "ult", "--class_nouns", "", "cat", "--set", "train.max_train_steps=9"],
         "train.max_train_steps is set by mudi modular"),
        (["--identifiers", "", "ult", "--class_nouns", "", "cat", "--set", "train.max_train_step=9"],
         "did you mean"),
        (["--identifiers", "ult", "--class_nouns", "cat"], "1 --identifiers for 2 --lora"),
    ]
    for extra, message in cases:
        assert cli_main(base + extra) == 2, extra
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    with pytest.raises(MudiError, match="at least two --lora"):
        run_modular(ModularConfig(lora=[loras[0]], backbone="tiny-sd", output_dir=str(tmp_path / "o")))
