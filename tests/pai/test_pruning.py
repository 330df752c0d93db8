"""prune(): exact counts for every method, validation, determinism, the caller's model untouched."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from _toys import conv_batches, conv_net
from torch import nn

import masktopo
from masktopo import pai
from masktopo.errors import MaskValidationError, UnknownNameError
from masktopo.masks import MaskSet
from masktopo.pai import methods as M

NAMES = ["conv1.weight", "conv2.weight", "fc.weight"]
SIZES = {"conv1.weight": 8 * 3 * 9, "conv2.weight": 8 * 8 * 9, "fc.weight": 5 * 8}
N = sum(SIZES.values())  # 832
ALL = sorted(pai.METHODS)
# The toy net's layers are tiny: at 1 % some methods keep nothing of one (layer collapse, warned
# by prune and asserted in test_layer_collapse_is_allowed_and_warned).
pytestmark = pytest.mark.filterwarnings("ignore:.*layer collapse:UserWarning")


def _prune(method, density, seed=0, net=None, **kw):
    net = conv_net() if net is None else net
    return pai.prune(
        net,
        method,
        density,
        batches=conv_batches(),
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )


def test_registry():
    assert set(pai.METHODS) == {
        "random",
        "erk",
        "er",
        "uniform",
        "magnitude",
        "snip",
        "grasp",
        "synflow",
        "iter-snip",
        "force",
    }
    free = {n for n, c in pai.METHODS.items() if c.data_free}
    assert free == {"random", "erk", "er", "uniform", "magnitude", "synflow"}
    assert all(c.needs_batches is not c.data_free for c in pai.METHODS.values())
    assert pai.METHODS["synflow"].default_iterations == 100
    assert pai.METHODS["iter-snip"].default_iterations == 10
    assert pai.METHODS["grasp"].options()["temperature"] == 200.0


@pytest.mark.parametrize("method", [m for m in ALL if m != "uniform"])
@pytest.mark.parametrize("density", [0.01, 0.1, 0.37, 1.0])
def test_exact_global_count(method, density):
    ms = _prune(method, density)
    assert isinstance(ms, MaskSet) and ms.names == NAMES
    assert ms.nnz() == round(density * N)
    if pai.METHODS[method].layerwise:  # erk, er: floor/ceil of d_l * N_l in every layer
        d = pai.layer_densities({n: ms.shape(n) for n in NAMES}, density, method)
        for n in NAMES:
            q = d[n] * SIZES[n]
            assert math.floor(q + 1e-9) <= ms.nnz(n) <= math.ceil(q - 1e-9)


@pytest.mark.parametrize("density", [0.05, 0.5])
def test_uniform_first_layer_dense_by_default(density):
    ms = _prune("uniform", density)
    assert ms.nnz("conv1.weight") == SIZES["conv1.weight"]
    rest = {n: SIZES[n] for n in NAMES[1:]}
    assert sum(ms.nnz(n) for n in rest) == round(density * sum(rest.values()))
    for n, size in rest.items():
        assert math.floor(density * size) <= ms.nnz(n) <= math.ceil(density * size)
    assert ms.meta["dense_layers"] == ["conv1.weight"]
    sparse = _prune("uniform", density, first_dense=False)  # ITOP's all-sparse variant
    assert sparse.nnz() == round(density * N)
    assert sparse.nnz("conv1.weight") < SIZES["conv1.weight"]


@pytest.mark.parametrize("method", ["random", "magnitude", "snip", "synflow", "iter-snip"])
def test_local_scope_counts(method):
    ms = _prune(method, 0.2, scope="local", iterations=3 if method == "synflow" else None)
    assert ms.nnz() == round(0.2 * N)
    for n in NAMES:
        assert math.floor(0.2 * SIZES[n]) <= ms.nnz(n) <= math.ceil(0.2 * SIZES[n])


@pytest.mark.parametrize("method", ["erk", "snip", "synflow"])
def test_first_and_last_dense(method):
    ms = _prune(method, 0.1, first_dense=True, last_dense=True, iterations=None)
    assert ms.nnz("conv1.weight") == SIZES["conv1.weight"]
    assert ms.nnz("fc.weight") == SIZES["fc.weight"]
    assert ms.nnz("conv2.weight") == round(0.1 * SIZES["conv2.weight"])
    assert ms.meta["dense_layers"] == ["conv1.weight", "fc.weight"]


@pytest.mark.parametrize("method", ALL)
def test_caller_model_untouched_and_weights_attached(method):
    net = conv_net()
    net.train()
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    net.fc.bias.requires_grad_(False)
    flags["fc.bias"] = False
    before = copy.deepcopy(net.state_dict())
    ms = _prune(method, 0.2, net=net, iterations=5 if method == "synflow" else None)
    after = net.state_dict()
    assert all(
        torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before
    )
    assert net.training and all(m.training for m in net.modules())
    assert all(p.grad is None for p in net.parameters())
    assert {n: p.requires_grad for n, p in net.named_parameters()} == flags
    assert ms.has_weights
    for n in NAMES:
        w = ms.weights[n]
        assert torch.equal(w, dict(net.named_parameters())[n].detach())  # dense θ, signs intact
        assert w.data_ptr() != dict(net.named_parameters())[n].data_ptr()  # a copy
    assert ms.meta["method"] == method and ms.meta["density"] == 0.2


@pytest.mark.parametrize("method", ALL)
def test_determinism(method):
    kw = {"iterations": 5} if method == "synflow" else {}
    a = _prune(method, 0.15, seed=3, **kw)
    b = _prune(method, 0.15, seed=3, **kw)
    assert a.equal(b)
    if pai.METHODS[method].randomized:
        c = _prune(method, 0.15, seed=4, **kw)
        assert not a.equal(c, weights=False)


def test_magnitude_ties_use_the_generator():
    net = nn.Sequential(nn.Linear(10, 10, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(0.5)
    masks = [
        pai.prune(net, "magnitude", 0.3, generator=torch.Generator().manual_seed(s))["0.weight"]
        for s in range(3)
    ]
    assert all(int(m.sum()) == 30 for m in masks)
    assert not torch.equal(masks[0], masks[1])


def test_default_generator_is_seeded():
    net = conv_net()
    assert pai.prune(net, "random", 0.1).equal(pai.prune(net, "random", 0.1))


def test_iterative_snip_with_one_round_is_snip():
    a = _prune("iter-snip", 0.1, iterations=1)
    b = _prune("snip", 0.1)
    assert a.equal(b, weights=False)
    assert not _prune("iter-snip", 0.1).equal(b, weights=False)


def test_batches_dealt_round_robin_over_rounds():
    seen = []

    def loss(out, y):
        seen.append(int(y[0]))
        return nn.functional.cross_entropy(out, y)

    batches = [(torch.randn(2, 3, 6, 6), torch.full((2,), i)) for i in range(4)]
    pai.prune(conv_net(), "iter-snip", 0.2, batches=iter(batches), iterations=2, loss=loss)
    assert seen == [0, 2, 1, 3]  # round 0: batches 0, 2; round 1: batches 1, 3
    seen.clear()
    pai.prune(conv_net(), "iter-snip", 0.2, batches=batches[:2], iterations=3, loss=loss)
    assert seen == [0, 1, 0]  # fewer batches than rounds: one per round, cycling
    seen.clear()
    pai.prune(conv_net(), "grasp", 0.2, batches=iter(batches[:3]), loss=loss)
    assert seen == [0, 1, 2, 0, 1, 2]  # GraSP reads its batches twice (g, then Hg)


def test_works_under_no_grad():
    with torch.no_grad():
        a = _prune("grasp", 0.1)
        b = _prune("synflow", 0.1, iterations=3)
    assert a.equal(_prune("grasp", 0.1)) and b.equal(_prune("synflow", 0.1, iterations=3))


def test_synflow_input_shape():
    net = conv_net()
    a = pai.prune(net, "synflow", 0.1, in_shape=(3, 6, 6), iterations=3)
    b = pai.prune(net, "synflow", 0.1, batches=conv_batches(), iterations=3)
    assert a.equal(b)
    with pytest.raises(MaskValidationError, match="in_shape"):
        pai.prune(net, "synflow", 0.1)


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, math.nan])
def test_bad_density(density):
    with pytest.raises(MaskValidationError, match="density"):
        _prune("random", density)


def test_tiny_density_that_keeps_nothing():
    with pytest.raises(MaskValidationError, match="keeps no entry"):
        _prune("random", 1e-6)


@pytest.mark.parametrize("method", ["snip", "grasp", "iter-snip", "force"])
def test_data_method_without_batches(method):
    with pytest.raises(MaskValidationError, match="batches"):
        pai.prune(conv_net(), method, 0.1)


def test_empty_or_malformed_batches():
    with pytest.raises(MaskValidationError, match="empty"):
        pai.prune(conv_net(), "snip", 0.1, batches=[])
    with pytest.raises(MaskValidationError, match="empty"):
        pai.prune(conv_net(), "grasp", 0.1, batches=iter([]))
    with pytest.raises(MaskValidationError, match="pair"):
        pai.prune(conv_net(), "snip", 0.1, batches=[torch.zeros(2, 3, 6, 6)])


def test_unknown_names():
    with pytest.raises(UnknownNameError, match="erk, force, grasp"):
        _prune("snap", 0.1)
    with pytest.raises(UnknownNameError, match="global, local"):
        _prune("snip", 0.1, scope="layer")
    with pytest.raises(UnknownNameError, match="exponential, linear"):
        _prune("synflow", 0.1, schedule="cubic")


def test_bad_options():
    with pytest.raises(MaskValidationError, match="'local'"):
        _prune("erk", 0.1, scope="global")
    with pytest.raises(MaskValidationError, match="no option 'temp'"):
        _prune("grasp", 0.1, temp=100)
    with pytest.raises(MaskValidationError, match="iterations"):
        _prune("synflow", 0.1, iterations=0)
    with pytest.raises(MaskValidationError, match="not iterative"):
        _prune("erk", 0.1, iterations=3)
    with pytest.raises(MaskValidationError, match="temperature"):
        _prune("grasp", 0.1, temperature=-1.0)
    with pytest.raises(MaskValidationError, match="nothing left"):
        pai.prune(nn.Linear(3, 3), "random", 0.5, first_dense=True)
    with pytest.raises(MaskValidationError, match=r"no nn\.Linear"):
        pai.prune(nn.ReLU(), "random", 0.5)


def test_data_that_does_not_fit_the_model_is_one_line_naming_the_batch():
    # each failed deep inside torch (linear.py, functional.py)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))
    cases = [
        (dict(batches=[(x, y), (torch.randn(16, 5), y)]), r"snip: .* on batch 1 \(RuntimeError: mat1"),
        (dict(batches=[(x, y.float())]), r"on batch 0 \(RuntimeError: expected target dtype"),
        (dict(batches=[(x, y + 10)]), r"on batch 0 \(IndexError: Target 1\d is out of bounds"),
        (dict(batches=[(x, y)], loss="mse"), "loss must be a callable"),
    ]  # fmt: skip
    for kw, message in cases:
        with pytest.raises(MaskValidationError, match=message) as e:
            pai.prune(net, "snip", 0.2, **kw)
        assert "\n" not in str(e.value)
    with pytest.raises(MaskValidationError, match=r"an all-ones input of in_shape \(5,\)"):
        pai.prune(net, "synflow", 0.2, in_shape=(5,))
    for bad in (8, (8.0,), (), (0,), "8"):
        with pytest.raises(MaskValidationError, match="in_shape must be one input sample's shape"):
            pai.prune(net, "synflow", 0.2, in_shape=bad)
    assert pai.prune(net, "synflow", 0.2, in_shape=[np.int64(8)]).nnz() == round(0.2 * 192)


def test_linear_schedule_option():
    ms = _prune("synflow", 0.1, iterations=4, schedule="linear")
    assert ms.nnz() == round(0.1 * N) and ms.meta["options"]["schedule"] == "linear"


# -- perturb_weights ------------------------------------------------------------------------------
def test_perturb_weights_scale_and_copy():
    net = nn.Sequential(nn.Conv2d(32, 64, 5), nn.BatchNorm2d(64), nn.Flatten(), nn.Linear(200, 300))
    before = copy.deepcopy(net.state_dict())
    out = pai.perturb_weights(net, torch.Generator().manual_seed(0))
    assert out is not net
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    delta_conv = out[0].weight - net[0].weight
    delta_fc = out[3].weight - net[3].weight
    assert delta_conv.std().item() == pytest.approx(math.sqrt(2 / (25 * 64)), rel=0.02)
    assert delta_fc.std().item() == pytest.approx(0.01, rel=0.02)
    assert torch.equal(out[0].bias, net[0].bias) and torch.equal(out[1].weight, net[1].weight)
    again = pai.perturb_weights(net, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(out.parameters(), again.parameters(), strict=True))
    other = pai.perturb_weights(net, torch.Generator().manual_seed(1))
    assert not torch.equal(other[3].weight, out[3].weight)
    same = pai.perturb_weights(net, torch.Generator().manual_seed(0), inplace=True)
    assert same is net and torch.equal(net[3].weight, out[3].weight)


def test_perturbed_rescoring_gives_new_synflow_masks():
    net = conv_net()
    base = pai.prune(net, "synflow", 0.1, in_shape=(3, 6, 6), iterations=5)
    again = pai.prune(net, "synflow", 0.1, in_shape=(3, 6, 6), iterations=5)
    noisy = pai.perturb_weights(net, torch.Generator().manual_seed(0))
    cand = pai.prune(noisy, "synflow", 0.1, in_shape=(3, 6, 6), iterations=5)
    assert base.equal(again) and not base.equal(cand, weights=False)
    assert cand.nnz() == base.nnz()
    assert M.SynFlow.rescore_noise and not M.SNIP.rescore_noise


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ALL)
def test_cuda_model(method):
    kw = {"iterations": 5} if method == "synflow" else {}
    net = conv_net().cuda()
    ms = _prune(method, 0.1, net=net, **kw)
    on_cpu = _prune(method, 0.1, **kw)
    # uniform keeps its first layer dense (RigL's convention), so its nnz is above 10 %
    expected = round(0.1 * N) if method != "uniform" else on_cpu.nnz()
    assert method != "uniform" or expected > round(0.1 * N)
    assert ms.device.type == "cuda" and ms.nnz() == expected
    if method in ("random", "erk", "er", "uniform", "magnitude"):  # same draws, same scores
        assert ms.cpu().equal(on_cpu)


def test_maskset_round_trips_through_a_file(tmp_path):
    from masktopo import store

    ms = _prune("iter-snip", 0.1)
    path = tmp_path / "m.safetensors"
    store.save(path, ms)
    back = masktopo.load(path)
    assert back.equal(ms) and back.meta["method"] == "iter-snip"
    assert back.meta["options"] == {"schedule": "exponential", "loss": "cross_entropy"}


def test_random_methods_draw_uniform_subsets():
    # Index sampling must give every position the same chance k/N (here 3/10), per layer (erk:
    # local counts) and over all entries (random: global scope), with exact counts every time.
    net = torch.nn.Sequential(torch.nn.Linear(5, 2), torch.nn.Linear(2, 5))
    hits = {"erk": torch.zeros(20), "random": torch.zeros(20)}
    draws = 1000
    for method in hits:
        for i in range(draws):
            ms = pai.prune(net, method, 0.3, generator=torch.Generator().manual_seed(i))
            assert ms.nnz() == 6
            hits[method] += torch.cat([ms[n].flatten().float() for n in ms])
    for method, h in hits.items():
        freq = h / draws
        # binomial sd at p=0.3, n=1000 is ~0.0145; 0.07 is ~5 sd: a loose, failure-proof band
        assert torch.all((freq - 0.3).abs() < 0.07), (method, freq)


def test_layer_collapse_is_allowed_and_warned():
    """Global magnitude pruning with a last layer of tiny weights keeps none of it: the mask
    is made (layer collapse is a result researchers study) and a warning names the layer."""
    net = nn.Sequential(nn.Linear(200, 100), nn.ReLU(), nn.Linear(100, 3))
    with torch.no_grad():
        net[2].weight.mul_(1e-6)
    with pytest.warns(UserWarning, match=r"magnitude at density 0\.1 keeps no weight of 1 "
                                         r"layer\(s\) \(2\.weight\).*layer collapse"):  # fmt: skip
        ms = pai.prune(net, "magnitude", 0.1, generator=torch.Generator().manual_seed(0))
    assert ms.nnz() > 0 and not ms["2.weight"].any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when every layer keeps something
        pai.prune(net, "erk", 0.1, generator=torch.Generator().manual_seed(0))
