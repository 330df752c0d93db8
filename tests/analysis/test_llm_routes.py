"""The dense route (block Krylov with BLAS products) for 30–70 % density: 1e-9 agreement with a
dense SVD, every metric kept, the choice per matrix; and the torchrun cost split."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from masktopo.analysis import _dense, _engine
from masktopo.analysis._dense import top2_dense
from masktopo.analysis._engine import TOL, Parts, dense_route, solve_top2
from masktopo.analysis.distributed import gather_rows, split_by_cost
from masktopo.analysis.metrics import layer_metric_rows
from masktopo.analysis.structure import prune_nm, prune_per_row
from masktopo.distributed import World


def _layer(rows, cols, density, seed, kind="row"):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    if kind == "2:4":
        return prune_nm(w, 2, 4)
    if kind == "row":
        return prune_per_row(w, density)
    return w * (torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed + 1)) < density)


@pytest.mark.parametrize("density", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("shape", [(300, 700), (640, 256)])
def test_dense_route_agrees_with_svd(density, shape):
    w = _layer(*shape, density, seed=int(density * 10) + shape[0]).double().numpy()
    B = (w != 0).astype(np.float64)
    rs, cs = B.sum(1), B.sum(0)
    N = B / np.sqrt(np.outer(np.maximum(rs, 1), np.maximum(cs, 1)))
    for D in (B, np.abs(w), N):
        sv, ok, steps = top2_dense(D, TOL)
        ref = np.linalg.svd(D, compute_uv=False)[:2]
        assert ok and steps < 60
        np.testing.assert_allclose(sv, ref, rtol=1e-9, atol=1e-12 * ref[0])


def test_dense_route_special_matrices():
    ones = np.ones((200, 150))  # K_{200,150}: rank one, σ₂ = 0 (invariant subspace early)
    sv, ok, _ = top2_dense(ones, TOL)
    assert ok and sv[0] == pytest.approx(math.sqrt(200 * 150), rel=1e-12) and sv[1] < 1e-9
    blocks = np.zeros((128, 128))  # two disjoint complete blocks: σ₁ = 64, σ₂ = 32
    blocks[:64, :64] = 1
    blocks[64:, 64:96] = 1
    sv, ok, _ = top2_dense(blocks, TOL)
    np.testing.assert_allclose(sv, [64, math.sqrt(64 * 32)], rtol=1e-12)


@pytest.mark.parametrize("kind", ["row", "2:4", "uniform", "multiplicity"])
def test_dense_route_on_the_gram_matrix_agrees_with_svd(monkeypatch, kind):
    """With the Gram matrix formed after the third step (float32 and exact for integer
    entries, float64 otherwise), every spectrum agrees with a dense SVD to 1e-9, the Gram
    matrix really was formed, and the result equals the run that checks its Ritz pairs at
    every step and never forms it."""
    from masktopo.analysis import _dense

    w = _layer(300, 640, 0.5, seed=7, kind="uniform" if kind == "multiplicity" else kind)
    w = w.double().numpy()
    B = (w != 0).astype(np.float64)
    if kind == "multiplicity":  # a rolled conv's counts: small integers, float32 still exact
        B = B * np.random.default_rng(1).integers(1, 4, B.shape)
    rs, cs = B.sum(1), B.sum(0)
    N = B / np.sqrt(np.outer(np.maximum(rs, 1), np.maximum(cs, 1)))
    formed = []
    real_gram = _dense.gram
    monkeypatch.setattr(_dense, "gram", lambda A, d=None: formed.append(d) or real_gram(A, d))
    monkeypatch.setattr(_dense, "GRAM_MIN_SIDE", 0)
    monkeypatch.setattr(_dense, "GRAM_STEPS", {"float32": 0.0, "float64": 0.0})
    got = []
    for D in (B, np.abs(w), N):
        sv, ok, _ = top2_dense(D, TOL)
        ref = np.linalg.svd(D, compute_uv=False)[:2]
        assert ok
        np.testing.assert_allclose(sv, ref, rtol=1e-9, atol=1e-12 * ref[0])
        got.append(sv)
    assert formed == ["float32", "float64", "float64"]
    monkeypatch.setattr(_dense, "GRAM_MIN_SIDE", 1 << 30)  # never formed, every step checked
    monkeypatch.setattr(_dense, "_steps_needed", lambda *a: 0.0)
    for D, sv in zip((B, np.abs(w), N), got, strict=True):
        np.testing.assert_allclose(top2_dense(D, TOL)[0], sv, rtol=1e-11)
    assert len(formed) == 3


def test_a_misleading_rate_costs_at_most_max_skip_steps(monkeypatch):
    """Ritz pairs are skipped for at most MAX_SKIP steps, so a rate that promises a far end
    still stops within MAX_SKIP steps of the every-step run, at the SVD's values."""
    from masktopo.analysis import _dense

    D = (_layer(300, 640, 0.5, seed=3).double().numpy() != 0).astype(np.float64)
    _, ok, plain = top2_dense(D, TOL)
    monkeypatch.setattr(_dense, "_steps_needed", lambda *a: 1e9)
    sv, ok2, steps = top2_dense(D, TOL)
    ref = np.linalg.svd(D, compute_uv=False)[:2]
    assert ok and ok2 and plain <= steps <= plain + _dense.MAX_SKIP
    np.testing.assert_allclose(sv, ref, rtol=1e-9)


def test_gram_matrix_exact_in_float32_only_where_it_can_be():
    from masktopo.analysis._dense import _gram_dtype, gram

    rng = np.random.default_rng(0)
    B = (rng.random((64, 5000)) < 0.5).astype(np.float64)
    G32 = gram(B, "float32")
    assert G32.dtype == np.float64 and np.array_equal(G32, B @ B.T)  # exact, bit for bit
    assert _gram_dtype(B) == "float32"
    assert _gram_dtype(B * 2.5) == "float64"  # not integers
    big = np.full((4, 2), 3000.0)  # 3000² · 2 > 2²⁴: a float32 sum could round
    assert _gram_dtype(big) == "float64"
    assert _gram_dtype(np.full((4, 2), 2000.0)) == "float32"  # 2000² · 2 < 2²⁴


def test_route_choice(monkeypatch):
    big = Parts.of(np.ones((1024, 1100)))
    sparse = Parts.of(np.eye(1024, 1100))
    small = Parts.of(np.ones((100, 100)))
    monkeypatch.delenv("MASKTOPO_DENSE_ROUTE", raising=False)  # auto by default
    assert dense_route(big) and not dense_route(sparse) and not dense_route(small)
    monkeypatch.setenv("MASKTOPO_DENSE_ROUTE", "off")
    assert not dense_route(big)
    monkeypatch.setenv("MASKTOPO_DENSE_ROUTE", "on")
    assert dense_route(small) and dense_route(sparse)


@pytest.mark.parametrize("kind", ["row", "2:4", "uniform"])
def test_every_metric_kept_with_the_dense_route(monkeypatch, kind):
    """The same metrics (IMDB groups included) within 1e-9 whichever route solves the large
    matrices; the dense route really ran (counted)."""
    layers = [(f"l{i}", (w := _layer(*shape, 0.5, seed=i, kind=kind)) != 0, w.to(torch.bfloat16))
              for i, shape in enumerate([(256, 512), (512, 256)])]  # fmt: skip
    monkeypatch.setenv("MASKTOPO_DENSE_ROUTE", "off")
    ref = layer_metric_rows(layers)
    calls, blocks = [], []
    real = _engine.solve_dense
    monkeypatch.setattr(_engine, "solve_dense", lambda P: calls.append(P.shape) or real(P))
    real_block = _dense.top2_block
    monkeypatch.setattr(_dense, "top2_block", lambda *a: blocks.append(a[-1]) or real_block(*a))
    monkeypatch.setenv("MASKTOPO_DENSE_ROUTE", "on")
    got = layer_metric_rows(layers)
    assert len(calls) >= 6  # binary, weighted, normalized of both layers
    assert len(blocks) == 4  # the IMDB groups, binary and weighted, of both layers
    for a, b in zip(ref, got, strict=True):
        assert a.keys() == b.keys()
        assert a["imdb_n_groups"] > 3 and a["reason"] == b["reason"]
        for k, v in a.items():
            if isinstance(v, float) and not math.isnan(v):
                assert b[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
            else:
                assert b[k] == v or (v != v and b[k] != b[k]), k


def test_a_stalled_run_forms_the_gram_matrix_early_and_a_fast_one_never(monkeypatch):
    rng = np.random.default_rng(8)
    dense = (rng.random((600, 700)) < 0.5) * 1.0  # σ₂ at the edge of the bulk: a long run
    lowrank = rng.standard_normal((600, 3)) @ rng.standard_normal((3, 700)) + 0.01 * dense
    formed = []
    real = _dense.gram
    monkeypatch.setattr(_dense, "gram", lambda A, d=None: formed.append(1) or real(A, d))
    steps_at = []
    real_needed = _dense._steps_needed
    monkeypatch.setattr(_dense, "_steps_needed",
                        lambda h, t, left: steps_at.append((h[-1][0], len(formed)))
                        or real_needed(h, t, left))  # fmt: skip
    sv, ok, steps = top2_dense(dense, TOL, gram_dtype="float32")
    assert ok and steps > 10 and formed == [1]
    assert steps_at[:2] == [(1, 0), (2, 0)] and steps_at[2][1] == 1  # formed after step 2
    want = np.linalg.svd(dense, compute_uv=False)[:2]
    np.testing.assert_allclose(sv, want, rtol=1e-12)
    formed.clear()
    sv, ok, steps = top2_dense(lowrank, TOL)
    assert ok and steps <= 4 and formed == []
    np.testing.assert_allclose(sv, np.linalg.svd(lowrank, compute_uv=False)[:2], rtol=1e-12)


def _block_of(mats):
    from masktopo.analysis._kernels import Block, pack

    data, indices, indptr, ptr_off, nnz_off, shapes, _ = pack([Parts.of(M) for M in mats])
    return Block(data, indices, indptr, ptr_off, nnz_off, shapes)


def test_dense_block_route_agrees_with_svd():
    rng = np.random.default_rng(5)
    mats = [(rng.random((rng.integers(2, 60), rng.integers(30, 400))) < 0.5) * 1.0
            for _ in range(25)]  # fmt: skip
    mats += [M.T * rng.random(M.T.shape) for M in mats[:5]]  # taller than wide, weighted
    one = np.zeros((7, 40))
    one[:, :3] = 1.0  # rank one: σ₂ = 0 (to ε·σ₁)
    two = np.zeros((40, 50))
    two[:20, :25] = two[20:, 25:] = rng.random((20, 25)) < 0.6  # equal halves: σ₁ = σ₂
    two[20:, 25:] = two[:20, :25]
    single = np.ones((1, 30))  # one row: only σ₁
    mats += [one, two, single]
    got = _dense.top2_block(*_block_of(mats))
    for M, sv in zip(mats, got, strict=True):
        want = np.linalg.svd(M, compute_uv=False)[:2]
        want = np.pad(want, (0, 2 - want.size))
        assert np.abs(sv - want).max() <= 1e-13 * want[0], (M.shape, sv, want)
    assert got[-2, 0] == pytest.approx(got[-2, 1], rel=1e-13)


def test_dense_block_route_choice(monkeypatch):
    from masktopo.analysis._engine import dense_block

    rng = np.random.default_rng(0)
    dense = _block_of([(rng.random((40, 4096)) < 0.5) * 1.0 for _ in range(8)])  # 1.3 M entries
    sparse = _block_of([(rng.random((40, 4096)) < 0.05) * 1.0 for _ in range(8)])
    small = _block_of([(rng.random((40, 400)) < 0.5) * 1.0 for _ in range(8)])
    monkeypatch.delenv("MASKTOPO_DENSE_ROUTE", raising=False)
    assert dense_block(dense) and not dense_block(sparse) and not dense_block(small)
    np.testing.assert_allclose(solve_top2([sparse, dense, small]),
                               np.concatenate([_dense.top2_block(*b)
                                               for b in (sparse, dense, small)]),
                               rtol=1e-12)  # fmt: skip
    monkeypatch.setenv("MASKTOPO_DENSE_ROUTE", "off")
    assert not dense_block(dense)
    monkeypatch.setenv("MASKTOPO_DENSE_ROUTE", "on")
    assert dense_block(small) and dense_block(sparse)
    wide = _block_of([np.ones((600, 700))])  # one group of a dense layer: side 600 > 512
    assert not dense_block(wide)


def test_solve_top2_mixes_routes_in_order(monkeypatch):
    rng = np.random.default_rng(0)
    mats = [(rng.random((80 + 7 * i, 90)) < (0.5 if i % 2 else 0.02)).astype(float)
            for i in range(6)]  # fmt: skip
    monkeypatch.setenv("MASKTOPO_DENSE_ROUTE", "off")
    ref = solve_top2(mats)
    monkeypatch.setattr(_engine, "DENSE_ROUTE_MIN_SIDE", 64)
    monkeypatch.setenv("MASKTOPO_DENSE_ROUTE", "auto")
    assert [dense_route(Parts.of(M)) for M in mats] == [False, True] * 3
    np.testing.assert_allclose(solve_top2(mats), ref, rtol=1e-11)


def test_split_by_cost_balances_and_gather_orders():
    costs = [16, 16, 45, 45, 45, 16, 16]  # a Llama block: q, k, gate, up, down, v, o
    parts = split_by_cost(costs, 2)
    assert sorted(parts[0] + parts[1]) == list(range(7))
    loads = [sum(costs[i] for i in p) for p in parts]
    assert abs(loads[0] - loads[1]) <= 16
    assert split_by_cost(costs, 2) == parts  # deterministic
    assert split_by_cost([1.0], 3) == [[0], [], []]
    assert gather_rows(World(), [(2, "c"), (0, "a"), (1, "b")]) == ["a", "b", "c"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rows_match_the_cpu():
    from masktopo.analysis.lazy import LayerRef, analyze_layers

    ws = [_layer(256, 512, 0.5, seed=3), _layer(512, 256, 0.5, seed=4, kind="2:4")]
    refs = [LayerRef(f"l{i}", "linear", tuple(w.shape), float(w.numel()),
                     lambda w=w: (w != 0, w.to(torch.bfloat16))) for i, w in enumerate(ws)]  # fmt: skip
    cpu = analyze_layers(refs)
    # these sides are under DEVICE_MIN_SIDE: "auto" keeps them on the CPU engine, "batched"
    # sends them to the GPU
    for route in ("auto", "batched"):
        gpu = analyze_layers(refs, device="cuda", route=route)
        for col in (
            "mu0",
            "mu_hat",
            "weighted_mu_hat",
            "normalized_spectral_gap",
            "imdb_ramanujan_gap",
        ):
            np.testing.assert_allclose(gpu[col], cpu[col], rtol=1e-9)
        assert list(gpu["nm"]) == list(cpu["nm"]) == ["", "2:4"]


def test_job_costs_compare_across_routes(monkeypatch):
    """Predicted nanoseconds of matrices and Blocks on every route: the dense route's weighted
    matrix above its binary and normalized ones (Gram matrices counted in bits), a Block by its
    entries at the dense or engine rate; only binary and exactly normalized values count bits."""
    from masktopo.analysis._bitgram import bit_route
    from masktopo.analysis._engine import cost
    from masktopo.analysis._kernels import normalized_values

    monkeypatch.setattr(_engine, "DENSE_ROUTE_MIN_SIDE", 64)
    w = _layer(200, 500, 0.5, seed=3).double().numpy()
    B = Parts.of((w != 0).astype(float))
    W = Parts(np.abs(w[w != 0]), B.indices, B.indptr, B.shape)
    N = Parts(normalized_values(B.indptr, B.indices, B.data, *B.shape), B.indices, B.indptr,
              B.shape)  # fmt: skip
    assert [bit_route(P) for P in (B, W)] == ["binary", None]
    assert dense_route(B) and dense_route(W)
    steps = _engine.DENSE_NS_STEPS
    assert cost(B) == pytest.approx(200 * 200 * (_engine.DENSE_NS_BITS * 500 + steps), abs=1)
    assert cost(W) == pytest.approx(200 * 200 * (_engine.DENSE_NS_BLAS * 500 + steps), abs=1)
    assert cost(W) > cost(B)
    assert cost(N) in (cost(B), cost(W))  # normalized: bits where they are the cheaper way
    assert (cost(N) == cost(B)) == (bit_route(N) == "normalized")
    block = _block_of([B, W])  # a Block: its entries at the engine's or the dense rate
    rate = _engine.DENSE_BLOCK_NS if _engine.dense_block(block) else _engine.ENGINE_BLOCK_NS
    assert cost(block) == rate * block.nnz
    monkeypatch.setenv("MASKTOPO_DENSE_ROUTE", "off")  # the engine: the fitted formula
    assert cost(B) == 30700 + 81 * B.nnz + 448 * 200 + 76 * 500


def test_one_layer_spreads_its_spectra_over_the_threads(monkeypatch):
    """A chunk of one large layer (an LLM's MLP matrix) solves its jobs (binary, weighted,
    normalized, the IMDB Blocks) in both threads, with the rows of the layer analyzed in a
    pair; the jobs of one solve_many call go to one cost-balanced split."""
    from masktopo.analysis import spectral

    monkeypatch.setenv("MASKTOPO_WORKERS", "2")
    monkeypatch.setattr(_engine, "DENSE_ROUTE_MIN_SIDE", 64)
    w = _layer(600, 900, 0.5, seed=4)  # 270,000 kept: enough for the threads
    other = _layer(256, 256, 0.5, seed=5)
    pair = layer_metric_rows([("a", w != 0, w), ("b", other != 0, other)])
    import threading

    threads, jobs_seen = set(), []
    real = spectral.solve_top2

    def spy(jobs):
        threads.add(threading.get_ident())
        jobs_seen.append(len(jobs))
        return real(jobs)

    monkeypatch.setattr(spectral, "solve_top2", spy)
    alone = layer_metric_rows([("a", w != 0, w)])
    assert len(threads) == 2 and sum(jobs_seen) >= 5  # 3 spectra + 2 Blocks, split in two
    for k, v in pair[0].items():  # BLAS products may differ in the last bit (memory alignment)
        if isinstance(v, float) and not math.isnan(v):
            assert alone[0][k] == pytest.approx(v, rel=1e-12, abs=1e-14), k
        else:
            assert alone[0][k] == v or (v != v and alone[0][k] != alone[0][k]), k


def test_job_stream_solves_every_job_in_order_and_stops_on_errors(monkeypatch):
    from masktopo.analysis import spectral
    from masktopo.analysis.spectral import JobStream

    monkeypatch.setenv("MASKTOPO_WORKERS", "2")
    rng = np.random.default_rng(6)
    mats = [Parts.of((rng.random((60 + 20 * i, 90)) < 0.3) * rng.random((60 + 20 * i, 90)))
            for i in range(5)]  # fmt: skip
    want = solve_top2(mats)
    with JobStream() as stream:
        stream.add(mats[:2])
        stream.add([_block_of(mats[2:4])])  # a Block: its matrices' rows in its order
        stream.add(mats[4:])
        got = stream.finish()
    np.testing.assert_array_equal(got, want)
    real = spectral.solve_top2
    solved = []
    monkeypatch.setattr(spectral, "solve_top2", lambda jobs: solved.append(1)
                        or time.sleep(0.05) or real(jobs))  # fmt: skip
    with pytest.raises(RuntimeError, match="planning failed"), JobStream() as stream:
        stream.add(mats)
        raise RuntimeError("planning failed")  # the queue is dropped, nothing hangs
    assert len(solved) < len(mats)  # at most the job a worker had started

    def failing(jobs):
        if jobs[0] is mats[3]:
            raise ValueError("bad matrix")
        return real(jobs)

    monkeypatch.setattr(spectral, "solve_top2", failing)
    with pytest.raises(ValueError, match="bad matrix"), JobStream() as stream:
        stream.add(mats)
        stream.finish()


def test_a_sparse_lone_layer_is_split_without_the_stream(monkeypatch):
    """A single large layer off the dense route (a sparse CNN layer) keeps one cost-balanced
    split of its jobs (the engine solves a binary and a weighted matrix side by side)."""
    from masktopo.analysis import metrics

    monkeypatch.setenv("MASKTOPO_WORKERS", "2")
    monkeypatch.setattr(metrics, "JobStream", None)  # would fail if used
    w = _layer(1200, 2400, 0.1, seed=7, kind="uniform")  # 288,000 kept, 10 %
    got = layer_metric_rows([("a", w != 0, w)])
    monkeypatch.setenv("MASKTOPO_WORKERS", "1")
    ref = layer_metric_rows([("a", w != 0, w)])
    for k, v in ref[0].items():
        assert got[0][k] == v or (v != v and got[0][k] != got[0][k]), k
