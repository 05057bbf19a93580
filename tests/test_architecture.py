"""The package's architecture: imports only point down the layers, no module imports
itself through others, and no module outgrows a reader's sitting.

The layers, lowest first (a module may import its own package and the packages below):
config -> data -> evaluation -> models -> training -> serving -> experiments ->
pipelines -> datasets (the catalog's dataset types) -> framework (Kedro hooks, context)
-> the project's entry points (settings, pipeline_registry, cli, __main__).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "debias_pipeline"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE
LAYERS = (
    "config",
    "data",
    "evaluation",
    "models",
    "training",
    "serving",
    "experiments",
    "pipelines",
    "datasets",
    "framework",
)
ENTRY_POINTS = ("settings", "pipeline_registry", "cli", "__main__", "")  # "" is the package itself
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports, anywhere in it (function-level imports and
    ``TYPE_CHECKING`` blocks included): ``from P.a import b`` counts as ``a.b`` when
    ``a.b`` is a module, else as ``a``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
            module = node.module[len(PACKAGE) + 1 :]
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module)
        elif isinstance(node, ast.Import):
            found.update(alias.name[len(PACKAGE) + 1 :] for alias in node.names if alias.name.startswith(PACKAGE + "."))
    return found


def rank(module: str) -> int:
    top = module.split(".")[0]
    if top in LAYERS:
        return LAYERS.index(top)
    assert module in ENTRY_POINTS, f"module {module!r} is in no layer: put it in a package of {LAYERS}"
    return len(LAYERS)


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``edges`` (its modules in order), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{module} ({LAYERS[rank(module)] if rank(module) < len(LAYERS) else 'entry point'}) imports {target}"
        for module, targets in graph().items()
        for target in targets
        if rank(target) > rank(module)
    ]
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)


def test_no_module_imports_itself_through_others() -> None:
    found = cycle(graph())
    assert found is None, "an import cycle: " + " -> ".join(found)


def test_no_package_imports_itself_through_others() -> None:
    packages: dict[str, set[str]] = {}
    for module, targets in graph().items():
        packages.setdefault(module.split(".")[0], set()).update(t.split(".")[0] for t in targets)
    found = cycle({name: targets - {name} for name, targets in packages.items()})
    assert found is None, "a cycle between packages: " + " -> ".join(found)


@pytest.mark.parametrize("module", sorted(modules()))
def test_module_size(module: str) -> None:
    lines = len(modules()[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES}): split it by job"


def test_the_checks_catch_what_they_guard() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
    assert rank("models.mf") > rank("evaluation.metrics")
    with pytest.raises(AssertionError, match="in no layer"):
        rank("loose_module")
