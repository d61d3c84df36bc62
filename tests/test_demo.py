"""The README's main job (`mudi demo` = `mudi run` on a shipped run file) runs offline and its report has every
section: by default DreamBooth vs MuDI on the shipped toy model, judged by the toy world's checker (a short
personalization of the shipped model through the CLI); with a tiny backbone the sample dogs through every stage,
with a notice that a random model drew them."""

import hashlib
import json

import pytest
import yaml

from mudi.cli import main
from mudi.commands.demo import DemoConfig, demo_run_config
from mudi.errors import MudiError
from mudi.pipeline.report import SECTIONS, report_sections
from mudi.samples import SAMPLES_DIR


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_demo_end_to_end(tmp_path, capsys):
    samples_before = _digest(SAMPLES_DIR)
    out = tmp_path / "demo"
    assert main(["demo", "--backbone", "tiny-sd", "--out", str(out), "--steps", "4", "--num-images", "2"]) == 0
    printed = capsys.readouterr().out
    assert "mudi demo finished" in printed and str(out / "report.html") in printed
    text = (out / "report.html").read_text()
    assert report_sections(text) == list(SECTIONS)
    notice = text[text.index("<section id='notice'>"):text.index("<section id='stages'>")]
    assert "tiny model with random weights" in notice and "mudi demo --backbone sdxl" in notice
    # GrabCut re-segmented the copies; the bundled photos and hand masks are untouched
    report = json.loads((out / "subjects" / "dog6" / "segment" / "segment_report.json").read_text())
    assert report["backend"] == "grabcut" and {r["status"] for r in report["images"]} == {"ok"}
    assert _digest(SAMPLES_DIR) == samples_before
    # both methods, 2 images each; the same seeds with and without the mean-shifted init differ
    metas = {m: sorted((out / "generate" / m / "p00").glob("0*.json")) for m in ("mudi", "dreambooth")}
    assert all(len(v) == 2 for v in metas.values())
    first = {m: json.loads(v[0].read_text()) for m, v in metas.items()}
    assert first["mudi"]["init"] == "mean_shifted" and first["dreambooth"]["init"] == "none"
    assert "olis corgi" in first["mudi"]["prompt"] and "hta chow chow" in first["mudi"]["prompt"]
    assert first["mudi"]["prompt"].index("olis corgi") < first["mudi"]["prompt"].index("hta chow chow")  # [V1] first
    a = (out / "generate" / "mudi" / "p00" / first["mudi"]["image"]).read_bytes()
    b = (out / "generate" / "dreambooth" / "p00" / first["dreambooth"]["image"]).read_bytes()
    assert a != b
    for m in ("mudi", "dreambooth"):
        assert json.loads((out / "evaluate" / m / "p00" / "summary.json").read_text())["num_images"] == 2
    assert {p.name for p in (out / "train").iterdir()} == {"segmix", "none"}


def test_default_demo_is_dreambooth_vs_mudi_on_the_toy_model(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["demo", "--out", str(out), "--steps", "20", "--num-images", "8"]) == 0
    text = (out / "report.html").read_text()
    assert report_sections(text) == list(SECTIONS)
    notice = text[text.index("<section id='notice'>"):text.index("<section id='stages'>")]
    assert "toy model" in notice and "mudi demo --backbone sdxl" in notice
    run = yaml.safe_load((out / "run.yaml").read_text())
    assert run["backbone"] == "sd15" and run["pretrained_model_name_or_path"].endswith("toyworld/model")
    for method in ("mudi", "mudi-no-init", "dreambooth"):
        result = json.loads((out / "evaluate" / method / "p00" / "toyworld.json").read_text())
        assert result["n"] == 8 and sum(result["verdicts"].values()) == 8
        assert len(list((out / "generate" / method / "p00").glob("0*.png"))) == 8
    meta = json.loads(next((out / "generate" / "mudi" / "p00").glob("0000_*.json")).read_text())
    assert meta["prompt"] == "a photo of a olis red yellow square and a hta blue yellow square." and meta["height"] == 32
    plain = json.loads(next((out / "generate" / "mudi-no-init" / "p00").glob("0000_*.json")).read_text())
    assert meta["init"] == "mean_shifted" and plain["init"] == "none"  # the same Seg-Mix LoRA, two samplers
    for path in (out / "generate" / "mudi" / "p00").glob("0*.json"):  # the run file's init layout: apart, small
        (a0, _, a2, _), (b0, _, b2, _) = sorted(json.loads(path.read_text())["boxes_xyxy"])
        assert a2 <= b0 and max(a2 - a0, b2 - b0) <= 0.75 * 16 + 1
    assert "class='toy'" in text and "MuDI (Ours)" in text and text.count("<figure>") >= 16
    printed = capsys.readouterr().out
    assert "toy-world checker" in printed


def test_demo_with_sdxl_is_the_real_recipe_and_other_backbones_are_refused():
    cfg = demo_run_config(DemoConfig(output_dir="x", backbone="sdxl"))
    assert cfg.backbone == "sdxl" and cfg.train["max_train_steps"] == 2010 and cfg.train["loss"] == "dco"
    assert cfg.subjects == [str(SAMPLES_DIR / "dog6"), str(SAMPLES_DIR / "dog2")]
    assert cfg.evaluate["embedders"] == ["dinov2"] and not cfg.notice
    tiny = demo_run_config(DemoConfig(output_dir="x", backbone="tiny-flux", steps=3))
    assert tiny.backbone == "tiny-flux" and tiny.train["max_train_steps"] == 3 and tiny.segment["backend"] == "grabcut"
    toy = demo_run_config(DemoConfig(output_dir="x"))
    assert toy.scorers == ["toyworld"] and toy.train["resolution"] == 32 and toy.backbone == "sd15"
    with pytest.raises(MudiError, match="write a run file"):
        demo_run_config(DemoConfig(backbone="flux"))
