"""Layer mask -> biadjacency, isolated-node stripping, and networkx / igraph export."""

import networkx as nx
import numpy as np
import pytest
import torch

from masktopo import MaskSet
from masktopo.analysis import (
    biadjacency,
    layer_metrics,
    strip_isolated,
    to_igraph,
    to_networkx,
    weighted_biadjacency,
)
from masktopo.errors import MaskValidationError, UnknownNameError


@pytest.fixture
def conv():
    m = torch.zeros(2, 3, 2, 2, dtype=torch.bool)
    m[0, 0, 0, 0] = m[0, 0, 1, 1] = True  # channel pair (0, 0): 2 kernel entries
    m[1, 2, 0, 1] = True  # (1, 2): 1 entry
    w = torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2) - 12.0
    return m, w


def test_unrolled_and_rolled(conv):
    m, w = conv
    B = biadjacency(m)
    assert B.shape == (2, 12) and B.dtype == torch.bool
    assert B[0].nonzero().flatten().tolist() == [0, 3]  # c*kh*kw + u*kw + v
    R = biadjacency(m, "rolled")
    assert R.tolist() == [[2, 0, 0], [0, 0, 1]]
    Wr = weighted_biadjacency(m, w, "rolled")
    assert Wr[0, 0].item() == abs(-12.0) + abs(-9.0) and Wr[1, 2].item() == abs(21.0 - 12.0)
    assert weighted_biadjacency(m, w).dtype == torch.float64
    with pytest.raises(UnknownNameError, match="unrolled"):
        biadjacency(m, "folded")
    with pytest.raises(MaskValidationError, match="does not match"):
        weighted_biadjacency(m, w[:1])


def test_strip_isolated(conv):
    m, w = conv
    g = strip_isolated(biadjacency(m), weighted_biadjacency(m, w))
    assert g.B.shape == (2, 3) and g.Bw.shape == (2, 3)
    assert g.rows.tolist() == [True, True] and int(g.cols.sum()) == 3
    assert g.n_edges == 3


def test_networkx_export_matches_structure_and_spectrum():
    gen = torch.Generator().manual_seed(0)
    m = torch.rand(6, 9, generator=gen) < 0.4
    w = torch.randn(6, 9, generator=gen)
    G = to_networkx(m, w)
    assert G.number_of_nodes() == 15 and G.number_of_edges() == int(m.sum())
    assert {d["bipartite"] for n, d in G.nodes(data=True) if n[0] == "out"} == {0}
    assert nx.is_bipartite(G)
    o, i = next(iter(G.edges()))
    if o[0] == "in":
        o, i = i, o
    assert G.edges[o, i]["weight"] == pytest.approx(abs(w[o[1], i[1]].item()))
    # The exported graph's adjacency spectrum is ±sigma(B): third largest |eig| = mu_hat.
    eig = np.sort(np.abs(np.linalg.eigvalsh(nx.to_numpy_array(G, weight=None))))[::-1]
    r = layer_metrics(m)
    assert eig[0] == pytest.approx(r["mu0"], rel=1e-12)
    assert eig[2] == pytest.approx(r["mu_hat"], rel=1e-12)
    stripped = to_networkx(m, strip=True)
    assert all(d > 0 for _, d in stripped.degree())


def test_igraph_export(conv):
    m, w = conv
    G = to_igraph(m, w, conv="rolled", strip=True)
    assert G.vcount() == 4 and G.ecount() == 2
    assert G.is_bipartite()
    assert sorted(G.es["multiplicity"]) == [1, 2]
    assert sorted(G.vs["side"]) == ["in", "in", "out", "out"]
    assert G.vs["type"] == [False, False, True, True]


def test_maskset_export_gives_one_graph_per_layer(conv):
    m, w = conv
    ms = MaskSet({"a.weight": m, "fc.weight": torch.ones(3, 4, dtype=torch.bool)},
                 weights={"a.weight": w, "fc.weight": torch.ones(3, 4)})  # fmt: skip
    gs = to_networkx(ms)
    assert set(gs) == {"a.weight", "fc.weight"}
    assert gs["fc.weight"].number_of_edges() == 12
    assert "weight" in next(iter(gs["fc.weight"].edges(data=True)))[2]
    assert (
        "weight" not in next(iter(to_networkx(ms, weight=False)["fc.weight"].edges(data=True)))[2]
    )
    igs = to_igraph(ms)
    assert igs["a.weight"].ecount() == 3
