"""Stopping and resuming a training run (issue: exact resume after a real Ctrl-C).

In-process: a SIGINT landing inside a step (right after the optimizer step, right after the noise draw) lets
the step finish and checkpoints at its boundary; a second SIGINT aborts without touching the last checkpoint.
Real processes (forked from tests/zygote.py): 20 SIGINTs at random moments, each run resumed, end with a LoRA
bit-identical to an uninterrupted run; a SIGKILL in the middle of a checkpoint write leaves the previous
checkpoint intact and resumable.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mudi.training.checkpoint import CheckpointData, list_checkpoints
from mudi.training.config import TrainConfig
from mudi.training.loop import train
from mudi.training.signals import TrainingStopped
from tests.zygote_client import Zygote

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "mudi" / "samples"
SUBJECTS = [str(SAMPLES / "dog6"), str(SAMPLES / "cat2")]
KW = dict(backbone="tiny-sd", subjects=SUBJECTS, rank=4, report_to="none", progress=False, device="cpu",
          learning_rate=1e-2, composition_prob=0.5, seed=5, checkpointing_steps=1000)


def _lora(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "pytorch_lora_weights.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("ref")
    train(TrainConfig(output_dir=str(out), max_train_steps=6, **KW))
    return _lora(out)


@pytest.mark.parametrize("where", ["after_optimizer_step", "after_noise_draw"])
def test_sigint_inside_a_step_finishes_the_step_then_checkpoints(where, tmp_path, monkeypatch, reference):
    calls = {"n": 0}
    if where == "after_optimizer_step":
        real = torch.optim.AdamW.step

        def step(self, *a, **k):
            out = real(self, *a, **k)
            calls["n"] += 1
            if calls["n"] == 3:
                os.kill(os.getpid(), signal.SIGINT)
            return out

        monkeypatch.setattr(torch.optim.AdamW, "step", step)
    else:
        real = torch.randn

        def randn(*a, **k):
            out = real(*a, **k)
            if k.get("generator") is not None and "device" not in k:  # the trainer's noise draw, not the VAE's
                calls["n"] += 1
                if calls["n"] == 3:
                    os.kill(os.getpid(), signal.SIGINT)
            return out

        monkeypatch.setattr(torch, "randn", randn)
    with pytest.raises(TrainingStopped, match="stopped at step 3 of 6") as e:
        train(TrainConfig(output_dir=str(tmp_path), max_train_steps=6, **KW))
    assert e.value.exit_code == 130
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-3"]  # the interrupted step is complete
    monkeypatch.undo()
    train(TrainConfig(output_dir=str(tmp_path), max_train_steps=6, resume_from_checkpoint="latest", **KW))
    assert _same(_lora(tmp_path), reference)


def test_a_second_sigint_aborts_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, reference):
    real = torch.optim.AdamW.step
    calls = {"n": 0}

    def step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:  # two Ctrl-C in one step: the second aborts at once
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(output_dir=str(tmp_path), max_train_steps=6, **{**KW, "checkpointing_steps": 2}))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2"]
    assert CheckpointData(tmp_path / "checkpoint-2").step == 2  # intact
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    monkeypatch.undo()
    train(TrainConfig(output_dir=str(tmp_path), max_train_steps=6, resume_from_checkpoint="latest",
                      **{**KW, "checkpointing_steps": 2}))
    assert _same(_lora(tmp_path), reference)


# ------------------------------------------------------------------------------------------------ real processes
@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


def _argv(out: Path, resume: bool, steps: int = 6) -> list[str]:
    argv = ["train", "--backbone", "tiny-sd", "--subjects", *SUBJECTS, "--rank", "4", "--report_to", "none",
            "--no-progress", "--device", "cpu", "--learning_rate", "1e-2", "--composition_prob", "0.5", "--seed", "5",
            "--checkpointing_steps", "1000", "--max_train_steps", str(steps), "--output_dir", str(out)]
    return argv + (["--resume_from_checkpoint", "latest"] if resume else [])


def test_twenty_real_ctrl_c_at_random_moments_resume_bit_for_bit(zygote, tmp_path, reference):
    """20 runs, each sent a real SIGINT at a random moment of its life (model build, a step, the final write),
    then resumed to the end: every final LoRA equals the uninterrupted run's, bit for bit."""
    log = tmp_path / "log.txt"
    t0 = time.perf_counter()
    zygote.start(_argv(tmp_path / "timing", resume=False), log)
    assert zygote.wait() == 0, log.read_text()[-3000:]
    duration = time.perf_counter() - t0  # one uninterrupted run: the window the moments are drawn from
    rng = random.Random(12345)
    stopped = 0
    for k in range(20):
        out = tmp_path / f"run{k}"
        pid = zygote.start(_argv(out, resume=False), log)
        time.sleep(rng.uniform(0.0, duration))
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        code = zygote.wait()
        assert code in (0, 130), (code, log.read_text()[-3000:])
        if code == 130:
            stopped += 1
            zygote.start(_argv(out, resume=True), log)
            assert zygote.wait() == 0, log.read_text()[-3000:]
            history = [json.loads(line) for line in (out / "train_history.jsonl").read_text().splitlines()]
            # stopped in start-up: one start; before the first step: two starts; later: a start, then a resume
            assert [h["event"] for h in history] in (["start"], ["start", "start"], ["start", "resume"])
            steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
            assert steps == list(range(1, 7))  # one line per step, none from an undone step
        assert _same(_lora(out), reference), f"trial {k} (stopped: {code == 130})"
    assert stopped >= 10  # most moments fell inside the run


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(zygote, tmp_path, reference):
    out, log = tmp_path / "run", tmp_path / "log.txt"
    argv = _argv(out, resume=False) + ["--checkpointing_steps", "2"]
    pid = zygote.start(argv, log, slow_checkpoint=0.4)
    deadline = time.time() + 60
    while time.time() < deadline:  # the second checkpoint (step 4) is being written
        if (out / "checkpoint-2").is_dir() and list(out.glob(".checkpoint-4-*.tmp")):
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"no checkpoint write seen: {log.read_text()[-2000:]}")
    os.kill(pid, signal.SIGKILL)
    assert zygote.wait() == -signal.SIGKILL
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2"]
    assert CheckpointData(out / "checkpoint-2").step == 2
    zygote.start(_argv(out, resume=True) + ["--checkpointing_steps", "2"], log)
    assert zygote.wait() == 0, log.read_text()[-3000:]
    assert not list(out.glob(".checkpoint-*.tmp"))  # the killed write's leftovers are cleaned up
    assert _same(_lora(out), reference)
