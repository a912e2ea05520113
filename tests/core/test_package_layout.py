"""The package layout, read from the source: who may import whom, no cycles, one settings module.

Every ``import`` statement of every project file counts, those inside
functions and ``if TYPE_CHECKING:`` blocks included (they are parsed with
:mod:`ast`, never run).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

#: Top-level project packages (and scripts) and what each may import of the project.
ALLOWED: dict[str, set[str]] = {
    "lvseg_core": {"lvseg_core"},
    "train": {"train", "lvseg_core"},
    "lvseg_app": {"lvseg_app", "lvseg_core"},
    "app_pages": {"lvseg_app", "lvseg_core"},
    "app": {"lvseg_app", "lvseg_core"},
    "bench": {"bench", "lvseg_core", "train"},   # the report describes the training recipe
}

#: Third-party packages a project package must not import.
FORBIDDEN: dict[str, set[str]] = {
    "lvseg_core": {"streamlit", "plotly", "lightning", "pytorch_lightning"},
    "train": {"streamlit", "plotly"},
    "lvseg_app": {"lightning", "pytorch_lightning"},
}

PROJECT = (*ALLOWED, "tests")
SETTING = re.compile(r"(LVSEG|HF)_[A-Z0-9_]+")


def module_name(path: Path) -> str:
    """``lvseg_core/io/nifti.py`` -> ``lvseg_core.io.nifti`` (an ``__init__`` is its package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files() -> dict[str, Path]:
    """Module name -> file, for every Python file of the project (``docs/`` aside)."""
    files = {"app": ROOT / "app.py"}
    for top in PROJECT:
        folder = ROOT / top
        if folder.is_dir():
            files.update({module_name(p): p for p in sorted(folder.rglob("*.py"))})
    return files


def imports(source: str, module: str, is_package: bool) -> list[tuple[str, int]]:
    """Absolute names imported by ``source`` (module ``module``), with line numbers.

    ``from a import b`` yields ``a.b`` (a submodule or a name of ``a``: the
    caller keeps the longest prefix that is a module). A module's own packages
    are not counted: Python imports them before any module in them.
    """
    found = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported name refers to (longest prefix), else None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """``(edges between project modules, every import as (module, line, name))``."""
    modules = project_files()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    every = []
    for module, path in modules.items():
        for name, line in imports(path.read_text(), module, path.name == "__init__.py"):
            every.append((module, line, name))
            target = resolve(name, modules)
            if target is not None and target != module:
                edges[module].add(target)
    return edges, every


def layout_violations(every: list[tuple[str, int, str]], modules: dict[str, Path]) -> list[str]:
    """Imports that break :data:`ALLOWED` or :data:`FORBIDDEN`."""
    problems = []
    for module, line, name in every:
        top = module.split(".")[0]
        if top not in ALLOWED:
            continue
        target = resolve(name, modules)
        imported = name.split(".")[0]
        if target is not None and target.split(".")[0] not in ALLOWED[top]:
            problems.append(f"{module}:{line} imports {target}")
        if imported in FORBIDDEN.get(top, set()):
            problems.append(f"{module}:{line} imports {imported}")
    return sorted(set(problems))


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return cycles


def test_engine_and_packages_import_only_what_they_may():
    edges, every = import_graph()
    assert not layout_violations(every, project_files())


def test_no_import_cycle_between_project_files():
    edges, _ = import_graph()
    assert find_cycles(edges) == []


def environment_reads(source: str) -> list[tuple[int, str]]:
    """``(line, variable)`` of every read of an ``LVSEG_*`` / ``HF_*`` environment
    variable in ``source``: ``os.environ.get(X)``, ``os.getenv(X)``, ``os.environ[X]``,
    ``X in os.environ``; a variable name given by an expression counts as ``?``
    (it may be one). Writing a child process's environment is not a read."""
    def name(node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value if SETTING.fullmatch(node.value) else None
        return "?"

    def is_environ(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "environ" or \
            isinstance(node, ast.Name) and node.id == "environ"

    found = []
    for node in ast.walk(ast.parse(source)):
        arg = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            func = node.func
            if func.attr in ("get", "pop", "setdefault") and is_environ(func.value) or \
                    func.attr == "getenv":
                arg = node.args[0]
        elif isinstance(node, ast.Subscript) and is_environ(node.value) \
                and isinstance(node.ctx, ast.Load):
            arg = node.slice
        elif isinstance(node, ast.Compare) and any(is_environ(c) for c in node.comparators):
            arg = node.left
        variable = name(arg) if arg is not None else None
        if variable is not None:
            found.append((node.lineno, variable))
    return found


def test_settings_are_read_in_settings_py_only():
    """No project file but ``lvseg_core/settings.py`` reads an ``LVSEG_*`` or ``HF_*``
    environment variable (tests, which set them for the code under test, aside)."""
    offenders = [f"{module}:{line} {variable}"
                 for module, path in project_files().items()
                 if module != "lvseg_core.settings" and not module.startswith("tests")
                 for line, variable in environment_reads(path.read_text())]
    assert offenders == []


@pytest.mark.parametrize("source, expected", [
    ('import os\nx = os.environ.get("LVSEG_DATA", "d")\n', [(2, "LVSEG_DATA")]),
    ('import os\ndef f():\n    return os.getenv("HF_TOKEN")\n', [(3, "HF_TOKEN")]),
    ('from os import environ\nif "HF_HUB_OFFLINE" in environ: pass\n', [(2, "HF_HUB_OFFLINE")]),
    ('import os\nn = "LVSEG_X"\nv = os.environ[n]\n', [(3, "?")]),
    ('import os\nv = os.environ.get("LOCAL_RANK", 0)\n', []),
    ('import os\nenv = dict(os.environ, HF_HUB_OFFLINE="1")\n', []),
])
def test_the_settings_check_catches_a_read(source, expected):
    assert environment_reads(source) == expected


@pytest.mark.parametrize("source, expected", [
    ("def f():\n    import streamlit\n", "lvseg_core.fake:2 imports streamlit"),
    ("from train.runner import fit\n", "lvseg_core.fake:1 imports train.runner"),
    ("import numpy\nfrom lvseg_core.errors import LVSegError\n", None),
    ("if True:\n    from lvseg_app import viz\n", "lvseg_core.fake:2 imports lvseg_app.viz"),
])
def test_the_checks_catch_a_bad_import(source, expected):
    """The checker itself: a function-level or conditional import in the engine is caught."""
    modules = project_files()
    every = [("lvseg_core.fake", line, name)
             for name, line in imports(source, "lvseg_core.fake", False)]
    problems = layout_violations(every, modules)
    assert problems == ([expected] if expected else [])


def test_a_cycle_is_found():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_settings_follow_the_environment(monkeypatch, tmp_path):
    from lvseg_core import settings

    monkeypatch.setenv("LVSEG_RUNS_DIR", str(tmp_path / "r"))
    monkeypatch.setenv("LVSEG_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("LVSEG_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("LVSEG_MAX_UPLOAD_MB", "1")
    assert settings.runs_dir() == tmp_path / "r" and settings.weights_dir() == tmp_path / "w"
    assert settings.data_dir() == tmp_path / "d"
    assert settings.max_upload_bytes() == 2**20
    for value, offline in (("1", True), ("true", True), ("ON", True), ("0", False),
                           ("", False), ("false", False)):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert settings.hub_offline() is offline
    monkeypatch.delenv("LVSEG_RUNS_DIR")
    assert settings.runs_dir() == settings.REPO / "runs"
