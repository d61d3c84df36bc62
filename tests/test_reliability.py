"""What mudi promises when things go wrong (docs/reliability.md): resume checks, guarded and locked output
folders, file-system failures as one line, file modes, damaged checkpoints, foreign LoRAs, odd images."""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mudi.io
from mudi.cli import main
from mudi.errors import MudiError
from mudi.io import LOCK_FILE, OutputLock
from mudi.training.checkpoint import list_checkpoints, resolve_checkpoint
from mudi.training.config import TrainConfig
from mudi.training.loop import train
from tests.helpers import make_subject_dir

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "mudi" / "samples"
SUBJECTS = [str(SAMPLES / "dog6"), str(SAMPLES / "cat2")]
KW = dict(backbone="tiny-sd", subjects=SUBJECTS, rank=4, report_to="none", progress=False, device="cpu",
          learning_rate=1e-2, composition_prob=0.5, seed=5)
TRAIN_ARGS = ["--backbone", "tiny-sd", "--subjects", *SUBJECTS, "--rank", "4", "--report_to", "none", "--no-progress",
              "--device", "cpu"]


def _one_line_error(capsys) -> str:
    """The verb's error: exactly one line starting with ``mudi`` on stderr (progress bars aside), no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("mudi ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _no_temporaries(folder: Path) -> None:
    left = [p for p in folder.rglob(".*") if p.name.endswith(".tmp") or ".tmp." in p.name]
    assert not left, left


# ------------------------------------------------------------------------------------------------ resume
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(output_dir=str(out), max_train_steps=3, checkpointing_steps=1, **KW))  # checkpoint-1, -2
    return out


@pytest.mark.parametrize("change", [{"rank": 8}, {"subjects": [SUBJECTS[0], str(SAMPLES / "dog2")]}, {"composition": "cutmix"},
                                    {"seed": 6}, {"learning_rate": 1e-3}, {"backbone": "tiny-sdxl"},
                                    {"resolution": 32}])
def test_resume_refuses_a_changed_run(run_dir, tmp_path, change):
    out = tmp_path / "r"
    shutil.copytree(run_dir, out)
    before = (out / "train_config.yaml").read_text()
    with pytest.raises(MudiError, match=f"cannot resume .*{next(iter(change))}") as e:
        train(TrainConfig(output_dir=str(out), max_train_steps=4, resume_from_checkpoint="latest",
                          checkpointing_steps=1, **{**KW, **change}))
    assert "\n" not in str(e.value)
    assert (out / "train_config.yaml").read_text() == before  # the original config is never overwritten


def test_resume_accepts_and_records_steps_checkpointing_and_validation(run_dir, tmp_path):
    out = tmp_path / "r"
    shutil.copytree(run_dir, out)
    before = (out / "train_config.yaml").read_text()
    subjects = [str(Path(s).resolve().relative_to(Path.cwd())) if Path(s).is_relative_to(Path.cwd()) else s
                for s in SUBJECTS]  # the same folders spelled differently are the same subjects
    trainer = train(TrainConfig(output_dir=str(out), max_train_steps=4, resume_from_checkpoint="latest",
                                checkpointing_steps=5, validation_steps=0, **{**KW, "subjects": subjects}))
    assert trainer.global_step == 4
    assert (out / "train_config.yaml").read_text() == before
    history = [json.loads(line) for line in (out / "train_history.jsonl").read_text().splitlines()]
    assert [h["event"] for h in history] == ["start", "resume"]
    assert history[1]["step"] == 2
    assert history[1]["changes"]["max_train_steps"] == {"from": 3, "to": 4}
    assert history[1]["changes"]["checkpointing_steps"] == {"from": 1, "to": 5}
    assert "subjects" not in history[1]["changes"]


def test_a_folder_holding_another_run_is_refused_unless_overwrite(run_dir, tmp_path, capsys):
    out = tmp_path / "r"
    shutil.copytree(run_dir, out)
    (out / "notes.txt").write_text("mine")
    rc = main(["train", *TRAIN_ARGS, "--max_train_steps", "1", "--output_dir", str(out)])
    assert rc == 2 and "holds another training run" in _one_line_error(capsys)
    assert main(["train", *TRAIN_ARGS, "--max_train_steps", "1", "--checkpointing_steps", "1", "--output_dir",
                 str(out), "--overwrite"]) == 0
    assert [p.name for p in list_checkpoints(out)] == []  # the old run's checkpoint-1/2 are gone
    assert (out / "notes.txt").read_text() == "mine"  # nothing else is touched
    history = (out / "train_history.jsonl").read_text().splitlines()
    assert len(history) == 1


# ------------------------------------------------------------------------------------------------ locks
def test_two_runs_on_one_folder(tmp_path, capsys):
    out = tmp_path / "r"
    with OutputLock(out, "training run"):  # as another process holding it would
        rc = main(["train", *TRAIN_ARGS, "--max_train_steps", "1", "--output_dir", str(out)])
        err = _one_line_error(capsys)
    assert rc == 2 and "in use by another mudi training run" in err and f"process {os.getpid()}" in err
    assert not (out / "train_config.yaml").exists()
    assert main(["train", *TRAIN_ARGS, "--max_train_steps", "1", "--output_dir", str(out)]) == 0  # free again


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path, caplog):
    out = tmp_path / "g"
    out.mkdir()
    import socket

    (out / LOCK_FILE).write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "since": "then"}))
    with caplog.at_level("WARNING"):
        assert main(["segmix", "--subjects", *SUBJECTS, "--num_images", "1", "--resolution", "64",
                     "--output_dir", str(out)]) == 0
    assert any("taking it over" in r.getMessage() for r in caplog.records)
    assert (out / "000.png").is_file()


# ------------------------------------------------------------------------------------------------ file system
READ_ONLY = Path("/sys/mudi-cannot-write-here")


def _read_only_target(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return ro / "out"
    if not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and _can_mkdir(READ_ONLY):
        pytest.skip("no read-only folder for root here")
    return READ_ONLY


def _can_mkdir(p: Path) -> bool:
    try:
        p.mkdir()
    except OSError:
        return False
    p.rmdir()
    return True


def _verb_argv(verb: str, out: Path, tmp_path: Path) -> list[str]:
    images = tmp_path / "images"
    if not images.is_dir():
        images.mkdir()
        Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(images / "0000_seed0.png")
    return {
        "train": ["train", *TRAIN_ARGS, "--max_train_steps", "1", "--output_dir", str(out)],
        "generate": ["generate", "--backbone", "tiny-sd", "--subjects", *SUBJECTS, "--num_images", "1", "--steps", "2",
                     "--device", "cpu", "--output_dir", str(out)],
        "segmix": ["segmix", "--subjects", *SUBJECTS, "--num_images", "2", "--resolution", "64", "--output_dir",
                   str(out)],
        "evaluate": ["evaluate", "--images", str(images), "--subjects", *SUBJECTS, "--detector", "tiny-owlv2",
                     "--embedders", "tiny-dinov2", "--text-scorers", "tiny-clip", "--threshold", "0", "--device", "cpu",
                     "--output_dir", str(out)],
    }[verb]


VERBS = ["train", "generate", "segmix", "evaluate"]


@pytest.mark.parametrize("verb", VERBS)
def test_an_output_path_that_is_a_file(verb, tmp_path, capsys, monkeypatch):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    monkeypatch.setattr("mudi.adapters.registry.load", _no_model_load)
    assert main(_verb_argv(verb, target, tmp_path)) == 2
    assert "is a file, not a folder" in _one_line_error(capsys)
    assert target.read_text() == "not a folder"


def _no_model_load(*a, **k):
    raise AssertionError("a model was loaded before the output folder was checked")


@pytest.mark.parametrize("verb", VERBS)
def test_a_read_only_output_folder(verb, tmp_path, capsys, monkeypatch):
    target = _read_only_target(tmp_path)
    monkeypatch.setattr("mudi.adapters.registry.load", _no_model_load)
    assert main(_verb_argv(verb, target, tmp_path)) == 2
    err = _one_line_error(capsys)
    assert "cannot write" in err and str(target) in err


def test_segment_into_a_read_only_subject_folder(tmp_path, capsys, monkeypatch):
    if os.geteuid() == 0:
        pytest.skip("root writes into any folder it owns; covered by the injected failure below")
    folder = make_subject_dir(tmp_path, "toy", "zwx", with_masks=False)
    folder.chmod(0o555)
    try:
        assert main(["segment", str(folder), "--backend", "grabcut"]) == 2
        assert "cannot write" in _one_line_error(capsys)
    finally:
        folder.chmod(0o755)


def _enospc_after(monkeypatch, n_ok: int, root: Path) -> dict:
    """os.replace fails with ENOSPC (a full disk) after ``n_ok`` successful atomic writes under ``root``."""
    real = os.replace
    seen = {"n": 0}

    def replace(src, dst, *a, **k):
        if str(dst).startswith(str(root)):
            seen["n"] += 1
            if seen["n"] > n_ok:
                raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(mudi.io.os, "replace", replace)
    return seen


@pytest.mark.parametrize("verb", VERBS + ["segment"])
def test_a_full_disk_is_one_line_and_leaves_earlier_outputs_intact(verb, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    if verb == "segment":
        subject = make_subject_dir(tmp_path, "toy", "zwx", with_masks=False)
        argv = ["segment", str(subject), "--backend", "grabcut"]
        earlier = subject / "00.png"
    else:
        argv = _verb_argv(verb, out, tmp_path)
        out.mkdir()
        earlier = out / "earlier.txt"
    before = earlier.read_bytes() if earlier.exists() else b"kept"
    earlier.write_bytes(before)
    _enospc_after(monkeypatch, 1, tmp_path)
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert "No space left on device" in err
    assert earlier.read_bytes() == before
    _no_temporaries(tmp_path)


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    import mudi.training.checkpoint as ckpt

    out = tmp_path / "r"
    real = ckpt.save_file
    calls = {"n": 0}

    def save_file(tensors, path, *a, **k):
        calls["n"] += 1
        if calls["n"] > 3:  # the first checkpoint (3 files) fits; the second does not
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(ckpt, "save_file", save_file)
    rc = main(["train", *TRAIN_ARGS, "--max_train_steps", "4", "--checkpointing_steps", "1", "--output_dir", str(out)])
    err = _one_line_error(capsys)
    assert rc == 2 and "could not write checkpoint-2" in err and "checkpoint-1 is intact" in err
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-1"]
    assert resolve_checkpoint(out, "latest").step == 1
    _no_temporaries(out)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_new_files_follow_the_umask_and_rewritten_files_keep_their_mode(umask, tmp_path):
    old = os.umask(umask)
    try:
        out = tmp_path / "s"
        assert main(["segmix", "--subjects", *SUBJECTS, "--num_images", "1", "--resolution", "64", "--output_dir",
                     str(out)]) == 0
        train(TrainConfig(output_dir=str(tmp_path / "t"), max_train_steps=2, checkpointing_steps=1, **KW))
    finally:
        os.umask(old)
    want_file, want_dir = 0o666 & ~umask, 0o777 & ~umask
    for p in [out / "000.png", out / "segmix.jsonl", tmp_path / "t" / "pytorch_lora_weights.safetensors",
              tmp_path / "t" / "train_config.yaml", tmp_path / "t" / "checkpoint-1" / "state.json"]:
        assert p.stat().st_mode & 0o777 == want_file, (p, oct(p.stat().st_mode))
    assert (tmp_path / "t" / "checkpoint-1").stat().st_mode & 0o777 == want_dir
    meta = tmp_path / "meta.json"
    meta.write_text("{}")
    meta.chmod(0o640)
    mudi.io.write_json_atomic(meta, {"a": 1})
    assert meta.stat().st_mode & 0o777 == 0o640


def test_segment_keeps_the_mode_of_metadata_jsonl(benchmark_dir, tmp_path):
    pair = tmp_path / "pair"
    src = benchmark_dir / "pairs" / "dog6_and_dog2"
    pair.mkdir()
    rows = [json.loads(line) for line in (src / "metadata.jsonl").read_text().splitlines() if line.strip()]
    keep = [r for r in rows[1:] if r.get("file_name") in ("a00.jpg", "b00.jpg")]
    for r in keep:
        shutil.copy(src / r["file_name"], pair / r["file_name"])
        r.pop("mask_path", None)
    (pair / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [rows[0], *keep]))
    (pair / "metadata.jsonl").chmod(0o644)
    old = os.umask(0o077)
    try:
        assert main(["segment", str(pair), "--backend", "grabcut"]) == 0
    finally:
        os.umask(old)
    assert (pair / "metadata.jsonl").stat().st_mode & 0o777 == 0o644
    assert all("mask_path" in json.loads(line) for line in (pair / "metadata.jsonl").read_text().splitlines()[1:])


# ------------------------------------------------------------------------------------------------ damaged inputs
def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG claiming ``w`` x ``h`` pixels (a decompression bomb's header), with one empty data chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))


def test_a_decompression_bomb_is_one_line_and_segment_goes_on(tmp_path, capsys):
    folder = make_subject_dir(tmp_path, "toy", "zwx", n=2, with_masks=False)
    _png_header_only(folder / "99.png", 20000, 20000)
    assert main(["segment", str(folder), "--backend", "grabcut"]) == 1  # one image failed, the others are done
    out = capsys.readouterr().out
    assert "99.png" in out and "too large to decode safely" in out
    assert (folder / "masks" / "00.png").is_file() and (folder / "masks" / "01.png").is_file()


def test_a_truncated_checkpoint(run_dir, tmp_path, caplog, capsys):
    out = tmp_path / "r"
    shutil.copytree(run_dir, out)
    f = out / "checkpoint-2" / "optimizer.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with caplog.at_level("WARNING"):
        assert resolve_checkpoint(out, "latest").step == 1
    assert any("checkpoint-2" in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    rc = main(["train", *TRAIN_ARGS, "--max_train_steps", "3", "--learning_rate", "1e-2", "--composition_prob", "0.5",
               "--seed", "5", "--checkpointing_steps", "1", "--output_dir", str(out), "--resume_from_checkpoint",
               str(out / "checkpoint-2")])
    assert rc == 2 and "checkpoint is damaged" in _one_line_error(capsys)


def test_a_lora_of_another_family_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    lora = tmp_path / "xl"
    train(TrainConfig(output_dir=str(lora), max_train_steps=1, **{**KW, "backbone": "tiny-sdxl"}))
    monkeypatch.setattr("mudi.adapters.registry.load", _no_model_load)
    rc = main(["generate", "--backbone", "tiny-sd", "--lora", str(lora), "--num_images", "1", "--steps", "2",
               "--device", "cpu", "--output_dir", str(tmp_path / "g")])
    err = _one_line_error(capsys)
    assert rc == 2 and "trained for sdxl" in err and "--backbone tiny-sdxl" in err
    monkeypatch.undo()
    (lora / "mudi_subjects.json").unlink()  # a file from elsewhere: its key shapes give it away
    rc = main(["generate", "--backbone", "tiny-sd", "--lora", str(lora), "--subjects", *SUBJECTS, "--num_images", "1",
               "--steps", "2", "--device", "cpu", "--output_dir", str(tmp_path / "g")])
    err = _one_line_error(capsys)
    assert rc == 2 and "does not fit the sd15 model" in err


def test_a_bad_lora_path_fails_before_the_model_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("mudi.adapters.registry.load", _no_model_load)
    rc = main(["generate", "--backbone", "tiny-sd", "--lora", str(tmp_path / "nope"), "--subjects", *SUBJECTS,
               "--output_dir", str(tmp_path / "g")])
    assert rc == 2 and "no such LoRA folder" in _one_line_error(capsys)


def test_a_square_photo_with_exif_rotation_and_a_raw_pixel_mask(tmp_path):
    from mudi.data.images import read_image, read_mask

    raw = np.full((80, 80, 3), 30, np.uint8)
    raw[5:30, 10:70] = (240, 200, 20)  # the subject, in raw (sensor) pixels: a wide bar at the top
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    Image.fromarray(raw).save(tmp_path / "p.jpg", exif=exif, quality=95)
    raw_mask = np.zeros((80, 80), bool)
    raw_mask[5:30, 10:70] = True
    Image.fromarray(raw_mask.astype(np.uint8) * 255).save(tmp_path / "m.png")
    rgb, _, img = read_image(tmp_path / "p.jpg")
    mask = read_mask(tmp_path / "m.png", tmp_path / "p.jpg", (rgb.shape[1], rgb.shape[0]), img)
    subject = (np.abs(rgb.astype(int) - (240, 200, 20)).sum(-1) < 90)
    assert (mask & subject).sum() > 0.9 * subject.sum()  # the mask lies on the displayed subject
    displayed = np.asarray(Image.fromarray(raw_mask.astype(np.uint8) * 255).rotate(-90)) > 127
    Image.fromarray(displayed.astype(np.uint8) * 255).save(tmp_path / "m2.png")  # drawn on the displayed photo
    mask2 = read_mask(tmp_path / "m2.png", tmp_path / "p.jpg", (rgb.shape[1], rgb.shape[0]), img)
    assert (mask2 & subject).sum() > 0.9 * subject.sum()


def test_cmyk_and_16_bit_images_read_with_the_right_colours(tmp_path):
    from mudi.data.images import read_image

    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "red.jpg", quality=100)  # red in CMYK
    rgb = read_image(tmp_path / "red.jpg")[0]
    assert rgb[..., 0].mean() > 200 and rgb[..., 1:].mean() < 60
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(tmp_path / "cyan.tif")
    rgb = read_image(tmp_path / "cyan.tif")[0]
    assert rgb[..., 0].mean() < 60 and rgb[..., 1:].mean() > 200
    grey = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    rgb = read_image(tmp_path / "grey16.png")[0]
    np.testing.assert_allclose(rgb[0, :, 0], [0, 64, 128, 255], atol=1)


# ------------------------------------------------------------------------------------------------ small ones
def test_invalid_yaml_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rank: 4\n  max_train_steps: [1\n")
    assert main(["train", "--config", str(bad), "--subjects", *SUBJECTS]) == 2
    err = _one_line_error(capsys)
    assert "not valid YAML" in err and "line " in err


def test_subjects_the_prompt_does_not_name_are_a_warning(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        assert main(["generate", "--backbone", "tiny-sd", "--subjects", *SUBJECTS, "--prompt", "[V1] in the pool",
                     "--num_images", "1", "--steps", "2", "--device", "cpu", "--output_dir", str(tmp_path)]) == 0
    assert any("does not name cat2" in r.getMessage() for r in caplog.records)


def test_tiny_layout_boxes_are_refused(tmp_path, capsys):
    layout = tmp_path / "l.json"
    layout.write_text(json.dumps({"boxes": [[0.1, 0.1, 0.101, 0.6], [0.5, 0.2, 0.9, 0.9]]}))
    assert main(["generate", "--backbone", "tiny-sd", "--subjects", *SUBJECTS, "--layout", str(layout),
                 "--output_dir", str(tmp_path / "g")]) == 2
    assert "a subject needs at least" in _one_line_error(capsys)


def test_no_api_key_over_plain_http_to_another_host(monkeypatch):
    from mudi.sampling.layout_llm import InsecureEndpoint, llm_layout_or_none

    sent = []
    monkeypatch.setenv("MUDI_LLM_API_KEY", "secret")
    with pytest.raises(InsecureEndpoint, match="over plain http"):
        llm_layout_or_none("a and b", ["a", "b"], "http://llm.example.com/v1", transport=lambda *a: sent.append(a))
    assert not sent
    reply = json.dumps({"choices": [{"message": {"content": '{"a": [0, 0, 0.5, 1], "b": [0.5, 0, 1, 1]}'}}]})
    for url in ("http://127.0.0.1:8000/v1", "http://localhost:8000/v1", "https://llm.example.com/v1"):
        boxes = llm_layout_or_none("a and b", ["a", "b"], url, transport=lambda *a: reply.encode())
        assert boxes is not None and len(boxes) == 2


def test_dnc_score_is_not_clipped_at_zero():
    from mudi.core.dnc import dnc_details, dnc_score

    s_gt = np.array([[0.9, 0.1], [0.1, 0.9]])
    s_dc = np.array([[0.1, 0.9], [-0.9, 0.1]])  # badly mixed: far from S_GT
    details = dnc_details(s_gt, s_dc)
    expected = 1 - np.linalg.norm(s_gt - s_dc[details.assignment], 2)
    assert expected < 0 and dnc_score(s_gt, s_dc) == pytest.approx(expected)


def test_segmix_caption_order_does_not_follow_the_layout():
    from mudi.core.segmix import compose_segmix
    from mudi.data.subjects import load_subjects

    subjects = load_subjects(SUBJECTS)
    cutouts = [s.cutouts(max_side=128)[0] for s in subjects]
    orders = set()
    for seed in range(40):
        comp = compose_segmix(cutouts, ["A", "B"], (128, 128), np.random.default_rng(seed))
        orders.add(tuple(comp.left_to_right))
        assert comp.prompt.index("A") < comp.prompt.index("B")
    assert orders == {(0, 1), (1, 0)}  # both layouts occur, with one caption order
