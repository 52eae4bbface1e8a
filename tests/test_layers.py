"""The package's layers: imports only point left, and no two modules import each other.

config -> store -> fail2ban -> sources -> geo -> services -> app -> jobs -> control ->
daemon -> cli. A module may import its own layer and the layers to its left; the
foundation (version, work in child processes, error types, file identity, logging, metric
text, sliced and windowed work on big collections, entries kept as text, malloc's settings,
text escaping, the GeoInfo value that the geo cache stores) sits under all.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "bangd"

LAYERS: list[tuple[str, ...]] = [
    ("bangd", "bangd.child", "bangd.children", "bangd.entries", "bangd.errors", "bangd.files",
     "bangd.lines", "bangd.logs", "bangd.memory", "bangd.metrics", "bangd.slices",
     "bangd.textsafe", "bangd.windows", "bangd.geo.model"),
    ("bangd.config",),
    ("bangd.store",),
    ("bangd.fail2ban",),
    ("bangd.sources",),
    ("bangd.geo",),
    ("bangd.services", "bangd.scheduler", "bangd.notify"),
    ("bangd.app",),
    ("bangd.jobs", "bangd.reports"),
    ("bangd.control", "bangd.commands", "bangd.preflight"),
    ("bangd.daemon",),
    ("bangd.cli", "bangd.__main__"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every bangd module `path` imports, TYPE_CHECKING blocks included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # `from . import jobs` names a module, not an attribute
            found.update(f"{target}.{alias.name}" for alias in node.names)
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


def layer_of(module: str) -> int:
    best = -1
    best_len = -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best >= 0, f"{module} is in no layer: add it to LAYERS"
    return best


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_every_module_belongs_to_a_layer() -> None:
    for module in graph():
        layer_of(module)


def test_imports_only_point_left() -> None:
    wrong = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
        f"({LAYERS[layer_of(target)][0]})"
        for module, targets in sorted(graph().items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert wrong == []


def test_no_import_cycles() -> None:
    edges = graph()
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append([*path[path.index(module):], module])
            return
        if module in done:
            return
        for target in sorted(edges.get(module, ())):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(edges):
        visit(module, [])
    assert cycles == []
