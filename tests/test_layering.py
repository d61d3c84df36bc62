"""The import graph the architecture promises (docs/architecture.md), checked on the source itself:

- ``mudi.core`` imports no model library and does no file I/O;
- adapters import no library stage and no verb (only core, errors, devices and other adapters);
- no verb (``mudi.commands.*``) imports another verb, and nothing outside ``mudi.cli`` imports a verb;
- ``import mudi.cli`` / ``mudi.data`` / ``mudi.config`` load no model library.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mudi"
MODEL_LIBRARIES = ("diffusers", "transformers", "peft", "accelerate")
FILE_IO_MODULES = ("os", "shutil", "tempfile", "pathlib", "json", "pickle", "glob", "io", "yaml", "safetensors")
FILE_IO_CALLS = ("open", "read_text", "write_text", "read_bytes", "write_bytes", "save", "load", "savez",
                 "mkdir", "unlink", "iterdir", "glob")
LIBRARY_STAGES = ("mudi.training", "mudi.sampling", "mudi.scoring", "mudi.segmentation", "mudi.benchmark",
                  "mudi.compositions", "mudi.merging", "mudi.describing", "mudi.ui", "mudi.modular", "mudi.iterative", "mudi.pipeline",
                  "mudi.commands",
                  "mudi.cli")


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in the file (function-level imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _files(sub: str) -> list[Path]:
    files = sorted((SRC / sub).rglob("*.py")) if (SRC / sub).is_dir() else [SRC / f"{sub}.py"]
    assert files, sub
    return files


def _hits(imports: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imports if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_core_imports_no_model_library():
    code = ("import sys, importlib, pkgutil, mudi.core\n"
            "for m in pkgutil.iter_modules(mudi.core.__path__): importlib.import_module('mudi.core.' + m.name)\n"
            "import mudi.data, mudi.config, mudi.cli, mudi.cliargs\n"
            f"bad = [m for m in {MODEL_LIBRARIES!r} if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"mudi.core / mudi.data / mudi.cli imported {out.stdout.strip()}"


@pytest.mark.parametrize("path", _files("core"), ids=lambda p: p.name)
def test_core_does_no_file_io(path):
    imports = _imports(path)
    assert not _hits(imports, FILE_IO_MODULES + MODEL_LIBRARIES), path
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in FILE_IO_CALLS:
                calls.append(f"{name} (line {node.lineno})")
    assert not calls, f"{path.name} does file I/O: {calls}"


@pytest.mark.parametrize("path", _files("adapters"), ids=lambda p: p.name)
def test_adapters_import_no_library_stage_and_no_verb(path):
    bad = _hits(_imports(path), LIBRARY_STAGES + ("mudi.data", "mudi.visualize", "mudi.io", "mudi.config"))
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", _files("commands"), ids=lambda p: p.name)
def test_no_verb_imports_another_verb(path):
    own = _module_name(path)
    bad = [m for m in _hits(_imports(path), ("mudi.commands", "mudi.cli")) if m != own]
    assert not bad, f"{path.name} imports {bad}"


def test_nothing_but_the_cli_imports_a_verb():
    for path in sorted(SRC.rglob("*.py")):
        if path.parent.name == "commands" or path.name in ("cli.py", "__main__.py"):
            continue
        bad = _hits(_imports(path), ("mudi.commands", "mudi.cli"))
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_every_verb_is_a_small_module_with_its_contract():
    import importlib

    from mudi.cli import COMMANDS

    for verb, modname in COMMANDS.items():
        mod = importlib.import_module(modname)
        assert isinstance(mod.HELP, str) and mod.HELP
        assert hasattr(mod.CONFIG, "__dataclass_fields__") and callable(mod.main), verb
        lines = len(Path(mod.__file__).read_text(encoding="utf-8").splitlines())
        assert lines <= 120, f"mudi {verb} has {lines} lines: its logic belongs in the library"
