"""The ensemble trainer: B-independence bit for bit, agreement with the one-model PyTorch loop,
initialisation, data order, unit reachability against masktopo.analysis.paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masktopo.analysis.paths import analyze_paths, layer_graph
from masktopo.masks import MaskSet
from masktopo.search import (
    EnsembleTrainer,
    bias_masks_from_units,
    effective_counts,
    init_params,
    lr_table,
    support_masks,
    train_one,
)
from masktopo.zoo import cubist_spiral, get_model

ARCH = (2, 3, 3, 3, 1)


@pytest.fixture(scope="module")
def spiral():
    return cubist_spiral()


@pytest.fixture(scope="module")
def batch():
    idx = list(range(0, 25992, 401))[:48]
    masks = [torch.from_numpy(m) for m in support_masks(ARCH, idx)]
    seeds = [1000 + i for i in idx]
    w, b = init_params(seeds, ARCH, init_width=16)
    lrs = [(0.05, 0.1, 0.2)[i % 3] for i in range(len(idx))]
    scheds = [("cosine", "step", "constant")[i % 3] for i in range(len(idx))]
    return masks, seeds, w, b, lrs, scheds


def _trainer(spiral, batch, sel, shared=False, epochs=2, route="auto"):
    masks, seeds, w, b, lrs, scheds = batch
    return EnsembleTrainer(
        *spiral, [v[sel] for v in w], [v[sel] for v in b], [m[sel] for m in masks],
        lr=[lrs[i] for i in sel], schedule=[scheds[i] for i in sel], epochs=epochs,
        order_seeds=None if shared else [seeds[i] for i in sel], seed=3, route=route,
    )  # fmt: skip


def test_init_is_the_zoo_models_top_left_block(batch):
    _, seeds, w, b, _, _ = batch
    model = get_model("spiral-mlp", width=16, generator=torch.Generator().manual_seed(seeds[5]))
    lins = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for lin, wl, bl in zip(lins, w, b, strict=True):
        out, inp = wl.shape[1:]
        assert torch.equal(lin.weight[:out, :inp], wl[5])
        assert torch.equal(lin.bias[:out], bl[5])


@pytest.mark.parametrize("route", ["compiled", "torch"])
@pytest.mark.parametrize("shared", [False, True])
def test_results_do_not_depend_on_the_batch_bit_for_bit(spiral, batch, shared, route):
    """Model i trained among 48, among 5, or alone: identical weights and buffers (CPU), on
    either route."""
    steps = 450  # crosses an epoch boundary (390 steps per epoch)
    big = _trainer(spiral, batch, list(range(48)), shared, route=route).run(steps)
    small = _trainer(spiral, batch, [3, 17, 30, 31, 47], shared, route=route).run(steps)
    alone = _trainer(spiral, batch, [17], shared, route=route).run(steps)
    assert big.route == small.route == alone.route == route
    for tensors in ("w", "b", "vw", "vb"):
        for lb, ls, la in zip(getattr(big, tensors), getattr(small, tensors),
                              getattr(alone, tensors), strict=True):  # fmt: skip
            assert torch.equal(lb[17], ls[1]) and torch.equal(lb[17], la[0])
            assert torch.equal(lb[47], ls[4])
    sb, sa = big.evaluate(), alone.evaluate()
    assert sb.accuracy[17] == sa.accuracy[0] and sb.loss[17] == sa.loss[0]
    # and the models differ from each other (the test could fail)
    assert not torch.equal(big.w[0][17], big.w[0][3])


@pytest.mark.parametrize("route", ["compiled", "torch"])
def test_matches_the_one_model_pytorch_loop(spiral, batch, route):
    masks, seeds, w, b, lrs, scheds = batch
    i = 7
    t = _trainer(spiral, batch, [i], route=route).run(300)
    model = train_one(*spiral, [v[[i]] for v in w], [v[[i]] for v in b],
                      [m[[i]] for m in masks], t.bmask, lr=lrs[i], schedule=scheds[i], epochs=2,
                      order_seed=seeds[i], seed=3, steps=300)  # fmt: skip
    lins = [m for m in model if isinstance(m, torch.nn.Linear)]
    moved = 0.0
    for lin, wt, w0 in zip(lins, t.w, w, strict=True):
        torch.testing.assert_close(lin.weight.detach(), wt[0], rtol=0, atol=1e-6)
        moved = max(moved, float((wt[0] - w0[i] * masks[0][i].any()).abs().max()))
    assert moved > 1e-3  # training changed the weights
    for m, wt in zip(masks, t.w, strict=True):  # masked weights stay exactly zero
        assert (wt[0][~m[i]] == 0).all()


def test_each_epoch_visits_every_point_once_per_model(spiral, batch):
    t = _trainer(spiral, batch, [0, 1, 2])
    seen = torch.cat([t._batch_index(s) for s in range(t.steps_per_epoch)], dim=1)
    for row in seen:
        assert len(torch.unique(row)) == t.steps_per_epoch * t.batch_size
    assert not torch.equal(seen[0], seen[1])
    nxt = torch.cat([t._batch_index(s) for s in range(t.steps_per_epoch, 2 * t.steps_per_epoch)], 1)
    assert not torch.equal(seen[0], nxt[0])  # a fresh order each epoch


def test_lr_tables():
    cos = lr_table("cosine", 50)
    assert cos[0] == 1 and cos[25] == pytest.approx(0.5) and cos[-1] < 0.01
    step = lr_table("step", 50)
    assert step[14] == 1 and step[15] == pytest.approx(0.1) and step[30] == pytest.approx(0.01)
    assert lr_table("constant", 3) == [1.0, 1.0, 1.0]


def test_training_lowers_the_loss(spiral):
    sizes = (2, 16, 16, 16, 1)
    w, b = init_params([0, 1], sizes)
    dense = [torch.ones_like(v, dtype=torch.bool) for v in w]
    t = EnsembleTrainer(*spiral, w, b, dense, lr=0.1, epochs=2, order_seeds=[0, 1])
    before = t.evaluate().loss
    after = t.run().evaluate()
    assert (after.loss < before - 0.01).all()
    assert (after.accuracy > 0.55).all()


def test_unit_rules_match_analyze_paths():
    g = torch.Generator().manual_seed(0)
    sizes = (2, 5, 5, 5, 1)
    masks = [torch.rand(64, sizes[i + 1], sizes[i], generator=g) < 0.35 for i in range(4)]
    eff = effective_counts(masks)
    bias = bias_masks_from_units(masks)
    graph = layer_graph(get_model("spiral-mlp", width=5), (2,))
    names = ["first_layer", "second_layer", "third_layer", "clf"]
    dead_seen = 0
    for i in range(64):
        ms = MaskSet({f"{n}.weight": m[i] for n, m in zip(names, masks, strict=True)})
        pa = analyze_paths(ms, graph)
        assert int(eff[i]) == pa.n_effective
        alive = pa.alive
        for layer in range(3):
            assert torch.equal(bias[layer][i], alive[layer + 1])
        dead_seen += pa.n_dead_units
    assert dead_seen > 0 and bias[-1].all()
    assert np.any(eff.numpy() < sum(m.sum(dim=(1, 2)) for m in masks).numpy())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_agrees_with_cpu_and_does_not_depend_on_the_batch(spiral, batch):
    """On CUDA, batched kernels may round differently with B: equal within float32 tolerance."""
    masks, seeds, w, b, lrs, scheds = batch
    sel = list(range(48))

    def make(idx, device):
        return EnsembleTrainer(
            *spiral, [v[idx] for v in w], [v[idx] for v in b], [m[idx] for m in masks],
            lr=[lrs[i] for i in idx], schedule=[scheds[i] for i in idx], epochs=2,
            order_seeds=[seeds[i] for i in idx], seed=3, device=device,
        )  # fmt: skip

    gpu = make(sel, "cuda").run(200)
    alone = make([17], "cuda").run(200)
    cpu = make(sel, "cpu").run(200)
    for lg, la, lc in zip(gpu.w, alone.w, cpu.w, strict=True):
        torch.testing.assert_close(lg[17].cpu(), la[0].cpu(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(lg.cpu(), lc, rtol=1e-4, atol=1e-5)
