"""The README's main job (`mudi demo`) runs end to end offline and writes what it promises."""

import json

from PIL import Image

from mudi.cli import main


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "2", "--num-images", "2"]) == 0
    printed = capsys.readouterr().out
    assert "mudi demo finished" in printed
    assert Image.open(out / "segmix" / "grid.png").size[0] > 512
    assert len((out / "segmix3" / "segmix.jsonl").read_text().splitlines()) == 4
    assert (out / "lora" / "pytorch_lora_weights.safetensors").stat().st_size > 0
    for name in ("generate_mudi", "generate_plain"):
        sidecars = sorted(p for p in (out / name).glob("*.json") if p.stem[0].isdigit())
        assert len(sidecars) == 2
        meta = json.loads(sidecars[0].read_text())
        assert "olis corgi" in meta["prompt"] and "hta chow chow" in meta["prompt"]
        assert (out / name / "evaluation" / "report.html").read_text().startswith("<!")
    mudi_meta = json.loads(sorted((out / "generate_mudi").glob("0*.json"))[0].read_text())
    plain_meta = json.loads(sorted((out / "generate_plain").glob("0*.json"))[0].read_text())
    assert mudi_meta["init"] == "mean_shifted" and plain_meta["init"] == "none"
    # same seed, different initial latents: the two methods give different images
    a = Image.open(out / "generate_mudi" / (sorted((out / "generate_mudi").glob("0*.json"))[0].stem + ".png"))
    b = Image.open(out / "generate_plain" / (sorted((out / "generate_plain").glob("0*.json"))[0].stem + ".png"))
    assert a.tobytes() != b.tobytes()
