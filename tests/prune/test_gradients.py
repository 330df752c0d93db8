"""The gradient matrix against autograd, and the quadratic model against a dense Hessian."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from masktopo.errors import MaskValidationError
from masktopo.prune import (
    Problem,
    check_memory,
    gradient_matrix,
    gradient_matrix_loop,
    has_batchnorm,
    reestimate_bn,
    solve,
)


def _tiny(seed=0):
    """A 16-32-10 MLP with biases (p = 832 maskable weights) and a sample from it."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.randn(96, 16, generator=g)
    y = torch.randint(0, 10, (96,), generator=g)
    return model, ["0.weight", "2.weight"], x, y


@pytest.mark.parametrize("m", [1, 4])
def test_vmap_rows_equal_one_backward_per_row(m):
    model, names, x, y = _tiny()
    loss = nn.functional.cross_entropy
    G = gradient_matrix(model, names, x, y, loss=loss, minibatch=m, chunk=7)
    ref = gradient_matrix_loop(model, names, x, y, loss=loss, minibatch=m)
    assert G.shape == (96 // m, 16 * 32 + 32 * 10)
    assert G.dtype == torch.float64
    torch.testing.assert_close(G, ref, rtol=1e-5, atol=1e-6)
    # row i, first layer: the gradient of the i-th minibatch's mean loss, by autograd
    model.zero_grad()
    loss(model(x[m : 2 * m]), y[m : 2 * m]).backward()
    torch.testing.assert_close(G[1, : 16 * 32].float(), model[0].weight.grad.reshape(-1))


def test_memory_check_names_the_bytes():
    with pytest.raises(MaskValidationError, match=r"needs 8 GB \(n=1000 x p=1000000, float64"):
        check_memory(1000, 1_000_000, torch.float64, "cpu", limit=1e9)
    assert check_memory(10, 10, torch.float32, "cpu", limit=1e9) == 400
    model, names, x, y = _tiny()
    with pytest.raises(MaskValidationError, match="gradient matrix needs"):
        gradient_matrix(model, names, x, y, loss=nn.functional.cross_entropy, limit=1000)


def test_quadratic_model_and_backsolve_against_a_dense_hessian():
    """f(w) = ½(w - w̄)ᵀ(GᵀG + 2λI)(w - w̄) with the p x p matrix formed densely, and BSO's
    weights equal the OBS-form update w_S = w̄_S + H_SS⁻¹ H_S,Sᶜ w̄_Sᶜ from that matrix."""
    model, names, x, y = _tiny(1)
    G = gradient_matrix(model, names, x, y, loss=nn.functional.cross_entropy)
    params = dict(model.named_parameters())
    w_bar = torch.cat([params[n].detach().reshape(-1) for n in names]).double()
    n, p = G.shape
    pb = Problem.build(G, w_bar, l2=1e-3)
    assert pb.lam == pytest.approx(1e-3 * n / 2)
    # the empirical Fisher, summed densely from per-sample outer products
    F = sum(torch.outer(G[i], G[i]) for i in range(n)) / n
    H = n * F + 2 * pb.lam * torch.eye(p, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    w = w_bar + 0.01 * torch.randn(p, generator=gen, dtype=torch.float64)
    d = w - w_bar
    assert pb.objective(w) == pytest.approx(float(0.5 * d @ H @ d), rel=1e-9)
    torch.testing.assert_close(pb.gradient(w), H @ d)
    for k in (100, 400):
        sol = solve(pb, k, "bso")
        S = sol.support
        ref = w_bar[S] + torch.linalg.solve(H[S][:, S], H[S][:, ~S] @ w_bar[~S])
        torch.testing.assert_close(sol.w[S], ref, rtol=1e-6, atol=1e-9)
        # BSO's support is magnitude pruning's; every solver at least matches MP's objective
        mp = solve(pb, k, "mp")
        assert torch.equal(mp.support, S)
        for method in ("iht", "chita"):
            assert solve(pb, k, method).objective <= mp.objective


def test_bn_reestimation_gives_the_mean_of_the_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert has_batchnorm(model) and not has_batchnorm(nn.Linear(2, 2))
    model.eval()
    batches = [torch.randn(8, 3, 6, 6) for _ in range(3)]
    seen = reestimate_bn(model, batches)
    assert seen == 24 and not model.training
    with torch.no_grad():
        outs = [model[0](b) for b in batches]
    ref = torch.stack([o.mean(dim=(0, 2, 3)) for o in outs]).mean(0)
    torch.testing.assert_close(model[1].running_mean, ref, rtol=1e-5, atol=1e-6)
    assert model[1].momentum == 0.1  # restored
