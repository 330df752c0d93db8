"""The layer graph's JSON format (what :func:`masktopo.analysis.paths.layer_graph` records and the
trainer stores in ``run.json``) and its check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...checks import is_int
from ...errors import MaskValidationError

GRAPH_FORMAT = "masktopo.layer_graph"
GRAPH_FORMAT_VERSION = 1


def _bad(why: str):
    raise MaskValidationError(f"invalid layer graph: {why}")


def check_graph(graph: Any) -> dict:
    """Check a layer-graph dict (e.g. read back from ``run.json``) and return it.

    Raises
    ------
    MaskValidationError
        One line saying what is wrong: not a layer graph, a missing key, a site index out of
        range or not topological, unit counts that do not fit a layer's weight shape, a link
        that does not fit its sites.
    """
    if not isinstance(graph, Mapping) or graph.get("format") != GRAPH_FORMAT:
        _bad(f"not a {GRAPH_FORMAT!r} dict (see masktopo.analysis.paths.layer_graph)")
    if graph.get("format_version") != GRAPH_FORMAT_VERSION:
        _bad(f"format_version {graph.get('format_version')!r}; this masktopo reads version 1")
    for key in ("sites", "layers", "links", "input", "output"):
        if key not in graph:
            _bad(f"missing key {key!r}")
    for key in ("layers", "links"):
        if not isinstance(graph[key], list):
            _bad(f"{key!r} must be a list")
    sites = graph["sites"]
    if not isinstance(sites, list) or not sites:
        _bad("'sites' must be a non-empty list")
    units = []
    for i, s in enumerate(sites):
        if not isinstance(s, Mapping) or not is_int(s.get("units")) or s["units"] < 1:
            _bad(f"site {i} has no positive integer 'units'")
        units.append(s["units"])
    n = len(sites)
    for key in ("input", "output"):
        if not is_int(graph[key]) or not 0 <= graph[key] < n:
            _bad(f"{key!r} is not a site index in 0..{n - 1}")
    for i, e in enumerate(graph["layers"]):
        try:
            src, dst, shape, groups = e["src"], e["dst"], list(e["shape"]), e.get("groups", 1)
            name = e["name"]
        except (KeyError, TypeError):
            _bad(f"layer entry {i} lacks name/src/dst/shape")
        if not (is_int(src) and is_int(dst) and 0 <= src < dst < n):
            _bad(f"layer {name!r}: src {src!r} → dst {dst!r} is not a forward edge between sites")
        if len(shape) < 2 or not all(is_int(x) and x > 0 for x in shape) or not is_int(groups):
            _bad(f"layer {name!r}: bad shape {shape} or groups {groups!r}")
        if shape[0] != units[dst] or shape[1] * groups != units[src] or shape[0] % groups:
            _bad(f"layer {name!r}: weight shape {shape} (groups {groups}) does not connect "
                 f"{units[src]} to {units[dst]} units")  # fmt: skip
    for i, k in enumerate(graph["links"]):
        try:
            src, dst, off, rep = k["src"], k["dst"], k["offset"], k["repeat"]
        except (KeyError, TypeError):
            _bad(f"link {i} lacks src/dst/offset/repeat")
        if not (is_int(src) and is_int(dst) and 0 <= src < dst < n):
            _bad(f"link {i}: src {src!r} → dst {dst!r} is not a forward edge between sites")
        if not (is_int(off) and is_int(rep) and off >= 0 and rep >= 1):
            _bad(f"link {i}: bad offset {off!r} or repeat {rep!r}")
        if off + units[src] * rep > units[dst]:
            _bad(f"link {i}: {units[src]} units x {rep} at offset {off} overflow the "
                 f"{units[dst]} units of site {dst}")  # fmt: skip
    return dict(graph)
