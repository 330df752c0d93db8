"""The API reference (docs/api, Sphinx autodoc + napoleon over the numpy-style docstrings) builds
with warnings as errors, so that it cannot rot: a broken docstring section, a bad cross-reference
or a module that fails to import fails the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="sphinx (the test extra) is not installed")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_api_reference_builds_without_warnings(tmp_path):
    out = tmp_path / "html"
    p = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-E",
                        "-q", str(ROOT / "docs" / "api"), str(out)],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr[-4000:]
    pages = {f.name: f.read_text() for f in out.glob("*.html")}
    assert {"index.html", "analysis.html", "training.html", "masks.html"} <= set(pages)
    for page, names in {
        "training.html": ["masktopo.userloop.sparsify", "masktopo.trainer.config.TrainConfig",
                          "masktopo.trainer.session.SparseSession"],
        "analysis.html": ["masktopo.analysis.metrics.analyze",
                          "masktopo.analysis.spectral.solve_many"],
        "masks.html": ["masktopo.masks.MaskSet", "masktopo.maskable.find_maskable"],
        "experiments.html": ["masktopo.sweep.runner.run_sweep", "masktopo.sweep.summary.summarize",
                             "masktopo.prune.solvers.solve",
                             "masktopo.search.enumerate.count_supports"],
    }.items():  # fmt: skip
        for name in names:
            assert f'id="{name}"' in pages[page], (page, name)
