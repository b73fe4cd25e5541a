"""The direction of imports: between the top-level packages, and inside the data layer.

Between packages: the package map of ``docs/architecture.md`` says which package may import
which (its "may import" column); every import of the project, function-level ones included, must
follow it. The map is read from the page itself, so the page and the code cannot drift apart.

Inside the data layer: toy world -> contract <- adapters.

``recipes.data`` is the data contract (records, readers, writers, names, streams, suites); the
adapters of public formats (``recipes.adapters``) and the toy world (``recipes.toyworld``) write
it, and the contract imports neither: registered names reach the toy world through the registry's
dataset providers. Only the command line, ``recipes.data.__main__``, brings the three together.
Checked from the source (every import, function-level ones included) and by importing each
contract module in a fresh interpreter; and no modules of the project import each other in a loop.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("analysis", "contract", "jobs", "orchestrator", "recipes")
ARCHITECTURE = ROOT / "docs" / "architecture.md"

CONTRACT = (
    "recipes.data",
    "recipes.data.schema",
    "recipes.data.readers",
    "recipes.data.writers",
    "recipes.data.image_paths",
    "recipes.data.prompts",
    "recipes.data.distractors",
    "recipes.data.sampling",
    "recipes.data.registry",
    "recipes.data.row_source",
    "recipes.data.stream",
    "recipes.data.continual",
    "recipes.data.suites",
    "recipes.data.collate",
    "recipes.data.encoded_store",
    "recipes.data.summary",
)
"""The modules of the data contract: every module of ``recipes/data`` but its command line."""
COMMAND_LINE = "recipes.data.__main__"
"""``python -m recipes.data``: the one module of ``recipes/data`` that imports the adapters and the toy world."""

NEVER = {
    "the contract": (lambda name: name in CONTRACT, ("recipes.toyworld", "recipes.adapters")),
    "the adapters": (lambda name: within(name, ("recipes.adapters",)), ("recipes.toyworld",)),
    "the toy world": (lambda name: within(name, ("recipes.toyworld",)), ("recipes.adapters",)),
}
"""Room -> (whether a module is in it, the packages it must never import)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def imported(path: Path, module_level_only: bool = False) -> set[str]:
    """Modules that ``path`` imports (``from a import b`` counts ``a.b`` when that is a module of the project)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = ast.walk(tree)
    if module_level_only:  # what runs on import: statements of the module body, in top-level if/try blocks too
        definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        nodes = [node for top in tree.body if not isinstance(top, definitions) for node in ast.walk(top)]
    modules = project_modules()
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                names.add(candidate if candidate in modules else node.module)
    return names


@cache
def package_map() -> dict[str, set[str]]:
    """The package map of docs/architecture.md: package -> the packages it may import."""
    rows = re.findall(r"^\| `([a-z.]+)` \|[^|]*\| (.*) \|$", ARCHITECTURE.read_text(), re.MULTILINE)
    return {package: set(re.findall(r"`([a-z.]+)`", allowed)) for package, allowed in rows}


def layer_of(name: str, layers: Iterable[str]) -> str | None:
    """The most specific package of the map that module ``name`` belongs to (``recipes.common`` before ``recipes``)."""
    matches = [layer for layer in layers if within(name, (layer,))]
    return max(matches, key=len) if matches else None


def wrong_way_imports(modules: dict[str, Path], layers: dict[str, set[str]]) -> list[str]:
    """``a imports b`` for every import of ``modules`` that the package map does not allow."""
    found = []
    for name, path in modules.items():
        own = layer_of(name, layers)
        for target in sorted(imported(path)):
            theirs = layer_of(target, layers)
            if own and theirs and theirs != own and theirs not in layers[own]:
                found.append(f"{name} ({own}) imports {target} ({theirs})")
    return found


def test_the_package_map_names_every_package():
    layers = package_map()
    assert set(PACKAGES) <= set(layers), f"{ARCHITECTURE.name}'s package map lacks {set(PACKAGES) - set(layers)}"
    assert all(allowed <= set(layers) for allowed in layers.values())


def test_imports_between_packages_follow_the_package_map():
    assert wrong_way_imports(project_modules(), package_map()) == []


def test_the_map_check_finds_a_wrong_way_import(tmp_path: Path):
    module = tmp_path / "sample.py"
    module.write_text("from orchestrator.sweep import main\nfrom contract import layout\n")
    assert wrong_way_imports({"analysis.sample": module}, package_map()) == [
        "analysis.sample (analysis) imports orchestrator.sweep (orchestrator)"
    ]


def test_every_module_of_recipes_data_is_in_the_contract_table():
    found = {module_name(path) for path in (ROOT / "recipes" / "data").glob("*.py")} - {COMMAND_LINE}
    assert found == set(CONTRACT), "recipes/data holds the contract only; the toy world and adapters have packages"


@pytest.mark.parametrize("room", NEVER)
def test_imports_run_one_way(room):
    member, never = NEVER[room]
    breaks = [
        f"{name} imports {target}"
        for name, path in project_modules().items()
        if member(name)
        for target in sorted(imported(path))
        if within(target, never)
        or (room == "the contract" and within(target, ("recipes.data",)) and target not in CONTRACT)
    ]
    also = ", nor modules of recipes/data outside the contract" if room == "the contract" else ""
    assert not breaks, f"{room} must not import {', '.join(never)}{also}: " + "; ".join(breaks)


@pytest.mark.parametrize("module", CONTRACT)
def test_importing_the_contract_loads_neither_toy_world_nor_adapters(module):
    script = f"import importlib, json, sys; importlib.import_module({module!r}); print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = json.loads(result.stdout)
    outside = [name for name in loaded if within(name, ("recipes.toyworld", "recipes.adapters"))]
    strangers = [name for name in loaded if within(name, ("recipes.data",)) and name not in CONTRACT]
    assert not outside and not strangers, f"import {module} loads {outside + strangers}"


@pytest.mark.parametrize("module_level_only", [True, False], ids=["at-import-time", "anywhere"])
def test_no_modules_import_each_other_in_a_loop(module_level_only):
    """At import time: module-level imports, where importing ``a.b.c`` also runs ``a`` and ``a.b``,
    except the packages the importer itself lies in, which are already being imported. Anywhere:
    function-level imports too (a local import is no way around a loop)."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        own = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 1)}
        edges = set()
        for target in imported(path, module_level_only=module_level_only):
            parts = target.split(".")
            edges.update(
                ancestor
                for ancestor in (".".join(parts[:k]) for k in range(1, len(parts) + 1))
                if ancestor in modules and ancestor not in own and ancestor != name
            )
        graph[name] = edges
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (loop := visit(nxt)):
                return loop
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (loop := visit(start)):
            pytest.fail("modules import each other in a loop: " + " -> ".join(loop))
