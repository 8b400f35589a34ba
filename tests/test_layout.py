"""The package's layout: wings, the import rule between them, and no import circle.

The wings, lowest first (``CONTRIBUTING.md`` draws them)::

    0 core          abeja_runtime/*.py (errors, config, job, jsonsafe, validators, ...)
    1 api           abeja_runtime/api/
    2 statistics    abeja_runtime/statistics/
    2 emulator      abeja_runtime/emulator/
    3 artifacts     abeja_runtime/artifacts/
    3 integrations  abeja_runtime/integrations/
    4 runner        abeja_runtime/runner/
    5 cli           abeja_runtime/cli/

Wings of one level are peers: neither imports the other.

The rule: a module imports only from its own wing or a lower one. The package's face
(``abeja_runtime/__init__.py``, which names the public API lazily) and ``__main__`` are
outside the rule.

What the static scan counts: every ``import``/``from ... import`` statement of a package
module that names another package module, at module level and inside functions, except
under ``if TYPE_CHECKING:``. ``from pkg import name`` counts as an import of
``pkg.name`` when that is a module, else of ``pkg``. Circles are looked for among the
module-level statements only (the ones that run at import time); a lazy import inside a
function is allowed to point back.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import abeja_runtime

PACKAGE = Path(abeja_runtime.__file__).parent
NAME = "abeja_runtime"

#: wing -> level; a module may import from a wing of a lower level, or its own
LEVELS: dict[str, int] = {
    "core": 0,
    "api": 1,
    "statistics": 2,
    "emulator": 2,
    "artifacts": 3,
    "integrations": 3,
    "runner": 4,
    "cli": 5,
}

#: the face and the ``python -m abeja_runtime`` entry: outside the rule
EXEMPT = {NAME, f"{NAME}.__main__"}

#: lazy imports (inside a function) that point up, each with the reason it is tolerated
#: for now; the list should only shrink
ALLOWED_UPWARD: dict[tuple[str, str], str] = {
    (f"{NAME}.job", f"{NAME}.api.client"): "JobContext.client(): a convenience constructor",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def wing(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LEVELS and parts[1] != "core":
        return parts[1]
    return "core"


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    is_package = MODULES[module].name == "__init__.py"
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    found = []
    for alias in node.names:
        candidate = f"{source}.{alias.name}"
        if candidate in MODULES:
            found.append(candidate)
        elif source in MODULES:
            found.append(source)
    return found


def imports(module: str, *, module_level_only: bool) -> set[str]:
    """The package modules ``module`` imports (see the module docstring)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child, top)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(_targets(module, node))
            return
        inside = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if inside and module_level_only:
            return
        for child in ast.iter_child_nodes(node):
            visit(child, top and not inside)

    visit(tree, True)
    found.discard(module)
    return found


def test_every_package_module_is_in_a_wing() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(LEVELS) - {"core"}


def test_no_wing_imports_a_wing_above_it() -> None:
    wrong = []
    for module in MODULES:
        if module in EXEMPT:
            continue
        here = wing(module)
        for target in imports(module, module_level_only=False):
            there = wing(target)
            if there == here or LEVELS[there] < LEVELS[here]:
                continue
            if (module, target) in ALLOWED_UPWARD:
                continue
            wrong.append(f"{module} ({here}) imports {target} ({there})")
    assert not wrong, "imports against the wing order:\n" + "\n".join(sorted(wrong))


def test_allowed_upward_imports_still_exist() -> None:
    """An entry of ALLOWED_UPWARD whose import is gone must leave the list."""
    stale = [
        pair for pair in ALLOWED_UPWARD if pair[1] not in imports(pair[0], module_level_only=False)
    ]
    assert not stale


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_import_circle() -> None:
    graph = {module: imports(module, module_level_only=True) for module in MODULES}
    assert _circles(graph) == []


def test_circle_finder_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# what a fresh interpreter loads: the real graph, whatever the scan above misses
_LOADED = """
import importlib, json, sys
import abeja_runtime
before = set(sys.modules)
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError as exc:  # an integration whose framework is not installed
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("abeja_runtime"):
            raise
print(json.dumps(sorted(m for m in set(sys.modules) - before if m.startswith("abeja_runtime"))))
"""


@pytest.mark.parametrize("checked", ["api", "statistics", "artifacts", "emulator", "integrations"])
def test_importing_a_wing_loads_nothing_above_it(checked: str) -> None:
    names = [m for m in MODULES if wing(m) == checked]
    out = subprocess.run(
        [sys.executable, "-c", _LOADED, *names],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    loaded = json.loads(out)
    above = [m for m in loaded if wing(m) != checked and LEVELS[wing(m)] >= LEVELS[checked]]
    assert not above, f"importing {checked} loaded {above}"


def test_import_abeja_runtime_loads_only_its_face_and_the_process_hooks() -> None:
    """``import abeja_runtime`` stays as cheap as before the wings: faces load lazily."""
    code = (
        "import json, sys, abeja_runtime; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('abeja_runtime'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert json.loads(out) == [
        NAME,
        f"{NAME}._version",
        f"{NAME}.config",
        f"{NAME}.errors",
        f"{NAME}.statistics",
        f"{NAME}.statistics._process_hooks",
    ]
