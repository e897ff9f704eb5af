"""The package's shape, checked from the source (no imports run): layers import
only downwards, no import cycles between modules, no module over 500 lines and
no function over 60, no private names imported across modules, format names
only in tietool/formats, exit statuses only in tietool/cli. The README's Architecture
section describes the same layers."""

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tietool"

# Each top-level room of the package and its layer: a module may import from
# its own layer or below, never above (the CLI at the edge, the model in the middle).
LAYERS = {
    "errors": 0, "results": 0, "blocks": 0, "dtypes": 0, "jsontree": 0, "textsafe": 0,
    "model": 1, "config": 1, "kerashub": 1,
    "io": 2,
    "formats": 3,
    "ties": 4,
    "summary": 5, "convert": 5, "layer": 5,
    "audit": 6, "diff": 6,
    "cli": 7,
    "__main__": 8,
}
MAX_LINES = 500
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(imported module, names) for every import in the file, lazy ones included."""
    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [a.name for a in node.names]
            subs = [f"{mod}.{n}" for n in names if f"{mod}.{n}" in modules]
            found += [(s, []) for s in subs]
            if len(subs) < len(names):
                found.append((mod, [n for n in names if f"{mod}.{n}" not in modules]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return [(m, n) for m, n in found if m == "tietool" or m.startswith("tietool.")]


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    return modules, {m: _imports(m, p, modules) for m, p in modules.items()}


def test_every_room_has_a_layer(graph):
    modules, _ = graph
    rooms = {_room(m) for m in modules} - {None}
    assert rooms <= set(LAYERS), f"rooms without a layer: {sorted(rooms - set(LAYERS))}"


def test_imports_go_down(graph):
    _, imports = graph
    upward = []
    for mod, targets in imports.items():
        here = _room(mod)
        if here is None:  # tietool/__init__: the lazy public API
            continue
        for target, _names in targets:
            there = _room(target)
            if there is not None and there != here and LAYERS[there] > LAYERS[here]:
                upward.append(f"{mod} -> {target}")
    assert upward == []


def test_no_import_cycles(graph):
    modules, imports = graph
    edges = defaultdict(set)
    for mod, targets in imports.items():
        for target, _names in targets:
            if target in modules and target != mod and target != "tietool":
                edges[mod].add(target)
    # Tarjan's strongly connected components
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in list(modules):
        if v not in index:
            visit(v)
    # a package __init__ that re-exports its own modules is not a cycle of rooms
    cycles = [c for c in cycles if not all(m.startswith(c[0].rsplit(".", 1)[0]) for m in c)
              or not any(modules[m].name == "__init__.py" for m in c)]
    assert cycles == []


def test_no_private_names_across_modules(graph):
    _, imports = graph
    bad = [f"{mod}: {target}.{n}" for mod, targets in imports.items() for target, names in targets
           for n in names if n.startswith("_") and not n.startswith("__")]
    assert bad == []


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def test_module_sizes():
    big = {}
    for path in PACKAGE.rglob("*.py"):
        n = len(path.read_text().splitlines())
        if n > MAX_LINES:
            big[_rel(path)] = n
    assert big == {}


def test_function_sizes():
    """No function over 60 lines (decorators excluded, the docstring included)."""
    long = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                where = f"{_rel(path)}:{node.name}"
                if n > MAX_FUNCTION_LINES:
                    long[where] = n
    assert long == {}


def _format_names() -> set[str]:
    text = (PACKAGE / "formats" / "descriptor.py").read_text()
    return set(re.findall(r'^    Format\("([a-z0-9-]+)"', text, re.M))


def test_format_names_only_in_formats():
    """Only tietool/formats names a format: code elsewhere asks the format's
    descriptor (tietool.formats.format_of) and never compares ``.format`` or
    ``.origin_format``, nor spells a format's name."""
    names = _format_names()
    assert {"keras2-h5", "keras3-archive", "safetensors-sharded"} <= names
    names -= {"safetensors"}  # also the container's name (convert --to safetensors)
    branch = re.compile(r"\.(origin_)?format\s*(==|!=|in\b|not in\b)|\.(origin_)?format\.startswith\(")
    bad = []
    for path in PACKAGE.rglob("*.py"):
        if _rel(path).startswith("tietool/formats/"):
            continue
        text = path.read_text()
        bad += [f"{_rel(path)}:{i}" for i, line in enumerate(text.splitlines(), 1)
                if branch.search(line) and not line.lstrip().startswith("#")]
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and node.value in names:
                bad.append(f"{_rel(path)}:{node.lineno}: {node.value!r}")
    assert bad == []


def test_exit_codes_only_in_the_cli():
    """Only tietool/cli decides an exit status: no ``exit_code``, ``sys.exit``
    or ``EXIT_*`` in the library."""
    pattern = re.compile(r"\bexit_code\b|\bsys\.exit\(|\bEXIT_[A-Z_]+\b|\bSystemExit\b")
    bad = []
    for path in PACKAGE.rglob("*.py"):
        if _rel(path).startswith(("tietool/cli/", "tietool/__main__")):
            continue
        bad += [f"{_rel(path)}:{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
                if pattern.search(line)]
    assert bad == []


def test_no_side_effects_in_module_bodies():
    """No module touches the process at import: environment, file
    descriptors, signal handlers, logging handlers."""
    pattern = re.compile(r"^(os\.environ\[|os\.environ\.(setdefault|update)|os\.dup2|signal\.signal|"
                         r"logging\.basicConfig|sys\.std(out|err) =)")
    bad = []
    for path in PACKAGE.rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.match(line):  # at column 0: runs at import
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{i}: {line.strip()}")
    assert bad == []
