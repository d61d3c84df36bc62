"""Issue 28 (wandb): `--report_to wandb` in offline mode records the same series as metrics.jsonl (what every
tracker receives) and the validation images, and a resumed run continues the same wandb run."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from mudi.errors import MudiError
from mudi.samples import SAMPLES_DIR
from mudi.training.config import TrainConfig
from mudi.training.loop import read_metrics, train
from mudi.training.trackers import WANDB_ID_FILE, check_tracker

wandb = pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install 'mudi[wandb]')")

SUBJECTS = [str(SAMPLES_DIR / "dog6"), str(SAMPLES_DIR / "cat2")]


def read_wandb_records(path: Path) -> list:
    """Every protobuf record of an offline ``run-*.wandb`` file (a LevelDB-style log: 32 KiB blocks of
    ``<crc32, length, type>`` chunks after a 7-byte ``:W&B`` header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, out, buf = path.read_bytes(), 32768, 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            out.append(buf + chunk)
    records = []
    for raw in out:
        r = pb.Record()
        r.ParseFromString(raw)
        records.append(r)
    return records


def history(run_dir: Path) -> dict[int, dict]:
    rows: dict[int, dict] = {}
    for f in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for r in read_wandb_records(f):
            if r.WhichOneof("record_type") == "history":
                row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
                rows.setdefault(int(row["_step"]), {}).update(row)
    return rows


def test_wandb_offline_records_the_metrics_and_resumes_into_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    kw = dict(subjects=SUBJECTS, backbone="tiny-sd", output_dir=str(out), rank=4, progress=False, device="cpu",
              report_to="wandb", checkpointing_steps=2, resolution=64, validation_steps=2,
              validation_prompts=["A photo of [V1] and [V2]."], num_validation_inference_steps=2)
    train(TrainConfig(max_train_steps=2, **kw))
    run_id = (out / WANDB_ID_FILE).read_text().strip()
    train(TrainConfig(max_train_steps=4, resume_from_checkpoint="latest", **kw))
    assert (out / WANDB_ID_FILE).read_text().strip() == run_id
    runs = sorted(out.glob("wandb/offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(f"-{run_id}") for r in runs)  # one wandb run, resumed
    logged = history(out)
    for row in read_metrics(out):
        got = logged[row["step"]]
        for key, value in row.items():
            if key != "step":
                tol = {"abs": 1e-4} if key.endswith("_seconds") else {"rel": 1e-6}  # metrics.jsonl rounds times
                assert got[key] == pytest.approx(value, **tol), (row["step"], key)
    shown = {s: r["validation/count"] for s, r in logged.items() if "validation/count" in r}
    assert shown == {2: 1, 4: 1}  # the validation image of each validation step (one prompt)
    media = {p.name.split("_")[1] for p in out.glob("wandb/offline-run-*/files/media/images/validation_*.png")}
    assert media == {"2", "4"}  # the image files themselves, named by step


def test_a_missing_tracker_package_is_one_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(MudiError, match="pip install 'mudi\\[wandb\\]'"):
        check_tracker("wandb")
