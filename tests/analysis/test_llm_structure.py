"""N:M detection and degree statistics (masktopo.analysis.structure) on constructed layers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from masktopo.analysis.structure import (
    degree_stats,
    network_structure,
    nm_counts,
    nm_pattern,
    prune_nm,
    prune_per_row,
    structure_columns,
)


def _w(rows, cols, seed=0):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


def _brute_nm(mask: np.ndarray, M: int) -> int:
    rows, cols = mask.shape
    return max(int(mask[r, g : g + M].sum()) for r in range(rows) for g in range(0, cols, M))


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4), (3, 8), (8, 16), (1, 2)])
def test_constructed_nm_layers(n, m):
    mask = prune_nm(_w(64, 256, seed=n * m), n, m) != 0
    assert (mask.reshape(64, -1, m).sum(-1) == n).all()  # the construction is exact
    got = nm_pattern(mask)
    # the smallest M of the smallest ratio: a 2:4 layer is reported as 2:4, not 4:8 or 8:16;
    # a 4:8 magnitude layer is not 2:4 (some group of 4 keeps 3 or 4)
    assert got == f"{n}:{m}"


def test_four_eight_is_not_two_four():
    mask = prune_nm(_w(64, 256, seed=9), 4, 8) != 0
    counts = nm_counts(mask)
    assert counts[8] == 4 and counts[16] == 8
    assert counts[4] > 2  # not 2:4
    assert nm_pattern(mask) == "4:8"


def test_unstructured_layers_have_no_pattern():
    for mask in (prune_per_row(_w(256, 512, seed=1), 0.5) != 0,
                 torch.rand(256, 512, generator=torch.Generator().manual_seed(2)) < 0.5):  # fmt: skip
        assert nm_pattern(mask) == ""
        counts = nm_counts(mask)
        assert counts[4] == 4 and counts[8] == 8  # some group of 4 and of 8 is full
        assert counts[16] >= 14  # a group of 16 may not be: 15:16 by chance, not tight


def test_counts_match_brute_force_and_odd_widths():
    rng = np.random.default_rng(5)
    for cols in (48, 60, 30, 7):
        mask = rng.random((9, cols)) < 0.4
        counts = nm_counts(torch.from_numpy(mask))
        want = {M: _brute_nm(mask, M) for M in range(2, 17) if cols % M == 0}
        assert counts == want
    assert nm_counts(torch.ones(3, 1, dtype=torch.bool)) == {}
    assert nm_pattern(torch.zeros(4, 8, dtype=torch.bool)) == ""


def test_conv_masks_are_unrolled():
    # [out, in, kh, kw] = [8, 4, 2, 2]: groups of 4 along the unrolled input (in·kh·kw)
    mask = prune_nm(_w(8, 16, seed=4), 2, 4).reshape(8, 4, 2, 2) != 0
    assert nm_pattern(mask) == "2:4"


def test_degree_stats():
    rng = np.random.default_rng(7)
    mask = rng.random((30, 50)) < 0.3
    mask[4] = False  # an isolated output counts with degree 0
    d = degree_stats(torch.from_numpy(mask))
    rows, cols = mask.sum(1), mask.sum(0)
    assert d["deg_out_min"] == 0 and d["deg_out_max"] == rows.max()
    assert d["deg_in_min"] == cols.min() and d["deg_in_max"] == cols.max()
    assert d["deg_out_std"] == pytest.approx(rows.std(), rel=1e-12)
    assert d["deg_in_std"] == pytest.approx(cols.std(), rel=1e-12)
    wanda = degree_stats(prune_per_row(_w(40, 100), 0.5) != 0)
    assert wanda["deg_out_min"] == wanda["deg_out_max"] == 50 and wanda["deg_out_std"] == 0
    assert wanda["deg_in_std"] > 0


def test_network_structure():
    a = structure_columns(prune_nm(_w(8, 16), 2, 4) != 0)
    b = structure_columns(prune_nm(_w(8, 32, seed=1), 2, 4) != 0)
    c = structure_columns(torch.ones(4, 8, dtype=torch.bool))
    net = network_structure([a, b])
    assert net["nm"] == "2:4"
    assert net["deg_out_min"] == 8 and net["deg_out_max"] == 16
    assert math.isnan(net["deg_out_std"])
    assert network_structure([a, c])["nm"] == ""


@pytest.mark.parametrize("case", ["2:4", "4:8", "random", "conv", "odd", "float"])
def test_device_columns_equal_the_host_ones(case):
    """The reduction used for masks on an accelerator (run here on CPU tensors) gives the host
    path's values, bit for bit."""
    from masktopo.analysis.structure import device_columns

    g = torch.Generator().manual_seed(1)
    if case in ("2:4", "4:8"):
        n, m = map(int, case.split(":"))
        w = torch.randn(64, 96, generator=g)
        grp = w.abs().reshape(64, -1, m)
        keep = torch.zeros_like(grp, dtype=torch.bool).scatter_(2, grp.topk(n, 2).indices, True)
        mask = keep.reshape(64, 96)
    elif case == "conv":
        mask = torch.rand(16, 8, 3, 3, generator=g) < 0.4
    elif case == "odd":
        mask = torch.rand(30, 77, generator=g) < 0.5
        mask[4] = False
    elif case == "float":
        mask = torch.randn(40, 60, generator=g) * (torch.rand(40, 60, generator=g) < 0.5)
    else:
        mask = torch.rand(50, 120, generator=g) < 0.5
    assert device_columns(mask) == structure_columns(mask)
    if case in ("2:4", "4:8"):
        assert device_columns(mask)["nm"] == case
