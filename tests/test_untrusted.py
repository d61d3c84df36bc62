"""Issue 21: a subject folder and a run file are untrusted input. A subject's name cannot write outside the run;
``mudi run`` deletes or rewrites only what its manifest says it wrote; every odd value in subject.yaml or a run
file is a one-line error (or a clean load), never a traceback."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import pytest
import yaml

from mudi.cli import main
from mudi.config import load_config
from mudi.data.run_folder import RUN_MANIFEST
from mudi.data.subjects import find_subjects
from mudi.errors import MudiError
from mudi.pipeline import RunConfig
from mudi.samples import SAMPLES_DIR
from tests.helpers import make_subject_dir


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _set_meta(folder: Path, **changes) -> None:
    meta = yaml.safe_load((folder / "subject.yaml").read_text())
    meta.update(changes)
    (folder / "subject.yaml").write_text(yaml.safe_dump(meta))


# ------------------------------------------------------------------------------------------ 1. subject names
@pytest.mark.parametrize("name", ["../../x", "/home/me", "a/b", "..", ".", ".hidden", "a\\b", "c:evil", "x\n"])
def test_a_subject_name_must_be_one_safe_folder_name(tmp_path, name):
    d = make_subject_dir(tmp_path, "robot", "amg")
    _set_meta(d, name=name)
    with pytest.raises(MudiError, match="must be one folder name|must be a non-empty"):
        find_subjects(d)


def test_a_run_with_a_path_as_subject_name_writes_nothing_outside(tmp_path):
    # the reproduction: `name: ../../x` used to copy the subject folder (with its .bashrc) there
    work = tmp_path / "work"
    a = make_subject_dir(work, "a", "olis")
    make_subject_dir(work, "b", "hta")
    (a / ".bashrc").write_text("echo owned\n")
    _set_meta(a, name="../../escaped")
    before = _tree(tmp_path)
    run = work / "run.yaml"
    run.write_text(yaml.safe_dump({"subjects": ["a", "b"], "output_dir": "out", "backbone": "tiny-sd",
                                   "segment": {"backend": "grabcut"}}))
    assert main(["run", str(run)]) == 2
    after = _tree(tmp_path)
    assert not (tmp_path / "escaped").exists() and not (work / "escaped").exists()
    assert {k: v for k, v in after.items() if k != "work/run.yaml"} == \
        {k: v for k, v in before.items() if k != "work/run.yaml"}


def test_benchmark_metadata_cannot_name_files_outside_its_folder(tmp_path):
    pair = tmp_path / "x_and_y"
    pair.mkdir()
    (pair / "metadata.jsonl").write_text('{"id": {"a": "olis corgi", "b": "hta dog"}}\n'
                                         '{"id": "a", "file_name": "../../etc/passwd"}\n')
    with pytest.raises(MudiError, match="must be a file name inside"):
        find_subjects(pair)
    (pair / "metadata.jsonl").write_text('{"id": {"../a": "olis corgi"}}\n')
    with pytest.raises(MudiError):
        find_subjects(pair)


# ------------------------------------------------------------------------------------- 2. what a run owns
def _run_file(work: Path, output_dir: str, **extra) -> Path:
    run = work / "run.yaml"
    run.write_text(yaml.safe_dump({"subjects": ["subjects/a", "subjects/b"], "output_dir": output_dir,
                                   "backbone": "tiny-sd", "segment": {"backend": "grabcut"}, **extra}))
    return run


def test_output_dir_dot_leaves_every_input_byte_identical(tmp_path):
    # the reproduction: output_dir '.' with the user's subjects in ./subjects/ deleted all of them
    work = tmp_path / "work"
    make_subject_dir(work / "subjects", "a", "olis")
    make_subject_dir(work / "subjects", "b", "hta")
    run = _run_file(work, ".")
    before = _tree(work)
    assert main(["run", str(run)]) == 2  # not empty, not a mudi run folder
    assert _tree(work) == before
    assert main(["run", str(run), "--force"]) == 2  # the inputs lie inside the run's subjects/
    assert _tree(work) == before and not (work / RUN_MANIFEST).exists()


def test_force_never_replaces_what_mudi_did_not_write(tmp_path):
    src = tmp_path / "src"
    make_subject_dir(src / "subjects", "a", "olis")
    make_subject_dir(src / "subjects", "b", "hta")
    out = tmp_path / "mine"
    (out / "subjects").mkdir(parents=True)
    (out / "subjects" / "notes.txt").write_text("mine")
    (out / "report.txt").write_text("also mine")
    run = _run_file(src, str(out))
    before = _tree(out)
    assert main(["run", str(run)]) == 2
    assert main(["run", str(run), "--force"]) == 2  # subjects/ is one of the run's entries: refused
    assert _tree(out) == before


def test_claim_rules(tmp_path):
    from mudi.data.run_folder import claim_run_folder

    owned = ("subjects", "run.yaml")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    claim_run_folder(fresh, owned, [])
    assert (fresh / RUN_MANIFEST).is_file()
    (fresh / "subjects").mkdir()
    claim_run_folder(fresh, owned, [])  # ours: fine again
    with pytest.raises(MudiError, match="lies inside the run folder's subjects"):
        claim_run_folder(fresh, owned, [str(fresh / "subjects")])
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(MudiError, match="pass --force"):
        claim_run_folder(other, owned, [])
    claim_run_folder(other, owned, [], force=True)  # no clash: the run is added beside keep.txt
    assert (other / "keep.txt").read_text() == "x"
    linked = tmp_path / "linked"
    linked.mkdir()
    os.symlink(tmp_path / "other", linked / "subjects")
    with pytest.raises(MudiError, match="symbolic link"):
        claim_run_folder(linked, owned, [])


# ------------------------------------------------------------------------------------ 6. never a traceback
ODD_VALUES = [None, 1, -3, 1.5, math.nan, math.inf, -math.inf, True, [], ["a", "b"], {"a": 1},
              {"nested": {"x": [1, {"y": None}]}}, "", "x" * 5000, "a\nb", "../x", "/abs/path", "olis corgi"]
SUBJECT_KEYS = ["name", "identifier", "class_noun", "descriptive_class", "captions", "detect_as", "relative_size"]


@pytest.mark.parametrize("key", SUBJECT_KEYS)
def test_fuzz_subject_yaml_values(tmp_path, key):
    for n, value in enumerate(ODD_VALUES):
        d = make_subject_dir(tmp_path / str(n), "robot", "amg", n=1)
        _set_meta(d, **{key: value})
        try:
            (s,) = find_subjects(d)
        except MudiError as e:
            assert "\n" not in str(e).strip(), str(e)
            continue
        # a clean load gives text where text is meant, so prompts never read "olis ['a', 'b']"
        assert isinstance(s.name, str) and isinstance(s.phrase, str) and "[" not in s.phrase
        assert s.relative_size is None or (math.isfinite(s.relative_size) and s.relative_size > 0)


def test_billion_laughs_captions_are_a_one_line_error(tmp_path):
    d = make_subject_dir(tmp_path, "robot", "amg", n=1)
    levels = ["&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    (d / "subject.yaml").write_text("identifier: amg\nclass_noun: toy\ncaptions: [" + ", ".join(levels) + "]\n")
    with pytest.raises(MudiError, match="captions"):
        find_subjects(d)
    (d / "subject.yaml").write_text("identifier: amg\nclass_noun: toy\ncaptions: {00.png: [" + ", ".join(levels)
                                    + "]}\n")
    with pytest.raises(MudiError, match="captions"):
        find_subjects(d)


RUN_KEYS = ["output_dir", "subjects", "backbone", "methods", "prompts", "num_images", "seed", "scorers",
            "use_prior", "segmix_preview", "device", "dtype", "train_launch", "segment", "prior", "train",
            "generate", "evaluate", "notice", "from_stage", "only", "force", "use_describe", "describe"]


@pytest.mark.parametrize("key", RUN_KEYS)
def test_fuzz_run_file_values(tmp_path, key):
    base = {"subjects": [str(SAMPLES_DIR / "dog6"), str(SAMPLES_DIR / "dog2")], "backbone": "tiny-sd",
            "output_dir": str(tmp_path / "out")}
    for value in ODD_VALUES:
        try:
            load_config(RunConfig, values={**base, key: value})
        except MudiError as e:
            assert "\n" not in str(e).strip(), str(e)


# ------------------------------------------------------------------------------------------- 4. the web UI
def test_the_ui_keeps_every_path_from_the_page_inside_the_workspace(tmp_path):
    from mudi.ui import training
    from mudi.ui.state import Workspace

    ws = Workspace.open(tmp_path / "ws")
    a = make_subject_dir(ws.subjects_dir, "a", "aaa")
    b = make_subject_dir(ws.subjects_dir, "b", "bbb")
    form = training.form_defaults("tiny-sd")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for extra in (f"subjects={outside}", "output_dir=/tmp/x", f"resume_from_checkpoint={outside}",
                  f"class_data_dir={outside}", f"base_lora={outside}", f"pretrained_model_name_or_path={outside}",
                  "class_data_dir=../../x", f"vae={outside}"):
        with pytest.raises(MudiError, match="set by the UI itself|outside the UI workspace"):
            training.build_request([a, b], "tiny-sd", form, extra, "cpu", ws=ws)
    (ws.root / "priors").mkdir()
    req = training.build_request([a, b], "tiny-sd", form, f"class_data_dir={ws.root / 'priors'}\n"
                                 "pretrained_model_name_or_path=stabilityai/sdxl-turbo", "cpu", ws=ws)
    assert req["class_data_dir"] == str(ws.root / "priors")
    os.symlink(outside, ws.root / "link")  # a link inside that points out is resolved first
    with pytest.raises(MudiError, match="outside the UI workspace"):
        training.build_request([a, b], "tiny-sd", form, f"class_data_dir={ws.root / 'link'}", "cpu", ws=ws)


def test_the_ui_generates_only_from_loras_in_the_workspace(tmp_path):
    from mudi.ui import generation
    from mudi.ui.state import Workspace

    ws = Workspace.open(tmp_path / "ws")
    with pytest.raises(MudiError, match="outside the UI workspace"):
        generation.generate_and_score(ws, str(tmp_path / "elsewhere"), "a photo", 1.0, 0, 1)


def test_the_ui_guard_and_access_rules():
    import asyncio

    from mudi.ui.config import UiConfig
    from mudi.ui.guard import RequestGuard, host_name
    from mudi.ui.server import access

    assert host_name("127.0.0.1:7860") == "127.0.0.1" and host_name("[::1]:80") == "::1"
    assert host_name("http://evil.example:80") == "evil.example"
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["path"])

    def call(path="/", **headers):
        sent = []

        async def send(msg):
            sent.append(msg)

        async def receive():
            return {"type": "http.request"}

        scope = {"type": "http", "path": path,
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
        asyncio.run(RequestGuard(app, workspace="/ws")(scope, receive, send))
        return sent[0]["status"] if sent else 200

    assert call(host="127.0.0.1:7860") == 200 and call(host="localhost") == 200
    assert call(host="evil.example:7860") == 403 and call(host="127.0.0.1", origin="http://evil.example") == 403
    assert call("/gradio_api/file=/ws/runs/r/pytorch_lora_weights.safetensors", host="127.0.0.1") == 403
    assert call("/gradio_api/file=/ws/subjects/a/00.png", host="127.0.0.1") == 200
    assert seen == ["/", "/", "/gradio_api/file=/ws/subjects/a/00.png"]
    hosts, auth = access(UiConfig(backbone="tiny-sd"))
    assert auth is None and "evil.example" not in hosts
    hosts, auth = access(UiConfig(backbone="tiny-sd", host="0.0.0.0", token="s3cret", allowed_hosts=["box.lan"]))
    assert auth == ("mudi", "s3cret") and "box.lan" in hosts and "*" not in hosts
    with pytest.raises(MudiError, match="allowed_hosts"):
        UiConfig(backbone="tiny-sd", allowed_hosts=["box.lan"])


def test_photo_links_loops_and_odd_sizes_fail_before_any_write(tmp_path):
    from mudi.pipeline.stages import copy_subjects

    a = make_subject_dir(tmp_path, "a", "olis")
    os.symlink(a, a / "loop")  # a folder link back to itself: never followed into copies
    target = tmp_path / "run" / "subjects"
    copy_subjects([str(a)], target)
    assert sorted(p.name for p in (target / "a").iterdir()) == ["00.png", "01.png", "02.png", "masks", "subject.yaml"]
    b = make_subject_dir(tmp_path, "b", "hta")
    (tmp_path / "notes.txt").write_text("not a photo")
    os.symlink(tmp_path / "notes.txt", b / "03.png")
    with pytest.raises(MudiError, match=str(b / "03.png")):
        copy_subjects([str(b)], tmp_path / "run2" / "subjects")
    assert not (tmp_path / "run2").exists()
    from PIL import Image

    for size in ((1, 1), (20000, 20)):
        c = make_subject_dir(tmp_path / f"s{size[0]}", "c", "ccc", n=1)
        Image.new("RGB", size).save(c / "00.png")
        (c / "masks" / "00.png").unlink()
        with pytest.raises(MudiError, match="cannot show a subject"):
            find_subjects(c)[0].load(0)


def test_nan_lora_weights_are_refused_before_a_model_loads(tmp_path):
    import torch
    from safetensors.torch import save_file

    bad = tmp_path / "bad"
    bad.mkdir()
    save_file({"unet.x.lora_A.weight": torch.tensor([[1.0, float("nan")]]),
               "unet.x.lora_B.weight": torch.zeros(2, 1)}, str(bad / "pytorch_lora_weights.safetensors"))
    out = tmp_path / "gen"
    assert main(["generate", "--backbone", "tiny-sd", "--lora", str(bad), "--prompt", "a dog", "--init", "none",
                 "--out", str(out)]) == 2
    assert main(["merge", "--backbone", "tiny-sd", "--lora", str(bad), str(bad), "--out", str(tmp_path / "m")]) == 2
    assert not (tmp_path / "m").exists()


def test_a_layout_is_checked_before_training(tmp_path, capsys):
    work = tmp_path / "work"
    make_subject_dir(work / "in", "a", "olis")
    make_subject_dir(work / "in", "b", "hta")
    (work / "secret.txt").write_text("\xff\xfe not json")
    os.symlink(work / "secret.txt", work / "layout.json")
    run = work / "run.yaml"
    run.write_text(yaml.safe_dump({"subjects": ["in/a", "in/b"], "output_dir": "out", "backbone": "tiny-sd",
                                   "generate": {"layout": "layout.json"}}))
    assert main(["run", str(run)]) == 2
    assert "layout" in capsys.readouterr().err and not (work / "out").exists()


def test_the_report_shows_no_machine_paths_and_survives_non_utf8_names(tmp_path):
    from mudi.pipeline.report import _relative_paths
    from mudi.pipeline.stages import RunState

    out = tmp_path / "runs" / "r"
    out.mkdir(parents=True)
    cfg = RunConfig(subjects=[str(tmp_path / "data" / "a"), str(tmp_path / "data" / "b")], output_dir=str(out),
                    backbone="tiny-sd")
    st = RunState(cfg, out)
    text = _relative_paths(st, f"subjects: [{tmp_path / 'data' / 'a'}]\noutput_dir: {out}\nx: {out}/train")
    assert str(tmp_path) not in text and "../../data/a" in text and "x: train" in text
    from mudi.pipeline.report import write_report

    st.names = ["a\udcff"]  # a name read from a Latin-1 file name (surrogate-escaped)
    path = write_report(st)
    assert "\ufffd" in path.read_text(encoding="utf-8") and str(tmp_path) not in path.read_text(encoding="utf-8")


def test_a_long_prompt_is_said_once_in_mudis_words():
    from mudi.adapters.registry import load_backbone
    from mudi.sampling import prompt_length

    bb = load_backbone("tiny-sd")
    long = "olis corgi and hta chow chow in the park, " * 300
    said = prompt_length.warn_long_prompts(bb.pipeline, [long, long])
    assert len(said) == 1 and "takes only the first" in said[0] and str(len(long)) not in said[0]
    assert prompt_length.warn_long_prompts(bb.pipeline, [long]) == []  # once per process
    assert prompt_length.warn_long_prompts(bb.pipeline, ["a photo of olis corgi"]) == []


def test_known_library_notices_are_hidden_unless_verbose(tmp_path):
    import logging

    from mudi.cli import _DropNotice

    def filtered() -> bool:
        return any(isinstance(f, _DropNotice) for h in logging.getLogger("diffusers").handlers for f in h.filters)

    main(["generate", "--backbone", "tiny-sd", "--out", str(tmp_path / "a")])  # fails fast (no prompt): exit 2
    assert filtered()
    main(["generate", "--verbose", "--backbone", "tiny-sd", "--out", str(tmp_path / "b")])
    assert not filtered()
    main(["--verbose", "generate", "--backbone", "tiny-sd", "--out", str(tmp_path / "c")])
    assert not filtered()
    main(["generate", "--backbone", "tiny-sd", "--out", str(tmp_path / "d")])
    assert filtered()
