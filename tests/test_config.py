from dataclasses import dataclass, field

import pytest

from mudi.config import from_dict, load_config, parse_overrides, save_config
from mudi.errors import MudiError


@dataclass
class Inner:
    prob: float = 0.3
    sizes: tuple[float, ...] | None = None


@dataclass
class Outer:
    name: str = "x"
    steps: int = 10
    flag: bool = False
    inner: Inner = field(default_factory=Inner)
    items: list[str] = field(default_factory=list)


def test_yaml_then_values_then_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("steps: 20\ninner:\n  prob: 0.5\n")
    cfg = load_config(Outer, y, ["inner.prob=1e-4", "flag=true", "inner.sizes=[1, 2]"], {"name": "n"})
    assert cfg.steps == 20 and cfg.name == "n" and cfg.flag is True
    assert cfg.inner.prob == pytest.approx(1e-4) and cfg.inner.sizes == (1.0, 2.0)
    save_config(cfg, tmp_path / "out.yaml")
    again = load_config(Outer, tmp_path / "out.yaml")
    assert again == cfg


def test_unknown_key_suggests_close_match():
    with pytest.raises(MudiError, match="did you mean 'steps'"):
        from_dict(Outer, {"stpes": 3})
    with pytest.raises(MudiError, match="did you mean 'inner.prob'"):
        load_config(Outer, None, ["inner.porb=1"])


def test_bad_types_and_no_eval():
    with pytest.raises(MudiError, match="expected int"):
        from_dict(Outer, {"steps": "ten"})
    with pytest.raises(MudiError, match="expected true/false"):
        from_dict(Outer, {"flag": "maybe"})
    cfg = load_config(Outer, None, ["name=__import__('os').getcwd()"])
    assert cfg.name == "__import__('os').getcwd()"  # kept as text, never evaluated
    assert parse_overrides(["a.b.c=3"]) == {"a": {"b": {"c": 3}}}


def test_every_shipped_config_loads_into_its_dataclass():
    from pathlib import Path

    from mudi.benchmark.config import BenchmarkConfig
    from mudi.training.config import TrainConfig

    root = Path(__file__).resolve().parents[1] / "configs"
    for f in sorted(root.glob("*.yaml")):
        if f.name.startswith("benchmark"):
            load_config(BenchmarkConfig, f)
        else:
            c = load_config(TrainConfig, f, [], {"subjects": ["x"]})
            assert c.composition_prob == 0.3 or f.name == "tiny.yaml", f.name
    authors = load_config(TrainConfig, root / "sdxl.yaml", [], {"subjects": ["x"]})
    assert (authors.loss, authors.train_batch_size, authors.gradient_accumulation_steps, authors.seed) == \
        ("dco", 1, 2, 42)
    flux = load_config(TrainConfig, root / "flux.yaml", [], {"subjects": ["x"]})
    assert (flux.resolution, flux.learning_rate, flux.gradient_accumulation_steps, flux.segmix.preset) == \
        (512, 3e-4, 4, "flux")
