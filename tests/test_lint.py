"""The code base stays ruff-clean (lint and format), checked as part of the suite."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff():
    exe = shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    return exe


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff(args):
    proc = subprocess.run([_ruff(), *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_docstring_holds_a_control_character():
    r"""A backslash in a docstring that is not raw is an escape: ``\bar w`` in a plain
    triple-quoted string reads as a backspace and ``ar w``, which the API reference shows."""
    import ast

    bad = []
    for folder in ("masktopo", "cli", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            nodes = [tree, *(n for n in ast.walk(tree) if isinstance(
                n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef))]  # fmt: skip
            for node in nodes:
                doc = ast.get_docstring(node, clean=False) or ""
                if any(c in doc for c in "\a\b\f\v"):
                    bad.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 1)}")
    assert not bad, f'docstrings with control characters (make them raw: r"""): {bad}'


def _private(dotted: str) -> bool:
    """A private part in a dotted name (``_kernels``), dunders (``__version__``) aside."""
    return any(p.startswith("_") and not p.startswith("__") for p in dotted.split("."))


def private_library_imports(tree) -> list[str]:
    """The imports of a private library module or name in ``tree`` (a module of cli/):
    ``from masktopo.x._y import z``, ``from masktopo.x import _y``, ``import masktopo.x._y``.
    cli/ itself (``masktopo.cli``, relative imports) is not the library."""
    import ast

    def library(module: str) -> bool:
        return (module == "masktopo" or module.startswith("masktopo.")) and not (
            module == "masktopo.cli" or module.startswith("masktopo.cli.")
        )

    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level and library(node.module or ""):
            names = [a.name for a in node.names]
            if _private(node.module) or any(_private(n) for n in names):
                bad.append(f"{node.lineno}: from {node.module} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            bad += [f"{node.lineno}: import {a.name}" for a in node.names
                    if library(a.name) and _private(a.name)]  # fmt: skip
    return bad


def test_private_import_scan():
    import ast

    for src in ("from masktopo.analysis._kernels import x", "from masktopo.analysis import _k",
                "import masktopo.analysis._kernels", "def f():\n    from masktopo import _lazy"):  # fmt: skip
        assert private_library_imports(ast.parse(src)), src
    for src in ("from masktopo import __version__", "from masktopo.cli._output import x",
                "from ._output import x", "from masktopo.analysis import analyze"):  # fmt: skip
        assert not private_library_imports(ast.parse(src)), src


def test_cli_imports_no_private_library_module_or_name():
    """cli/ is a user of the library like any other: public names only."""
    import ast

    bad = [f"{path.relative_to(ROOT)}:{line}" for path in sorted((ROOT / "cli").rglob("*.py"))
           for line in private_library_imports(ast.parse(path.read_text(encoding="utf-8")))]  # fmt: skip
    assert not bad, f"cli/ imports private library modules or names: {bad}"
