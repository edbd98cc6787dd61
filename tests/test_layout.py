"""The project's shape, enforced: which code may import what, no import cycles in the shared
package, and a README layout section that names every module there is."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPLICATION = ("parley", "gateway", "workflows", "activities")
PROCESSES = ("gateway", "worker", "workflows", "activities")


def modules() -> dict[str, Path]:
    """Every module of the distribution, by dotted name."""
    found = {"worker": ROOT / "worker.py"}
    for package in APPLICATION:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, *, top_level_only: bool = False) -> Iterator[str]:
    """The modules `path` imports (relative imports are not used in this project)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def within(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


def test_only_the_stack_imports_the_processes() -> None:
    offenders = {
        name: sorted(i for i in imports(path) if within(i, PROCESSES))
        for name, path in modules().items()
        if within(name, ("parley",)) and not within(name, ("parley.stack",))
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_application_code_never_imports_tests_or_benches() -> None:
    offenders = {
        name: sorted(i for i in imports(path) if within(i, ("tests", "bench")))
        for name, path in modules().items()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_shared_package_has_no_import_cycles() -> None:
    known = modules()
    graph = {
        name: {i for i in imports(path, top_level_only=True) if i in known and i != name}
        for name, path in known.items()
        if within(name, ("parley",))
    }
    cycles = []
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # A package importing its own submodule (`parley.storage` -> `parley.storage.db`) is
    # not a cycle unless the submodule imports back; `__init__` files import nothing here.
    assert cycles == []


def test_the_readme_layout_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Project layout", 1)[1].split("\n## ", 1)[0]
    # Paths (dir/module.py) and worker.py; the bench line names bench files, not modules.
    named = set(re.findall(r"\b(?:\w+/)+\w+\.py\b|\bworker\.py\b", section))
    named = {n for n in named if n == "worker.py" or n.split("/")[0] in APPLICATION}
    present = {str(path.relative_to(ROOT)) for path in modules().values()}
    present = {p for p in present if not p.endswith("__init__.py")}
    assert sorted(named - present) == [], "named in the README but missing"
    assert sorted(present - named) == [], "present but not in the README's layout"


def test_the_benches_import() -> None:
    """Benches are not run by the suite; a change that breaks their imports still fails it."""
    import importlib

    for path in sorted((ROOT / "bench").glob("*.py")):
        if path.stem != "__init__":
            importlib.import_module(f"bench.{path.stem}")
