"""Lower layers never import higher ones (the layering rule of ARCHITECTURE.md).

The order is the data path: the bottom utilities, then zoo, data and the pre/post-processing
kernels, graph, importance, select, prune, train, export, runtime, and at the top bench, the
Engine, the CLI and the public API. A package may import its own layer and those below it; where a lower layer
needs something of a higher one, the higher one registers it in a registry the lower one
owns. Every ``deploykit`` import counts, at module level and inside functions alike (a
function-level import is the same dependency, only deferred), read from the source with
:mod:`ast` so nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import deploykit

ROOT = Path(deploykit.__file__).resolve().parent

# Bottom first; a name is the first part after ``deploykit.`` (a package or a top-level module).
LAYERS: list[set[str]] = [
    {"errors", "registry", "config", "atomic", "progress", "lazy", "specs", "cuda"},
    {"zoo", "data", "kernels"},  # inputs: models, data, pre/post-processing kernels
    {"graph"},
    {"importance"},
    {"select"},
    {"prune"},
    {"train"},
    {"export"},
    {"runtime"},
    # The compress job's orchestration sits above train/ (and uses export and bench's latency
    # tables); evaluate runs runners.
    {"bench", "compress_job", "engine", "cli", "compression", "evaluate", "__init__", "__main__"},
]

# Known upward imports, (importer, imported), each a module or package prefix. Every entry says
# why it is still here; a new upward import fails the test until it is fixed or listed.
ALLOWED: set[tuple[str, str]] = {
    # The digits demo trains its model on first use with the training loop.
    ("deploykit.zoo.digits", "deploykit.train.loop"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "__init__"
    for i, names in enumerate(LAYERS):
        if name in names:
            return i
    raise AssertionError(f"{module} is in no layer: add {name!r} to LAYERS")


def deploykit_imports(tree: ast.AST) -> list[tuple[str, int]]:
    """Every absolute ``deploykit`` import: (module, line). The version string is metadata, not a layer."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "deploykit"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "deploykit" and [a.name for a in node.names] == ["__version__"]:
                continue
            if node.module.split(".")[0] == "deploykit":
                found.append((node.module, node.lineno))
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def allowances(importer: str, imported: str) -> set[tuple[str, str]]:
    """The entries of :data:`ALLOWED` that cover this import."""
    return {(a, b) for a, b in ALLOWED if within(importer, a) and within(imported, b)}


def allowed(importer: str, imported: str) -> bool:
    return bool(allowances(importer, imported))


def upward_imports() -> list[str]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        importer = module_name(path)
        for imported, line in deploykit_imports(ast.parse(path.read_text(), str(path))):
            if layer(imported) > layer(importer) and not allowed(importer, imported):
                out.append(f"{path.relative_to(ROOT.parent)}:{line}: {importer} imports {imported}")
    return out


def test_no_lower_layer_imports_a_higher_one():
    assert upward_imports() == []


def test_every_allowed_upward_import_still_exists():
    # An entry whose import is gone must leave the list, so the list stays the whole story.
    seen = set()
    for path in ROOT.rglob("*.py"):
        importer = module_name(path)
        for imported, _ in deploykit_imports(ast.parse(path.read_text())):
            seen |= allowances(importer, imported)
    assert ALLOWED - seen == set()


def test_the_check_catches_an_upward_import_inside_a_function():
    tree = ast.parse("def f():\n    from deploykit.bench.latency_table.timers import TIMERS\n")
    (imported, _), = deploykit_imports(tree)
    assert layer(imported) > layer("deploykit.graph.costs") and not allowed("deploykit.graph.costs", imported)
