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
