"""ERK / ER / uniform layer densities (RigL's rule) and exact layer counts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from masktopo import examples, pai
from masktopo.errors import MaskValidationError, UnknownNameError
from masktopo.pai import densities as D

# a: 4x4 linear, b: 20x10 linear, c: 32x16x3x3 conv
SHAPES = {"a.weight": (4, 4), "b.weight": (20, 10), "c.weight": (32, 16, 3, 3)}


class ThreeLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4, bias=False)
        self.b = nn.Linear(10, 20, bias=False)
        self.c = nn.Conv2d(16, 32, 3, bias=False)


def test_erk_hand_case_three_layers_one_dense():
    # r_a = 8/16 = 0.5, r_b = 30/200 = 0.15, r_c = (32+16+3+3)/4608 = 54/4608. N = 4824, D = 0.1.
    # First eps = 482.4 / (0.5*16 + 0.15*200 + 54) = 482.4/92 = 5.243...: eps*r_a = 2.62 > 1, so a
    # goes dense. Then eps = (482.4 - 16) / (30 + 54) = 466.4/84 and eps*r_b = 0.833 <= 1: done.
    d = pai.erk_densities(SHAPES, 0.1)
    eps = 466.4 / 84
    assert d["a.weight"] == 1.0
    assert d["b.weight"] == pytest.approx(eps * 0.15, rel=1e-12)
    assert d["c.weight"] == pytest.approx(eps * 54 / 4608, rel=1e-12)
    kept = sum(d[n] * math.prod(s) for n, s in SHAPES.items())
    assert kept == pytest.approx(482.4, rel=1e-12)
    # Exact counts: quotas 16, 166.571, 299.829 -> floors 481, one more to the largest remainder (c).
    assert pai.layer_counts(SHAPES, d, 482) == {"a.weight": 16, "b.weight": 166, "c.weight": 300}


def test_erk_prune_uses_those_counts():
    ms = pai.prune(ThreeLayers(), "erk", 0.1, generator=torch.Generator().manual_seed(0))
    assert ms.nnz_per_layer() == {"a.weight": 16, "b.weight": 166, "c.weight": 300}
    assert ms.nnz() == round(0.1 * 4824)


def test_er_ignores_the_kernel():
    # ER: r_c = (32+16)/(32*16) = 0.09375 (no kernel terms), still counted over all 4608 entries.
    # eps = 482.4 / (0.5*16 + 0.15*200 + 0.09375*4608) = 482.4/470: eps*r_a = 0.513, none dense.
    d = pai.er_densities(SHAPES, 0.1)
    eps = 482.4 / 470
    assert d["a.weight"] == pytest.approx(eps * 0.5, rel=1e-12)
    assert d["b.weight"] == pytest.approx(eps * 0.15, rel=1e-12)
    assert d["c.weight"] == pytest.approx(eps * 0.09375, rel=1e-12)
    erk = pai.erk_densities(SHAPES, 0.1)
    assert d["c.weight"] > erk["c.weight"]  # the kernel terms shrink ERK's conv score


def test_er_equals_erk_on_linear_layers():
    shapes = {"x": (30, 50), "y": (10, 30)}
    assert pai.er_densities(shapes, 0.2) == pytest.approx(pai.erk_densities(shapes, 0.2))


@pytest.mark.parametrize("fn", [pai.erk_densities, pai.er_densities])
@pytest.mark.parametrize("density", [0.005, 0.05, 0.3, 0.9, 1.0])
def test_densities_sum_to_target(fn, density):
    shapes = examples.resnet18_cifar_shapes()
    d = fn(shapes, density)
    total = sum(math.prod(s) for s in shapes.values())
    kept = math.fsum(d[n] * math.prod(s) for n, s in shapes.items())
    assert kept == pytest.approx(density * total, rel=1e-12)
    assert all(0.0 < v <= 1.0 for v in d.values())
    counts = pai.layer_counts(shapes, d, D.keep_count(density, total))
    assert sum(counts.values()) == round(density * total)
    for n, s in shapes.items():  # every layer gets the floor or the ceiling of its quota
        q = d[n] * math.prod(s)
        assert math.floor(q + 1e-9) <= counts[n] <= math.ceil(q - 1e-9)


def test_uniform_densities():
    d = pai.uniform_densities(SHAPES, 0.2)
    assert set(d.values()) == {0.2}
    d = pai.uniform_densities(SHAPES, 0.2, first_dense=True)
    assert d == {"a.weight": 1.0, "b.weight": 0.2, "c.weight": 0.2}


def test_layer_densities_names():
    assert pai.layer_densities(SHAPES, 0.1, "er") == pai.er_densities(SHAPES, 0.1)
    with pytest.raises(UnknownNameError, match="erk, uniform"):
        pai.layer_densities(SHAPES, 0.1, "kernel")


@pytest.mark.parametrize("density", [0.0, -0.5, 1.01, math.nan, "x"])
def test_bad_density(density):
    with pytest.raises(MaskValidationError, match="density"):
        pai.er_densities(SHAPES, density)


def test_apportion_is_exact_and_capped():
    assert D.apportion([1.5, 1.5, 1.0], [5, 5, 5], 4) == [2, 1, 1]  # tie -> earlier entry
    assert D.apportion([2.9, 0.2], [2, 10], 3) == [2, 1]  # cap respected
    assert D.apportion([0.4, 0.4], [1, 1], 0) == [0, 0]
    with pytest.raises(MaskValidationError):
        D.apportion([1.0], [1], 2)


def test_examples_reexport_the_moved_code():
    assert examples.erk_densities is pai.erk_densities
    assert examples.layer_densities is pai.layer_densities
    assert "er" in examples.DISTRIBUTIONS
    ms = examples.random_maskset(SHAPES, 0.1, distribution="er", weights=False)
    d = pai.er_densities(SHAPES, 0.1)
    assert ms.nnz_per_layer() == {n: round(d[n] * math.prod(s)) for n, s in SHAPES.items()}
