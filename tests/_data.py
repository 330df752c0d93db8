"""The real datasets some tests read, when this machine has them: Fashion-MNIST from Debian's
``dataset-fashion-mnist`` package (``.ci/run`` installs it where it can; elsewhere the tests
that need it are skipped, not failed)."""

from __future__ import annotations

from pathlib import Path

import pytest

FMNIST = Path("/usr/share/datasets/fashion-mnist")
_WHY = "Fashion-MNIST (Debian package dataset-fashion-mnist) missing"

#: Mark for a test that reads Fashion-MNIST.
needs_fmnist = pytest.mark.skipif(not FMNIST.is_dir(), reason=_WHY)


def skip_without_fmnist() -> None:
    """Skip the calling test or fixture (and every test using the fixture) without the data."""
    if not FMNIST.is_dir():
        pytest.skip(_WHY)
