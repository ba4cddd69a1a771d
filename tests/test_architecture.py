"""The package's shape, checked: layers, no import cycles, no private imports, small modules.

The layers are declared in ``pyproject.toml`` (``[tool.importlinter]``) and explained in
``docs/architecture.md``. These tests make the declaration binding: a new import that runs upward
through the layers, closes a cycle, or reaches into another module's private names fails here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "recsys"

# Modules above the size limit that still do one job, and what that job is.
MAX_LINES = 600
ONE_JOB = {
    "recsys/data/synthetic.py": "the synthetic world and its weekly logs",
    "recsys/data/movielens.py": "reading and landing the MovieLens datasets",
    "recsys/privacy/scan.py": "the personal-data leak scanner",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def test_layer_contract_is_kept():
    """``lint-imports`` reads the contract from pyproject.toml; its report names each broken import."""
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_no_import_cycle_between_modules():
    """No strongly connected group in the module import graph (imports inside functions included)."""
    graph = grimp.build_graph("recsys", cache_dir=None)
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(start: str) -> None:  # Tarjan's algorithm, iterative
        work = [(start, iter(edges[start]))]
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
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    cycles.append(sorted(group))

    for module in modules:
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def _python_files() -> list[Path]:
    files = []
    for folder in ("recsys", "dags", "plugins", "bench", "tests"):
        files.extend(sorted((ROOT / folder).rglob("*.py")))
    return [f for f in files if ".venv" not in f.parts]


def test_no_private_name_is_imported_from_another_project_module():
    """ruff's PLC2701 covers imports across packages; this covers the project's own modules too."""
    offences = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("recsys"):
                for alias in node.names:
                    if alias.name.startswith("_"):
                        offences.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{alias.name}")
    assert not offences, "private names imported across modules:\n" + "\n".join(offences)


def _function_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    found.append(inner)
    return found


def test_imports_inside_functions_say_why():
    """An import inside a function is kept only to defer a heavy library or keep DAG parsing light,
    and says so with a ``deferred:`` comment on its line or on the comment line(s) just above."""
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in _function_imports(ast.parse("\n".join(lines))):
            first = node.lineno - 1
            above = first - 1
            reasons = [lines[first]]
            while above >= 0 and lines[above].strip().startswith(("#", "from ", "import ")):
                reasons.append(lines[above])
                above -= 1
            if not any("deferred:" in line for line in reasons):
                unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[first].strip()}")
    assert not unexplained, "imports inside functions without a `deferred:` reason:\n" + "\n".join(
        unexplained
    )


@pytest.mark.parametrize("module", sorted(_modules()))
def test_modules_stay_small_or_do_one_job(module):
    path = _modules()[module]
    rel = str(path.relative_to(ROOT))
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES or rel in ONE_JOB, (
        f"{rel} has {lines} lines: split it by job, or name its one job in ONE_JOB"
    )
