"""The shape of ``llm/``: no import cycles, imports at the top, one docstring per stage folder,
no stage that branches on whether a communicator exists.

The import graph is read from the source with ``ast`` (nothing is imported), counting every
import statement wherever it sits: at the top, inside a function, under ``if TYPE_CHECKING:``.
A deferred import does not remove a cycle, it only hides it from the interpreter.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "llm"


def module_name(path: Path, root: Path = ROOT) -> str:
    """``llm/update/batching.py`` -> ``llm.update.batching``; a package's ``__init__``: its name."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules(package: Path = PACKAGE, root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(package.rglob("*.py"))}


def _imported_names(node: ast.AST, current: str, is_package: bool) -> list[str]:
    """Absolute dotted names an import statement may refer to (a module, or a module's member)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:  # relative: resolve against the importing module's package
        pkg = current.split(".") if is_package else current.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([base] if base else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules of ``modules`` it imports (anywhere in its file)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported_names(node, name, is_package):
                    if target in modules and target != name:
                        graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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


def _is_type_checking_block(stmt: ast.stmt) -> bool:
    test = getattr(stmt, "test", None)
    return (
        isinstance(stmt, ast.If)
        and (
            (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
        )
        and all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in stmt.body)
        and not stmt.orelse
    )


def late_imports(path: Path, root: Path = ROOT) -> list[str]:
    """Module-level imports that come after the first statement that is not an import (the
    docstring and ``if TYPE_CHECKING:`` blocks of imports count as part of the header)."""
    body = ast.parse(path.read_text(), filename=str(path)).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    found, header = [], True
    for stmt in body:
        is_import = isinstance(stmt, (ast.Import, ast.ImportFrom)) or _is_type_checking_block(stmt)
        if is_import and not header:
            found.append(f"{path.relative_to(root)}:{stmt.lineno}: {ast.unparse(stmt)[:80]}")
        header = header and is_import
    return found


def test_finds_a_cycle_and_a_late_import(tmp_path):
    """The two checks on a made-up package: they can fail."""
    pkg = tmp_path / "llm"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text('"""A."""\n')
    (pkg / "a" / "x.py").write_text("from llm.b import y\n")
    (pkg / "b.py").write_text(
        '"""B."""\nimport os\n\nN = 1\n\n\ndef f():\n    from .a import x\n\n\nimport sys\n'
    )
    modules = source_modules(pkg, tmp_path)
    assert find_cycles(import_graph(modules)) == [["llm.a.x", "llm.b"]]
    assert late_imports(pkg / "b.py", tmp_path) == ["llm/b.py:11: import sys"]
    assert late_imports(pkg / "a" / "x.py", tmp_path) == []


def test_llm_has_no_import_cycles():
    cycles = find_cycles(import_graph(source_modules()))
    assert not cycles, "modules of llm/ that import each other (directly or around a loop):\n" + (
        "\n".join("  " + " <-> ".join(c) for c in cycles)
    )


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: module_name(p))
def test_imports_sit_at_the_top(path):
    assert not late_imports(path), "imports after code at module level:\n" + "\n".join(
        late_imports(path)
    )


def _is_comm(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "comm"


def comm_forks(path: Path, root: Path = ROOT) -> list[str]:
    """Lines that branch on whether there is a communicator (``comm is None``, ``if comm``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        none_test = (
            isinstance(node, ast.Compare)
            and _is_comm(node.left)
            and any(isinstance(c, ast.Constant) and c.value is None for c in node.comparators)
        )
        truth_test = isinstance(node, (ast.If, ast.IfExp, ast.While)) and _is_comm(node.test)
        if none_test or truth_test:
            found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_one_code_path_for_one_or_many_processes():
    """No stage branches on ``comm is None``: a plain run is the world of one (``as_comm`` turns
    a missing communicator into it, in one place)."""
    allowed = {"llm/parallel/comm.py"}  # as_comm
    forks = [f for p in sorted(PACKAGE.rglob("*.py")) for f in comm_forks(p)]
    assert [f for f in forks if f.split(":")[0] not in allowed] == [], forks


STAGES = ("config", "data", "rollout", "rewards", "update", "runstate", "parallel", "eval")


@pytest.mark.parametrize("stage", STAGES)
def test_stage_folder_has_a_light_init_with_its_question(stage):
    """Each stage folder's ``__init__`` is one docstring line and nothing else: importing one
    module of a folder never drags in its siblings (and cannot close a cycle through them)."""
    init = PACKAGE / stage / "__init__.py"
    tree = ast.parse(init.read_text())
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr), f"{init}: docstring only"
    doc = ast.get_docstring(tree)
    assert doc and "\n" not in doc and doc.endswith("?"), f"{init}: one line, a question: {doc!r}"


def test_only_the_entry_points_stay_at_the_top():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "evaluate.py", "study.py", "train.py"], top
