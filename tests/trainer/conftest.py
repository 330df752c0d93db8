"""Fixtures shared by the trainer tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models: one intra-op thread (much faster than two on a loaded two-core machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
