"""Dense layers planned on their device (masktopo.analysis.device_plan): the same rows as the CPU
engine's host planning, components and IMDB groups against the compiled kernels, the routing.

The device code is torch on any device; here it runs on the CPU (``route="batched"`` takes the
device route there), as it runs on CUDA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from masktopo.analysis import _kernels, device_plan, metrics
from masktopo.analysis.metrics import layer_metric_rows
from masktopo.options import Options


def _weight(m, n, density, seed, *, nm=None):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(m, n, generator=g)
    if nm is not None:  # keep the N largest of every M consecutive inputs
        N, M = nm
        grp = w.abs().reshape(m, n // M, M)
        keep = torch.zeros_like(grp, dtype=torch.bool)
        keep.scatter_(2, grp.topk(N, dim=2).indices, True)
        return (w * keep.reshape(m, n)).to(torch.bfloat16)
    w = w * (torch.rand(m, n, generator=g) < density)
    w[3] = 0  # an isolated row
    w[:, 7] = 0  # and column
    return w.to(torch.bfloat16)


def _same_rows(a, b, rel=1e-9):
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k, x in ra.items():
            y = rb[k]
            if isinstance(x, float) and math.isnan(x):
                assert isinstance(y, float) and math.isnan(y), (k, x, y)
            elif isinstance(x, float):
                assert y == pytest.approx(x, rel=rel, abs=1e-12), (k, x, y)
            else:
                assert x == y, (k, x, y)


@pytest.mark.parametrize("imdb", ["i23", "n23"])
def test_rows_equal_the_cpu_engine(imdb):
    """Per row 50 % (an isolated row and column), 2:4 and 4:8, 40 % on a wide layer, with
    weights: every metric as the CPU engine's host planning gives it, to 1e-9 relative
    (integers exactly)."""
    ws = [_weight(120, 200, 0.5, 0), _weight(96, 160, 0, 1, nm=(2, 4)),
          _weight(64, 128, 0, 2, nm=(4, 8)), _weight(40, 300, 0.4, 3)]  # fmt: skip
    layers = [(f"l{i}", w != 0, w) for i, w in enumerate(ws)]
    opts = Options(imdb=imdb)
    assert all(device_plan.planned_on_device(m, opts) for _, m, _ in layers)
    cpu = layer_metric_rows(layers, options=opts)
    dev = layer_metric_rows(layers, options=opts, route="batched")
    _same_rows(cpu, dev)
    assert all(r["imdb_n_groups"] > 0 for r in cpu)  # the groups were exercised


def test_rows_without_weights_and_of_an_unrolled_conv():
    g = torch.Generator().manual_seed(5)
    conv = torch.rand(24, 8, 3, 3, generator=g) < 0.5
    lin = torch.rand(50, 70, generator=g) < 0.6
    layers = [("conv", conv, None), ("fc", lin, None)]
    opts = Options(conv="unrolled")
    _same_rows(layer_metric_rows(layers, options=opts),
               layer_metric_rows(layers, options=opts, route="batched"))  # fmt: skip


def test_routing(monkeypatch):
    """On the device route, a dense linear layer (or an unrolled conv) is planned on the device;
    a sparse layer and a rolled conv keep the host planning; the rows keep their order."""
    seen = []
    real = device_plan.plan_dense

    def spy(mask, *args):
        seen.append(tuple(mask.shape))
        return real(mask, *args)

    monkeypatch.setattr(device_plan, "plan_dense", spy)
    g = torch.Generator().manual_seed(6)
    dense = torch.rand(40, 60, generator=g) < 0.5
    sparse = torch.rand(40, 60, generator=g) < 0.1
    conv = torch.rand(16, 8, 3, 3, generator=g) < 0.5
    layers = [("sparse", sparse, None), ("dense", dense, None), ("conv", conv, None)]
    rolled = Options(conv="rolled")
    rows = layer_metric_rows(layers, options=rolled, route="batched")
    assert seen == [(40, 60)]  # the rolled conv is planned on the host
    _same_rows(rows, layer_metric_rows(layers, options=rolled))
    assert not device_plan.planned_on_device(conv, rolled)
    assert device_plan.planned_on_device(conv, Options(conv="unrolled"))
    assert not device_plan.planned_on_device(sparse, Options())
    monkeypatch.setattr(device_plan, "DENSE_ROUTE_MAX_ENTRIES", 40 * 60 - 1)
    assert not device_plan.planned_on_device(dense, Options())


def _csr(M: torch.Tensor):
    cols = torch.nonzero(M)[:, 1]
    indptr = np.zeros(M.shape[0] + 1, dtype=np.int32)
    indptr[1:] = np.cumsum(M.sum(1).numpy())
    return indptr, cols.to(torch.int32).numpy()


@pytest.mark.parametrize("blocks", [1, 3, 7])
def test_components(monkeypatch, blocks):
    """A block-diagonal pattern (plus noise inside the blocks) has as many components as
    blocks, by breadth-first search and, past MAX_BFS_COMPONENTS, by the host count; the
    compiled union–find agrees."""
    g = torch.Generator().manual_seed(blocks)
    M = torch.zeros(blocks * 9, blocks * 11, dtype=torch.bool)
    for b in range(blocks):
        blk = torch.rand(9, 11, generator=g) < 0.6
        blk[torch.arange(9), torch.arange(9)] = True  # no isolated node
        blk[0, :] = True
        M[b * 9 : (b + 1) * 9, b * 11 : (b + 1) * 11] = blk
    perm_r = torch.randperm(M.shape[0], generator=g)
    perm_c = torch.randperm(M.shape[1], generator=g)
    M = M[perm_r][:, perm_c]
    indptr, indices = _csr(M)
    assert _kernels.count_components(indptr, indices, *M.shape) == blocks
    assert device_plan.components(M) == blocks
    monkeypatch.setattr(device_plan, "MAX_BFS_COMPONENTS", 2)  # the rest on the host
    assert device_plan.components(M) == blocks


@pytest.mark.parametrize(("min_group", "both_three"), [(2, False), (3, True)])
def test_imdb_groups_equal_the_kernel(min_group, both_three):
    """Degrees, sizes and row counts of the kept groups, and their columns, as the compiled
    kernel keeps them (columns of every degree from 1 to 12, some groups failing the gates)."""
    g = torch.Generator().manual_seed(7)
    n_rows, n_cols = 30, 200
    deg = torch.randint(1, 13, (n_cols,), generator=g)
    deg[:5] = 11  # a group of 5 at degree 11
    M = torch.zeros(n_rows, n_cols, dtype=torch.bool)
    for j in range(n_cols):
        M[torch.randperm(n_rows, generator=g)[: int(deg[j])], j] = True
    M = M[M.any(1)]
    indptr, indices = _csr(M)
    d, size, n_r = _kernels.imdb_groups(
        indptr, indices, np.ones(indices.size), M.shape[0], M.shape[1], min_group, both_three
    )[:3]
    got = device_plan.imdb_groups(M, min_group, both_three)
    assert [x[:3] for x in got] == list(zip(d.astype(int).tolist(), size.tolist(),
                                            n_r.tolist(), strict=True))  # fmt: skip
    assert len(got) >= 3
    cols = np.flatnonzero(M.sum(0).numpy() == got[0][0])
    assert got[0][3].tolist() == cols.tolist()


def test_route_is_taken_by_analyze_layers_on_the_device_route(monkeypatch):
    """metrics._run sends a device-route layer at 30 % density or more to _rows_on_device."""
    calls = []
    real = metrics._rows_on_device

    def spy(layers, *args, **kwargs):
        calls.append([name for name, _, _ in layers])
        return real(layers, *args, **kwargs)

    monkeypatch.setattr(metrics, "_rows_on_device", spy)
    w = _weight(64, 96, 0.5, 9)
    layer_metric_rows([("x", w != 0, w)], route="batched")
    layer_metric_rows([("x", w != 0, w)])
    assert calls == [["x"]]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rows_equal_the_cpu_engine():
    """On CUDA (for a lent GPU: benchmarks/gpu_suite.py runs the cuda tests): a dense layer is
    planned on the device and its row equals the CPU engine's."""
    w = _weight(2048, 2304, 0.5, 11)
    layers = [("x", w != 0, w)]
    calls = []
    real = metrics._rows_on_device

    def spy(part, *args, **kwargs):
        calls.append(len(part))
        return real(part, *args, **kwargs)

    cpu = layer_metric_rows(layers)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics, "_rows_on_device", spy)
        dev = layer_metric_rows(layers, device="cuda")
    assert calls == [1]
    _same_rows(cpu, dev)
