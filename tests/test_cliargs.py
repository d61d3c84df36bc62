"""Flags generated from config dataclasses (mudi.cliargs) and the `auto` device/dtype rule (mudi.devices)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest
import torch

from mudi import devices
from mudi.cli import build_parser
from mudi.cliargs import add_config_arguments, load_from_args
from mudi.core.segmix import SegMixParams
from mudi.errors import MudiError


@dataclass
class DemoConfig:
    name: str = field(default="x", metadata={"help": "a name", "flags": ["-n"]})
    count: int = field(default=2, metadata={"help": "how many"})
    ratio: float | None = field(default=None, metadata={"help": "a ratio"})
    sizes: list[float] = field(default_factory=list, metadata={"help": "sizes"})
    mode: Literal["a", "b"] = field(default="a", metadata={"help": "the mode"})
    flag: bool = field(default=True, metadata={"help": "a switch"})
    segmix: SegMixParams = field(default_factory=SegMixParams, metadata={"help": "geometry"})


def _parse(argv: list[str]) -> DemoConfig:
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    add_config_arguments(p, DemoConfig, aliases={"--tight": ("segmix.max_margin_frac", "0.05")})
    args = p.parse_args(argv)
    args.overrides = []
    return load_from_args(DemoConfig, args)


def test_every_field_is_a_flag_of_its_type():
    c = _parse(["-n", "y", "--count", "5", "--ratio", "0.5", "--sizes", "1,2", "3", "--mode", "b", "--no-flag",
                "--segmix.scale_range", "0.5", "0.9", "--tight"])
    assert (c.name, c.count, c.ratio, c.sizes, c.mode, c.flag) == ("y", 5, 0.5, [1.0, 2.0, 3.0], "b", False)
    assert c.segmix.scale_range == (0.5, 0.9) and c.segmix.max_margin_frac == 0.05
    assert _parse([]) == DemoConfig()  # flags not given leave the defaults (and a --config file's values)


def test_bad_values_are_one_line_errors():
    with pytest.raises(MudiError, match="count.*expected int"):
        _parse(["--count", "many"])
    with pytest.raises(MudiError, match="scale_range"):
        _parse(["--segmix.scale_range", "0.9", "0.5"])
    with pytest.raises(SystemExit):  # argparse: not one of the Literal's values
        _parse(["--mode", "c"])


def test_verb_help_comes_from_the_dataclass(capsys):
    with pytest.raises(SystemExit):
        build_parser("generate").parse_args(["generate", "--help"])
    text = capsys.readouterr().out
    assert "--segmix.max_margin_frac" in text and "--num_images" in text and "--out" in text
    assert "init strength" in text  # the field's help text


def test_auto_device_and_dtype(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_device("auto").type in ("cpu", "mps")
    assert devices.resolve_dtype("auto", "cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert devices.resolve_dtype("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert devices.resolve_dtype("auto", "cuda:1") == torch.float16
    assert devices.resolve_dtype("fp16", "cpu") == torch.float16  # an explicit dtype is kept
    with pytest.raises(MudiError, match="not one of"):
        devices.parse_dtype("int8")


def test_a_cuda_device_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MudiError, match="no CUDA GPU"):
        devices.resolve_device("cuda:0")


def test_resolved_device_and_dtype_are_recorded(tmp_path):
    from mudi.cli import main
    from mudi.samples import sample_subject_dirs

    dog = [str(p) for p in sample_subject_dirs() if p.name == "dog6"]
    assert main(["generate", "--backbone", "tiny-sd", "--subjects", *dog, "--init", "none", "--num_images", "1",
                 "--steps", "2", "--output_dir", str(tmp_path)]) == 0
    text = (tmp_path / "generate_config.yaml").read_text()
    assert "device: cpu" in text or "device: mps" in text or "device: cuda" in text
    assert "dtype: auto" not in text
