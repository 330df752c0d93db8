"""Whole-network paths: layer graphs traced with torch.fx, dead units, ineffective weights."""

import inspect
import json

import networkx as nx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from masktopo import MaskSet
from masktopo.analysis.paths import analyze_paths, check_graph, layer_graph, network_graph
from masktopo.errors import MaskValidationError, UnknownNameError
from masktopo.examples import random_maskset
from masktopo.zoo.models import MODELS, BasicBlock, get_model, maskable_parameters


def _ones(*shape):
    return torch.ones(shape, dtype=torch.bool)


def _shapes(graph):
    return {e["name"]: tuple(e["shape"]) for e in graph["layers"]}


def brute_force(ms: MaskSet, graph: dict):
    """Reachability over an explicit unit graph built entry by entry (networkx)."""
    sites, G = graph["sites"], nx.DiGraph()
    masks = {
        e["name"]: ms[e["name"]] if e["name"] in ms else _ones(*e["shape"]) for e in graph["layers"]
    }
    for i, s in enumerate(sites):
        G.add_nodes_from((i, u) for u in range(s["units"]))
    for e in graph["layers"]:
        m = masks[e["name"]]
        out, ig, g = m.shape[0], m.shape[1], e["groups"]
        for idx in m.nonzero().tolist():
            o, c = idx[0], idx[1]
            G.add_edge((e["src"], (o // (out // g)) * ig + c), (e["dst"], o))
    for k in graph["links"]:
        for i in range(sites[k["src"]]["units"]):
            for j in range(k["repeat"]):
                G.add_edge((k["src"], i), (k["dst"], k["offset"] + i * k["repeat"] + j))
    G.add_edges_from(("SRC", (graph["input"], u)) for u in range(sites[graph["input"]]["units"]))
    G.add_edges_from(((graph["output"], u), "SINK") for u in range(sites[graph["output"]]["units"]))
    reach, coreach = nx.descendants(G, "SRC"), nx.ancestors(G, "SINK")
    eff = {n: torch.zeros_like(m) for n, m in masks.items()}
    for e in graph["layers"]:
        m = masks[e["name"]]
        out, ig, g = m.shape[0], m.shape[1], e["groups"]
        for idx in m.nonzero().tolist():
            o, c = idx[0], idx[1]
            cin = (o // (out // g)) * ig + c
            if (e["src"], cin) in reach and (e["dst"], o) in coreach:
                eff[e["name"]][tuple(idx)] = True
    fwd = [[(i, u) in reach for u in range(s["units"])] for i, s in enumerate(sites)]
    bwd = [[(i, u) in coreach for u in range(s["units"])] for i, s in enumerate(sites)]
    return eff, fwd, bwd


def assert_matches_brute_force(ms, graph):
    res = analyze_paths(ms, graph)
    eff, fwd, bwd = brute_force(ms, graph)
    for name, m in eff.items():
        assert torch.equal(res.effective[name], m), name
    assert [t.tolist() for t in res.from_input] == fwd
    assert [t.tolist() for t in res.to_output] == bwd
    return res


# -- hand-built networks with known counts --------------------------------------------------------
def test_chain_with_dead_units():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    g = layer_graph(model, (3,))
    assert [s["units"] for s in g["sites"]] == [3, 4, 3, 2] and g["links"] == []
    m0 = _ones(4, 3)
    m0[1] = False  # hidden unit 1 of the first layer has no input (its bias does not count)
    m2 = _ones(2, 3)
    m2[:, 2] = False  # hidden unit 2 of the second layer reaches no output
    ms = MaskSet({"0.weight": m0, "2.weight": _ones(3, 4), "4.weight": m2})
    res = assert_matches_brute_force(ms, g)
    assert res.n_kept == 9 + 12 + 4
    # second layer: column 1 (3 entries) and row 2 (4 entries) overlap in one entry
    assert res.effective["2.weight"].sum() == 12 - (3 + 4 - 1)
    assert res.effective["0.weight"].sum() == 9 and res.effective["4.weight"].sum() == 4
    assert res.n_effective == 19 and res.n_ineffective == 6
    assert res.effective_density == pytest.approx(19 / (12 + 12 + 6))
    assert res.dead_units() == {"input": 0, "0": 1, "2": 1, "4": 0}
    assert res.n_dead_units == 2
    df = res.to_frame()
    assert df["layer"].tolist() == ["0.weight", "2.weight", "4.weight", "(network)"]
    assert df["ineffective"].tolist() == [0, 6, 0, 6]
    assert df["dead_out_units"].tolist() == [1, 1, 0, 2]
    sf = res.sites_frame()
    assert sf["no_path_from_input"].tolist() == [0, 1, 0, 0]
    assert sf["no_path_to_output"].tolist() == [0, 0, 1, 0]
    eff = res.effective_maskset()
    assert eff.names == ms.names and eff.nnz() == 19


class _Block(nn.Module):
    """Stem conv, one BasicBlock (identity shortcut or none), global pool, linear head."""

    def __init__(self, skip: bool):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.block = BasicBlock(4, 4)
        self.head = nn.Linear(4, 2)
        self.skip = skip

    def forward(self, x):
        x = F.relu(self.stem(x))
        b = self.block
        out = b.bn2(b.conv2(F.relu(b.bn1(b.conv1(x)))))
        out = F.relu(out + x) if self.skip else F.relu(out)
        return self.head(F.adaptive_avg_pool2d(out, 1).flatten(1))


@pytest.mark.parametrize("skip", [True, False])
def test_residual_skip_keeps_a_unit_alive(skip):
    model = _Block(skip)
    g = layer_graph(model, (3, 8, 8))
    kinds = [s["kind"] for s in g["sites"]]
    assert kinds.count("add") == (1 if skip else 0)
    shapes = _shapes(g)
    masks = {n: _ones(*s) for n, s in shapes.items()}
    masks["block.conv2.weight"][1] = False  # output channel 1 of conv2 has no input
    ms = MaskSet(masks)
    res = assert_matches_brute_force(ms, g)
    total = sum(m.numel() for m in masks.values())
    kept = total - 4 * 9
    assert res.n_kept == kept
    if skip:  # channel 1 of the sum is fed by the shortcut: nothing is lost
        assert res.n_effective == kept
        assert res.dead_units()["block.conv2"] == 1 and res.dead_units()["add"] == 0
    else:  # channel 1 dies, and the head's 2 weights reading it are ineffective
        assert res.n_effective == kept - 2
        assert res.effective["head.weight"][:, 1].sum() == 0
        assert res.dead_units()["block.conv2"] == 1


def test_residual_skip_does_not_revive_a_unit_without_output():
    g = layer_graph(_Block(True), (3, 8, 8))
    masks = {n: _ones(*s) for n, s in _shapes(g).items()}
    masks["head.weight"][:, 3] = False  # channel 3 of the sum reaches no output
    res = assert_matches_brute_force(MaskSet(masks), g)
    # conv2 row 3 (4·9 entries) is ineffective; the stem's channel 3 still feeds conv1
    assert res.effective["block.conv2.weight"][3].sum() == 0
    assert res.effective["stem.weight"][3].all()
    assert res.n_ineffective == 4 * 9


class _FlattenHead(nn.Module):
    def __init__(self, view: bool):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(8, 3)
        self.view = view

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)  # (2, 2, 2)
        x = x.view(x.size(0), -1) if self.view else torch.flatten(x, 1)
        return self.fc(x)


@pytest.mark.parametrize("view", [False, True])
def test_flatten_head(view):
    g = layer_graph(_FlattenHead(view), (1, 4, 4))
    assert g["links"] == [{"src": 1, "dst": 2, "op": "flatten", "offset": 0, "repeat": 4}]
    assert [s["units"] for s in g["sites"]] == [1, 2, 8, 3]
    conv = _ones(2, 1, 3, 3)
    conv[1] = False  # channel 1 dead: features 4..7 carry nothing
    ms = MaskSet({"conv.weight": conv, "fc.weight": _ones(3, 8)})
    res = assert_matches_brute_force(ms, g)
    assert res.effective["fc.weight"][:, :4].all() and not res.effective["fc.weight"][:, 4:].any()
    flat = g["sites"][2]["name"]  # the fx node's name: "flatten" or "view"
    assert g["sites"][2]["kind"] == "flatten" and flat == ("view" if view else "flatten")
    assert res.n_effective == 9 + 12 and res.dead_units()[flat] == 4


class _Cat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 3, 1)
        self.b = nn.Conv2d(2, 2, 3, padding=1, groups=2)
        self.c = nn.Conv2d(5, 4, 1, groups=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], dim=1)
        y = self.c(F.relu(y)) * 0.5
        # two summands from one site; a spatial reshape keeps the channels
        return self.fc(y.reshape(y.shape[0], y.shape[1], -1).mean(2) + y.mean(dim=(2, 3)))


def test_cat_groups_and_scaling():
    g = layer_graph(_Cat(), (2, 6, 6))
    cat = [k for k in g["links"] if k["op"] == "cat"]
    assert [(k["offset"], k["repeat"]) for k in cat] == [(0, 1), (3, 1)]
    add = [k for k in g["links"] if k["op"] == "add"]
    assert len(add) == 2 and add[0]["src"] == add[1]["src"] == g["layers"][2]["dst"]
    assert [e["groups"] for e in g["layers"]] == [1, 2, 1, 1]
    m = {n: _ones(*s) for n, s in _shapes(g).items()}
    m["b.weight"][1] = False  # grouped conv: output 1 (fed by input 1) has no input
    m["c.weight"][:, 0] = False  # nothing reads channel 0 of the concatenation
    res = assert_matches_brute_force(MaskSet(m), g)
    assert res.dead_units()["cat"] == 2  # channel 0 (no output) and 4 (no input)
    assert res.effective["a.weight"][0].sum() == 0


def test_random_masks_agree_with_brute_force():
    model = get_model("resnet20")
    g = layer_graph(model, (3, 8, 8))
    ms = random_maskset(_shapes(g), 0.015, weights=False, seed=3)
    res = assert_matches_brute_force(ms, g)
    assert res.n_effective < res.n_kept  # the case is not trivial
    E = network_graph(ms, g, effective=True)
    layer_edges = [d for _, _, d in E.edges(data=True) if d["kind"] == "layer"]
    assert sum(d["count"] for d in layer_edges) == res.n_effective
    assert E.number_of_nodes() == sum(int(a.sum()) for a in res.alive)
    for seed in range(3):
        g2 = layer_graph(_Cat(), (2, 6, 6))
        sh = _shapes(g2)
        gen = torch.Generator().manual_seed(seed)
        ms2 = MaskSet({n: torch.rand(s, generator=gen) < 0.4 for n, s in sh.items()})
        assert_matches_brute_force(ms2, g2)


def test_shared_layer_is_effective_where_either_use_is():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.out = nn.Linear(3, 1)

        def forward(self, x):
            return self.out(self.fc(F.relu(self.fc(x))))

    g = layer_graph(Twice(), (3,))
    assert [e["name"] for e in g["layers"]] == ["fc.weight", "fc.weight", "out.weight"]
    fc = torch.eye(3, dtype=torch.bool)
    out = torch.tensor([[True, False, False]])
    res = assert_matches_brute_force(MaskSet({"fc.weight": fc, "out.weight": out}), g)
    assert res.effective["fc.weight"].sum() == 1 and res.n_kept == 4
    assert res.to_frame()["layer"].tolist() == ["fc.weight", "out.weight", "(network)"]


def test_dense_layers_are_all_ones_edges():
    model = get_model("lenet300")
    names = list(maskable_parameters(model, first_dense=True))
    g = layer_graph(model, (1, 28, 28), layers=names)
    assert [e["masked"] for e in g["layers"]] == [False, True, True]
    ms = random_maskset(_shapes(g), 0.1, weights=False)
    ms = ms.select(names)
    res = analyze_paths(ms, g)
    assert res.masked == tuple(names)
    assert res.kept["fc1.weight"].all() and res.n_weights == 300 * 100 + 100 * 10
    df = res.to_frame()
    assert df["masked"].tolist() == [False, True, True, True]
    assert df["kept"].iloc[0] == 784 * 300  # listed, but not in the network totals
    with pytest.raises(MaskValidationError, match=r"'fc9\.weight' is not a Linear/Conv weight"):
        layer_graph(model, (1, 28, 28), layers=["fc9.weight"])


# -- the zoo --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_every_zoo_model_traces(name):
    in_shape = inspect.signature(MODELS[name]).parameters["in_shape"].default
    with torch.device("meta"):  # no weights needed: tracing reads only shapes
        model = MODELS[name]()
        n_out = model(torch.zeros(2, *in_shape)).shape[1]
    g = layer_graph(model, in_shape)
    assert json.loads(json.dumps(g)) == g
    names = [e["name"] for e in g["layers"]]  # in execution order
    assert sorted(names) == sorted(maskable_parameters(model)) and len(set(names)) == len(names)
    assert all(e["masked"] for e in g["layers"])
    assert g["sites"][g["output"]]["units"] == n_out
    dense = MaskSet({n: _ones(*s) for n, s in _shapes(g).items()})
    res = analyze_paths(dense, g)
    assert res.n_effective == res.n_weights and res.n_dead_units == 0
    n_adds = sum(s["kind"] == "add" for s in g["sites"])
    blocks = {"resnet18": 8, "resnet34": 16, "resnet20": 9, "resnet50": 16}.get(name, 0)
    assert n_adds == blocks
    assert sum(s["kind"] == "flatten" for s in g["sites"]) == (
        1 if name in ("lenet5", "lenet300", "mlpnet", "mlp", "smallcnn") else 0
    )


def test_the_model_is_untouched():
    model = get_model("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layer_graph(model, (3, 32, 32))
    after = model.state_dict()  # BatchNorm statistics included: shapes ran on the meta device
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert model.training


def test_resnet18_shortcuts():
    g = layer_graph(get_model("resnet18"), (3, 32, 32))
    by_name = {e["name"]: e for e in g["layers"]}
    down, conv1 = by_name["layer2.0.shortcut.0.weight"], by_name["layer2.0.conv1.weight"]
    assert down["src"] == conv1["src"]  # the projection reads the block input
    add = g["sites"].index(next(s for s in g["sites"] if s["name"] == "add_2"))
    assert {k["src"] for k in g["links"] if k["dst"] == add} == {
        by_name["layer2.0.conv2.weight"]["dst"],
        down["dst"],
    }


# -- export ----------------------------------------------------------------------------------------
def test_network_graph_export():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    g = layer_graph(model, (3,))
    m0 = _ones(4, 3)
    m0[1] = False
    w = {"0.weight": torch.full((4, 3), -2.0) * m0, "2.weight": torch.ones(2, 4)}
    ms = MaskSet({"0.weight": m0, "2.weight": _ones(2, 4)}, weights=w)
    G = network_graph(ms, g)
    assert G.number_of_nodes() == 3 + 4 + 2 and G.number_of_edges() == 9 + 8
    assert G.edges[("input", 0), ("0", 0)] == {"kind": "layer", "layer": "0.weight", "count": 1,
                                               "weight": 2.0}  # fmt: skip
    assert G.nodes[("0", 1)]["alive"] is False and G.nodes[("0", 1)]["depth"] == 1
    E = network_graph(ms, g, effective=True)
    assert E.number_of_nodes() == 8 and E.number_of_edges() == 9 + 6
    I = network_graph(ms, g, backend="igraph", effective=True)
    assert I.vcount() == 8 and I.ecount() == 15 and I.is_directed()
    assert sorted(I.es["count"]) == [1] * 15
    with pytest.raises(UnknownNameError, match="networkx"):
        network_graph(ms, g, backend="graphviz")
    with pytest.raises(MaskValidationError, match="max_edges"):
        network_graph(ms, g, max_edges=5)


def test_network_graph_conv_counts_and_links():
    g = layer_graph(_FlattenHead(False), (1, 4, 4))
    conv = _ones(2, 1, 3, 3)
    conv[1, 0, 0] = False  # 6 of 9 kernel entries of the pair (1, 0)
    ms = MaskSet({"conv.weight": conv, "fc.weight": _ones(3, 8)})
    G = network_graph(ms, g)
    assert G.edges[("input", 0), ("conv", 1)]["count"] == 6
    assert G.edges[("conv", 1), ("flatten", 5)]["kind"] == "flatten"
    assert G.number_of_edges() == 2 + 8 + 24


# -- bad input ---------------------------------------------------------------------------------
def test_maskset_that_does_not_match_the_graph():
    g = layer_graph(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), (3,))
    with pytest.raises(MaskValidationError, match=r"'0.weight'.* no mask"):
        analyze_paths(MaskSet({"2.weight": _ones(2, 4)}), g)
    with pytest.raises(MaskValidationError, match=r"'fc.weight' are not in the layer graph"):
        analyze_paths(MaskSet({"0.weight": _ones(4, 3), "2.weight": _ones(2, 4),
                               "fc.weight": _ones(2, 2)}), g)  # fmt: skip
    with pytest.raises(MaskValidationError, match=r"'2.weight': mask shape \(4, 2\)"):
        analyze_paths(MaskSet({"0.weight": _ones(4, 3), "2.weight": _ones(4, 2)}), g)
    with pytest.raises(MaskValidationError, match="expects a MaskSet"):
        analyze_paths({"0.weight": _ones(4, 3)}, g)


def test_invalid_graph_dicts():
    g = layer_graph(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), (3,))
    with pytest.raises(MaskValidationError, match=r"not a 'masktopo\.layer_graph'"):
        check_graph({"sites": []})
    bad = json.loads(json.dumps(g))
    bad["layers"][1]["shape"] = [2, 5]
    with pytest.raises(MaskValidationError, match=r"'2.weight'.*does not connect 4 to 2 units"):
        check_graph(bad)
    bad = json.loads(json.dumps(g))
    bad["layers"][0]["src"] = 2
    with pytest.raises(MaskValidationError, match="not a forward edge"):
        check_graph(bad)
    bad = json.loads(json.dumps(g))
    del bad["output"]
    with pytest.raises(MaskValidationError, match="missing key 'output'"):
        check_graph(bad)


def test_uninterpretable_models_name_the_op():
    with pytest.raises(MaskValidationError, match=r"module '1'.*Softmax"):
        layer_graph(nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=1), nn.Linear(4, 2)), (3,))

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            return self.a(x) * self.b(x)

    with pytest.raises(MaskValidationError, match=r"operator.mul.*multiplies activation"):
        layer_graph(Gate(), (3,))

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else x

    with pytest.raises(MaskValidationError, match=r"torch\.fx cannot trace Branchy"):
        layer_graph(Branchy(), (3,))

    class ChannelMean(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 4, 1)
            self.fc = nn.Linear(4, 1)

        def forward(self, x):
            return self.fc(self.c(x).mean(1).flatten(1))

    with pytest.raises(MaskValidationError, match=r"method .mean\(\).*spatial"):
        layer_graph(ChannelMean(), (1, 2, 2))
    with pytest.raises(MaskValidationError, match="in_shape must have positive sizes"):
        layer_graph(nn.Linear(2, 2), (0,))
    with pytest.raises(MaskValidationError, match="no Linear/Conv layer"):
        layer_graph(nn.ReLU(), (2,))


def test_shape_propagation_falls_back_to_the_cpu(monkeypatch):
    from masktopo.analysis.paths import trace

    real = trace._propagate
    calls = []

    def no_meta(gm, in_shape, device):
        calls.append(device)
        if device == "meta":
            raise NotImplementedError("no meta kernel")
        return real(gm, in_shape, device)

    monkeypatch.setattr(trace, "_propagate", no_meta)
    model = get_model("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = layer_graph(model, (3, 8, 8))
    assert calls == ["meta", "cpu"] and len(g["layers"]) == 22
    after = model.state_dict()  # the CPU run worked on copies: BatchNorm statistics unchanged
    assert all(torch.equal(v, after[k]) for k, v in before.items())
