"""The house rules of docs/architecture.md that are properties of the whole tree, checked on the source:

- no import circle among mudi's modules (module-level imports and the imports inside functions, which are
  often how a circle is hidden; imports under ``if TYPE_CHECKING:`` are annotations only and left out);
- no source file over 450 lines and no function over 80 (one screen);
- one owner per mechanism: ``delete_adapters`` is called from one place outside ``adapters/``, one module
  writes a generated image's sidecar, one writes ``train_config.yaml``;
- every member of the ``Backbone`` Protocol is in docs/architecture.md's table.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "mudi"
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def import_graph() -> dict[str, set[str]]:
    """module -> the mudi modules it imports anywhere in its file (not its own parent packages, which Python
    has imported before it: ``mudi.data.subjects`` importing ``mudi.data.images`` is no circle)."""
    modules = _sources()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_nodes(tree)
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if is_package else name.split(".")[:-1]
                    here = here[:len(here) - (node.level - 1)]
                    base = ".".join(here + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                parts = t.split(".")
                for k in range(1, len(parts) + 1):
                    cand = ".".join(parts[:k])
                    if cand in modules and cand != name and not name.startswith(cand + "."):
                        edges.add(cand)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_among_mudi_modules():
    cycles = find_cycles(import_graph())
    assert not cycles, f"import circles (break each by moving what both need below both): {cycles}"


def test_no_source_file_over_450_lines_and_no_function_over_80():
    long_files, long_functions = [], []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        if n > MAX_FILE_LINES:
            long_files.append(f"{path.relative_to(SRC)} ({n} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({length} lines)")
    assert not long_files, f"files over {MAX_FILE_LINES} lines: {long_files}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def _calls(name: str, outside: str = "adapters") -> list[str]:
    where = []
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] == outside:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name:
                where.append(f"{path.relative_to(SRC)}:{node.lineno}")
    return where


def test_adapters_are_deleted_from_one_place_outside_adapters():
    assert _calls("delete_adapters") == [
        f"sampling/loras.py:{_line_of('sampling/loras.py', 'backbone.pipeline.delete_adapters')}"]


def _line_of(rel: str, text: str) -> int:
    lines = (SRC / rel).read_text(encoding="utf-8").splitlines()
    return next(k for k, line in enumerate(lines, 1) if text in line)


def _sidecar_literals(path: Path) -> list[int]:
    """Lines of dict literals shaped like a generated image's sidecar (keys image, prompt, seed, init)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            if {"image", "prompt", "seed", "init"} <= keys:
                found.append(node.lineno)
    return found


def test_one_writer_of_generated_images_and_their_sidecars():
    """Every generated image with its sidecar goes through data.generated (one schema, one writer): no other
    module builds a sidecar literal, and only the generation sink and ``mudi generate`` call the writer."""
    builders = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if _sidecar_literals(p))
    assert builders == ["data/generated.py"], builders
    users = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                   if "write_generated(" in p.read_text("utf-8") and p.name != "generated.py")
    assert users == ["sampling/folder.py", "sampling/sink.py"], users


def test_train_config_is_written_in_one_place():
    writers = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
               if re.search(r"save_config\([^)]*CONFIG_FILE", p.read_text("utf-8")) and "training" in p.parts]
    assert writers == ["training/runs.py"], writers


def test_every_backbone_member_is_in_the_architecture_table():
    from mudi.adapters.base import Backbone

    tree = ast.parse((SRC / "adapters" / "base.py").read_text(encoding="utf-8"))
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == Backbone.__name__)
    members = set()
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            members.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            members.add(node.target.id)
    members = {m for m in members if not m.startswith("_")}
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = doc[doc.index("## The Backbone interface"):doc.index("## Adding a model family")]
    missing = sorted(m for m in members if f"`{m}" not in table)
    assert not missing, f"Backbone members missing from docs/architecture.md's table: {missing}"
