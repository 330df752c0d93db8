"""The batched block Krylov of the device route (masktopo.analysis._krylov), run on the CPU:
known spectra, multiplicities, rank-deficient blocks, the eigh fallback, and an independent
dense SVD."""

import numpy as np
import pytest
import torch

from masktopo.analysis import spectral
from masktopo.analysis._engine import TOL
from masktopo.analysis._krylov import _orthonormal_against, top_krylov


def _svd_top(B: torch.Tensor, k: int) -> np.ndarray:
    return np.stack([np.linalg.svd(b.numpy(), compute_uv=False)[:k] for b in B])


def _close(got, want, rel=1e-10):
    """Each σ within ``rel·σ₁`` of the reference (the residual test is relative to σ₁²)."""
    got = np.asarray(got)
    assert np.abs(got - want).max() <= rel * want[:, :1].max(), (got, want)


def test_complete_bipartite_has_one_nonzero_singular_value():
    B = torch.ones((2, 300, 420), dtype=torch.float64)
    B[1, :, 200:] = 0  # K_{300,200} padded with zero columns
    sv, steps = top_krylov(B, 2, TOL)
    assert sv[0, 0].item() == pytest.approx(np.sqrt(300 * 420), rel=1e-14)
    assert sv[1, 0].item() == pytest.approx(np.sqrt(300 * 200), rel=1e-14)
    assert sv[:, 1].abs().max().item() < 1e-12 * np.sqrt(300 * 420)
    assert (steps > 0).all()  # done by the residual test (an invariant subspace), not eigh


def test_biregular_graph_known_top_singular_value():
    # A (d_L, d_R)-biregular bipartite graph has σ₁ = √(d_L·d_R): here 300 rows of degree 6 and
    # 450 columns of degree 4: edge e joins row e // 6 and column e mod 450.
    m, n = 300, 450
    e = torch.arange(m * 6)
    B = torch.zeros((1, m, n), dtype=torch.float64)
    B[0, e // 6, e % n] = 1
    assert (B.sum(1) == 4).all() and (B.sum(2) == 6).all()
    sv, _ = top_krylov(B, 2, TOL)
    assert sv[0, 0].item() == pytest.approx(np.sqrt(24.0), rel=1e-14)
    _close(sv, _svd_top(B, 2))


@pytest.mark.parametrize("copies", [2, 3, 5])
def test_disjoint_union_of_equal_components_repeats_the_top_value(copies):
    g = torch.Generator().manual_seed(copies)
    block = (torch.rand((80, 120), generator=g) < 0.3).double()
    B = torch.block_diag(*[block] * copies)[None]  # σ₁ has multiplicity `copies`
    sv, _ = top_krylov(B, 2, TOL)
    top = np.linalg.svd(block.numpy(), compute_uv=False)[0]
    assert sv[0, 0].item() == pytest.approx(top, rel=1e-13)
    assert sv[0, 1].item() == pytest.approx(top, rel=1e-13)  # found twice, as it is


@pytest.mark.parametrize("density", [0.02, 0.5, 0.97])
def test_against_dense_svd_binary_and_weighted(density):
    g = torch.Generator().manual_seed(int(density * 100))
    mask = (torch.rand((4, 300, 700), generator=g) < density).double()
    weighted = mask * torch.randn((4, 300, 700), generator=g, dtype=torch.float64).abs()
    for B in (mask, weighted):
        sv, steps = top_krylov(B, 2, TOL)
        _close(sv, _svd_top(B, 2))
        assert (steps > 0).all()


def test_rank_deficient_matrices_and_a_zero_matrix_share_a_batch():
    g = torch.Generator().manual_seed(7)
    full = (torch.rand((300, 500), generator=g) < 0.4).double()
    low = torch.randn((300, 2), generator=g, dtype=torch.float64) @ torch.randn(
        (2, 500), generator=g, dtype=torch.float64
    )  # rank 2: the Krylov space stops growing after one step
    rank1 = torch.outer(torch.rand(300, generator=g, dtype=torch.float64), torch.ones(500))
    zero = torch.zeros((300, 500), dtype=torch.float64)
    B = torch.stack([full, low, rank1, zero])
    sv, _ = top_krylov(B, 2, TOL)
    want = _svd_top(B[:3], 2)
    _close(sv[:3], want)
    assert sv[2, 1].item() < 1e-12 * want[2, 0]
    assert sv[3].abs().max().item() == 0.0


def test_a_matrix_alone_and_in_a_batch_agree():
    g = torch.Generator().manual_seed(3)
    B = (torch.rand((3, 260, 400), generator=g) < 0.5).double() * torch.rand(
        (3, 260, 400), generator=g, dtype=torch.float64
    )
    together, _ = top_krylov(B, 2, TOL)
    alone = torch.cat([top_krylov(B[i : i + 1], 2, TOL)[0] for i in range(3)])
    assert torch.allclose(together, alone, rtol=1e-12, atol=0)


def test_more_singular_values_and_the_eigh_fallback():
    g = torch.Generator().manual_seed(11)
    B = (torch.rand((2, 400, 600), generator=g) < 0.5).double()
    sv, steps = top_krylov(B, 5, TOL)
    _close(sv, _svd_top(B, 5))
    late, steps = top_krylov(B, 2, TOL, max_blocks=2)  # too few steps: eigh finishes them
    assert (steps == -1).all()
    _close(late, _svd_top(B, 2), rel=1e-13)
    with pytest.raises(ValueError, match="k must be"):
        top_krylov(B, 17, TOL)


def test_fewer_rows_than_values_asked_for():
    B = torch.tensor([[[3.0, 4.0, 0.0]], [[0.0, 0.0, 2.0]]], dtype=torch.float64)  # 1 × 3 each
    sv, steps = top_krylov(B, 2, TOL)
    assert sv.tolist() == [[5.0, 0.0], [2.0, 0.0]] and (steps == -1).all()
    sv, _ = top_krylov(torch.ones((1, 3, 5), dtype=torch.float64), 4, TOL)  # 3 rows, k = 4
    assert sv[0, 0].item() == pytest.approx(15**0.5, rel=1e-14) and sv[0, 3].item() == 0.0


def test_orthonormal_block_from_a_rank_deficient_one():
    g = torch.Generator().manual_seed(5)
    V = torch.linalg.qr(torch.randn((2, 200, 40), generator=g, dtype=torch.float64)).Q
    Z = torch.randn((2, 200, 16), generator=g, dtype=torch.float64)
    Z[1, :, 8:] = Z[1, :, :8] * 2  # rank 8: Cholesky QR fails, Householder QR fills the rest
    Z[1] += V[1, :, :16] * 5  # and a part in span(V), which must be projected out
    Q = _orthonormal_against(Z, V)
    eye = torch.eye(16, dtype=torch.float64)
    assert torch.allclose(Q.transpose(1, 2) @ Q, eye.expand(2, 16, 16), atol=1e-12)
    assert (V.transpose(1, 2) @ Q).abs().max().item() < 1e-12
    # the span of the well-conditioned block is kept: Z lies in span(V, Q)
    W = torch.cat([V[0], Q[0]], dim=1)
    assert torch.linalg.norm(Z[0] - W @ (W.T @ Z[0])).item() < 1e-10 * torch.linalg.norm(Z[0])


def test_batched_route_takes_krylov_for_large_sides(monkeypatch):
    calls = []
    real = spectral.top_krylov

    def spy(B, k, tol):
        calls.append(tuple(B.shape))
        return real(B, k, tol)

    monkeypatch.setattr(spectral, "top_krylov", spy)
    monkeypatch.setattr(spectral, "KRYLOV_MIN_SIDE", 256)  # the default (2048) is slow here
    g = np.random.default_rng(0)
    big = (g.random((spectral.KRYLOV_MIN_SIDE + 30, 500)) < 0.3).astype(float)
    small = (g.random((40, 90)) < 0.3).astype(float)
    out = spectral.solve_many([big, small, big.T], route="batched")
    assert calls and all(min(c[1:]) >= spectral.KRYLOV_MIN_SIDE for c in calls)
    want = np.stack([np.linalg.svd(a, compute_uv=False)[:2] for a in (big, small, big.T)])
    assert np.abs(out - want).max() <= 1e-10 * want[:, 0].max()
    tall = torch.from_numpy(big.T.copy())[None]  # m > n: transposed for the Krylov route
    calls.clear()
    _close(spectral.batched_top_singular_values(tall, 2).numpy(), want[2:3])
    assert calls == [(1, big.shape[0], big.shape[1])]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_krylov_matches_the_cpu_and_the_route_takes_it():
    g = torch.Generator().manual_seed(13)
    mask = (torch.rand((3, 2048, 2600), generator=g) < 0.5).double()
    mask[2, :, 1000:] = 0  # one rank-deficient enough to finish early
    B = torch.cat([mask, mask * torch.rand(mask.shape, generator=g, dtype=torch.float64)])
    cpu, _ = top_krylov(B, 2, TOL)
    cuda, steps = top_krylov(B.cuda(), 2, TOL)
    assert cuda.device.type == "cuda" and (steps > 0).all()
    assert torch.allclose(cuda.cpu(), cpu, rtol=1e-12, atol=0)
    _close(cpu.numpy(), _svd_top(B, 2))
    out = spectral.solve_many([m.numpy() for m in B[:2]], device="cuda")  # auto: side 2048
    _close(out, _svd_top(B[:2], 2))
