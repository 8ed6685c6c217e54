"""Code-quality gates (TorchRec-style): documented public API, lint-clean, small modules."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "recbole_fitmm"
MAX_LINES = 450


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _public_defs(tree: ast.Module) -> list[ast.AST]:
    found: list[ast.AST] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            found.append(node)
            if isinstance(node, ast.ClassDef):
                found += [
                    item
                    for item in node.body
                    if isinstance(item, ast.FunctionDef) and not item.name.startswith("_")
                ]
    return found


def _n_params(node: ast.FunctionDef) -> int:
    names = [a.arg for a in node.args.args + node.args.kwonlyargs]
    return len([n for n in names if n not in ("self", "cls")])


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_public_api_is_documented(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{path}: module docstring missing"
    problems = []
    for node in _public_defs(tree):
        doc = ast.get_docstring(node)
        if not doc:
            problems.append(f"{node.name} (line {node.lineno}) has no docstring")
        elif isinstance(node, ast.FunctionDef) and _n_params(node) >= 3 and "Args:" not in doc:
            problems.append(f"{node.name} (line {node.lineno}) documents no Args:")
        if isinstance(node, ast.FunctionDef) and node.returns is None and node.name != "__init__":
            problems.append(f"{node.name} (line {node.lineno}) has no return annotation")
    assert not problems, f"{path}: " + "; ".join(problems)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_small(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path}: split it by responsibility"


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff not installed (make install installs it)")
    done = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_imports(path: Path, known: set[str]) -> set[str]:
    """Every ``recbole_fitmm`` module ``path`` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import sub`` imports the module pkg.sub when one exists
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (a parent package is imported with a child)."""
    paths = {_module_name(path): path for path in _modules()}
    known = set(paths)
    graph = {name: _package_imports(path, known) for name, path in paths.items()}
    for name in graph:  # importing a.b.c runs a/__init__ and a/b/__init__ first
        for target in list(graph[name]):
            parts = target.split(".")
            graph[name] |= {".".join(parts[:i]) for i in range(1, len(parts))} - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_package_imports_one_way() -> None:
    graph = import_graph()
    assert "recbole_fitmm.quick_start" in graph["recbole_fitmm.compare"]  # the parser sees edges
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


#: The README's layers (Layout), bottom (1) to top (6): a module imports only from its own layer
#: or below. Keys are module names or package prefixes (``model`` covers ``model.*``).
LAYERS = {
    "recbole_fitmm": 1,
    "errors": 1,
    "io": 1,
    "version": 1,
    "compat": 1,
    "cli": 1,
    "stats": 1,
    "model": 1,
    "registry": 1,
    "config": 2,
    "provenance": 2,
    "data": 3,
    "checkpoint": 3,
    "resumable": 4,
    "trainer": 4,
    "quick_start": 5,
    "inference": 5,
    **dict.fromkeys(
        "compare compare_table compare_report per_user compare_tuned tuning tuning_space "
        "tuning_ray explain plots prepare encode encoders recommend commands".split(),
        6,
    ),
}


def layer_of(module: str) -> int:
    """The layer of a package module (by its longest listed prefix)."""
    parts = module.split(".")[1:] or ["recbole_fitmm"]
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in LAYERS:
            return LAYERS[".".join(parts[:end])]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to the README's Layout")


def test_imports_go_down_the_layers() -> None:
    graph = import_graph()
    upward = [
        f"{source} ({layer_of(source)}) -> {target} ({layer_of(target)})"
        for source, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(source)
    ]
    assert not upward, upward
    assert (
        layer_of("recbole_fitmm.model.fitmm") == 1 and layer_of("recbole_fitmm.data.convert") == 3
    )
    relative = [
        f"{path.name}:{node.lineno}"
        for path in _modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert not relative, f"relative imports (the layer check reads absolute ones): {relative}"


def test_no_package_import_inside_functions() -> None:
    """Imports of the package's own modules are at module level (no cycles dodged in functions)."""
    known = {_module_name(path) for path in _modules()}
    problems = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                if _package_imports_of(node, known):
                    problems.append(f"{path.name}:{node.lineno}")
    assert not problems, problems


def _package_imports_of(node: ast.AST, known: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & known
    assert isinstance(node, ast.ImportFrom)
    return {node.module or ""} & known


def test_building_blocks_import_no_recbole_and_touch_no_environment() -> None:
    code = (
        "import os, sys; before = dict(os.environ); "
        "import recbole_fitmm.model.layers, recbole_fitmm.model.spectral; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('recbole', 'ray'))); "
        "print(sorted(set(os.environ.items()) ^ set(before.items())))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "[]"]
