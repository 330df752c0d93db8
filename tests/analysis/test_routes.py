"""The device route of the spectra (batched Gram, what CUDA runs) selected on the CPU and compared
with the compiled CPU engine and with dense references (masktopo.analysis.spectral.ROUTES)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from masktopo import MaskSet, examples
from masktopo.analysis import analyze, layer_metrics
from masktopo.analysis.spectral import ROUTES, solve_many
from masktopo.errors import UnknownNameError


def _biregular(n_out, n_in, d_out, seed):
    """A d_out-regular / (n_out d_out / n_in)-regular bipartite graph (a union of shifted
    permutations); σ₁ = √(d_out d_in)."""
    rng = np.random.default_rng(seed)
    B = np.zeros((n_out, n_in))
    for r in range(n_out):
        B[r, (r * d_out + np.arange(d_out)) % n_in] = 1
    return B[rng.permutation(n_out)][:, rng.permutation(n_in)]


def _cases():
    rng = np.random.default_rng(0)
    out = [np.ones((7, 5)), np.ones((3, 11)), _biregular(12, 8, 2, 1), _biregular(6, 9, 3, 2)]
    block = sp.block_diag([np.ones((3, 4)), 2 * np.ones((2, 2)), np.ones((1, 5))]).toarray()
    out.append(block)  # a disconnected union: σ = the blocks' σ together
    for shape, density in [((40, 25), 0.1), ((9, 60), 0.3), ((64, 64), 0.05)]:
        out.append((rng.random(shape) < density) * rng.normal(size=shape))
    return out


@pytest.mark.parametrize("k", [2, 3])
def test_batched_route_on_cpu_matches_dense_svd_and_the_engine(k):
    mats = _cases()
    batched = solve_many([sp.csr_matrix(M) for M in mats], k, route="batched")
    auto = solve_many([sp.csr_matrix(M) for M in mats], k)
    for M, got, eng in zip(mats, batched, auto, strict=True):
        want = np.zeros(k)
        sv = np.linalg.svd(M, compute_uv=False)[:k]
        want[: len(sv)] = sv
        scale = max(1.0, want[0])
        assert np.allclose(got, want, rtol=0, atol=1e-12 * scale), (M.shape, got, want)
        assert np.allclose(got, eng, rtol=0, atol=1e-12 * scale)
    # known spectra: K_{7,5}: σ = (√35, 0); the ±σ pairing of A needs nothing else
    assert batched[0][0] == pytest.approx(np.sqrt(35), rel=1e-14) and abs(batched[0][1]) < 1e-12
    assert batched[2][0] == pytest.approx(np.sqrt(2 * 3), rel=1e-13)  # biregular (2, 3)
    assert batched[4][0] == pytest.approx(4.0, rel=1e-13)  # the 2x2 block of 2s: σ₁ = 4


def test_analyze_batched_equals_the_engine_on_a_convnet():
    shapes = {"c1": (6, 1, 5, 5), "c2": (16, 6, 5, 5), "f1": (120, 256), "f2": (84, 120)}
    ms = examples.random_maskset(shapes, 0.2, seed=3)
    a, b = analyze(ms), analyze(ms, route="batched")
    for col in a.columns:
        if a[col].dtype.kind == "f":
            x, y = a[col].to_numpy(), b[col].to_numpy()
            assert np.allclose(x, y, rtol=1e-12, atol=1e-12, equal_nan=True), col
        elif col != "reason":
            assert (a[col] == b[col]).all(), col


def test_pags_scores_are_the_same_on_both_routes():
    from masktopo.pags.scoring import score_candidates

    g = torch.Generator().manual_seed(0)
    w = {"a": torch.randn(30, 20, generator=g), "b": torch.randn(10, 30, generator=g)}
    cands = [MaskSet({n: torch.rand(t.shape, generator=g) < 0.2 for n, t in w.items()})
             for _ in range(4)]  # fmt: skip
    s1 = score_candidates(cands, weights=w)
    s2 = score_candidates(cands, weights=w, route="batched")
    assert np.array_equal(s1.fs, s2.fs)  # quantized distances: the selection cannot differ
    assert np.allclose(s1.coords, s2.coords, rtol=1e-12, atol=1e-12)


def test_unknown_route_is_one_line():
    assert ROUTES == ("auto", "batched")
    with pytest.raises(UnknownNameError, match="unknown route 'gpu'; known: auto, batched"):
        layer_metrics(torch.ones(3, 3, dtype=torch.bool), route="gpu")


def test_cli_analyze_takes_the_route(tmp_path):
    from masktopo.cli.main import main

    ms = examples.random_maskset({"f1": (30, 40), "f2": (10, 30)}, 0.3, seed=1)
    masktopo_file = tmp_path / "m.safetensors"
    import masktopo

    masktopo.save(masktopo_file, ms)
    for route in ROUTES:
        assert main(["analyze", str(masktopo_file), "--route", route, "--out",
                     str(tmp_path / f"{route}.csv")]) == 0  # fmt: skip
    a, b = ((tmp_path / f"{r}.csv").read_text().splitlines() for r in ROUTES)
    assert a[0] == b[0] and len(a) == len(b)


@pytest.mark.parametrize("max_entries", [1 << 27, 3000, 1])
def test_dense_batches_place_every_entry(max_entries):
    """Each batch holds its matrices, smaller side first and zero-padded, in bucket order;
    empty matrices are left out (the CSR arrays cross as they are, positions formed there)."""
    from masktopo.analysis._engine import Parts
    from masktopo.analysis.spectral import dense_batches

    rng = np.random.default_rng(7)
    shapes = [(30, 50), (50, 30), (7, 7), (100, 33), (33, 100), (1, 40), (40, 1), (64, 64)]
    dense = [(rng.random(s) < 0.3) * rng.normal(size=s) for s in shapes]
    dense.append(np.zeros((5, 9)))
    parts = [Parts.of(sp.csr_matrix(M)) for M in dense]
    seen = []
    for chunk, batch in dense_batches(parts, "cpu", max_entries):
        assert batch.dtype == torch.float64 and batch.shape[1] <= batch.shape[2]
        for j, i in enumerate(chunk):
            M = dense[i] if dense[i].shape[0] <= dense[i].shape[1] else dense[i].T
            want = np.zeros(batch.shape[1:])
            want[: M.shape[0], : M.shape[1]] = M
            np.testing.assert_array_equal(batch[j].numpy(), want)
        seen.extend(chunk)
    assert sorted(seen) == list(range(len(shapes)))  # the empty one is left out
