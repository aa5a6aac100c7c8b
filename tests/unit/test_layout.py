"""The house's layout, checked: each plane imports only from the planes below it, no import cycle,
no module over 400 lines. Function-level imports count: they run too, only later."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "recsys"
# Bottom to top. A module may import from its own plane and the planes before it.
PLANES = [
    "base",
    "data",
    "model",
    "evaluation",
    "training",
    "registry",
    "release",
    "serving",
    "top",
]
BASE = {"recsys", "recsys.config", "recsys.schema"}
MAX_LINES = 400


def plane(module: str) -> str:
    """``recsys.data.lake`` -> ``data``; config and schema are the base; cli, demo, dag_tasks and
    the re-exports of old import paths sit on top."""
    if module in BASE:
        return "base"
    part = module.split(".")[1]
    return part if part in PLANES else "top"


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """The recsys modules ``path`` imports, anywhere in it (``from recsys.data import lake`` is
    ``recsys.data.lake``; a name that is not a module is its package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "recsys"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "recsys":
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    names = module_names(root)
    known = set(names)
    return {name: imports(path, known) - {name} for name, path in names.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a plane above the importer's."""
    rank = {p: i for i, p in enumerate(PLANES)}
    return sorted(
        f"{src} ({plane(src)}) imports {dst} ({plane(dst)})"
        for src, dsts in graph.items()
        for dst in dsts
        if rank[plane(dst)] > rank[plane(src)]
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_each_plane_imports_only_from_the_planes_below_it():
    graph = import_graph()
    assert {"recsys.data.lake", "recsys.release.promote", "recsys.cli"} <= set(graph)
    assert "recsys.registry.client" in graph["recsys.release.promote"]  # a function-level import
    assert upward_imports(graph) == []


def test_no_module_imports_itself_back_through_others():
    assert cycles(import_graph()) == []


def test_the_checks_find_an_upward_import_and_a_cycle():
    graph = {
        "recsys.data.features": {"recsys.data.quarantine", "recsys.model.sasrec"},
        "recsys.data.quarantine": {"recsys.data.features"},
        "recsys.model.sasrec": {"recsys.config"},
        "recsys.config": set(),
    }
    assert upward_imports(graph) == [
        "recsys.data.features (data) imports recsys.model.sasrec (model)"
    ]
    assert cycles(graph) == [["recsys.data.features", "recsys.data.quarantine"]]


def test_imports_resolve_modules_and_packages(tmp_path):
    pkg = tmp_path / "recsys"
    (pkg / "data").mkdir(parents=True)
    for name in ("__init__.py", "config.py", "data/__init__.py", "data/lake.py"):
        (pkg / name).write_text("")
    (pkg / "data" / "features.py").write_text(
        "from recsys.config import Settings\n"
        "def run():\n    from recsys.data import lake\n    import recsys.data\n"
    )
    graph = import_graph(pkg)
    assert graph["recsys.data.features"] == {"recsys.config", "recsys.data.lake", "recsys.data"}


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_no_module_is_over_400_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)}: {lines} lines"
