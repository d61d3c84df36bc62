"""In-process runs of `mudi segmix`, `mudi convert`, `mudi env`, `mudi --version` and their bad inputs."""

import json

import numpy as np
import pytest
from PIL import Image

from mudi import __version__
from mudi.cli import main
from mudi.samples import sample_subject_dirs
from tests.helpers import make_subject_dir


def test_segmix_cli_writes_everything(tmp_path):
    out = tmp_path / "out"
    subs = [str(p) for p in sample_subject_dirs()]
    rc = main(["segmix", "--subjects", *subs, "--num", "3", "--size", "256", "--seed", "1", "--out", str(out),
               "--num-subjects", "3", "--background", "0,0,255"])
    assert rc == 0
    rows = [json.loads(line) for line in (out / "segmix.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for r in rows:
        assert len(r["subjects"]) == 3 and len(r["boxes_xyxy"]) == 3
        img = np.asarray(Image.open(out / r["image"]))
        label = np.asarray(Image.open(out / r["mask"]))
        assert img.shape == (256, 256, 3) and label.shape == (256, 256)
        assert (img[label == 0] == [0, 0, 255]).all()  # background colour outside the label map
        for k, box in enumerate(r["boxes_xyxy"]):
            ys, xs = np.nonzero(label == k + 1)
            if len(xs):
                assert xs.min() >= box[0] and xs.max() < box[2] and ys.min() >= box[1] and ys.max() < box[3]
        for phrase in r["phrases"]:
            assert r["prompt"].count(phrase) == 1
    assert Image.open(out / "grid.png").size[0] > 256
    assert (out / "segmix_config.yaml").is_file()
    assert not list(out.glob(".*tmp*"))  # no temp files left behind
    # same seed -> same files; a different seed -> a different layout
    out2 = tmp_path / "out2"
    main(["segmix", "--subjects", *subs, "--num", "3", "--size", "256", "--seed", "1", "--out", str(out2),
          "--num-subjects", "3", "--background", "0,0,255"])
    assert (out2 / "segmix.jsonl").read_text() == (out / "segmix.jsonl").read_text()
    assert (out2 / "000.png").read_bytes() == (out / "000.png").read_bytes()


def test_segmix_cli_benchmark_pair_and_cutmix(tmp_path, benchmark_dir):
    out = tmp_path / "o"
    assert main(["segmix", "--subjects", str(benchmark_dir / "pairs" / "dog6_and_dog2"), "--num", "2", "--size", "128",
                 "--out", str(out), "--mode", "cutmix"]) == 0
    row = json.loads((out / "segmix.jsonl").read_text().splitlines()[0])
    assert "on the left and" in row["prompt"] and sorted(row["subjects"]) == ["dog2", "dog6"]


def test_relative_sizes_cli(tmp_path):
    a = make_subject_dir(tmp_path, "a", "aaa", size=(80, 80))
    b = make_subject_dir(tmp_path, "b", "bbb", size=(80, 80), color=(20, 200, 20))
    out = tmp_path / "o"
    assert main(["segmix", "--subjects", str(a), str(b), "--num", "4", "--size", "512", "--out", str(out),
                 "--relative-sizes", "1,2"]) == 0
    for line in (out / "segmix.jsonl").read_text().splitlines():
        r = json.loads(line)
        h = {s: box[3] - box[1] for s, box in zip(r["subjects"], r["boxes_xyxy"])}
        assert abs(h["b"] / h["a"] - 2) < 0.2


@pytest.mark.parametrize("case", ["missing", "noimages", "truncated", "badmask", "emptymask", "dupid", "k", "size",
                                  "relsizes"])
def test_bad_input_one_line_error_nothing_written(tmp_path, capsys, case):
    a = make_subject_dir(tmp_path, "a", "aaa")
    b = make_subject_dir(tmp_path, "b", "bbb")
    args = ["segmix", "--subjects", str(a), str(b), "--num", "2", "--size", "128"]
    expect = {"missing": "no such folder", "noimages": "no reference images", "truncated": "truncated",
              "badmask": "mask is", "emptymask": "mask is empty", "dupid": "share the identifier",
              "k": "--num-subjects 3 is larger", "size": "too small", "relsizes": "--relative-sizes"}[case]
    if case == "missing":
        args[2] = str(tmp_path / "nope")
    elif case == "noimages":
        for p in a.glob("*.png"):
            p.unlink()
    elif case == "truncated":
        (a / "01.png").write_bytes((a / "01.png").read_bytes()[:100])
    elif case == "badmask":
        Image.new("L", (5, 5), 255).save(a / "masks" / "00.png")
    elif case == "emptymask":
        Image.new("L", (96, 80), 0).save(a / "masks" / "00.png")
    elif case == "dupid":
        (b / "subject.yaml").write_text("identifier: aaa\nclass_noun: toy\n")
    elif case == "k":
        args += ["--num-subjects", "3"]
    elif case == "size":
        args[-1] = "8"
    elif case == "relsizes":
        args += ["--relative-sizes", "1,2,3"]
    out = tmp_path / "out"
    rc = main(args + ["--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and expect in lines[0] and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_convert_roundtrip(tmp_path, benchmark_dir):
    out = tmp_path / "native"
    assert main(["convert", str(benchmark_dir / "pairs" / "dog6_and_dog2"), "--out", str(out)]) == 0
    from mudi.data.subjects import find_subjects

    native = find_subjects(out / "dog6")[0]
    bench = find_subjects(benchmark_dir / "pairs" / "dog6_and_dog2")[0]
    assert native.phrase == bench.phrase and len(native.images) == len(bench.images)
    assert native.images[1].caption == bench.images[1].caption
    assert np.array_equal(native.load(2)[1], bench.load(2)[1])
    assert main(["convert", str(benchmark_dir / "pairs" / "dog6_and_dog2"), "--out", str(out)]) == 2


def test_version_and_env(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for key in ("python", "torch", "diffusers", "transformers", "peft", "accelerate", "devices"):
        assert key in info


def test_flag_spellings_and_set_overrides_are_uniform(tmp_path):
    """Every verb takes --set KEY=VALUE and both --a_b / --a-b spellings."""
    subs = [str(p) for p in sample_subject_dirs()][:2]
    out = tmp_path / "o"
    assert main(["segmix", "--subjects", *subs, "--num", "1", "--size", "128", "--out", str(out),
                 "--num_subjects", "2", "--set", "segmix.max_margin_frac=0.1", "segmix.allow_overlap=false"]) == 0
    cfg = (out / "segmix_config.yaml").read_text()
    assert "max_margin_frac: 0.1" in cfg and "allow_overlap: false" in cfg
    assert main(["segmix", "--subjects", *subs, "--out", str(out), "--set", "max_margn_frac=0.1"]) == 2
