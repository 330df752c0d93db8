"""SNIP, GraSP and SynFlow scores against hand-derived gradients on a 2-layer toy, and collapse.

The toy is f(x) = W2 relu(W1 x) with W1: 3x2, W2: 2x3 (float64). Gradients are written out by
hand below (no autograd): with z = W1 x, h = relu(z), o = W2 h, p = softmax(o / T) and the mean
cross-entropy over a batch of B,

    δ = (p - onehot(y)) / (B T),   ∂L/∂W2 = δᵀ h,   ∂L/∂W1 = ((δ W2) ⊙ [z > 0])ᵀ x.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from _toys import mlp, mlp_batches
from torch import nn

from masktopo import pai

W1 = torch.tensor([[0.5, -0.3], [0.2, 0.8], [-0.6, 0.4]], dtype=torch.float64)
W2 = torch.tensor([[0.7, -0.2, 0.5], [-0.4, 0.9, 0.3]], dtype=torch.float64)
B1 = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)
B2 = torch.tensor([-0.3, 0.25], dtype=torch.float64)
X = torch.tensor([[1.0, 2.0], [-1.5, 0.5]], dtype=torch.float64)
Y = torch.tensor([0, 1])


def toy(bias=False):
    net = nn.Sequential(nn.Linear(2, 3, bias=bias), nn.ReLU(), nn.Linear(3, 2, bias=bias)).double()
    with torch.no_grad():
        net[0].weight.copy_(W1)
        net[2].weight.copy_(W2)
        if bias:
            net[0].bias.copy_(B1)
            net[2].bias.copy_(B2)
    return net


def hand_forward(x, w1, w2):
    z = x @ w1.T
    h = z.clamp(min=0)
    return z, h, h @ w2.T


def hand_grads(x, y, w1=W1, w2=W2, temperature=1.0):
    """(∂L/∂W1, ∂L/∂W2) of the mean cross-entropy of o / T, and the intermediates."""
    z, h, o = hand_forward(x, w1, w2)
    p = torch.softmax(o / temperature, dim=1)
    delta = (p - nn.functional.one_hot(y, 2).double()) / (len(x) * temperature)
    g2 = delta.T @ h
    g1 = ((delta @ w2) * (z > 0)).T @ x
    return g1, g2, (z, h, p, delta)


def test_snip_scores_by_hand():
    g1, g2, _ = hand_grads(X, Y)
    s = pai.scores(toy(), "snip", batches=[(X, Y)])
    assert list(s) == ["0.weight", "2.weight"]
    torch.testing.assert_close(s["0.weight"], (g1 * W1).abs(), rtol=1e-12, atol=0)
    torch.testing.assert_close(s["2.weight"], (g2 * W2).abs(), rtol=1e-12, atol=0)


def test_snip_accumulates_gradients_over_batches_before_the_absolute_value():
    # Two batches of one sample: g = g_a + g_b (each a batch mean), score |(g_a + g_b) ⊙ θ|.
    ga1, ga2, _ = hand_grads(X[:1], Y[:1])
    gb1, gb2, _ = hand_grads(X[1:], Y[1:])
    s = pai.scores(toy(), "snip", batches=[(X[:1], Y[:1]), (X[1:], Y[1:])])
    torch.testing.assert_close(s["0.weight"], ((ga1 + gb1) * W1).abs(), rtol=1e-12, atol=0)
    torch.testing.assert_close(s["2.weight"], ((ga2 + gb2) * W2).abs(), rtol=1e-12, atol=0)
    summed_abs = (ga2 * W2).abs() + (gb2 * W2).abs()
    assert not torch.allclose(s["2.weight"], summed_abs)  # the two readings differ here


def hand_hg(x, y, temperature):
    """H g for the stopped gradient g, by differentiating the hand gradient along g.

    With the ReLU pattern D = [z > 0] fixed, moving (W1, W2) along (V1, V2) = g changes
    dz = x V1ᵀ, dh = dz ⊙ D, do = h V2ᵀ + dh W2ᵀ, dp = p ⊙ du - p (p · du) with du = do / T,
    dδ = dp / (B T); then d(∂L/∂W2) = dδᵀ h + δᵀ dh and d(∂L/∂W1) = ((dδ W2 + δ V2) ⊙ D)ᵀ x.
    """
    v1, v2, (z, h, p, delta) = hand_grads(x, y, temperature=temperature)
    mask = (z > 0).double()
    dh = (x @ v1.T) * mask
    du = (h @ v2.T + dh @ W2.T) / temperature
    dp = p * du - p * (p * du).sum(dim=1, keepdim=True)
    ddelta = dp / (len(x) * temperature)
    hg2 = ddelta.T @ h + delta.T @ dh
    hg1 = ((ddelta @ W2 + delta @ v2) * mask).T @ x
    return hg1, hg2


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grasp_scores_by_hand(temperature):
    hg1, hg2 = hand_hg(X, Y, temperature)
    s = pai.scores(toy(), "grasp", batches=[(X, Y)], temperature=temperature)
    scale = (W1 * hg1).abs().max()
    torch.testing.assert_close(s["0.weight"], W1 * hg1, rtol=1e-9, atol=1e-12 * scale)
    torch.testing.assert_close(s["2.weight"], W2 * hg2, rtol=1e-9, atol=1e-12 * scale)
    assert (W1 * hg1).abs().max() > 0 and (W2 * hg2).abs().max() > 0


def test_grasp_keeps_the_largest_signed_scores():
    hg1, hg2 = hand_hg(X, Y, 200.0)
    flat = torch.cat([(W1 * hg1).flatten(), (W2 * hg2).flatten()])
    assert (flat < 0).any() and (flat > 0).any()
    keep = torch.zeros(12, dtype=torch.bool)
    keep[torch.topk(flat, 4).indices] = True  # largest θ ⊙ Hg, signs kept (not |.|)
    ms = pai.prune(toy(), "grasp", 4 / 12, batches=[(X, Y)])
    got = torch.cat([ms["0.weight"].flatten(), ms["2.weight"].flatten()])
    assert torch.equal(got, keep)


def hand_synflow(m1=None, m2=None):
    """SynFlow scores of the bias toy: all-ones input, every parameter replaced by |.|, masks m.

    h_i = Σ_j |W1|ij m1ij + |b1_i|,  R = Σ_k (Σ_i |W2|ki m2ki h_i + |b2_k|), so
    S1_ij = |W1|ij m1ij Σ_k |W2|ki m2ki  and  S2_ki = |W2|ki m2ki h_i.
    """
    a1 = W1.abs() * (1 if m1 is None else m1)
    a2 = W2.abs() * (1 if m2 is None else m2)
    h = a1.sum(dim=1) + B1.abs()
    return a1 * a2.sum(dim=0)[:, None], a2 * h[None, :]


def test_synflow_scores_by_hand():
    s1, s2 = hand_synflow()
    net = toy(bias=True).float()  # float32 model: SynFlow scores in float64 anyway
    s = pai.scores(net, "synflow", in_shape=(2,))
    assert s["0.weight"].dtype == torch.float64
    torch.testing.assert_close(s["0.weight"], s1, rtol=1e-6, atol=0)
    torch.testing.assert_close(s["2.weight"], s2, rtol=1e-6, atol=0)
    assert torch.equal(net[0].weight, W1.float())  # signs untouched


def test_iterative_synflow_rescoring_by_hand():
    # Two rounds at density 5/12: round 1 keeps round(12 * (5/12)^(1/2)) = 8 by the scores above,
    # round 2 rescores the masked |θ| network and keeps 5 of those 8.
    s1, s2 = hand_synflow()
    flat = torch.cat([s1.flatten(), s2.flatten()])
    first = torch.zeros(12, dtype=torch.bool)
    first[torch.topk(flat, 8).indices] = True
    m1, m2 = first[:6].reshape(3, 2).double(), first[6:].reshape(2, 3).double()
    r1, r2 = hand_synflow(m1, m2)
    flat2 = torch.cat([r1.flatten(), r2.flatten()]).masked_fill(~first, -float("inf"))
    second = torch.zeros(12, dtype=torch.bool)
    second[torch.topk(flat2, 5).indices] = True
    one_shot = torch.zeros(12, dtype=torch.bool)
    one_shot[torch.topk(flat, 5).indices] = True
    assert not torch.equal(second, one_shot)  # the rescoring matters on this toy

    ms = pai.prune(toy(bias=True), "synflow", 5 / 12, in_shape=(2,), iterations=2)
    got = torch.cat([ms["0.weight"].flatten(), ms["2.weight"].flatten()])
    assert torch.equal(got, second)


def _connected(ms, net) -> bool:
    """Whether some input reaches the output through kept weights: 1ᵀ Π |W_l ⊙ M_l| 1 > 0."""
    v = torch.ones(net[0].in_features, dtype=torch.float64)
    for name, layer in net.named_children():
        if isinstance(layer, nn.Linear):
            v = (layer.weight.detach().double().abs() * ms[f"{name}.weight"]) @ v
    return bool(v.sum() > 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_synflow_avoids_the_layer_collapse_snip_suffers(seed):
    # A 1000-16-16-4 MLP: the input layer holds 98% of the 16,320 weights. At density 0.003 (49
    # weights kept) SNIP gives every one of them to the two small layers and prunes the large
    # layer entirely (Tanaka et al. 2020: single-shot scores collapse the largest layer first);
    # single-shot SynFlow collapses the same way. Iterative SynFlow (100 rounds) keeps every layer
    # and an input-output path.
    net = mlp((1000, 16, 16, 4), seed=seed)
    batches = mlp_batches(1000, 4, size=128, seed=seed + 10)
    collapse = r"keeps no weight of 1 layer\(s\) \(0\.weight\).*layer collapse"
    with pytest.warns(UserWarning, match=rf"snip at density 0\.003 {collapse}"):
        snip = pai.prune(net, "snip", 0.003, batches=batches)
    with pytest.warns(UserWarning, match=rf"synflow at density 0\.003 {collapse}"):
        one_shot = pai.prune(net, "synflow", 0.003, in_shape=(1000,), iterations=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # iterative SynFlow keeps every layer: no warning
        synflow = pai.prune(net, "synflow", 0.003, in_shape=(1000,))
    for ms in (snip, one_shot, synflow):
        assert ms.nnz() == 49
    assert snip.nnz("0.weight") == 0 and not _connected(snip, net)
    assert one_shot.nnz("0.weight") == 0 and not _connected(one_shot, net)
    assert min(synflow.nnz_per_layer().values()) > 0 and _connected(synflow, net)
