"""Import layering of the selftrain package, read from the source with `ast`.

Every import counts: module level, inside functions, under `if __name__ ==
"__main__":`, `import selftrain.x`, `from selftrain.x import y`, `from selftrain
import x`, relative imports and `importlib.import_module("selftrain.x")` with a
literal name. A package's `__init__.py` is the module named after the package.

(a) No module imports from a layer above its own (same layer is fine).
(b) No import cycle anywhere, function-level imports included: a lazy import
    hides a cycle from Python, not from the design.
A module in no layer fails the test until someone places it.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Lowest first; a module may import from its own layer and those before it.
# "x.*" is the package x (its __init__) and every module below it.
LAYERS = [
    ["selftrain", "selftrain.errors", "selftrain.logging", "selftrain.memory"],  # "selftrain": the (empty) package __init__
    ["selftrain.records", "selftrain.answers", "selftrain.sandbox"],
    ["selftrain.config", "selftrain.config_doc"],
    ["selftrain.http", "selftrain.prompts", "selftrain.ifeval_checks", "selftrain.data", "selftrain.tasks.*", "selftrain.rewards.*",
     "selftrain.models", "selftrain.metrics", "selftrain.judging", "selftrain.generation.*", "selftrain.runs", "selftrain.checks",
     "selftrain.training", "selftrain.tracking", "selftrain.dpo_losses", "selftrain.self_rewarding", "selftrain.self_instruct", "selftrain.distill",
     "selftrain.question_quality"],
    ["selftrain.report_distill", "selftrain.attribution"],
    ["selftrain.cli", "selftrain.report"],
    ["selftrain.stages.*"],
    ["selftrain.experiments.*"],
]


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module
    where: str  # file:line of the import

    def __str__(self) -> str:
        return f"{self.where}: {self.source} -> {self.target}"


def module_names(root: Path, package: str = "selftrain") -> dict[str, Path]:
    """Module name -> file for every .py file of the package under `root`."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(module: str, path: Path, known: set[str], root: Path, package: str = "selftrain") -> list[Edge]:
    """Every import of another module of `package` in the file, wherever it is written."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    where = str(path.relative_to(root))
    is_package = path.name == "__init__.py"
    edges = []

    def add(target: str, node: ast.AST) -> None:
        if (target == package or target.startswith(package + ".")) and target != module:
            edges.append(Edge(module, target, f"{where}:{node.lineno}"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, one step up per extra dot
                base = (module if is_package else module.rpartition(".")[0]).split(".")
                base = base[: len(base) - (node.level - 1)]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                submodule = f"{base_name}.{alias.name}"
                add(submodule if submodule in known else base_name, node)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            add(node.args[0].value, node)
    return sorted(set(edges), key=lambda e: (e.where, e.target))  # `from x import a, b`: one edge


def layer_of(module: str, layers: list[list[str]]) -> int | None:
    for index, entries in enumerate(layers):
        for entry in entries:
            if module == entry or (entry.endswith(".*") and
                                   (module == entry[:-2] or module.startswith(entry[:-1]))):
                return index
    return None


def strongly_connected(nodes: set[str], edges: list[Edge]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components of more than one module, i.e. the cycles."""
    graph: dict[str, list[str]] = {n: [] for n in nodes}
    for e in edges:
        graph.setdefault(e.source, []).append(e.target)
        graph.setdefault(e.target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


@dataclass
class Report:
    unplaced: list[str]  # "add <module> to a layer"
    upward: list[str]  # file:line: from -> to (layer names)
    cycles: list[str]  # one entry per cycle, listing its imports


def check(root: Path, layers: list[list[str]], package: str = "selftrain") -> Report:
    modules = module_names(root, package)
    edges = [e for name, path in modules.items() for e in imports_of(name, path, set(modules), root, package)]
    targets = {e.target for e in edges}
    unplaced = [f"add {m} to a layer ({modules[m].relative_to(root) if m in modules else 'imported'})"
                for m in sorted(set(modules) | targets) if layer_of(m, layers) is None]
    upward = []
    for e in edges:
        low, high = layer_of(e.source, layers), layer_of(e.target, layers)
        if low is not None and high is not None and high > low:
            upward.append(f"{e} (layer {low} imports layer {high})")
    cycles = []
    for component in strongly_connected(set(modules), edges):
        inside = [str(e) for e in edges if e.source in component and e.target in component]
        cycles.append(f"{' <-> '.join(component)}:\n    " + "\n    ".join(sorted(inside)))
    return Report(unplaced, sorted(upward), cycles)


# --- the real package --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report() -> Report:
    return check(REPO, LAYERS)


def fail_listing(title: str, lines: list[str]) -> None:
    if lines:
        pytest.fail(f"{title}:\n" + "\n".join(lines), pytrace=False)


def test_every_module_is_in_a_layer(report):
    fail_listing("modules in no layer (tests/test_layering.py LAYERS)", report.unplaced)


def test_no_module_imports_from_a_layer_above_its_own(report):
    fail_listing("imports that point up a layer", report.upward)


def test_no_import_cycles(report):
    fail_listing("import cycles (function-level imports included)", report.cycles)


def test_every_layer_entry_names_an_existing_module():
    modules = set(module_names(REPO))
    stale = [entry for entries in LAYERS for entry in entries
             if not any(layer_of(m, [[entry]]) == 0 for m in modules)]
    assert not stale, f"layer entries that match no module (remove or rename them): {stale}"


# --- the checker itself, on a tiny package written here -------------------------------------------

def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


TINY_LAYERS = [["pkg", "pkg.base"], ["pkg.config"], ["pkg.cli"], ["pkg.stages.*"]]


def test_checker_reports_upward_imports_cycles_and_unplaced_modules(tmp_path):
    write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/base.py": "import os\n",
        "pkg/config.py": "from pkg.base import x\n\n\nif __name__ == '__main__':\n    from pkg.cli import run\n",
        "pkg/cli.py": "import pkg.config\n",
        "pkg/stages/__init__.py": "",
        "pkg/stages/a.py": "def main():\n    from pkg.stages.b import f\n",  # function-level
        "pkg/stages/b.py": "from . import a\nfrom .. import base\n",  # relative, to a module and up a package
        "pkg/stages/c.py": "import importlib\nimportlib.import_module('pkg.stages.a')\n",
        "pkg/extra.py": "from pkg import base\n",
    })
    result = check(tmp_path, TINY_LAYERS, package="pkg")
    assert result.unplaced == ["add pkg.extra to a layer (pkg/extra.py)"]
    assert result.upward == ["pkg/config.py:5: pkg.config -> pkg.cli (layer 1 imports layer 2)"]
    assert result.cycles == [
        "pkg.cli <-> pkg.config:\n    pkg/cli.py:1: pkg.cli -> pkg.config\n    pkg/config.py:5: pkg.config -> pkg.cli",
        "pkg.stages.a <-> pkg.stages.b:\n    pkg/stages/a.py:2: pkg.stages.a -> pkg.stages.b\n"
        "    pkg/stages/b.py:1: pkg.stages.b -> pkg.stages.a",
    ]
    edges = {str(e) for name, path in module_names(tmp_path, "pkg").items()
             for e in imports_of(name, path, set(module_names(tmp_path, "pkg")), tmp_path, "pkg")}
    assert "pkg/stages/b.py:2: pkg.stages.b -> pkg.base" in edges
    assert "pkg/stages/c.py:2: pkg.stages.c -> pkg.stages.a" in edges
    assert "pkg/extra.py:1: pkg.extra -> pkg.base" in edges


def test_checker_passes_a_clean_package(tmp_path):
    write_package(tmp_path, {"pkg/__init__.py": "", "pkg/base.py": "", "pkg/config.py": "from pkg import base\n",
                             "pkg/cli.py": "from pkg.config import x\nfrom pkg.base import y\n"})
    assert check(tmp_path, TINY_LAYERS[:3], package="pkg") == Report([], [], [])


def test_layer_patterns():
    layers = [["a", "a.b"], ["a.pkg.*"]]
    assert [layer_of(m, layers) for m in ("a", "a.b", "a.pkg", "a.pkg.x.y", "a.pkgx", "a.c")] == [0, 0, 1, 1, None, None]
