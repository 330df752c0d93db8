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
