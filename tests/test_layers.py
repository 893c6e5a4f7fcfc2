"""The layers of docs/architecture.md hold: apps -> agents -> envs -> core, no upward import
(not even inside a function), and no import cycle at all: not between the core's packages,
not between two modules of one package."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = {
    "fiq_gym": "fiq_gym",
    "envs": "fiq_gym.envs",
    "agents": "fiq_gym.agents",
    "benchmarks": "fiq_gym.benchmarks",
}
#: The apps layer: the CLI's entry module (its submodules hold argparse definitions and sit in
#: core, as ../shared/tools/check_layers.py counts them), ``__main__``, play and the benchmarks.
APPS = ("fiq_gym.cli", "fiq_gym.__main__", "fiq_gym.play", "fiq_gym.benchmarks")
APP_PACKAGES = ("fiq_gym.play", "fiq_gym.benchmarks")
LAYERS = {0: "core", 1: "envs", 2: "agents", 3: "apps"}
#: `import fiq_gym` registers the env ids by string; the one documented upward edge.
ALLOWED = {("fiq_gym", "fiq_gym.envs.registration")}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in SOURCES.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = [*package.split("."), *path.relative_to(REPO / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _layer(module: str) -> int:
    if module in APPS or any(module.startswith(app + ".") for app in APP_PACKAGES):
        return 3
    if module.startswith("fiq_gym.agents"):
        return 2
    if module.startswith("fiq_gym.envs"):
        return 1
    return 0


def _imported(module: str, path: Path) -> set[str]:
    """Every fiq_gym module ``module`` imports, anywhere in the file, resolved to a module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    resolved = set()
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module:
            resolved.add(name)
    return resolved


EDGES = {module: _imported(module, path) for module, path in MODULES.items()}


def test_the_source_tree_is_found():
    assert {"fiq_gym", "fiq_gym.envs", "fiq_gym.agents", "fiq_gym.benchmarks", "fiq_gym.cli"} <= set(MODULES)


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return [
        f"{module} ({LAYERS[_layer(module)]}) imports {target} ({LAYERS[_layer(target)]})"
        for module, targets in sorted(edges.items())
        for target in sorted(targets)
        if _layer(target) > _layer(module) and (module, target) not in ALLOWED
    ]


def _core_package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def core_cycle(edges: dict[str, set[str]]) -> list[str]:
    """A cycle between core packages (``fiq_gym.catalog -> fiq_gym.features -> ...``), or []."""
    graph: dict[str, set[str]] = {}
    for module, targets in edges.items():
        for target in targets:
            a, b = _core_package(module), _core_package(target)
            if _layer(module) == _layer(target) == 0 and a != b and a != "fiq_gym":
                graph.setdefault(a, set()).add(b)
    done: set[str] = set()

    def search(path: list[str]) -> list[str]:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt in path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done:
                found = search([*path, nxt])
                if found:
                    return found
        done.add(path[-1])
        return []

    for start in sorted(graph):
        found = [] if start in done else search([start])
        if found:
            return found
    return []


def module_cycle(edges: dict[str, set[str]]) -> list[str]:
    """A cycle between any two modules (inside a package too, counting a package's
    ``__init__`` and imports inside functions), or []."""
    done: set[str] = set()

    def search(path: list[str], on_path: set[str]) -> list[str]:
        for nxt in sorted(edges.get(path[-1], ())):
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done:
                found = search([*path, nxt], on_path | {nxt})
                if found:
                    return found
        done.add(path[-1])
        return []

    for start in sorted(edges):
        found = [] if start in done else search([start], {start})
        if found:
            return found
    return []


def test_no_module_imports_a_higher_layer():
    upward = upward_imports(EDGES)
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_core_packages_form_no_cycle():
    cycle = core_cycle(EDGES)
    assert not cycle, "core packages import each other in a cycle: " + " -> ".join(cycle)


def test_no_import_cycle_anywhere():
    cycle = module_cycle(EDGES)
    assert not cycle, "modules import each other in a cycle: " + " -> ".join(cycle)


def test_the_checks_see_violations_even_inside_functions(tmp_path):
    source = tmp_path / "model.py"
    source.write_text("def later():\n    from fiq_gym.agents.retriever import RetrieverNet\n")
    edges = {"fiq_gym.catalog.model": _imported("fiq_gym.catalog.model", source)}
    assert upward_imports(edges) == ["fiq_gym.catalog.model (core) imports fiq_gym.agents.retriever (agents)"]
    cyclic = {
        "fiq_gym.catalog.model": {"fiq_gym.features.model"},
        "fiq_gym.features.extract": {"fiq_gym.catalog.storage"},
    }
    assert core_cycle(cyclic) == ["fiq_gym.catalog", "fiq_gym.features", "fiq_gym.catalog"]
    inside = {
        "fiq_gym.catalog.model": {"fiq_gym.catalog.storage"},
        "fiq_gym.catalog.storage": {"fiq_gym.errors", "fiq_gym.catalog.model"},
    }
    assert core_cycle(inside) == []  # one package: not a cycle between packages...
    assert module_cycle(inside) == [  # ...but a cycle all the same
        "fiq_gym.catalog.model",
        "fiq_gym.catalog.storage",
        "fiq_gym.catalog.model",
    ]
    assert not upward_imports({"fiq_gym": {"fiq_gym.envs.registration"}})  # the documented exception
