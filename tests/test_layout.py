"""The package layout (docs/architecture.md): no import circles, layers only point down,
names that explain themselves, a docstring on every package, a cheap public API.

Imports are read with ``ast`` from every module under advkd/: module-level and function-level,
``TYPE_CHECKING`` blocks included, relative and absolute. ``from advkd.x import y`` counts as an
import of ``advkd.x.y`` when ``y`` is a submodule, else of ``advkd.x``. A submodule's implicit
import of its own package ``__init__`` is not an edge (Python runs it first anyway); everything
written in the source is.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "advkd"

#: Layer -> the layers (or single modules, dotted below advkd) it may import. A module's layer is
#: its first package below advkd (advkd.cli, advkd.entry, advkd.__main__ are their own layers;
#: ``advkd`` itself is the public façade). Every layer may import itself. Mirror: docs/architecture.md.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "data": {"core"},
    "models": {"core"},
    "attacks": {"core"},
    "methods": {"core", "attacks"},
    "evaluation": {"core", "data", "models", "attacks"},
    "training": {"core", "data", "models", "attacks", "methods", "evaluation"},
    "report": {"core", "data", "models", "attacks", "methods", "evaluation", "training.config"},
    "api": {"core", "data", "models", "attacks", "methods", "evaluation", "training"},
    "cli": {"core", "data", "models", "attacks", "methods", "evaluation", "training", "report", "api", "argv"},
    "argv": {"core"},
    "plugins": {"core", "data", "attacks", "methods"},  # the public surface for outside code: re-exports only
    "entry": {"core", "cli"},
    "__main__": {"entry"},
    "advkd": {"core", "data", "models", "attacks", "methods", "evaluation", "training", "report", "api"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


MODULES = all_modules()


def imports_of(name: str, path: Path) -> set[str]:
    """Every advkd module ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        out.update(t for t in targets if t == "advkd" or t.startswith("advkd."))
    out.discard(name)
    unknown = out - set(MODULES)
    assert not unknown, f"{name} imports modules that do not exist: {sorted(unknown)}"
    return out


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "advkd"


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_layers_only_point_down():
    assert set(map(layer, MODULES)) <= set(ALLOWED), f"a layer missing from ALLOWED: {set(map(layer, MODULES)) - set(ALLOWED)}"
    bad = []
    for m, targets in sorted(GRAPH.items()):
        own = layer(m)
        for t in sorted(targets):
            rel = t.partition(".")[2]  # below advkd
            if layer(t) == own:
                continue
            if not any(rel == a or rel.startswith(a + ".") for a in ALLOWED[own]):
                bad.append(f"{m} -> {t} ({own} may import {sorted(ALLOWED[own]) or 'only itself'})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_nothing_imports_the_facade():
    """``advkd/__init__.py`` is the public API on top; inside the package, import the module itself."""
    assert not [m for m, t in GRAPH.items() if "advkd" in t]


def test_no_names_that_differ_only_by_a_suffix():
    """No ``attack``/``attacking``, ``report``/``reporting``, ``knowledge``/``knowledge_run`` pairs."""
    names = {p.parent.name if p.name == "__init__.py" else p.stem for p in ROOT.rglob("*.py")} - {"__init__", "__main__"}
    pairs = sorted((a, b) for a in names for b in names if a != b and b.startswith(a))
    assert not pairs, f"module names that differ only by a suffix: {pairs}"


def test_every_package_says_what_it_holds_and_may_import():
    for init in sorted(ROOT.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert doc, f"{init} has no docstring"
        if init.parent != ROOT:
            assert "may import" in doc.lower(), f"{init}'s docstring does not say what the package may import"


def test_public_api_is_lazy_and_complete():
    """``import advkd`` loads no torch; every name in ``__all__`` resolves."""
    code = (
        "import sys, advkd\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('advkd'))\n"
        "need = {'__version__', 'AdvkdError', 'build_model', 'build_method', 'build_attack', 'evaluate', 'load_checkpoint',\n"
        "        'save_checkpoint', 'TrainConfig', 'resolve_config', 'train', 'load_split', 'TensorData', 'build_table'}\n"
        "assert need <= set(advkd.__all__), need - set(advkd.__all__)\n"
        "for n in advkd.__all__: getattr(advkd, n)\n"
        "import advkd.training.loop, advkd.methods\n"
        "assert advkd.train is advkd.training.loop.run and advkd.build_method is advkd.methods.build\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT.parent)


@pytest.mark.parametrize("name", ["advkd.entry", "advkd.core.errors"])
def test_entry_point_imports_no_torch(name):
    subprocess.run([sys.executable, "-c", f"import sys, {name}; assert 'torch' not in sys.modules"], check=True, cwd=ROOT.parent)
