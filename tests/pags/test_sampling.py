"""Candidate seeding, re-wiring, density repair and minibatch sampling."""

import copy

import numpy as np
import pytest
import torch
from _stubs import base_mask, theta

from masktopo.masks import MaskSet
from masktopo.pags.sampling import (
    RescoreSource,
    RewireSource,
    full_batches,
    generators,
    minibatches,
    repair,
)
from masktopo.seeding import seed_for


def test_seeds_depend_on_seed_and_t_only():
    assert seed_for(0, "candidate", 1) == seed_for(0, "candidate", 1)
    seeds = {seed_for(s, "candidate", t, k) for s in range(3) for t in range(3) for k in range(2)}
    assert len(seeds) == 18
    a, b = generators(7, 3), generators(7, 3)
    assert torch.equal(torch.rand(5, generator=a[0]), torch.rand(5, generator=b[0]))
    assert a[1].integers(1 << 30) == b[1].integers(1 << 30)


def test_rewire_keeps_exact_counts_and_is_reproducible():
    w = theta()
    base = base_mask(w, 0.2)
    src = RewireSource(base, seed=4)
    c1, c2, c3 = src(1), src(1), src(2)
    assert c1.nnz_per_layer() == base.nnz_per_layer()
    assert c1.equal(c2) and not c1.equal(c3)
    assert not c1.has_weights


def test_rewire_is_uniform_over_positions():
    base = MaskSet({"fc.weight": torch.arange(40).reshape(4, 10) < 8})  # 8 of 40
    src = RewireSource(base, seed=0)
    freq = sum(src(t)["fc.weight"].double() for t in range(1, 801)) / 800
    assert abs(float(freq.mean()) - 0.2) < 1e-12  # exact count every time
    assert float((freq - 0.2).abs().max()) < 0.1  # every position ~ 8/40


def test_repair_by_magnitude_to_counts():
    w = {"fc.weight": torch.tensor([[0.1, -0.9, 0.5, 0.3], [0.2, -0.05, 0.7, -0.6]])}
    m = torch.tensor([[True, True, False, True], [False, True, False, False]])
    ms = MaskSet({"fc.weight": m})
    down = repair(ms, {"fc.weight": 2}, w)["fc.weight"]  # keep the 2 largest kept: -0.9, 0.3
    assert down.tolist() == [[False, True, False, True], [False, False, False, False]]
    up = repair(ms, {"fc.weight": 6}, w)["fc.weight"]  # add 0.7 and -0.6
    assert up.tolist() == [[True, True, False, True], [False, True, True, True]]
    assert repair(ms, {"fc.weight": 4}, w)["fc.weight"] is m


def test_minibatches_are_seeded_and_sized():
    ds = torch.utils.data.TensorDataset(torch.arange(50.0).reshape(50, 1), torch.arange(50))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    b1, b2 = minibatches(ds, 3, 20, g1), minibatches(ds, 3, 20, g2)
    assert [x.shape[0] for x, _ in b1] == [20, 20, 20]
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(b1, b2, strict=True))
    first = torch.cat([y for _, y in b1])[:50]
    assert sorted(first.tolist()) == list(range(50))  # one full pass without replacement
    assert sum(len(y) for _, y in full_batches(ds, 16)) == 50


def test_rescore_source_uses_perturbation_for_data_free_and_batches_otherwise():
    calls = []

    def prune(model, method, density, *, batches, generator, **kw):
        calls.append((method, batches is None, float(model.weight.detach().sum())))
        return MaskSet({"weight": model.weight.detach().abs() > 0.5})

    def perturb(model, generator):
        model = copy.deepcopy(model)
        with torch.no_grad():
            model.weight.add_(torch.randn(model.weight.shape, generator=generator))
        return model

    model = torch.nn.Linear(4, 3)
    before = model.weight.detach().clone()
    free = RescoreSource(model, "mag", 0.5, seed=0, prune=prune, perturb=perturb, data_free=True)
    free(1)
    assert torch.equal(model.weight, before)  # scored a perturbed copy
    assert calls[-1][1] and calls[-1][2] != pytest.approx(float(before.sum()))
    ds = torch.utils.data.TensorDataset(torch.randn(30, 4), torch.zeros(30, dtype=torch.long))
    data = RescoreSource(model, "snip", 0.5, seed=0, dataset=ds, iters=2, batch_size=8,
                         prune=prune, perturb=perturb, data_free=False)  # fmt: skip
    data(1)
    assert not calls[-1][1]
    with pytest.raises(ValueError, match="needs a dataset"):
        RescoreSource(model, "snip", 0.5, 0, prune=prune, perturb=perturb, data_free=False)
    np.testing.assert_equal(before.numpy(), model.weight.detach().numpy())
