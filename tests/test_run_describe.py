"""``mudi run`` with ``use_describe``: the describe stage asks the toy world's describer (the ground truth) for the
run's *copies* of the toy subjects, before segmentation; a unit like the others (skipped when done, redone with
everything downstream when its settings change, ``--from describe`` / ``--only describe``); hand-written values
stay; the report lists what was written, kept and rejected. The toy model, 2 training steps, one 32-px image."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mudi.adapters import registry
from mudi.cli import main
from mudi.config import load_config
from mudi.data.subjects import SUBJECT_FILE
from mudi.errors import MudiError
from mudi.pipeline import RunConfig, run_pipeline
from mudi.pipeline.report import SECTIONS, report_sections
from mudi.toyworld.describer import ToyworldDescriber

TOY = Path(__file__).resolve().parents[1] / "src" / "mudi" / "toyworld"
NAMES = ("red_yellow_square", "blue_yellow_square")  # olis (its class hand-written), hta (no class)
RUN = {
    "backbone": "sd15", "pretrained_model_name_or_path": str(TOY / "model"), "methods": ["mudi"],
    "prompts": ["a photo of a [V1] and a [V2]."], "num_images": 1, "device": "cpu", "dtype": "float32",
    "segmix_preview": 1, "scorers": ["toyworld"], "use_describe": True, "describe": {"provider": "toyworld"},
    "segment": {"backend": "grabcut"},  # the toy subjects ship their exact masks: kept
    "train": {"resolution": 32, "rank": 4, "max_train_steps": 2, "train_batch_size": 2, "report_to": "none",
              "mixed_precision": "no", "progress": False},
    "generate": {"height": 32, "width": 32, "num_inference_steps": 2, "negative_prompt": "", "batch_size": 1},
}
DOWNSTREAM = ("segment", "train segmix", "generate mudi p00", "evaluate mudi p00")


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _subjects(root: Path) -> list[str]:
    """The shipped toy subjects, copied; ``hta`` loses its descriptive class (olis keeps its hand-written one)."""
    out = []
    for name in NAMES:
        shutil.copytree(TOY / "subjects" / name, root / name)
        out.append(str(root / name))
    path = root / NAMES[1] / SUBJECT_FILE
    meta = yaml.safe_load(path.read_text())
    del meta["descriptive_class"]
    path.write_text(yaml.safe_dump(meta, sort_keys=False))
    return out


def _write_run(folder: Path, subjects: list[str], **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.in.yaml"
    path.write_text(yaml.safe_dump({**RUN, "subjects": subjects, "output_dir": str(folder / "run"), **changes}))
    return path


@pytest.fixture(scope="module")
def described(tmp_path_factory) -> tuple[Path, list[str], dict]:
    root = tmp_path_factory.mktemp("described")
    subjects = _subjects(root / "originals")
    before = {"originals": _digest(root / "originals"), "shipped": _digest(TOY / "subjects")}
    assert main(["run", str(_write_run(root, subjects))]) == 0
    return root / "run", subjects, before


def _yaml(folder: Path) -> dict:
    return yaml.safe_load((folder / SUBJECT_FILE).read_text())


def test_the_run_describes_its_copies_before_segmenting(described):
    run, subjects, before = described
    assert _digest(Path(subjects[0]).parent) == before["originals"]  # the user's folders: byte-identical
    assert _digest(TOY / "subjects") == before["shipped"]
    red, blue = (_yaml(run / "subjects" / n) for n in NAMES)
    assert red["descriptive_class"] == "red yellow square"  # hand-written: kept
    assert blue["descriptive_class"] == "blue yellow square"  # the toy world's answer: written
    for meta, phrase in ((red, "olis red yellow square"), (blue, "hta blue yellow square")):
        assert sorted(meta["captions"]) == ["00.png", "01.png", "02.png", "03.png"]
        assert all(c.startswith(f"a photo of a {phrase}") for c in meta["captions"].values())
    # segmentation copied the described subjects on; its masks are the shipped ones
    assert _yaml(run / "describe" / "subjects" / NAMES[1]) == blue
    assert (run / "subjects" / NAMES[1] / "segment" / "segment_report.json").is_file()
    report = json.loads((run / "describe" / "describe_report.json").read_text())
    assert report["provider"] == "toyworld" and report["counts"] == {"kept": 1, "written": 9}
    # training and generation see the descriptive classes
    meta = json.loads(next((run / "generate" / "mudi" / "p00").glob("0000_*.json")).read_text())
    assert meta["prompt"] == "a photo of a olis red yellow square and a hta blue yellow square."
    text = (run / "report.html").read_text()
    assert report_sections(text) == list(SECTIONS)
    section = text[text.index("<section id='descriptions'>"):text.index("<section id='masks'>")]
    assert "kept 1, written 9" in section and "a photo of a hta blue yellow square" in section
    stages = text[text.index("<section id='stages'>"):text.index("<section id='descriptions'>")]
    assert stages.index("<td>describe</td>") < stages.index("<td>segment</td>")


def test_a_second_run_skips_it_and_a_changed_describe_setting_redoes_everything_after_it(described, tmp_path,
                                                                                          capsys):
    run, subjects, _ = described
    shutil.copytree(run, tmp_path / "run")
    capsys.readouterr()
    assert main(["run", str(_write_run(tmp_path, subjects))]) == 0
    out = capsys.readouterr().out
    assert "[1/6] describe" in out and "describe: done already, skipped" in out
    assert "redone" not in out and out.count("done already, skipped") == 6
    lora = load_file(str(tmp_path / "run" / "train" / "segmix" / "pytorch_lora_weights.safetensors"))

    cfg = _write_run(tmp_path, subjects, describe={"provider": "toyworld", "max_side": 64})
    assert main(["run", str(cfg)]) == 0
    out = capsys.readouterr().out
    for unit in ("describe", *DOWNSTREAM):
        assert f"{unit}: redone from scratch (its settings changed)" in out, out
    assert "segmix preview: redone" in out and "skipped" not in out
    again = load_file(str(tmp_path / "run" / "train" / "segmix" / "pytorch_lora_weights.safetensors"))
    assert again.keys() == lora.keys() and all(torch.equal(again[k], lora[k]) for k in lora)  # the same answer

    assert main(["run", str(cfg), "--only", "describe"]) == 0
    out = capsys.readouterr().out
    assert "describe: redone from scratch (--only describe)" in out
    assert not any(f"{unit}: redone" in out for unit in DOWNSTREAM)  # the same answer: the rest stays done
    assert main(["run", str(cfg), "--from", "describe"]) == 0
    out = capsys.readouterr().out
    assert all(f"{unit}: redone from scratch (--from describe)" in out for unit in ("describe", *DOWNSTREAM))


def test_a_hand_written_caption_stays_and_rejected_values_are_reported(tmp_path):
    subjects = _subjects(tmp_path / "originals")
    path = Path(subjects[1]) / SUBJECT_FILE
    meta = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**meta, "captions": {"00.png": "a photo of a hta square."}}, sort_keys=False))

    class Sloppy(ToyworldDescriber):  # drops the identifier from olis's second caption
        def describe(self, request):
            data = json.loads(super().describe(request))
            data["subjects"]["olis"]["captions"]["01.png"] = "a photo of a red yellow square."
            return json.dumps(data)

    registry.register("describer", "test-sloppy", lambda **_: Sloppy())
    try:
        cfg = load_config(RunConfig, _write_run(tmp_path, subjects, describe={"provider": "test-sloppy",
                                                                              "max_retries": 0}))
        said: list[str] = []
        run_pipeline(cfg, say=said.append)
    finally:
        registry.unregister("describer", "test-sloppy")
    run = tmp_path / "run"
    blue, red = _yaml(run / "subjects" / NAMES[1]), _yaml(run / "subjects" / NAMES[0])
    assert blue["captions"]["00.png"] == "a photo of a hta square."  # hand-written: kept
    assert "01.png" not in red["captions"] and len(red["captions"]) == 3  # rejected: nothing written
    assert any("1 value(s) rejected" in line for line in said)
    section = (run / "report.html").read_text().split("<section id='descriptions'>")[1].split("</section>")[0]
    assert "rejected" in section and "must name &#x27;olis&#x27; exactly once" in section
    assert json.loads((run / "describe" / "stage.json").read_text())["status"] == "done"


def test_a_describer_that_answers_nothing_stops_the_run_before_segmenting(tmp_path):
    subjects = _subjects(tmp_path / "originals")
    cfg = load_config(RunConfig, _write_run(tmp_path, subjects, describe={
        "provider": "openai", "url": "http://127.0.0.1:9/v1", "max_retries": 0, "timeout_s": 5}))
    with pytest.raises(MudiError, match="gave nothing usable"):
        run_pipeline(cfg, say=lambda _: None)
    run = tmp_path / "run"
    assert json.loads((run / "describe" / "stage.json").read_text())["status"] == "running"  # the next run retries
    assert not (run / "segment").exists() and not (run / "subjects").exists()


def test_the_describe_block_is_checked_when_the_run_is_loaded(tmp_path):
    base = {"subjects": ["a", "b"], "output_dir": str(tmp_path / "run")}
    with pytest.raises(MudiError, match="describe.subjects is set by the run itself"):
        RunConfig(**base, use_describe=True, describe={"subjects": ["x"]})
    with pytest.raises(MudiError, match="describe.dry_run is set by the run itself"):
        RunConfig(**base, use_describe=True, describe={"dry_run": True})
    with pytest.raises(MudiError, match="max_side"):
        RunConfig(**base, use_describe=True, describe={"max_sides": 64})
    with pytest.raises(MudiError, match="toyworld"):
        RunConfig(**base, use_describe=True, describe={"provider": "toyword"})
    with pytest.raises(MudiError, match="--only describe: this run has no describe stage .use_describe is false"):
        RunConfig(**base, describe={"provider": "toyworld"}, only="describe")
    with pytest.raises(MudiError, match="--from prior: this run has no prior stage"):
        RunConfig(**base, from_stage="prior")
    cfg = RunConfig(**base, use_describe=True, describe={"provider": "toyworld", "overwrite": True})
    assert cfg.stage_config("describe", subjects=["x"]).overwrite is True
