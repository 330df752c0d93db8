"""Which matrices ``route="auto"`` sends to an accelerator (masktopo.analysis.spectral.on_device)
and the mixed split it makes: large matrices on the batched device route, the rest on the CPU
engine, results in order. The split is exercised on the CPU by moving the threshold (the device
route runs on the CPU with the same code); the CUDA test checks the real one."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from masktopo import MaskSet, examples
from masktopo.analysis import analyze, metrics, ranking, spectral
from masktopo.analysis.metrics import Options, layer_side
from masktopo.analysis.ranking import rank_layers
from masktopo.analysis.spectral import DEVICE_MIN_SIDE, on_device, solve_many
from masktopo.errors import UnknownNameError


def test_on_device_rule():
    side = DEVICE_MIN_SIDE
    assert not on_device(side - 1, "cuda") and on_device(side, "cuda")
    assert on_device(side, torch.device("cuda:1"))
    assert not on_device(10 * side, "cpu") and not on_device(10 * side, None)
    assert on_device(1, "cpu", route="batched") and on_device(1, None, route="batched")
    with pytest.raises(UnknownNameError, match="route"):
        on_device(1, "cuda", route="gpu")


def test_layer_side_follows_the_conv_reading():
    conv = torch.zeros(64, 8, 3, 3, dtype=torch.bool)
    assert layer_side(conv, Options()) == 64  # 64 × 72 unrolled
    assert layer_side(conv, Options(conv="rolled")) == 8  # 64 × 8 channel pairs
    assert layer_side(torch.zeros(300, 100, dtype=torch.bool), Options(conv="rolled")) == 100


def _mats(seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(30, 50), (64, 40), (12, 90), (80, 80), (45, 33), (7, 200)]
    return [sp.csr_matrix((rng.random(s) < 0.2) * rng.normal(size=s)) for s in shapes]


@pytest.mark.parametrize("k", [2, 3])
def test_solve_many_splits_by_side_and_keeps_the_order(monkeypatch, k):
    mats = _mats()
    engine = solve_many(mats, k)  # every matrix on the CPU engine
    batched = solve_many(mats, k, route="batched")  # every matrix on the device route
    sent = []

    def rule(side, device, route="auto"):
        sent.append(side)
        return side >= 40  # four of the six go "to the device"

    monkeypatch.setattr(spectral, "on_device", rule)
    mixed = solve_many(mats, k)
    assert sorted(sent) == sorted(min(M.shape) for M in mats)
    big = np.array([min(M.shape) >= 40 for M in mats])
    assert 0 < big.sum() < len(mats)
    # each row comes from its own route, in the input order
    np.testing.assert_array_equal(mixed[~big], engine[~big])
    np.testing.assert_array_equal(mixed[big], batched[big])
    np.testing.assert_allclose(mixed, engine, rtol=1e-12, atol=1e-13)


def _mixed_maskset():
    shapes = {"a": (24, 40), "b": (48, 64), "c": (16, 8, 3, 3), "d": (70, 90)}
    # below device_plan.MIN_DENSITY: planned on the host, then densified on the device
    return examples.random_maskset(shapes, 0.25, weights=True, seed=3)


def test_analyze_sends_large_layers_to_the_device_route(monkeypatch):
    ms = _mixed_maskset()
    cpu = analyze(ms)
    batched = analyze(ms, route="batched")
    routes = []
    real = metrics._rows

    def spy(raws, *args, **kw):
        raws = list(raws)
        routes.append(([r.name for r in raws], len(args) > 5 or "device" in kw))
        return real(raws, *args, **kw)

    batches = []
    real_batches = spectral.dense_batches

    def spy_batches(parts, *args, **kw):
        batches.append(len(parts))
        return real_batches(parts, *args, **kw)

    def rule(side, device, route="auto"):
        return side >= 40

    monkeypatch.setattr(metrics, "_rows", spy)
    monkeypatch.setattr(metrics, "on_device", rule)
    monkeypatch.setattr(spectral, "on_device", rule)
    monkeypatch.setattr(spectral, "dense_batches", spy_batches)
    mixed = analyze(ms)
    on_dev = [names for names, dev in routes if dev]
    assert on_dev == [["b", "d"]]  # the two layers with a smaller side of 40 or more
    assert sorted(n for names, _ in routes for n in names) == ["a", "b", "c", "d"]
    assert batches and sum(batches) >= 2  # their large matrices took the device route
    assert list(mixed["layer"]) == list(cpu["layer"]) == list(batched["layer"])
    cols = ["mu0", "mu_hat", "weighted_mu_hat", "imdb_ramanujan_gap", "full_spectrum_norm"]
    for col in cols:
        np.testing.assert_allclose(mixed[col], cpu[col], rtol=1e-10, equal_nan=True)
        np.testing.assert_allclose(mixed[col], batched[col], rtol=1e-10, equal_nan=True)


def test_rank_layers_takes_the_batched_route_only_with_a_large_layer(monkeypatch):
    ms = _mixed_maskset()
    layers = [(n, ms[n], ms.weights[n]) for n in ms]
    calls = []
    real = ranking._rank_batched

    def spy(*args, **kw):
        calls.append(len(args[0].index))
        return real(*args, **kw)

    monkeypatch.setattr(ranking, "_rank_batched", spy)
    monkeypatch.setattr(ranking, "on_device", lambda side, device, route="auto": side >= 1000)
    small = rank_layers(layers)
    assert calls == []
    monkeypatch.setattr(ranking, "on_device", lambda side, device, route="auto": side >= 40)
    big = rank_layers(layers)
    assert calls == [len(layers)]  # every layer on the batched route once one is large
    assert big.lower.shape == small.lower.shape
    assert np.all(big.lower <= big.upper + 1e-12)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_auto_splits_a_mask_set_with_one_large_layer():
    side = DEVICE_MIN_SIDE
    shapes = {"small": (64, 128), "conv": (32, 16, 3, 3), "large": (side, side + 7)}
    ms = examples.random_maskset(shapes, 0.01, weights=True, seed=5)
    cpu = analyze(ms)
    gpu = analyze(ms.to("cuda"), device="cuda")
    assert isinstance(ms, MaskSet) and list(gpu["layer"]) == list(cpu["layer"])
    for col in ("mu0", "mu_hat", "weighted_mu0", "weighted_mu_hat", "imdb_ramanujan_gap"):
        np.testing.assert_allclose(gpu[col], cpu[col], rtol=1e-9, equal_nan=True)


def test_solve_many_keeps_host_blocks_whole(monkeypatch):
    """A Block none of whose matrices goes to the device is solved whole on the CPU (where the
    engine may take its dense BLAS route); one that holds a device-sized matrix is split; the
    rows come back in order either way."""
    from masktopo.analysis._engine import Parts, solve_top2
    from masktopo.analysis._kernels import Block, pack

    def block(mats):
        data, indices, indptr, ptr_off, nnz_off, shapes, _ = pack([Parts.of(M) for M in mats])
        return Block(data, indices, indptr, ptr_off, nnz_off, shapes)

    rng = np.random.default_rng(1)
    small = [(rng.random((rng.integers(3, 40), 200)) < 0.5) * 1.0 for _ in range(6)]
    mixed = [(rng.random((30, 200)) < 0.5) * 1.0, (rng.random((320, 400)) < 0.1) * 1.0]
    single = (rng.random((350, 380)) < 0.2) * rng.random((350, 380))
    jobs = [block(small), single, block(mixed)]
    mats = [*small, single, *mixed]
    want = np.stack([np.linalg.svd(M, compute_uv=False)[:2] for M in mats])
    sent = []
    real_parts = spectral._solve_parts
    monkeypatch.setattr(spectral, "_solve_parts",
                        lambda parts, *a: sent.append([p.shape for p in parts])
                        or real_parts(parts, *a))  # fmt: skip
    got = spectral.solve_many(jobs)  # CPU: every Block whole, the single matrix alone
    np.testing.assert_allclose(got, want, rtol=1e-11)
    monkeypatch.setattr(spectral, "_PARALLEL_MIN_NNZ", 0)  # the Blocks split over threads
    monkeypatch.setenv("MASKTOPO_WORKERS", "2")
    two = spectral.solve_many([block(small[::-1]), block(small)])
    np.testing.assert_allclose(two, np.concatenate([want[5::-1], want[:6]]), rtol=1e-11)
    np.testing.assert_allclose(solve_top2(jobs), want, rtol=1e-11)
    assert sent == []  # the single matrix in the one call of the CPU's jobs, with the Blocks
    # "device" = the CPU here, for smaller sides of 300 or more: the mixed Block is split, its
    # small matrix joins the CPU's call, the large one goes to the device with the single one
    monkeypatch.setattr(spectral, "on_device", lambda side, device, route="auto": side >= 300)
    cpu_jobs = []
    real_parallel = spectral._solve_top2_parallel
    monkeypatch.setattr(spectral, "_solve_top2_parallel",
                        lambda jobs: cpu_jobs.append(len(jobs)) or real_parallel(jobs))  # fmt: skip
    got = spectral.solve_many(jobs, device="cpu")
    np.testing.assert_allclose(got, want, rtol=1e-11)
    assert sent == [[single.shape, mixed[1].shape]] and cpu_jobs == [2]  # block(small), mixed[0]


def test_device_path_plans_layers_in_threads_with_the_same_rows(monkeypatch):
    """On the device path (here route="batched" on the CPU) the layers are planned in the
    worker threads; the rows equal a one-thread run's."""
    from masktopo.analysis.metrics import layer_metric_rows

    g = torch.Generator().manual_seed(4)
    layers = []
    for i, (o, n) in enumerate([(600, 900), (560, 700), (640, 800)]):
        w = torch.randn(o, n, generator=g, dtype=torch.float64)
        mask = torch.rand(o, n, generator=g) < 0.2  # below device_plan.MIN_DENSITY
        layers.append((f"l{i}", mask, w * mask))
    monkeypatch.setenv("MASKTOPO_WORKERS", "1")
    one = layer_metric_rows(layers, route="batched")
    split = []
    real = metrics.in_threads
    monkeypatch.setattr(metrics, "in_threads", lambda costs, *a, **k: split.append(len(costs))
                        or real(costs, *a, **k))  # fmt: skip
    monkeypatch.setenv("MASKTOPO_WORKERS", "2")
    two = layer_metric_rows(layers, route="batched")
    assert split == [3]  # the three layers' plans, split over two threads
    assert one == two or all(
        a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)
        for a, b in zip(one, two, strict=True)
    )
