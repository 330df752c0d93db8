"""Units with no input→output path and the kept weights on none (:func:`analyze_paths`), by
reachability over the layer graph's sites (the package docstring defines both)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...errors import MaskValidationError
from .schema import check_graph


@dataclass(frozen=True)
class PathAnalysis:
    """Result of :func:`analyze_paths`.

    Attributes
    ----------
    graph : dict
        The layer graph analysed.
    effective : dict[str, torch.Tensor]
        Layer name → bool mask of its *effective* weights (kept entries on an input→output
        path), for every Linear/Conv of the graph: masked layers (those of the MaskSet) and dense
        ones (whose mask is all ones). A layer used twice is effective where either use is.
    kept : dict[str, torch.Tensor]
        Layer name → the mask analysed (the MaskSet's, or all ones for a dense layer).
    from_input, to_output : list of torch.Tensor
        Per site (graph order), bool vectors over its units: reachable from an input unit, and
        reaching an output unit.
    masked : tuple of str
        The layers taken from the MaskSet, in graph order; the network totals count these.
    """

    graph: dict
    effective: dict[str, torch.Tensor]
    kept: dict[str, torch.Tensor]
    from_input: list[torch.Tensor]
    to_output: list[torch.Tensor]
    masked: tuple[str, ...]
    _counts: dict = field(default_factory=dict, repr=False)

    # -- units ------------------------------------------------------------------------------
    @property
    def alive(self) -> list[torch.Tensor]:
        """Per site, the units on some input→output path (``from_input & to_output``)."""
        return [f & t for f, t in zip(self.from_input, self.to_output, strict=True)]

    def dead_units(self) -> dict[str, int]:
        """Site name → number of units on no input→output path."""
        return {
            s["name"]: int((~a).sum()) for s, a in zip(self.graph["sites"], self.alive, strict=True)
        }

    @property
    def n_dead_units(self) -> int:
        """Dead units over every site except the input and the output."""
        skip = {self.graph["input"], self.graph["output"]}
        return sum(int((~a).sum()) for i, a in enumerate(self.alive) if i not in skip)

    # -- weights -------------------------------------------------------------------------------
    def _count(self, name: str) -> tuple[int, int, int]:
        if name not in self._counts:
            k, e = self.kept[name], self.effective[name]
            self._counts[name] = (
                k.numel(),
                int(torch.count_nonzero(k)),
                int(torch.count_nonzero(e)),
            )
        return self._counts[name]

    @property
    def n_weights(self) -> int:
        """Entries of the masked layers."""
        return sum(self._count(n)[0] for n in self.masked)

    @property
    def n_kept(self) -> int:
        """Kept entries of the masked layers (the MaskSet's nnz)."""
        return sum(self._count(n)[1] for n in self.masked)

    @property
    def n_effective(self) -> int:
        """Kept entries of the masked layers that lie on an input→output path."""
        return sum(self._count(n)[2] for n in self.masked)

    @property
    def n_ineffective(self) -> int:
        return self.n_kept - self.n_effective

    @property
    def density(self) -> float:
        """``n_kept / n_weights``: the MaskSet's density."""
        return self.n_kept / self.n_weights

    @property
    def effective_density(self) -> float:
        """``n_effective / n_weights``."""
        return self.n_effective / self.n_weights

    def effective_maskset(self):
        """The effective masks of the masked layers as a MaskSet (no weights)."""
        from ...masks import MaskSet

        return MaskSet({n: self.effective[n] for n in self.masked})

    # -- tables ------------------------------------------------------------------------------
    def to_frame(self, *, network: bool = True):
        """One row per Linear/Conv layer of the graph (and a ``"(network)"`` row).

        Columns: ``layer``, ``kind``, ``shape``, ``masked``, ``numel``, ``kept``, ``effective``,
        ``ineffective``, ``density`` (kept / numel), ``effective_density`` (effective / numel),
        ``out_units`` and ``dead_out_units`` (units of the layer's output site on no
        input→output path). The network row sums the *masked* layers only (dense layers are
        listed but not counted, as in :meth:`MaskSet.density`); its ``dead_out_units`` counts
        dead units over all sites but the input and the output.
        """
        import pandas as pd

        alive = self.alive
        sites = self.graph["sites"]
        rows, seen = [], set()
        for e in self.graph["layers"]:
            name = e["name"]
            if name in seen:
                continue
            seen.add(name)
            dst_sites = [x["dst"] for x in self.graph["layers"] if x["name"] == name]
            numel, kept, eff = self._count(name)
            rows.append(
                {
                    "layer": name,
                    "kind": e["kind"],
                    "shape": "x".join(str(s) for s in e["shape"]),
                    "masked": name in self.masked,
                    "numel": numel,
                    "kept": kept,
                    "effective": eff,
                    "ineffective": kept - eff,
                    "density": kept / numel,
                    "effective_density": eff / numel,
                    "out_units": sum(sites[d]["units"] for d in dst_sites),
                    "dead_out_units": sum(int((~alive[d]).sum()) for d in dst_sites),
                }
            )
        if network:
            rows.append(
                {
                    "layer": "(network)",
                    "kind": "",
                    "shape": "",
                    "masked": True,
                    "numel": self.n_weights,
                    "kept": self.n_kept,
                    "effective": self.n_effective,
                    "ineffective": self.n_ineffective,
                    "density": self.density,
                    "effective_density": self.effective_density,
                    "out_units": sum(
                        s["units"]
                        for i, s in enumerate(sites)
                        if i not in (self.graph["input"], self.graph["output"])
                    ),
                    "dead_out_units": self.n_dead_units,
                }
            )
        return pd.DataFrame(rows)

    def sites_frame(self):
        """One row per site: ``site``, ``kind``, ``units``, ``no_path_from_input``,
        ``no_path_to_output``, ``dead`` (either)."""
        import pandas as pd

        rows = []
        for s, f, t in zip(self.graph["sites"], self.from_input, self.to_output, strict=True):
            rows.append(
                {
                    "site": s["name"],
                    "kind": s["kind"],
                    "units": s["units"],
                    "no_path_from_input": int((~f).sum()),
                    "no_path_to_output": int((~t).sum()),
                    "dead": int((~(f & t)).sum()),
                }
            )
        return pd.DataFrame(rows)


def _channel_adjacency(mask: torch.Tensor, groups: int, n_in: int) -> torch.Tensor:
    """``[out, in]`` bool: output unit o is joined to input unit c by a kept entry."""
    a = mask.reshape(mask.shape[0], mask.shape[1], -1).any(dim=2) if mask.ndim > 2 else mask
    if groups == 1:
        return a
    out, ig = a.shape
    full = torch.zeros(out, groups, ig, dtype=torch.bool, device=a.device)
    o = torch.arange(out, device=a.device)
    full[o, o // (out // groups)] = a
    return full.reshape(out, n_in)


def _layer_masks(maskset, graph) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    from ...masks import MaskSet

    if not isinstance(maskset, MaskSet):
        raise MaskValidationError(f"analyze_paths expects a MaskSet, not {type(maskset).__name__}")
    shapes: dict[str, list[int]] = {}
    for e in graph["layers"]:
        shapes.setdefault(e["name"], list(e["shape"]))
    extra = [n for n in maskset if n not in shapes]
    if extra:
        raise MaskValidationError(
            f"the MaskSet's layer(s) {', '.join(map(repr, extra))} are not in the layer graph "
            f"(graph layers: {', '.join(shapes)})"
        )
    missing = [
        e["name"] for e in graph["layers"] if e.get("masked", True) and e["name"] not in maskset
    ]
    if missing:
        raise MaskValidationError(
            f"the layer graph's masked layer(s) {', '.join(map(repr, dict.fromkeys(missing)))} "
            "have no mask in the MaskSet"
        )
    device = maskset.device
    masks = {}
    for name, shape in shapes.items():
        if name in maskset:
            m = maskset[name]
            if list(m.shape) != shape:
                raise MaskValidationError(
                    f"layer {name!r}: mask shape {tuple(m.shape)} does not match the layer "
                    f"graph's weight shape {tuple(shape)}"
                )
            masks[name] = m
        else:
            masks[name] = torch.ones(shape, dtype=torch.bool, device=device)
    masked = tuple(n for n in shapes if n in maskset)
    return masks, masked


def _reachability(graph, adj: list[torch.Tensor], device):
    """Forward (from input) and backward (to output) unit reachability per site."""
    sites, layers, links = graph["sites"], graph["layers"], graph["links"]
    n = len(sites)
    units = [s["units"] for s in sites]
    into: list[list] = [[] for _ in range(n)]
    for i, e in enumerate(layers):
        into[e["dst"]].append(("layer", i, e))
    for k in links:
        into[k["dst"]].append(("link", None, k))
    fwd = [torch.zeros(u, dtype=torch.bool, device=device) for u in units]
    fwd[graph["input"]][:] = True
    for s in range(n):  # sites are in topological order: every source precedes its sink
        for typ, i, e in into[s]:
            src = fwd[e["src"]]
            if typ == "layer":
                fwd[s] |= (adj[i] & src).any(dim=1)
            else:
                m = units[e["src"]] * e["repeat"]
                seg = fwd[s][e["offset"] : e["offset"] + m]
                seg |= src.repeat_interleave(e["repeat"])
    bwd = [torch.zeros(u, dtype=torch.bool, device=device) for u in units]
    bwd[graph["output"]][:] = True
    for s in range(n - 1, -1, -1):  # bwd[s] is final: all its consumers come later
        t = bwd[s]
        for typ, i, e in into[s]:
            if typ == "layer":
                bwd[e["src"]] |= (adj[i] & t[:, None]).any(dim=0)
            else:
                m = units[e["src"]] * e["repeat"]
                seg = t[e["offset"] : e["offset"] + m]
                bwd[e["src"]] |= seg.reshape(units[e["src"]], e["repeat"]).any(dim=1)
    return fwd, bwd


def analyze_paths(maskset, graph: dict) -> PathAnalysis:
    """Dead units and ineffective weights of a masked network.

    A unit is *dead* if no path of kept weights leads to it from an input unit or from it to an
    output unit; a kept weight is *ineffective* if it lies on no input→output path, i.e. its
    source unit is unreachable from the input or its target unit cannot reach the output
    ([ZP24]_; module docstring for the unit graph). Removing ineffective weights does not change
    the function computed, up to constants that biases can absorb. The *effective density* is
    ``effective kept weights / total weights`` of the masked layers.

    Forward reachability is one boolean matrix–vector product per layer, ``F_t |= A·F_s`` with
    ``A`` the layer's channel adjacency (mask ``any`` over the kernel), in topological order;
    backward reachability ``G_s |= Aᵀ·G_t`` in reverse order; links (residual sums, concatenation,
    flatten) map unit vectors by index. Cost ``O(Σ_layers numel)``.

    Parameters
    ----------
    maskset : MaskSet
        Masks of the graph's masked layers (names and shapes must match the graph); weights are
        not used.
    graph : dict
        From :func:`layer_graph` (or ``run.json["graph"]``).

    Returns
    -------
    PathAnalysis

    Raises
    ------
    MaskValidationError
        When the graph is invalid, or the MaskSet has a layer the graph lacks, lacks a masked
        layer of the graph, or has a mask of another shape.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from masktopo import MaskSet
    >>> g = layer_graph(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)), (2,))
    >>> ms = MaskSet({"0.weight": torch.tensor([[True, True], [False, False]]),
    ...               "2.weight": torch.tensor([[True, True]])})
    >>> r = analyze_paths(ms, g)
    >>> r.n_kept, r.n_effective, r.dead_units()["0"]
    (4, 3, 1)
    """
    graph = check_graph(graph)
    masks, masked = _layer_masks(maskset, graph)
    sites = graph["sites"]
    device = maskset.device
    adj = [
        _channel_adjacency(masks[e["name"]], e.get("groups", 1), sites[e["src"]]["units"])
        for e in graph["layers"]
    ]
    fwd, bwd = _reachability(graph, adj, device)
    effective = {n: torch.zeros_like(m) for n, m in masks.items()}
    for e in graph["layers"]:
        m = masks[e["name"]]
        out, ig = m.shape[0], m.shape[1]
        g = e.get("groups", 1)
        # source-unit reachability for every (o, local input c): channel (o // (out/g))·ig + c
        src = fwd[e["src"]].reshape(g, ig)[torch.arange(out, device=device) // (out // g)]
        ok = bwd[e["dst"]][:, None] & src
        effective[e["name"]] |= m & ok.reshape(*ok.shape, *([1] * (m.ndim - 2)))
    return PathAnalysis(graph, effective, masks, fwd, bwd, masked)
