"""`mudi benchmark` on tiny offline models: every method end to end, the Fig. 6 table, resume, n/a metrics."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import mudi.benchmark.cells
import mudi.cli
import mudi.sampling.sink
from mudi.benchmark.config import BenchmarkConfig
from mudi.benchmark.runner import run_benchmark as run
from mudi.benchmark.tables import build_tables
from mudi.config import load_config
from mudi.core.methods import METHODS
from mudi.errors import MudiError
from mudi.sampling.init import resolve_init

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "src" / "mudi" / "samples"
PAIR = "dog6_and_cat2"
TINY = dict(backbone="tiny-sd", num_seeds=2, num_prompts=1, num_inference_steps=2, height=64, width=64,
            batch_size=2, use_priors=False, progress=False,
            train={"max_train_steps": 2, "resolution": 64, "rank": 4, "learning_rate": 1e-2, "report_to": "none",
                   "train_batch_size": 1, "device": "cpu", "composition_prob": 1.0},
            evaluate={"detector": "tiny-owlv2", "embedders": ["tiny-dinov2", "dreamsim"],
                      "text_scorers": ["tiny-clip"], "batch_size": 4})


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """A benchmark folder in the authors' format: one pair (the bundled dog6 and cat2) and its prompts."""
    root = tmp_path_factory.mktemp("bench")
    d = root / "pairs" / PAIR
    d.mkdir(parents=True)
    rows = [{"id": {"a": "olis corgi", "b": "ult russian blue"}}]
    for letter, src, name in (("a", "dog6", "olis corgi"), ("b", "cat2", "ult russian blue")):
        for k in range(3):
            shutil.copy(SAMPLES / src / f"0{k}.jpg", d / f"{letter}0{k}.jpg")
            mask = np.asarray(Image.open(SAMPLES / src / "masks" / f"0{k}.png").convert("L"))
            Image.fromarray(mask).save(d / f"mask_{letter}0{k}.jpg")  # the authors' JPEG masks
            rows.append({"id": letter, "file_name": f"{letter}0{k}.jpg", "mask_path": f"mask_{letter}0{k}.jpg",
                         "text": f"A photo of a {name} on a plain background."})
    (d / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "pairs" / "other_pair").mkdir()  # a pair folder without prompts is not selected
    prompts = {"_source": "test", PAIR: ["[V1] and [V2] in a garden.", "[V1] and [V2] at the beach."],
               "absent_pair": ["[V1] and [V2]."]}
    (root / "eval_prompts.json").write_text(json.dumps(prompts))
    return root


def _config(bench: Path, out: Path, **kw) -> BenchmarkConfig:
    return BenchmarkConfig(benchmark_dir=str(bench), output_dir=str(out), **{**TINY, **kw})


def _count_calls(monkeypatch) -> dict[str, int]:
    calls = {"train": 0, "generate": 0}
    real_train, real_gen = mudi.benchmark.cells.train, mudi.sampling.sink.generate_images

    def train(*a, **k):
        calls["train"] += 1
        return real_train(*a, **k)

    def gen(*a, **k):
        calls["generate"] += 1
        return real_gen(*a, **k)

    monkeypatch.setattr(mudi.benchmark.cells, "train", train)
    monkeypatch.setattr(mudi.sampling.sink, "generate_images", gen)
    return calls


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_every_method_end_to_end_then_a_rerun_does_nothing(bench, tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = _count_calls(monkeypatch)
    tables = run(_config(bench, out))

    # 6 distinct training recipes: mudi/mudi-no-init and dreambooth/mudi-no-segmix/db-region share a LoRA; ti trains
    # token embeddings only (no LoRA file)
    assert calls["train"] == 6
    loras = sorted(p.parent.name for p in (out / PAIR / "train").glob("*/pytorch_lora_weights.safetensors"))
    assert [n.rsplit("-", 1)[0] for n in loras] == ["cutmix", "none", "none", "segmix", "segmix-nodesc"]
    n = len(METHODS)
    assert tables["counts"] == {"train": 6, "generate": n, "evaluate": n, "skipped": n - 6}
    assert len(list((out / PAIR / "train").glob("none-*/modifier_token_*.safetensors"))) == 4  # custom-diffusion, ti
    for m in METHODS:
        images = sorted((out / PAIR / m / "images").rglob("*.png"))
        assert [p.name for p in images] == ["p00_seed0.png", "p00_seed1.png"]  # num_prompts=1, num_seeds=2
        assert _png(images[0]).shape == (64, 64, 3)
        meta = json.loads((out / PAIR / m / "meta" / "p00_seed0.json").read_text())
        assert meta["init"] == resolve_init(METHODS[m].init, backbone_name="tiny-sd")  # auto: mean_shifted
        assert (meta["negative_prompt"] is None) == (not METHODS[m].use_negative_prompt)
        assert meta.get("region_control", False) == METHODS[m].region_control  # db-region: regional prompts
        phrases = ("olis dog", "ult cat") if m == "mudi-no-desc" else ("olis corgi", "ult russian blue")
        assert meta["prompt"] == f"{phrases[0]} and {phrases[1]} in a garden."
    # each cell samples with its own LoRA: same seeds, no init, no negative prompt, different weights
    def first(m):
        return _png(out / PAIR / m / "images" / "p00" / "p00_seed0.png")

    assert not np.array_equal(first("dreambooth"), first("cutmix"))
    assert not np.array_equal(first("dreambooth"), first("db-region"))  # the same LoRA and seed, regions on
    # the no-desc ablation trains on native subject folders without the descriptive class
    nodesc = yaml.safe_load((out / "subjects" / f"{PAIR}-nodesc" / "dog6" / "subject.yaml").read_text())
    assert nodesc["class_noun"] == "dog" and "descriptive_class" not in nodesc
    assert all("olis dog" in c and "corgi" not in c for c in nodesc["captions"].values())

    # the table: the cell means are the means of the per-image scores `mudi evaluate` wrote
    per_image = [json.loads(p.read_text()) for p in (out / PAIR / "mudi" / "evaluation" / "p00").glob("p00_*.json")]
    assert len(per_image) == 2
    mudi_row = tables["methods"]["mudi"]
    assert mudi_row["num_images"] == 2
    assert mudi_row["dnc_dino"] == pytest.approx(np.mean([r["metrics"]["dnc_dino"]["score"] for r in per_image]))
    assert mudi_row["clip_score"] == pytest.approx(np.mean([r["text"]["clip_score"] for r in per_image]))
    assert mudi_row["dnc_ds"] is None and mudi_row["image_reward"] is None
    assert "dreamsim" in tables["notes"]["dnc_ds"] and "not requested" in tables["notes"]["image_reward"]

    md = (out / "results" / "results.md").read_text()
    assert "| Method | D&C-DS ↑ | D&C-DINO ↑ | ImageReward† ↑ | CLIPs† ↑ | images | count errors | mixed |" in md
    for m in METHODS:
        assert f"| {METHODS[m].label} | n/a[^" in md
    assert "[^1]: dnc_ds: model unavailable" in md
    rows = list(csv.DictReader((out / "results" / "per_pair.csv").open()))
    assert [(r["pair"], r["method"]) for r in rows] == [(PAIR, m) for m in METHODS]
    assert rows[0]["dnc_ds"] == "n/a" and float(rows[0]["dnc_dino"]) == pytest.approx(mudi_row["dnc_dino"], abs=1e-4)
    assert f"## {PAIR}" in (out / "results" / "per_pair.md").read_text()
    saved = json.loads((out / "results" / "results.json").read_text())
    assert saved["methods"]["cutmix"]["clip_score"] == pytest.approx(tables["methods"]["cutmix"]["clip_score"])
    assert yaml.safe_load((out / "benchmark_config.yaml").read_text())["methods"] == list(METHODS)
    assert (out / PAIR / "mudi" / "evaluation" / "p00" / "report.html").is_file()

    # a second run trains and generates nothing and writes the same table
    first = {p: p.stat().st_mtime_ns for p in (out / PAIR).rglob("*.png")}
    calls.update(train=0, generate=0)
    again = run(_config(bench, out))
    assert calls == {"train": 0, "generate": 0}
    assert again["counts"] == {"train": 0, "generate": 0, "evaluate": 0, "skipped": 3 * n}
    assert again["methods"] == tables["methods"]
    assert {p: p.stat().st_mtime_ns for p in (out / PAIR).rglob("*.png")} == first

    # changed settings redo only what depends on them; seeds 0-1 come out bit-identical although the first
    # run made them on a pipeline that had held (and dropped) other methods' LoRAs before
    old = {s: _png(out / PAIR / "mudi-no-init" / "images" / "p00" / f"p00_seed{s}.png") for s in (0, 1)}
    third = run(_config(bench, out, methods=["mudi-no-init"], num_seeds=3))
    assert calls["train"] == 0 and third["counts"]["generate"] == 1 and third["counts"]["evaluate"] == 1
    for s in (0, 1):
        np.testing.assert_array_equal(_png(out / PAIR / "mudi-no-init" / "images" / "p00" / f"p00_seed{s}.png"),
                                      old[s])
    assert third["methods"]["mudi-no-init"]["num_images"] == 3


def test_interrupted_generation_resumes_from_the_images_on_disk(bench, tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = dict(methods=["dreambooth"], num_seeds=2, batch_size=1)
    run(_config(bench, out, **cfg))
    cell = out / PAIR / "dreambooth"
    marker = json.loads((cell / "generate.json").read_text())
    (cell / "generate.json").write_text(json.dumps({**marker, "status": "running"}))  # as if killed
    kept = _png(cell / "images" / "p00" / "p00_seed0.png")
    (cell / "images" / "p00" / "p00_seed1.png").unlink()
    calls = _count_calls(monkeypatch)
    result = run(_config(bench, out, **cfg))
    assert calls == {"train": 0, "generate": 1}  # only the missing image (batch size 1)
    np.testing.assert_array_equal(_png(cell / "images" / "p00" / "p00_seed0.png"), kept)
    assert (cell / "images" / "p00" / "p00_seed1.png").is_file()
    assert result["methods"]["dreambooth"]["num_images"] == 2


def test_an_unloadable_detector_makes_dnc_na_not_a_crash(bench, tmp_path):
    evaluate = {**TINY["evaluate"], "detector": "owlv2", "detector_path": str(tmp_path / "no-such-owlv2")}
    tables = run(_config(bench, tmp_path / "run", methods=["dreambooth"], num_seeds=1, evaluate=evaluate))
    row = tables["methods"]["dreambooth"]
    assert row["dnc_dino"] is None and row["clip_score"] is not None
    assert "owlv2" in tables["notes"]["dnc_dino"]
    assert "n/a[^" in (tmp_path / "run" / "results" / "results.md").read_text()


def test_tables_weight_pairs_by_their_images():
    cfg = BenchmarkConfig(methods=["mudi", "cutmix"], evaluate={"embedders": ["dinov2"], "text_scorers": ["clip"]})
    cells = {("p1", "mudi"): {"num_images": 2, "means": {"dnc_dino": 0.5, "clip_score": 0.2}},
             ("p2", "mudi"): {"num_images": 6, "means": {"dnc_dino": 0.9, "clip_score": 0.3},
                              "failure_counts": {"count": 2}},
             ("p1", "cutmix"): {"num_images": 2, "means": {"dnc_dino": 0.1, "clip_score": 0.25}}}
    t = build_tables(cfg, cells)
    assert t["methods"]["mudi"]["dnc_dino"] == pytest.approx((2 * 0.5 + 6 * 0.9) / 8)
    assert t["methods"]["mudi"]["num_images"] == 8 and t["methods"]["mudi"]["failure_counts"] == {"count": 2}
    assert t["pairs"]["p2"]["mudi"]["clip_score"] == pytest.approx(0.3) and "cutmix" not in t["pairs"]["p2"]
    assert t["methods"]["cutmix"]["dnc_ds"] is None
    assert "dreamsim" in t["notes"]["dnc_ds"] and "image_reward" in t["notes"]["image_reward"]


@pytest.mark.parametrize("kw, message", [
    ({"methods": ["mudi", "dreambooht"]}, "did you mean 'dreambooth'"),
    ({"methods": ["mudi", "mudi"]}, "each method once"),
    ({"train": {"composition": "none"}}, "train.composition is set by the benchmark"),
    ({"train": {"max_train_step": 3}}, "did you mean 'train.max_train_steps'"),
    ({"method_train": {"dreambooth": {"rank": 0}}}, "rank 0 must be at least 1"),
    ({"method_train": {"db": {"rank": 4}}}, "method_train.db: unknown method"),
    ({"evaluate": {"embedders": ["dinov3"]}}, "unknown embedder 'dinov3'"),
    ({"evaluate": {"images": "x"}}, "evaluate.images is set by the benchmark"),
    ({"redo": ["sample"]}, "redo stage 'sample'"),
    ({"num_seeds": 0}, "num_seeds 0 must be at least 1"),
])
def test_config_errors_name_the_key_and_the_fix(kw, message):
    with pytest.raises(MudiError, match=message.replace("(", r"\(").replace("?", r"\?")):
        BenchmarkConfig(**kw)


def test_pair_selection_errors(bench, tmp_path):
    from mudi.benchmark.methods import select_pairs

    assert [p for p, _, _ in select_pairs(_config(bench, tmp_path))] == [PAIR]
    with pytest.raises(MudiError, match="did you mean 'dog6_and_cat2'"):
        select_pairs(_config(bench, tmp_path, pairs=["dog6_and_cat"]))
    with pytest.raises(MudiError, match="other_pair' has no prompts"):
        select_pairs(_config(bench, tmp_path, pairs=["other_pair"]))
    with pytest.raises(MudiError, match="no pairs/ folder"):
        select_pairs(_config(tmp_path, tmp_path))


def test_cli_with_the_tiny_config_file(bench, tmp_path, capsys):
    cfg = load_config(BenchmarkConfig, ROOT / "configs" / "benchmark_tiny.yaml")
    assert cfg.backbone == "tiny-sd" and set(cfg.methods) == set(METHODS)
    paper = load_config(BenchmarkConfig, ROOT / "configs" / "benchmark_sdxl.yaml")
    assert paper.backbone == "sdxl" and paper.num_seeds == 10 and paper.num_prompts is None
    assert paper.method_train["dreambooth"]["max_train_steps"] == 1000

    out = tmp_path / "cli"
    rc = mudi.cli.main(["benchmark", "--config", str(ROOT / "configs" / "benchmark_tiny.yaml"), "--benchmark_dir",
                        str(bench), "--output_dir", str(out), "--pairs", PAIR, "--methods", "cutmix", "--no_progress",
                        "num_seeds=1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "[1/1] dog6_and_cat2 · cutmix: train cutmix" in text and "| Cut-Mix |" in text
    assert (out / "results" / "results.csv").is_file()
    rc = mudi.cli.main(["benchmark", "--benchmark_dir", str(bench), "--methods", "mudi", "dreambooht"])
    assert rc == 2 and "did you mean 'dreambooth'" in capsys.readouterr().err


def test_real_pair_no_desc_ablation_runs_offline(benchmark_dir, tmp_path):
    out = tmp_path / "real"
    tables = run(BenchmarkConfig(benchmark_dir=str(benchmark_dir), output_dir=str(out), pairs=["dog6_and_dog2"],
                                 **{**TINY, "methods": ["mudi-no-desc"], "num_seeds": 1}))
    meta = yaml.safe_load((out / "subjects" / "dog6_and_dog2-nodesc" / "dog2" / "subject.yaml").read_text())
    assert meta["class_noun"] == "dog" and "descriptive_class" not in meta
    assert meta["captions"] and all("chow chow" not in c.lower() for c in meta["captions"].values())
    assert json.loads((out / "dog6_and_dog2" / "mudi-no-desc" / "meta" / "p00_seed0.json").read_text())["prompt"] \
        == "olis dog and hta dog playing in the waves at the beach."
    assert tables["methods"]["mudi-no-desc"]["num_images"] == 1
    assert tables["methods"]["mudi-no-desc"]["dnc_dino"] is not None


def test_redo_train_retrains_a_shared_recipe_once(bench, tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = dict(methods=["mudi", "mudi-no-init"], num_seeds=1)
    run(_config(bench, out, **cfg))
    (lora,) = (out / PAIR / "train").glob("segmix-*/pytorch_lora_weights.safetensors")
    before = lora.stat().st_mtime_ns
    calls = _count_calls(monkeypatch)
    result = run(_config(bench, out, redo=["train"], **cfg))
    assert calls["train"] == 1 and result["counts"]["train"] == 1  # mudi and mudi-no-init share the LoRA
    assert lora.stat().st_mtime_ns != before
