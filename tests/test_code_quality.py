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
