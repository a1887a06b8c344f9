"""The package layout: each home imports only homes below it, and nothing imports in a circle.

Walks every module's imports (lazy ones inside functions included) with ``ast``; a module of a
home may import its own home, ``dfrobust`` itself (the version) and the homes listed before it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dfrobust"
#: bottom to top; a home may import the homes before it in this list
LAYERS = ["core", "data", "models", "attacks", "explainers", "certify", "metrics", "experiments", "figures",
          "study"]
#: homes on the same level that must not import each other
SIBLINGS = [{"attacks", "explainers", "certify"}]


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = p.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    deps = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = pkg[:len(pkg) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            deps.add(mod)
            deps.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names)
    return {d for d in deps if d.startswith("dfrobust")}


def _home(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else None


MODULES = _modules()
GRAPH = {m: {d for d in _imports(m, p) if d in MODULES and d != m} for m, p in MODULES.items()}


def test_every_home_is_a_known_layer():
    homes = {_home(m) for m in MODULES} - {None}
    assert homes <= set(LAYERS), f"unknown homes {homes - set(LAYERS)}: add them to LAYERS in this test"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_higher_layer(module):
    home = _home(module)
    if home is None:
        return
    allowed = set(LAYERS[:LAYERS.index(home) + 1])
    for group in SIBLINGS:
        if home in group:
            allowed -= group - {home}
    for dep in GRAPH[module]:
        dh = _home(dep)
        assert dh is None or dh in allowed, f"{module} imports {dep}: {dh} is not below {home}"


def test_no_import_circles_between_modules():
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in GRAPH[m]:
            if d.startswith(m + ".") or m.startswith(d + "."):
                continue  # a package and its own modules
            if state.get(d) == 1:
                raise AssertionError("import circle: " + " -> ".join(path + [d]))
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])


def test_the_walker_sees_a_violation(tmp_path):
    """The checks above would catch a low layer importing a high one (guards the walker itself)."""
    fake = tmp_path / "probe.py"
    fake.write_text("def f():\n    from ..study import runner\n")
    deps = _imports("dfrobust.core.probe", fake)
    assert "dfrobust.study.runner" in deps and _home("dfrobust.study.runner") == "study"
