"""masktopo.checks: the one home of "an int, not a bool", "a number", "a finite number" and the
JSON name of a value's type. The source is scanned so that no module grows its own copy, and
no module outside masktopo.store imports its private helpers (masktopo.store.common)."""

from __future__ import annotations

import ast
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from masktopo.checks import is_finite_number, is_int, is_integer, is_number, json_type

ROOT = Path(__file__).resolve().parents[1]
#: The types whose instance check, beside a bool check of the same value, is an inline copy.
NUMERIC = {"int", "float", "Number", "Real", "Integral", "integer", "floating"}


@pytest.mark.parametrize(
    "x, int_, number, finite",
    [
        (0, True, True, True),
        (-3, True, True, True),
        (10**30, True, True, True),
        (True, False, False, False),
        (False, False, False, False),
        (1.0, False, True, True),
        (math.nan, False, True, False),
        (math.inf, False, True, False),
        (-math.inf, False, True, False),
        (np.float64(0.5), False, True, True),  # a float subclass
        (np.int64(3), False, False, False),  # not an int
        (np.bool_(True), False, False, False),
        (Fraction(1, 2), False, False, False),
        ("1", False, False, False),
        (None, False, False, False),
        ([1], False, False, False),
        (1j, False, False, False),
    ],
)
def test_is_int_is_number_is_finite_number(x, int_, number, finite):
    assert is_int(x) is int_
    assert is_number(x) is number
    assert is_finite_number(x) is finite


@pytest.mark.parametrize(
    "x, integer",
    [(0, True), (-3, True), (np.int64(3), True), (np.uint8(1), True), (True, False),
     (np.bool_(True), False), (3.0, False), (np.float64(3), False), ("3", False), (None, False)],
)  # fmt: skip
def test_is_integer_takes_numpy_integers_not_bools(x, integer):
    assert is_integer(x) is integer


@pytest.mark.parametrize(
    "x, name",
    [
        (None, "null"),
        (True, "boolean"),
        (False, "boolean"),
        (0, "number"),
        (1.5, "number"),
        (math.nan, "number"),
        ("", "string"),
        ([], "array"),
        ((1, 2), "array"),
        ({}, "object"),
        ({"a": [1]}, "object"),
        (b"x", "bytes"),
        (np.int64(1), "int64"),
    ],
)
def test_json_type(x, name):
    assert json_type(x) == name


def _sources():
    for folder in ("masktopo", "cli"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path, ast.parse(path.read_text(encoding="utf-8"))


def _checked(node: ast.AST) -> tuple[str, set[str]] | None:
    """``(value, type names)`` of ``isinstance(value, types)`` or ``not isinstance(...)``."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        node = node.operand
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "isinstance" and len(node.args) == 2):  # fmt: skip
        return None
    names = {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node.args[1])
             if isinstance(n, ast.Name | ast.Attribute)}  # fmt: skip
    return ast.unparse(node.args[0]), names


def inline_copies(tree: ast.AST) -> list[int]:
    """Lines of ``isinstance(x, int) and not isinstance(x, bool)`` and its variants (``or``,
    ``int | float``, ``numbers.Number``, ``np.integer``): a bool check and a numeric type check
    of the same value in one boolean expression. ``isinstance(x, bool | int | str)`` (is it a
    JSON scalar) is no copy."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.BoolOp):
            continue
        checks = [c for c in map(_checked, node.values) if c is not None]
        bools = {v for v, names in checks if names == {"bool"}}
        numeric = {v for v, names in checks if names & NUMERIC and "bool" not in names}
        if bools & numeric:
            lines.append(node.lineno)
    return lines


def test_the_scan_finds_the_inline_copies():
    for src in (
        "x = isinstance(x, int) and not isinstance(x, bool)",
        "x = isinstance(v, bool) or not isinstance(v, int | float) or v < 1",
        "x = not isinstance(v, int) or isinstance(v, bool)",
        "x = isinstance(v, numbers.Number) and not isinstance(v, bool)",
        "x = isinstance(w, bool) or not isinstance(w, int | np.integer)",
    ):
        assert inline_copies(ast.parse(src)) == [1], src
    for src in (
        "x = v is None or isinstance(v, (bool, int, float, str))",
        "x = is_int(x) and not isinstance(y, bool)",
        "x = isinstance(x, bool) or isinstance(x, str)",
    ):
        assert inline_copies(ast.parse(src)) == [], src


def test_no_module_copies_the_checks():
    """Use masktopo.checks (is_int, is_number, is_finite_number), not an inline copy."""
    bad = [f"{path.relative_to(ROOT)}:{line}" for path, tree in _sources()
           if path.name != "checks.py" or path.parent.name != "masktopo"
           for line in inline_copies(tree)]  # fmt: skip
    assert not bad, f"inline type checks; use masktopo.checks instead: {bad}"


def test_nothing_outside_masktopo_store_imports_store_common():
    """masktopo.store.common holds the store's private helpers; other packages use public
    names (masktopo.store's, masktopo.checks)."""
    bad = []
    for path, tree in _sources():
        if (ROOT / "masktopo" / "store") in path.parents:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # relative: resolve against the file's package
                    package = path.relative_to(ROOT).parent.parts
                    if path.parts[len(ROOT.parts)] == "cli":
                        package = ("masktopo", "cli", *package[1:])
                    base = package[: len(package) - node.level + 1]
                    module = ".".join([*base, module] if module else base)
                names = [f"{module}.{a.name}" for a in node.names]
                if module == "masktopo.store.common" or "masktopo.store.common" in names:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            elif isinstance(node, ast.Import):
                if any(a.name == "masktopo.store.common" for a in node.names):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, f"imports of masktopo.store.common outside masktopo.store: {bad}"
