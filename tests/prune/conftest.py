"""Fixtures shared by the prune tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_chita.py"


@pytest.fixture(scope="session")
def bench():
    """benchmarks/bench_chita.py as a module (its numpy port of the reference)."""
    name = "bench_chita"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]
