"""The package's import structure (issue 11): no import cycles, and every import points down the floors declared
in ``mambaseg/__init__.py``'s docstring. Imports are read from the source (``ast``), function-level ones included,
so a lazy import that hides a cycle or an upward dependency is still seen."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import mambaseg

SRC = Path(mambaseg.__file__).resolve().parent

#: known exceptions ((importer, imported) module pairs); issue 11 asks for none
ALLOWED: set[tuple[str, str]] = set()


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for f in SRC.rglob("*.py"):
        parts = ["mambaseg", *f.relative_to(SRC).with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def from_target(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    """The absolute module name a ``from ... import`` in module ``mod`` reads from (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the mambaseg modules it imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    mods = _modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, (path, is_pkg) in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = from_target(mod, is_pkg, node)
                targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names]
            for t in targets:
                if t == "mambaseg" or t.startswith("mambaseg."):
                    o = owner(t)
                    if o and o != mod:
                        deps.add(o)
        graph[mod] = deps
    return graph


def declared_floors() -> dict[str, int]:
    """package (second name component, or ``mambaseg`` for the root) -> floor, from the package docstring."""
    floors = {}
    for m in re.finditer(r"^\s+(\d+): (.+)$", mambaseg.__doc__, re.M):
        for name in re.sub(r"\(.*\)", "", m.group(2)).split(","):
            floors[name.strip()] = int(m.group(1))
    return floors


def inner_floors(package: str) -> dict[str, int]:
    """room (third name component: a module or subpackage of ``mambaseg.<package>``) -> floor, from the package's
    ``__init__`` docstring (same format as the root's); {} when it declares none."""
    doc = (SRC / package / "__init__.py").read_text()
    doc = ast.get_docstring(ast.parse(doc)) or ""
    floors = {}
    for m in re.finditer(r"^\s+(\d+): (.+)$", doc, re.M):
        for name in re.sub(r"\(.*\)", "", m.group(2)).split(","):
            floors[name.strip()] = int(m.group(1))
    return floors


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mambaseg"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_constructed_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_package_has_a_floor():
    floors = declared_floors()
    assert floors["cli"] > floors["apps"] > floors["engine"] > floors["models"] > floors["nn"] > floors["ssm"]
    missing = sorted({package_of(m) for m in import_graph()} - set(floors))
    assert not missing, f"packages/modules without a declared floor in mambaseg/__init__.py: {missing}"


def test_no_import_cycles():
    graph = import_graph()
    for a, b in ALLOWED:
        graph[a].discard(b)
    assert cycles(graph) == []


def test_imports_point_down_the_floors():
    floors = declared_floors()
    bad = []
    for mod, deps in sorted(import_graph().items()):
        pa = package_of(mod)
        for dep in sorted(deps):
            pb = package_of(dep)
            if pa != pb and floors[pb] >= floors[pa] and (mod, dep) not in ALLOWED:
                bad.append(f"{mod} (floor {floors[pa]}) imports {dep} (floor {floors[pb]})")
    assert not bad, "imports that do not point down:\n" + "\n".join(bad)


def test_allowed_exceptions_are_still_needed():
    graph = import_graph()
    stale = [pair for pair in sorted(ALLOWED) if pair[1] not in graph.get(pair[0], set())]
    assert not stale, f"no longer imported, remove from ALLOWED: {stale}"


def unresolved_imports() -> list[str]:
    """``module: target`` for every import (function-level ones included) of a mambaseg module that does not exist:
    a lazy ``from ..pkg.mod import x`` with one dot too few can resolve into a sibling module's name and only fail
    when that code path runs."""
    mods = _modules()
    bad = []
    for mod, (path, is_pkg) in sorted(mods.items()):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = [from_target(mod, is_pkg, node)]
            else:
                continue
            bad += [f"{mod}: {t}" for t in targets if (t == "mambaseg" or t.startswith("mambaseg.")) and t not in mods]
    return bad


def test_every_import_names_an_existing_module():
    assert unresolved_imports() == []


def private_imports() -> list[str]:
    """``module: name from target`` for every ``from <mambaseg module> import _name``: a private name used by another
    module is part of that module's interface and should be public (or the code should live with its user)."""
    mods = _modules()
    bad = []
    for mod, (path, is_pkg) in sorted(mods.items()):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            target = from_target(mod, is_pkg, node)
            if target == "mambaseg" or target.startswith("mambaseg."):
                bad += [f"{mod}: {a.name} from {target}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    return bad


def test_no_private_names_imported_across_modules():
    assert private_imports() == []


INNER = ("data", "engine", "apps")  # packages whose rooms have floors of their own


def test_models_never_import_data():
    graph = import_graph()
    bad = [f"{m} imports {d}" for m, deps in sorted(graph.items()) if package_of(m) == "models"
           for d in sorted(deps) if package_of(d) == "data"]
    assert not bad, bad
    floors = declared_floors()
    assert floors["models"] == floors["data"]  # same floor: the floor check forbids either importing the other


@pytest.mark.parametrize("package", INNER)
def test_every_room_has_a_floor(package):
    floors = inner_floors(package)
    assert floors, f"mambaseg/{package}/__init__.py declares no floors for its rooms"
    rooms = {m.split(".")[2] for m in import_graph() if m.startswith(f"mambaseg.{package}.")}
    assert rooms - set(floors) == set(), f"rooms of {package} without a floor: {sorted(rooms - set(floors))}"
    assert set(floors) - rooms == set(), f"floors declared for rooms {package} does not have: " \
                                         f"{sorted(set(floors) - rooms)}"


@pytest.mark.parametrize("package", INNER)
def test_imports_inside_a_package_point_down_its_floors(package):
    floors = inner_floors(package)
    bad = []
    for mod, deps in sorted(import_graph().items()):
        if not mod.startswith(f"mambaseg.{package}."):
            continue
        ra = mod.split(".")[2]
        for dep in sorted(deps):
            if dep.startswith(f"mambaseg.{package}.") and dep.split(".")[2] != ra:
                rb = dep.split(".")[2]
                if floors[rb] >= floors[ra]:
                    bad.append(f"{mod} (floor {floors[ra]}) imports {dep} (floor {floors[rb]})")
    assert not bad, "imports that do not point down:\n" + "\n".join(bad)


def test_inner_floor_check_bites(monkeypatch):
    """A constructed upward import inside a package is reported (the check is not vacuous)."""
    graph = {"mambaseg.data.io.png": {"mambaseg.data.layouts.drive"}, "mambaseg.data.layouts.drive": set()}
    monkeypatch.setattr(sys.modules[__name__], "import_graph", lambda: graph)
    with pytest.raises(AssertionError, match="mambaseg.data.io.png"):
        test_imports_inside_a_package_point_down_its_floors("data")
