"""The package-level import graph of dicom_node follows the data flow (docs/DESIGN: one way).

The graph is built from the source with :mod:`ast`, nothing is imported. A
node is a first-level part of the package: a subpackage (``series``,
``jobs``) or a top-level module (``config``, ``app``). Every import counts:
module level, inside functions (the lazy imports that keep start-up fast)
and under ``if TYPE_CHECKING:``. A function-level import is still a
dependency, only a later one, and a cycle through it is a cycle a later
refactor turns into an ImportError.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = "dicom_node"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

#: (importer, imported) pairs that run against the data flow
#: (receive -> series -> jobs -> pipelines -> results -> export).
AGAINST_THE_FLOW = [
    ("results", "export"),  # result profiles belong to results/ (results/profiles.py)
    ("pipelines", "training"),  # the runtime's Keras objects are in pipelines/ich_layers.py
    ("series", "imaging"),  # imaging/ takes the series' CTVolume
    ("series", "jobs"),
    ("series", "pipelines"),
    ("series", "config"),  # the settings are built from series/ types
    ("results", "config"),  # likewise results/profiles.py
    ("series", "settings"),  # the section models of config.py (settings/) likewise
    ("results", "settings"),
    ("imaging", "pipelines"),
]

#: Third-party frameworks and the only parts that may import them (docs/DESIGN.md).
CONFINED = {
    "pynetdicom": {"receive", "export"},
    "keras": {"pipelines", "training"},
    "tensorflow": {"pipelines", "training"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _part(module: str) -> str | None:
    """First-level part of a ``dicom_node`` module name; None for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _imported_modules(path: Path) -> list[tuple[str, int]]:
    """Absolute names of every module ``path`` imports, with the line, at any depth."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            found.append((name, node.lineno))
            if name == PACKAGE:  # from dicom_node import config: a part, or an attribute
                found.extend(
                    (f"{PACKAGE}.{alias.name}", node.lineno)
                    for alias in node.names
                    if (ROOT / alias.name).is_dir() or (ROOT / f"{alias.name}.py").is_file()
                )
    return found


def _graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], list[str]], list[tuple]]:
    """Part -> parts it imports; (part, part) -> the import sites; third-party imports."""
    edges: dict[str, set[str]] = defaultdict(set)
    sites: dict[tuple[str, str], list[str]] = defaultdict(list)
    third_party = []
    for path in sorted(ROOT.rglob("*.py")):
        importer = _part(_module_name(path))
        if importer is None:
            continue
        where = path.relative_to(ROOT.parent)
        for name, line in _imported_modules(path):
            top = name.split(".")[0]
            if top != PACKAGE:
                third_party.append((importer, top, f"{where}:{line}"))
                continue
            imported = _part(name)
            if imported is not None and imported != importer:
                edges[importer].add(imported)
                sites[(importer, imported)].append(f"{where}:{line}")
    return edges, sites, third_party


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one part (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return components


GRAPH, SITES, THIRD_PARTY = _graph()


def test_the_graph_sees_the_known_dependencies():
    # Guards the parser: a graph that found nothing would pass every check below.
    assert "jobs" in GRAPH["app"] and "series" in GRAPH["jobs"]
    assert "series" in GRAPH["imaging"]  # imaging/ takes CTVolume
    assert "pipelines" in GRAPH["results"]  # results take PipelineResult
    assert any(s.startswith("dicom_node/pipelines/ich.py") for s in SITES[("pipelines", "imaging")])


def test_no_import_cycle_between_parts_of_the_package():
    cycles = _cycles(GRAPH)
    details = [
        f"{a} -> {b}: {', '.join(SITES[(a, b)][:3])}"
        for component in cycles
        for a in component
        for b in sorted(GRAPH[a])
        if b in component
    ]
    assert not cycles, "import cycles between parts of dicom_node:\n" + "\n".join(details)


@pytest.mark.parametrize(("importer", "imported"), AGAINST_THE_FLOW)
def test_no_import_against_the_data_flow(importer, imported):
    assert imported not in GRAPH.get(importer, set()), (
        f"{importer} imports {imported}: {', '.join(SITES[(importer, imported)])}"
    )


def test_only_the_composition_root_and_the_cli_import_the_app_and_the_web():
    importers = {part for part, imported in GRAPH.items() if "app" in imported}
    assert importers <= {"cli"}
    importers = {part for part, imported in GRAPH.items() if "web" in imported}
    assert importers <= {"app", "cli"}


@pytest.mark.parametrize("framework", sorted(CONFINED))
def test_frameworks_are_imported_only_where_the_design_allows(framework):
    outside = [
        site
        for part, top, site in THIRD_PARTY
        if top == framework and part not in CONFINED[framework]
    ]
    assert not outside, f"{framework} imported outside {sorted(CONFINED[framework])}: {outside}"
