"""PAGS's scoring data and rounds (the sweep issue's gap fix): the base mask is scored on the
whole training set by default or on score_batches minibatches, and iterative methods run the
author loop's 10 rounds (pai_rounds) for the base and every candidate."""

from __future__ import annotations

import pytest
import torch

from masktopo import pai
from masktopo.pags.config import PagsConfig
from masktopo.pags.runner import AUTHOR_ROUNDS, prepare
from masktopo.pags.sampling import generators
from masktopo.seeding import generator
from masktopo.zoo import get_model, get_spec

SPIRAL = dict(model="spiral-mlp", dataset="cubist-spiral", density=0.3, n=2, seed=4)


def _same(a, b) -> bool:
    return list(a.names) == list(b.names) and all(torch.equal(a[n], b[n]) for n in a.names)


def test_base_scoring_data_is_an_option():
    every = prepare(PagsConfig(method="snip", **SPIRAL))[0]
    capped = prepare(PagsConfig(method="snip", score_batches=10_000, **SPIRAL))[0]
    one = prepare(PagsConfig(method="snip", score_batches=1, **SPIRAL))[0]
    assert not _same(every, one)
    # all the batches in another order: SNIP's summed gradient is the same up to rounding
    agree = sum(int((every[n] == capped[n]).sum()) for n in every.names)
    assert agree >= 0.99 * sum(every[n].numel() for n in every.names)


def test_iterative_methods_run_the_author_loops_rounds():
    assert AUTHOR_ROUNDS == 10
    base = prepare(PagsConfig(method="synflow", **SPIRAL))[0]
    spec = get_spec("cubist-spiral")
    model = get_model("spiral-mlp", dataset=spec, generator=generator(4, "model"))
    g0, _ = generators(4, 0)
    ten = pai.prune(model, "synflow", 0.3, generator=g0, in_shape=spec.in_shape, iterations=10)
    assert _same(base, ten)
    hundred = prepare(PagsConfig(method="synflow", pai_rounds=100, **SPIRAL))[0]
    g0, _ = generators(4, 0)
    own = pai.prune(model, "synflow", 0.3, generator=g0, in_shape=spec.in_shape)  # 100 rounds
    assert _same(hundred, own)
    assert not _same(base, hundred)


def test_non_iterative_methods_ignore_rounds():
    a = prepare(PagsConfig(method="erk", **SPIRAL))[0]
    b = prepare(PagsConfig(method="erk", pai_rounds=3, **SPIRAL))[0]
    assert _same(a, b)


@pytest.mark.parametrize(("key", "value"), [("score_batches", 0), ("pai_rounds", 0)])
def test_bounds(key, value):
    from masktopo.errors import MaskValidationError

    with pytest.raises(MaskValidationError, match=f"{key} must be >= 1"):
        PagsConfig(**{key: value})
