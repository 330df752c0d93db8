"""The whole network as one layered graph (:func:`network_graph`, networkx or igraph)."""

from __future__ import annotations

import torch

from ...errors import MaskValidationError
from .reachability import analyze_paths

#: Default size limits of :func:`network_graph` (nodes, edges).
MAX_NODES = 50_000
MAX_EDGES = 500_000


BACKENDS = ("networkx", "igraph")


def _site_depths(graph) -> list[int]:
    """Longest-path depth of every site from the input (the layer index of a layered drawing)."""
    depth = [0] * len(graph["sites"])
    edges = [(e["src"], e["dst"]) for e in graph["layers"]] + [
        (k["src"], k["dst"]) for k in graph["links"]
    ]
    for src, dst in sorted(edges, key=lambda x: x[1]):
        depth[dst] = max(depth[dst], depth[src] + 1)
    return depth


def network_graph(
    maskset,
    graph: dict,
    backend: str = "networkx",
    *,
    effective: bool = False,
    max_nodes: int = MAX_NODES,
    max_edges: int = MAX_EDGES,
):
    """The whole masked network as one layered directed graph of units.

    Nodes are ``(site, unit)`` (site name from the layer graph, unit index) with attributes
    ``site``, ``unit``, ``depth`` (longest path from the input, in sites; usable as the
    ``subset_key`` of :func:`networkx.multipartite_layout`), ``kind`` (the site's kind),
    ``from_input``, ``to_output`` and ``alive``. Edges run from a layer's input unit to its output
    unit for every channel pair joined by a kept entry, with ``kind="layer"``, ``layer`` (the
    weight name), ``count`` (kept kernel entries of the pair; 1 for a linear layer) and, when the
    MaskSet has weights, ``weight`` (``Σ |w|`` over those entries); residual sums, concatenation
    and flatten add parameter-free edges with ``kind`` ``"add"``, ``"cat"`` or ``"flatten"`` and
    ``count`` 0. Dense layers (not in the MaskSet) are exported with all their pairs.

    Parameters
    ----------
    maskset : MaskSet
    graph : dict
        From :func:`layer_graph`.
    backend : {"networkx", "igraph"}
        ``networkx.DiGraph`` or a directed ``igraph.Graph`` (vertex attributes as above plus
        ``name`` = ``"site:unit"``).
    effective : bool
        Keep only alive units and the edges between them (the effective network).
    max_nodes, max_edges : int
        Refuse to build a bigger graph (raise them deliberately; graph objects cost about 1 kB
        per edge in networkx).

    Raises
    ------
    UnknownNameError
        For an unknown backend.
    MaskValidationError
        As :func:`analyze_paths`, or when the graph would exceed the limits (the message gives
        the counts and the parameter to raise).
    """
    import numpy as np

    from ...errors import UnknownNameError

    if backend not in BACKENDS:
        raise UnknownNameError("graph backend", backend, BACKENDS)
    res = analyze_paths(maskset, graph)
    graph = res.graph
    sites = graph["sites"]
    alive = res.alive
    keep_units = [a if effective else torch.ones_like(a) for a in alive]
    n_nodes = sum(int(k.sum()) for k in keep_units)
    weights = maskset.weights if maskset.has_weights else None

    # edges: arrays of (src site, src unit, dst site, dst unit, kind, layer, count, weight)
    blocks = []
    for e in graph["layers"]:
        m = res.effective[e["name"]] if effective else res.kept[e["name"]]
        g = e.get("groups", 1)
        out, ig = m.shape[0], m.shape[1]
        cnt = m.reshape(out, ig, -1).sum(dim=2)
        o, c = torch.nonzero(cnt, as_tuple=True)
        w = None
        if weights is not None and e["name"] in weights:
            aw = (weights[e["name"]].detach().abs().double() * m).reshape(out, ig, -1).sum(dim=2)
            w = aw[o, c].cpu().numpy()
        elif weights is not None:  # a dense layer has no weight in the MaskSet
            w = np.full(o.numel(), np.nan)
        c_full = (o // (out // g)) * ig + c
        blocks.append(
            ("layer", e, c_full.cpu().numpy(), o.cpu().numpy(), cnt[o, c].cpu().numpy(), w)
        )
    for k in graph["links"]:
        n_src = sites[k["src"]]["units"]
        i = np.repeat(np.arange(n_src), k["repeat"])
        j = k["offset"] + np.arange(n_src * k["repeat"])
        if effective:
            ok = alive[k["src"]].cpu().numpy()[i] & alive[k["dst"]].cpu().numpy()[j]
            i, j = i[ok], j[ok]
        blocks.append((k["op"], k, i, j, np.zeros(i.size, dtype=np.int64), None))
    n_edges = sum(b[2].size for b in blocks)
    if n_nodes > max_nodes or n_edges > max_edges:
        raise MaskValidationError(
            f"network_graph: {n_nodes:,} nodes and {n_edges:,} edges exceed the limits "
            f"(max_nodes={max_nodes:,}, max_edges={max_edges:,}); raise them to build it anyway, "
            "or pass effective=True"
        )
    depth = _site_depths(graph)
    names = [s["name"] for s in sites]
    node_rows = []
    for s, (site, k) in enumerate(zip(sites, keep_units, strict=True)):
        f = res.from_input[s].cpu().numpy()
        t = res.to_output[s].cpu().numpy()
        for u in np.flatnonzero(k.cpu().numpy()).tolist():
            node_rows.append(
                (
                    (names[s], u),
                    {
                        "site": names[s],
                        "unit": u,
                        "depth": depth[s],
                        "kind": site["kind"],
                        "from_input": bool(f[u]),
                        "to_output": bool(t[u]),
                        "alive": bool(f[u] and t[u]),
                    },
                )
            )
    edge_rows = []
    for kind, e, i, j, cnt, w in blocks:
        src, dst = names[e["src"]], names[e["dst"]]
        layer = e["name"] if kind == "layer" else ""
        ws = w.tolist() if w is not None else [None] * i.size
        for a, b_, n, wv in zip(i.tolist(), j.tolist(), cnt.tolist(), ws, strict=True):
            attrs = {"kind": kind, "layer": layer, "count": int(n)}
            if weights is not None:
                attrs["weight"] = float(wv) if kind == "layer" else 0.0
            edge_rows.append(((src, a), (dst, b_), attrs))
    if backend == "networkx":
        import networkx as nx

        G = nx.DiGraph(name="masktopo network", effective=effective)
        G.add_nodes_from(node_rows)
        G.add_edges_from(edge_rows)
        return G
    import igraph as ig

    index = {key: i for i, (key, _) in enumerate(node_rows)}
    G = ig.Graph(
        n=len(node_rows),
        edges=[(index[a], index[b_]) for a, b_, _ in edge_rows],
        directed=True,
    )
    G["name"] = "masktopo network"
    G["effective"] = effective
    G.vs["name"] = [f"{key[0]}:{key[1]}" for key, _ in node_rows]
    for attr in ("site", "unit", "depth", "kind", "from_input", "to_output", "alive"):
        G.vs[attr] = [a[attr] for _, a in node_rows]
    for attr in ("kind", "layer", "count") + (("weight",) if weights is not None else ()):
        G.es[attr] = [a[attr] for _, _, a in edge_rows]
    return G
