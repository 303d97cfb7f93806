"""The package's layers, read from every import in its source (function-level and ``TYPE_CHECKING`` ones
included): no module imports from a higher layer, and no two files import each other, even through others.
``pyproject.toml``'s import-linter contract states the same layers; ``.ci/run`` runs it too (``lint-imports``)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import probe_lens

PACKAGE = Path(probe_lens.__file__).parent

LAYERS: list[set[str]] = [  # lowest first; a module may import its own layer and those below
    {"_common", "_io", "_disk", "_registry", "_cpu"},
    {"models", "activations"},
    {"probes"},
    {"scorers"},
    {"interventions"},
    {"data"},
    {"behaviours"},
    {"training"},
    {"experiments"},
    {"launch"},
    {"report", "cli", "plots", "testing", "__main__"},
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every ``probe_lens...`` module ``path`` imports (absolute or relative, anywhere in the file)."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "probe_lens"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.split(".")[0] == "probe_lens":
                for a in node.names:  # `from pkg import module` imports the module; `from pkg import name`, pkg
                    found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _file_of(name: str) -> str | None:
    """The module name of the file ``name`` resolves to (a name inside a module: that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _layer(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) == 1:
        return None  # probe_lens/__init__: the public API, above everything
    top = parts[1]
    return next((i for i, layer in enumerate(LAYERS) if top in layer), None)


def test_every_module_has_a_layer():
    unplaced = sorted(n for n in MODULES if len(n.split(".")) > 1 and _layer(n) is None)
    assert not unplaced, f"modules outside every layer (add them to LAYERS and pyproject's contract): {unplaced}"


def test_no_module_imports_from_a_higher_layer():
    bad = []
    for name, path in MODULES.items():
        mine = _layer(name)
        for imported in _imports(path):
            theirs = _layer(imported) if imported != "probe_lens" else len(LAYERS)
            if mine is not None and theirs is not None and theirs > mine:
                bad.append(f"{name} (layer {sorted(LAYERS[mine])}) imports {imported}")
    assert not bad, "imports from a higher layer:\n" + "\n".join(sorted(bad))


def test_no_import_cycles_between_files():
    graph = {name: {f for i in _imports(path) if (f := _file_of(i)) and f != name} for name, path in MODULES.items()}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle between files: {' -> '.join(e.args[1])}")
