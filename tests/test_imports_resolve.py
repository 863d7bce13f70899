"""Every `from pythia... import name` in the package and the benchmarks names something that
exists, function-level imports included: a module moved or a name renamed breaks here, not
later in a command that reaches the one function importing it."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path, package: str | None):
    """(line, module, [names]) of every pythia import in a file; relative ones resolved from `package`."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if package is None:
                    continue
                parts = package.split(".")
                module = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "pythia":
                yield node.lineno, module, [a.name for a in node.names if a.name != "*"]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pythia":
                    yield node.lineno, alias.name, []


def unresolved(path: Path, package: str | None) -> list[str]:
    out = []
    for line, module, names in imports(path, package):
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            out.append(f"{path.name}:{line}: {module}: {exc}")
            continue
        for name in names:
            if hasattr(mod, name):
                continue
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                out.append(f"{path.name}:{line}: {module} has no {name}")
    return out


def test_every_pythia_import_resolves():
    bad = []
    for path in sorted((ROOT / "src" / "pythia").rglob("*.py")):
        bad += unresolved(path, ".".join(path.relative_to(ROOT / "src").parts[:-1]))
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        bad += unresolved(path, None)
    assert bad == []


def test_the_check_sees_a_moved_module_inside_a_function(tmp_path):
    stale = tmp_path / "stale.py"
    stale.write_text("def f():\n    from pythia.train.suite import train_suite\n"
                     "def g():\n    from pythia.layout import no_such_name\n")
    found = unresolved(stale, None)
    assert len(found) == 2 and "pythia.train.suite" in found[0] and "no_such_name" in found[1], found
