"""`mudi iterate` on tiny offline models: two rounds with a scripted scorer keep exactly the top K by score
(ties to the earlier image), fine-tune on them with KL on top of the current LoRA, chain the rounds' LoRAs,
resume a round killed mid-training, skip finished rounds, and write the report; the D&C scorer runs on the
tiny detector and embedder; prompts come from the shipped templates (or a scripted LLM)."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import mudi.iterative.loop as loop
from mudi.cli import main as cli_main
from mudi.data.manifests import LORA_FILE, SUBJECTS_FILE
from mudi.errors import MudiError
from mudi.iterative.config import IterateConfig
from mudi.iterative.loop import read_scores, run_iterations
from mudi.iterative.scores import top_k
from mudi.iterative.templates import llm_templates, shipped_prompts_file, templates_for
from mudi.samples import sample_subject_dirs
from mudi.training.config import TrainConfig
from mudi.training.loop import train
from mudi.training.signals import TrainingStopped

# round 1 draws seeds 0-3, round 2 seeds 4-7, the final evaluation round 1's seeds again
SCORES = {0: 0.5, 1: 0.9, 2: 0.5, 3: 0.1, 4: 0.2, 5: 0.2, 6: 0.7, 7: math.nan}
EXPECTED_KEPT = {1: [1, 0], 2: [6, 4]}  # best first; 0 beats 2 and 4 beats 5 on the tie (earlier image)


class Scripted:
    """Known scores by seed; records what it was asked to score."""

    fingerprint = "scripted-v1"
    metric = "scripted"

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, images, records):
        assert all(im.shape == (64, 64, 3) and im.dtype == np.uint8 for im in images)
        self.seen += [r["seed"] for r in records]
        return [{"score": SCORES[r["seed"]], "failures": ["count"] if r["seed"] == 3 else []} for r in records]


@pytest.fixture(scope="module")
def lora(tmp_path_factory) -> str:
    """A 2-step Seg-Mix LoRA of the bundled dog6 and cat2 (its manifest names them and their folders)."""
    out = tmp_path_factory.mktemp("lora") / "run"
    dirs = {p.name: str(p) for p in sample_subject_dirs()}
    subjects = [dirs["dog6"], dirs["cat2"]]
    train(TrainConfig(backbone="tiny-sd", subjects=subjects, max_train_steps=2, rank=4, learning_rate=1e-2,
                      composition_prob=1.0, report_to="none", progress=False, device="cpu", output_dir=str(out)))
    return str(out)


def _config(lora: str, out: Path, **kw) -> IterateConfig:
    values = dict(lora=lora, rounds=2, num_images=4, keep=2, max_train_steps=2, rank=4, learning_rate=1e-2,
                  num_inference_steps=2, batch_size=4, output_dir=str(out), device="cpu", progress=False,
                  train={"report_to": "none", "train_batch_size": 1})
    return IterateConfig(**{**values, **kw})


def test_two_rounds_keep_exactly_the_top_k_and_resume(lora, tmp_path, monkeypatch, capsys):
    out = tmp_path / "it"
    real_train = loop.train

    def stop_round_2(cfg, **kw):
        def callback(trainer, batch, losses):
            if "round-2" in cfg.output_dir and trainer.global_step == 1:
                os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C in round 2's fine-tuning
        return real_train(cfg, callback=callback)

    monkeypatch.setattr(loop, "train", stop_round_2)
    scorer = Scripted()
    with pytest.raises(TrainingStopped, match="stopped at step 1 of 2"):
        run_iterations(_config(lora, out), scorer=scorer)
    assert scorer.seen == [0, 1, 2, 3, 4, 5, 6, 7]
    monkeypatch.setattr(loop, "train", real_train)
    scorer = Scripted()
    result = run_iterations(_config(lora, out), scorer=scorer)
    assert result.ran == ["round-2/train", "round-2/lora", "final/images", "final/scores"]
    assert scorer.seen == [0, 1, 2, 3]  # only the final evaluation was scored now
    history = [json.loads(x) for x in (out / "round-2" / "train" / "train_history.jsonl").read_text().splitlines()]
    assert [(h["event"], h["step"]) for h in history] == [("start", 0), ("resume", 1)]

    for r in (1, 2):
        rd = out / f"round-{r}"
        assert read_scores(rd)[:3] == [SCORES[s] for s in range(4 * (r - 1), 4 * (r - 1) + 3)]
        kept = json.loads((rd / "kept.json").read_text())["kept"]
        assert [k["seed"] for k in kept] == EXPECTED_KEPT[r]
        # the kept folder: exactly those images, byte for byte, captioned with their generation prompts
        meta = yaml.safe_load((rd / "kept" / "subject.yaml").read_text())
        files = sorted(p.name for p in (rd / "kept").glob("*.png"))
        assert files == ["00.png", "01.png"]
        for k, name in zip(kept, files):
            assert (rd / "kept" / name).read_bytes() == (rd / k["image"]).read_bytes()
            sidecar = json.loads((rd / k["image"]).with_suffix(".json").read_text())
            assert meta["captions"][name] == sidecar["prompt"] == k["prompt"]
            assert sidecar["init"] == "mean_shifted" and " and " in sidecar["prompt"]
        cfg = yaml.safe_load((rd / "train" / "train_config.yaml").read_text())
        start = lora if r == 1 else str(out / "round-1" / "lora")
        assert (cfg["composition"], cfg["kl_weight"], cfg["base_lora"], cfg["subjects"]) == \
            ("none", 1.0, [start], [str(rd / "kept")])
        assert json.loads((rd / "images" / f"0000_seed{4 * (r - 1)}.json").read_text())["lora"] == start
        report = json.loads((rd / "lora" / "merge_report.json").read_text())
        assert report["method"] == "concat" and report["max_rank"] == 4 + 4 * r  # ranks stack round by round
        names = [s["phrase"] for s in json.loads((rd / "lora" / SUBJECTS_FILE).read_text())["subjects"]]
        assert names == ["olis corgi", "ult russian blue"]
        assert Image.open(rd / "histogram.png").size == (480, 260)
    assert result.lora_dir == out / "round-2" / "lora" and (result.lora_dir / LORA_FILE).is_file()
    stats = [r["stats"] for r in result.rounds]
    assert stats[0]["mean"] == pytest.approx(np.mean([0.5, 0.9, 0.5, 0.1]))
    assert stats[1]["mean"] == pytest.approx(np.mean([0.2, 0.2, 0.7]))  # the NaN is left out
    assert sum(stats[0]["histogram"]["counts"]) == 4 and stats[0]["failure_counts"] == {"count": 1}
    assert result.final["stats"]["mean"] == pytest.approx(stats[0]["mean"])  # round 1's seeds, the scripted scores
    final_meta = json.loads((out / "final" / "images" / "0000_seed0.json").read_text())
    assert final_meta["lora"] == str(out / "round-2" / "lora")
    rep = json.loads((out / "report.json").read_text())
    assert [r["round"] for r in rep["rounds"]] == [1, 2] and rep["final"] is not None
    html = (out / "report.html").read_text()
    assert html.count("class='card'") == 4 and "round 2" in html and (out / "progress.png").is_file()

    scorer = Scripted()  # everything finished: nothing runs, nothing is scored
    assert run_iterations(_config(lora, out), scorer=scorer).ran == [] and scorer.seen == []
    capsys.readouterr()


def test_the_dnc_scorer_on_tiny_models(lora, tmp_path, capsys):
    out = tmp_path / "dnc"
    assert cli_main(["iterate", "--lora", lora, "--rounds", "1", "--num_images", "2", "--keep", "1",
                     "--max_train_steps", "1", "--rank", "4", "--steps", "2", "--no-final_evaluation", "--device",
                     "cpu", "--out", str(out), "--set", "evaluate.detector=tiny-owlv2",
                     "evaluate.embedders=[tiny-dinov2]", "evaluate.threshold=0.0", "train.report_to=none",
                     "train.train_batch_size=1", "progress=false"]) == 0
    scores = json.loads((out / "round-1" / "scores.json").read_text())
    assert scores["metric"] == "dnc_dino" and len(scores["images"]) == 2
    assert all("num_detections" in e and "dnc_dino" in e["metrics"] for e in scores["images"])
    assert len(json.loads((out / "round-1" / "kept.json").read_text())["kept"]) == 1
    assert "report.html" in capsys.readouterr().out


def test_top_k_breaks_ties_by_image_order_and_ranks_nan_last():
    assert top_k([0.3, 0.7, 0.3, math.nan, 0.7], 3) == [1, 4, 0]
    assert top_k([math.nan, 0.0], 2) == [1, 0]
    assert top_k([-0.1, 0.0], 1) == [1]  # D&C may be slightly negative


def test_prompts_shipped_file_and_an_llm(tmp_path):
    for n in (2, 3, 4, 5):  # the shipped list has prompts for 2 to 5 subjects, each naming all of them
        ts = templates_for(shipped_prompts_file(), n)
        assert ts and all(all(f"[V{k}]" in t for k in range(1, n + 1)) and f"[V{n + 1}]" not in t for t in ts)
    assert len(templates_for(shipped_prompts_file(), 2)) == 20
    with pytest.raises(MudiError, match=r"no prompt names exactly \[V1\] ... \[V6\]"):
        templates_for(shipped_prompts_file(), 6)
    sent = []

    def transport(url, body, headers, timeout):
        sent.append((url, json.loads(body)))
        text = "1. [V1] and [V2] in a rowing boat.\n- [V1] alone on a hill.\n[V2] and [V1] under a tree."
        return json.dumps({"choices": [{"message": {"content": text}}]}).encode()

    got = llm_templates(2, 5, "http://127.0.0.1:8000/v1", "m", transport=transport)
    assert got == ["[V1] and [V2] in a rowing boat.", "[V2] and [V1] under a tree."]
    assert sent[0][0] == "http://127.0.0.1:8000/v1/chat/completions" and "[V1], [V2]" in json.dumps(sent[0][1])
    config = _config(str(tmp_path), tmp_path, prompt_provider="llm", llm_url="http://127.0.0.1:9/v1")
    (tmp_path / "o").mkdir()

    def failing(*a):
        raise OSError("connection refused")

    # a failed LLM falls back to the templates, and the choice is kept for a resumed run
    assert loop._templates(config, 2, tmp_path / "o", failing) == templates_for(shipped_prompts_file(), 2)
    assert loop._templates(config, 2, tmp_path / "o", transport) == templates_for(shipped_prompts_file(), 2)
    assert json.loads((tmp_path / "o" / "prompts.json").read_text())["source"] == "templates (llm failed)"


def test_bad_inputs_fail_in_one_line(lora, tmp_path, capsys):
    cases = [(["--lora", lora, "--num_images", "4", "--keep", "5"], "keep 5 is more than the 4 images"),
             (["--lora", lora, "--set", "train.kl_weight=2"], "train.kl_weight is set by mudi iterate"),
             (["--lora", lora, "--set", "evaluate.embeders=[dinov2]"], "did you mean"),
             (["--lora", str(tmp_path / "nothing")], "no such LoRA folder or file"),
             (["--lora", lora, "--prompts_file", str(tmp_path / "none.txt")], "no such prompts file")]
    for extra, message in cases:
        assert cli_main(["iterate", *extra, "--out", str(tmp_path / "o")]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
