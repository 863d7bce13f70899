"""The house's floors (docs/architecture.md): every module of src/pythia imports only from its own
floor or below, and no files import each other in a circle. Read from the source with `ast`,
module-level and function-level imports alike (those under `if TYPE_CHECKING:` excepted, they
never run); entry points (`__main__`) may import anything."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

FLOORS = {  # module or package -> floor (a package's modules share its floor)
    "pythia": 1, "pythia.config": 1, "pythia.io": 1, "pythia.lock": 1, "pythia.loss": 1, "pythia.layout": 1,
    # numerics on arrays that import nothing of the package
    "pythia.scaling": 1, "pythia.divergence": 1, "pythia.token_dynamics": 1, "pythia.matrix_stats": 1,
    "pythia.model": 2, "pythia.hf": 2, "pythia.data": 2, "pythia.results": 2, "pythia.results_table": 2,
    "pythia.generate": 3, "pythia.memorization": 3, "pythia.train": 3, "pythia.mechanisms": 3,
    "pythia.run": 4,
    "pythia.evals": 5, "pythia.analysis": 5, "pythia.suite": 5, "pythia.verify": 5, "pythia.results_import": 5,
    "pythia.lm_eval": 5, "pythia.hooked": 5,
    "pythia.report": 6, "pythia.compare": 6, "pythia.demo": 6, "pythia.cli": 6,
}


def modules(src: Path = SRC) -> dict[str, Path]:
    out = {}
    for path in sorted((src / "pythia").rglob("*.py")):
        name = ".".join(path.relative_to(src).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def floor_of(module: str) -> int | None:
    while module:
        if module in FLOORS:
            return FLOORS[module]
        module = module.rpartition(".")[0]
    return None


class _Imports(ast.NodeVisitor):
    """Every `pythia...` name a file imports, resolved to the deepest module of the package."""

    def __init__(self, module: str, package: str, known: set[str]):
        self.module, self.package, self.known, self.found = module, package, known, set()

    def _add(self, name: str) -> None:
        while name and name not in self.known:
            name = name.rpartition(".")[0]
        if name and name != self.module:
            self.found.add(name)

    def visit_If(self, node: ast.If) -> None:
        if "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == "pythia":
                self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".")
            base = parts[: len(parts) - (node.level - 1)]
            name = ".".join(base + ([node.module] if node.module else []))
        else:
            name = node.module or ""
        if name.split(".")[0] != "pythia":
            return
        for alias in node.names:
            full = f"{name}.{alias.name}"
            self._add(full if full in self.known else name)


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    files = modules(src)
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        visitor = _Imports(name, package, set(files))
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        graph[name] = visitor.found
    return graph


def upward(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(graph.items()):
        if module.endswith("__main__"):
            continue
        here = floor_of(module)
        bad += [f"{module} (floor {here}) imports {t} (floor {floor_of(t)})" for t in sorted(targets)
                if floor_of(t) is not None and here is not None and floor_of(t) > here]
    return bad


def circles(graph: dict[str, set[str]], src: Path = SRC) -> list[list[str]]:
    """Strongly connected components of more than one file (package faces and entry points,
    which only pass names through, left out)."""
    faces = {m for m, p in modules(src).items() if p.name == "__init__.py"}
    g = {m: {t for t in ts if t not in faces and t in graph} for m, ts in graph.items()
         if m not in faces and not m.endswith("__main__")}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_floor():
    """Named for itself or its package: a new top-level module never lands on floor 1 by default."""
    assert [m for m in modules() if m.count(".") == 1 and m not in FLOORS] == []
    assert [m for m in modules() if floor_of(m) is None] == []


def test_no_module_imports_from_a_floor_above():
    assert upward(import_graph()) == []


def test_no_circle_of_files():
    assert circles(import_graph()) == []


def test_no_private_name_is_imported_across_modules():
    found = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("pythia")):
                found += [f"{name}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []


@pytest.mark.parametrize("code, expect_up, expect_circle", [
    ("from ..run import open_run", ["pythia.train.trainer (floor 3) imports pythia.run (floor 4)"], []),
    ("def f():\n    from ..analysis.runner import run_analyses", ["pythia.train.trainer (floor 3) imports "
                                                                 "pythia.analysis.runner (floor 5)"], []),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..run import RunView", [], []),
    ("from .spec import SuiteSpec", [], []),
])
def test_the_guard_sees_function_level_imports_and_spares_type_checking(tmp_path, code, expect_up, expect_circle):
    pkg = tmp_path / "pythia"
    for rel in ("__init__.py", "run.py", "analysis/__init__.py", "analysis/runner.py", "train/__init__.py",
                "train/spec.py"):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text("")
    (pkg / "train" / "trainer.py").write_text(code + "\n")
    graph = import_graph(tmp_path)
    assert upward(graph) == expect_up
    assert circles(graph, tmp_path) == expect_circle


def test_the_guard_finds_a_circle(tmp_path):
    pkg = tmp_path / "pythia" / "data"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "order.py").write_text("def f():\n    from .provenance import locate\n")
    (pkg / "provenance.py").write_text("from .order import TrainingOrder\n")
    graph = import_graph(tmp_path)
    assert upward(graph) == []
    assert circles(graph, tmp_path) == [["pythia.data.order", "pythia.data.provenance"]]
