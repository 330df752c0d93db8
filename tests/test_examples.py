"""Embedded example shapes, ERK layer densities and exact-count random mask sets."""

from __future__ import annotations

import math

import pytest
import torch

from masktopo import examples
from masktopo.errors import MaskValidationError, UnknownNameError
from masktopo.masks import MaskSet


def _params(shapes):
    return sum(math.prod(s) for s in shapes.values())


# -- shapes ---------------------------------------------------------------------------------------
def test_resnet18_cifar_shapes():
    shapes = examples.resnet18_cifar_shapes()
    assert len(shapes) == 21
    names = list(shapes)
    assert names[0] == "conv1.weight" and names[-1] == "linear.weight"
    assert shapes["conv1.weight"] == (64, 3, 3, 3)
    assert shapes["linear.weight"] == (10, 512)
    convs3 = [s for s in shapes.values() if len(s) == 4 and s[2:] == (3, 3)]
    shortcuts = {n: s for n, s in shapes.items() if "shortcut" in n}
    assert len(convs3) == 17
    assert shortcuts == {
        "layer2.0.shortcut.0.weight": (128, 64, 1, 1),
        "layer3.0.shortcut.0.weight": (256, 128, 1, 1),
        "layer4.0.shortcut.0.weight": (512, 256, 1, 1),
    }
    # ResNet-18 for CIFAR-10 has 11,173,962 parameters, of which 11,164,352 are conv/linear
    # weights (the rest: BatchNorm and the classifier bias).
    assert _params(shapes) == 11_164_352


def test_resnet50_imagenet_shapes():
    shapes = examples.resnet50_imagenet_shapes()
    assert len(shapes) == 54
    assert shapes["conv1.weight"] == (64, 3, 7, 7)
    assert shapes["fc.weight"] == (1000, 2048)
    assert sum("downsample" in n for n in shapes) == 4
    assert shapes["layer4.2.conv3.weight"] == (2048, 512, 1, 1)
    # Consecutive layers chain: every block's conv1 reads what the previous block wrote.
    assert shapes["layer2.0.conv1.weight"][1] == shapes["layer1.2.conv3.weight"][0]
    # torchvision's resnet50 has 25,557,032 parameters; minus 53,120 BatchNorm and 1,000 fc bias.
    assert _params(shapes) == 25_557_032 - 53_120 - 1_000


# -- ERK ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shapes_fn", [examples.resnet18_cifar_shapes, examples.resnet50_imagenet_shapes]
)
@pytest.mark.parametrize("density", [0.01, 0.05, 0.1, 0.2, 0.5, 0.9])
def test_erk_reproduces_global_density(shapes_fn, density):
    shapes = shapes_fn()
    d = examples.erk_densities(shapes, density)
    assert list(d) == list(shapes)
    total = _params(shapes)
    kept = math.fsum(d[n] * math.prod(s) for n, s in shapes.items())
    assert abs(kept - density * total) <= 1e-9 * total
    assert all(0.0 < v <= 1.0 for v in d.values())
    # Sparse layers follow eps * r_l with one eps: the ratio d_l / r_l is the same for all of them.
    ratios = [d[n] * math.prod(s) / sum(s) for n, s in shapes.items() if d[n] < 1.0]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-12)


def test_erk_hand_case_with_a_dense_layer():
    # r_a = 8/16 = 0.5, r_b = 200/10000 = 0.02; N = 10016, D = 0.5.
    # First eps = 5008 / (0.5*16 + 0.02*10000) = 24.08 gives d_a = 12.04 > 1: a goes dense.
    # Then eps = (5008 - 16) / 200 = 24.96 and d_b = 0.4992.
    d = examples.erk_densities({"a": (4, 4), "b": (100, 100)}, 0.5)
    assert d["a"] == 1.0
    assert d["b"] == pytest.approx(24.96 * 0.02, rel=1e-12)


def test_erk_hand_case_without_a_dense_layer():
    # r = 20/100 = 0.2 and 40/400 = 0.1; eps = 0.1 * 500 / (0.2*100 + 0.1*400) = 50/60.
    d = examples.erk_densities({"a": (10, 10), "b": (20, 20)}, 0.1)
    eps = 50 / 60
    assert d == pytest.approx({"a": 0.2 * eps, "b": 0.1 * eps}, rel=1e-12)
    assert d["a"] == pytest.approx(2 * d["b"])


def test_erk_power_scale_zero_is_uniform():
    shapes = examples.resnet18_cifar_shapes()
    d = examples.erk_densities(shapes, 0.1, power_scale=0.0)
    assert all(v == pytest.approx(0.1, rel=1e-12) for v in d.values())


def test_erk_density_one_is_all_dense():
    d = examples.erk_densities(examples.resnet18_cifar_shapes(), 1.0)
    assert set(d.values()) == {1.0}


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, math.nan])
def test_bad_density(density):
    with pytest.raises(MaskValidationError, match="density"):
        examples.erk_densities({"a": (4, 4)}, density)


def test_unknown_distribution():
    with pytest.raises(UnknownNameError, match="erk"):
        examples.random_maskset({"a": (4, 4)}, 0.5, distribution="er-kernel")


# -- random mask sets -----------------------------------------------------------------------------
@pytest.mark.parametrize("distribution", examples.DISTRIBUTIONS)
def test_random_maskset_exact_counts(distribution):
    shapes = examples.resnet18_cifar_shapes()
    ms = examples.random_maskset(shapes, 0.05, distribution=distribution, weights=False, seed=3)
    assert isinstance(ms, MaskSet)
    assert not ms.has_weights
    assert ms.names == list(shapes)
    d = examples.layer_densities(shapes, 0.05, distribution)
    for name, shape in shapes.items():
        assert ms.shape(name) == shape
        assert ms[name].dtype == torch.bool
        assert ms.nnz(name) == round(d[name] * math.prod(shape))
    assert ms.kind("linear.weight") == "linear" and ms.kind("conv1.weight") == "conv"
    assert abs(ms.nnz() - 0.05 * ms.numel()) <= len(shapes)  # one rounding per layer at most
    assert ms.meta["distribution"] == distribution and ms.meta["seed"] == 3


def test_random_maskset_determinism_by_seed():
    shapes = {"conv.weight": (16, 8, 3, 3), "fc.weight": (10, 64)}
    a = examples.random_maskset(shapes, 0.2, seed=7)
    b = examples.random_maskset(shapes, 0.2, seed=7)
    c = examples.random_maskset(shapes, 0.2, seed=8)
    assert a.equal(b, weights=True)
    assert not a.equal(c, weights=False)
    assert not torch.equal(a.weights["fc.weight"], c.weights["fc.weight"])


def test_random_maskset_weights_are_kaiming_and_masked():
    shapes = {"conv.weight": (256, 128, 3, 3), "fc.weight": (512, 1024)}
    ms = examples.random_maskset(shapes, 0.3, distribution="uniform", seed=1)
    for name, shape in shapes.items():
        w, m = ms.weights[name], ms[name]
        assert w.dtype == torch.float32 and w.shape == m.shape
        assert bool((w[~m] == 0).all())
        assert bool((w[m] != 0).all())
        fan_in = math.prod(shape[1:])
        kept = w[m].double()
        assert kept.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
        assert abs(kept.mean().item()) < 0.02 * math.sqrt(2 / fan_in) * 5


def test_random_maskset_positions_are_spread():
    # A uniform draw touches every row of a large layer and is not a block of leading indices.
    ms = examples.random_maskset({"fc.weight": (200, 500)}, 0.1, weights=False, seed=0)
    m = ms["fc.weight"]
    assert int(m.sum()) == 10_000
    assert bool(m.any(dim=1).all())
    assert bool(m.any(dim=0).all())
    assert not bool(m[:20].all())


def test_demo_maskset():
    ms = examples.demo_maskset()
    assert len(ms) == 21 and ms.has_weights
    assert ms.density() == pytest.approx(0.05, abs=1e-5)
    assert ms.meta["model"] == "resnet18_cifar"
    assert ms.equal(examples.demo_maskset())
