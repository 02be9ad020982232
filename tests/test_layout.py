"""The package's shape: its packages in layers whose imports run one way (down), no import
cycles among its modules, and the README's layout is the tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "resdepth"

# The package's parts from the bottom up: a module imports modules of its own part and of the
# parts below it, never of one above, at the top of the file or inside a function alike. A part
# is a top-level module (errors.py) or a folder with everything under it (training/packing/ is
# training's). The bottom three are what every layer may read (the user's error, the lists of
# choices, the datasets' facts); config is loaded and validated from them alone; cli sits on all.
LAYERS = ("errors", "choices", "dataset_facts", "config", "runtime", "models", "data", "rundir",
          "training", "evaluate", "results", "cli", "__main__")
# resdepth/__init__.py runs before any module of the package, whoever imports it (it sets the XLA
# flags first), so it is in no layer: `from resdepth import __version__` is free anywhere.
UNLAYERED = ("resdepth",)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _nodes(tree: ast.AST, typing_too: bool):
    """Every node of `tree`, less the bodies of `if TYPE_CHECKING:` unless `typing_too`."""
    for node in ast.iter_child_nodes(tree):
        if not typing_too and _is_type_checking(node):
            for branch in node.orelse:  # an else branch runs; the body is for type checkers alone
                yield branch
                yield from _nodes(branch, typing_too)
            continue
        yield node
        yield from _nodes(node, typing_too)


def imports_of(path: Path, modules: set[str], typing_too: bool = True) -> set[str]:
    """The package modules `path` imports, at the top or inside functions alike; those imported
    under `if TYPE_CHECKING:` (for type hints alone) only if `typing_too`."""
    found = set()
    for node in _nodes(ast.parse(path.read_text()), typing_too):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from resdepth.models import network` imports the module resdepth.models.network
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                     else node.module for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def import_graph(typing_too: bool = True) -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imports_of(path, modules, typing_too) - {module_name(path)}
            for path in paths}


def layer_of(module: str) -> str:
    """The part of the package `module` belongs to: "training" for resdepth.training.packing.net."""
    return module.split(".")[1] if "." in module else module


def upward_imports(graph: dict[str, set[str]], layers: tuple[str, ...] = LAYERS,
                   unlayered: tuple[str, ...] = UNLAYERED) -> list[str]:
    """Every import in `graph` that runs up `layers` (bottom first), as "a (layer) -> b (layer)";
    a module in no declared layer is one too ("a: in no layer")."""
    found = []
    for module in sorted(graph):
        if module in unlayered:
            continue
        if layer_of(module) not in layers:
            found.append(f"{module}: in no layer; give {layer_of(module)} its place in LAYERS")
            continue
        rank = layers.index(layer_of(module))
        for target in sorted(graph[module]):
            if target not in unlayered and layer_of(target) in layers and \
                    layers.index(layer_of(target)) > rank:
                found.append(f"{module} ({layer_of(module)}) -> {target} ({layer_of(target)})")
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, colouring nodes)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_layer_checker_finds_an_import_that_runs_up():
    layers = ("base", "middle", "top")
    graph = {"pkg.base.a": set(), "pkg.middle.b": {"pkg.base.a", "pkg.middle.c"},
             "pkg.middle.c": set(), "pkg.top.d": {"pkg.middle.b"}, "pkg": {"pkg.top.d"}}
    assert upward_imports(graph, layers, ("pkg",)) == []  # down, sideways, and the root's own
    graph["pkg.base.a"] = {"pkg.top.d"}
    graph["pkg.middle.sub.e"] = {"pkg.top.d"}  # a sub-package is its parent's layer
    graph["pkg.other.f"] = set()
    assert upward_imports(graph, layers, ("pkg",)) == [
        "pkg.base.a (base) -> pkg.top.d (top)", "pkg.middle.sub.e (middle) -> pkg.top.d (top)",
        "pkg.other.f: in no layer; give other its place in LAYERS"]


def test_imports_for_type_hints_alone_are_told_apart(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import p.hint\n"
                    "else:\n    import p.other\ndef f():\n    from p import late\n")
    modules = {"p.hint", "p.other", "p.late"}
    assert imports_of(path, modules) == modules
    assert imports_of(path, modules, typing_too=False) == {"p.other", "p.late"}


def test_every_import_runs_down_the_layers():
    graph = import_graph()
    assert set(LAYERS) <= {layer_of(module) for module in graph}, "a layer that holds no module"
    upward = upward_imports(graph)
    assert not upward, "imports that run up the layers (tests/test_layout.py LAYERS):\n" + \
        "\n".join(upward)


def test_data_imports_config_for_type_hints_only():
    # Loading data reads DataConfig's fields and nothing of config's code (issue 20, point 5).
    at_run_time = {module: sorted(target for target in targets if layer_of(target) == "config")
                   for module, targets in import_graph(typing_too=False).items()
                   if layer_of(module) == "data"}
    assert not any(at_run_time.values()), at_run_time
    assert "resdepth.config" in import_graph()["resdepth.data.datasets"]  # the hint is still seen


def test_no_module_of_the_package_imports_itself_round_a_cycle():
    graph = import_graph()
    assert "resdepth.training.step" in graph and "resdepth.rundir.record" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_readme_layout_lists_every_module():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"([a-z_]+\.py)", section))
    for path in PACKAGE.rglob("*.py"):
        if path.name not in ("__init__.py", "__main__.py"):
            assert path.name in listed, f"README's layout does not list {path.relative_to(ROOT)}"
