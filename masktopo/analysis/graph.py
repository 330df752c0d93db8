"""Layer masks as bipartite graphs.

A layer's mask ``M`` becomes a biadjacency matrix ``B`` with one row per output unit and one column
per input node, and the layer's bipartite graph has adjacency ``A = [[0, B], [Bᵀ, 0]]``, which is
never built here (see :mod:`masktopo.analysis.spectral`).

Convolutions are read in one of two ways ([I23]_, [N23]_; pags-spec §1):

``"unrolled"`` (default, what both papers' code does)
    ``B = M.reshape(C_out, C_in·k_h·k_w)``: every kernel entry is its own input node and a simple edge.
``"rolled"``
    ``B[o, c] = Σ_{u,v} M[o, c, u, v]``: channels are nodes and kernel entries are parallel edges, so
    ``B`` holds edge multiplicities (a multigraph). Weighted: ``Σ_{u,v} |W ⊙ M|[o, c, u, v]``.

Isolated nodes (all-zero rows and columns of ``B``) are dropped before any metric.

References
----------
.. [I23] D. N. Hoang, S. Liu, R. Marculescu, Z. Wang, "Revisiting Pruning at Initialization through
   the Lens of Ramanujan Graph", ICLR 2023.
.. [N23] D. N. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology is
   a secret weapon", NeurIPS 2023.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import MaskValidationError
from ..masks import check_layer_mask
from ..options import Options, check_value

if TYPE_CHECKING:  # pragma: no cover
    from ..masks import MaskSet


def check_conv_mode(conv: str) -> str:
    """Return ``conv`` if it is a known conv mode (checked by its one declaration,
    :class:`masktopo.options.Options`), else raise :class:`UnknownNameError`."""
    return check_value(Options, "conv", conv)


def _as_mask(mask: Any) -> torch.Tensor:
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and 2 <= mask.ndim <= 5:
        if mask.layout == torch.strided and mask.device.type != "meta" and all(mask.shape):
            return mask  # the common case, checked without a pass over the values
    return check_layer_mask("<mask>", mask)


def biadjacency(mask: torch.Tensor, conv: str = "unrolled") -> torch.Tensor:
    """Biadjacency matrix of a layer mask (rows = outputs, columns = inputs).

    Parameters
    ----------
    mask : torch.Tensor
        Bool (or 0/1) mask, ``[out, in]`` or ``[out, in, *kernel]``.
    conv : {"unrolled", "rolled"}
        How a convolution becomes a graph (module docstring). Ignored for 2-D masks.

    Returns
    -------
    torch.Tensor
        ``bool`` of shape ``(out, in·k_h·k_w)`` when unrolled (or linear); ``int32`` edge
        multiplicities of shape ``(out, in)`` when rolled. Same device as ``mask``.

    Examples
    --------
    >>> m = torch.zeros(2, 3, 2, 2, dtype=torch.bool); m[0, 1] = True
    >>> biadjacency(m).shape, biadjacency(m, "rolled")[0].tolist()
    (torch.Size([2, 12]), [0, 4, 0])
    """
    check_conv_mode(conv)
    mask = _as_mask(mask)
    if mask.ndim == 2:
        return mask
    if conv == "unrolled":
        return mask.reshape(mask.shape[0], -1)
    return mask.sum(dim=tuple(range(2, mask.ndim)), dtype=torch.int32)


def weighted_biadjacency(
    mask: torch.Tensor, weight: torch.Tensor, conv: str = "unrolled"
) -> torch.Tensor:
    """Weighted biadjacency ``|W ⊙ M|``, unrolled or rolled like :func:`biadjacency`, in float64.

    The absolute value keeps the matrix non-negative, so Perron–Frobenius applies ([N23]_ §3.2).
    """
    check_conv_mode(conv)
    from ..masks import check_weight

    mask = _as_mask(mask)
    weight = check_weight("<mask>", torch.as_tensor(weight), mask)
    w = (weight.to(mask.device, torch.float64) * mask).abs()
    if w.ndim == 2:
        return w
    if conv == "unrolled":
        return w.reshape(w.shape[0], -1)
    return w.sum(dim=tuple(range(2, w.ndim)))


@dataclass(frozen=True)
class StrippedGraph:
    """A biadjacency with its isolated nodes removed.

    Attributes
    ----------
    B : torch.Tensor
        float64 biadjacency restricted to active rows and columns (0/1 or multiplicities).
    Bw : torch.Tensor or None
        float64 weighted biadjacency on the same rows and columns, or None.
    rows, cols : torch.Tensor
        Bool vectors over the full biadjacency: which outputs / inputs are active (degree > 0).
    """

    B: torch.Tensor
    Bw: torch.Tensor | None
    rows: torch.Tensor
    cols: torch.Tensor

    @property
    def n_edges(self) -> int:
        """Edge count with multiplicity (= mask nnz)."""
        return int(self.B.sum().round())


def strip_isolated(B: torch.Tensor, Bw: torch.Tensor | None = None) -> StrippedGraph:
    """Drop all-zero rows and columns of ``B`` (and the same ones of ``Bw``); returns float64.

    Isolated nodes carry no edge, so removing them changes no nonzero singular value; it does change
    the node counts and average degrees the Ramanujan bound uses (pags-spec §1.4).
    """
    nz = B != 0
    rows, cols = nz.any(dim=1), nz.any(dim=0)
    Bs = B[rows][:, cols].to(torch.float64)
    Bws = None if Bw is None else Bw[rows][:, cols].to(torch.float64)
    return StrippedGraph(Bs, Bws, rows, cols)


# --------------------------------------------------------------------------------------------
# Export to graph libraries (exploration only; never used by the metrics)
# --------------------------------------------------------------------------------------------


def _layer_edges(mask, weight, conv, strip):
    B = biadjacency(mask, conv)
    Bw = None if weight is None else weighted_biadjacency(mask, weight, conv)
    n_out, n_in = B.shape
    B_np = B.cpu().numpy()
    out_idx, in_idx = np.nonzero(B_np)
    mult = B_np[out_idx, in_idx].astype(np.int64)
    w = None if Bw is None else Bw.cpu().numpy()[out_idx, in_idx]
    if strip:
        out_nodes = np.flatnonzero(B_np.any(axis=1))
        in_nodes = np.flatnonzero(B_np.any(axis=0))
    else:
        out_nodes, in_nodes = np.arange(n_out), np.arange(n_in)
    return out_nodes, in_nodes, out_idx, in_idx, mult, w, B.dtype != torch.bool


def _iter_layers(obj, weight, conv):
    from ..masks import MaskSet

    if isinstance(obj, MaskSet):
        ws = obj.weights if weight is None else weight
        if weight is False:
            ws = None
        for name in obj:
            yield name, obj[name], (None if ws is None else ws[name])
        return
    if isinstance(obj, Mapping):
        raise MaskValidationError("pass a MaskSet or a single mask tensor, not a plain mapping")
    yield None, obj, (weight if weight is not False else None)


def to_networkx(
    layer: torch.Tensor | MaskSet,
    weight: torch.Tensor | bool | None = None,
    *,
    conv: str = "unrolled",
    strip: bool = False,
):
    """Export a layer mask (or every layer of a MaskSet) as a networkx bipartite graph.

    Parameters
    ----------
    layer : torch.Tensor or MaskSet
        One mask, or a MaskSet (then a ``dict`` of layer name → graph is returned, using the
        MaskSet's weights unless ``weight=False``).
    weight : torch.Tensor, optional
        Weights of the layer; edges get ``weight = |w|`` (summed over the kernel when rolled).
    conv : {"unrolled", "rolled"}
        Conv reading; rolled edges carry ``multiplicity`` (number of kernel entries).
    strip : bool
        Drop isolated nodes (as the metrics do).

    Returns
    -------
    networkx.Graph or dict[str, networkx.Graph]
        Nodes ``("out", i)`` with ``bipartite=0`` and ``("in", j)`` with ``bipartite=1``
        (``j`` indexes the unrolled input, ``c·k_h·k_w + u·k_w + v``, or the channel when rolled).

    Notes
    -----
    For exploration in notebooks. Building the graph costs far more than every metric of
    :mod:`masktopo.analysis.metrics`; never use it in a loop over candidates.
    """
    import networkx as nx

    graphs = {}
    for name, mask, w in _iter_layers(layer, weight, conv):
        out_nodes, in_nodes, oi, ii, mult, wv, rolled = _layer_edges(mask, w, conv, strip)
        G = nx.Graph(name=name or "layer", conv=conv)
        G.add_nodes_from((("out", int(i)) for i in out_nodes), bipartite=0)
        G.add_nodes_from((("in", int(j)) for j in in_nodes), bipartite=1)
        attrs = []
        for k in range(len(oi)):
            a = {}
            if rolled:
                a["multiplicity"] = int(mult[k])
            if wv is not None:
                a["weight"] = float(wv[k])
            attrs.append((("out", int(oi[k])), ("in", int(ii[k])), a))
        G.add_edges_from(attrs)
        graphs[name] = G
    return graphs[None] if None in graphs else graphs


def to_igraph(
    layer: torch.Tensor | MaskSet,
    weight: torch.Tensor | bool | None = None,
    *,
    conv: str = "unrolled",
    strip: bool = False,
):
    """Export a layer mask (or every layer of a MaskSet) as a python-igraph bipartite graph.

    Same conventions as :func:`to_networkx`: vertex attribute ``type`` (False = output,
    True = input, igraph's bipartite convention), ``side`` ("out"/"in") and ``index``; edge
    attributes ``weight`` (when weights are given) and ``multiplicity`` (rolled).
    """
    import igraph as ig

    graphs = {}
    for name, mask, w in _iter_layers(layer, weight, conv):
        out_nodes, in_nodes, oi, ii, mult, wv, rolled = _layer_edges(mask, w, conv, strip)
        n_o = len(out_nodes)
        out_pos = np.full(int(out_nodes.max(initial=-1)) + 1, -1, dtype=np.int64)
        out_pos[out_nodes] = np.arange(n_o)
        in_pos = np.full(int(in_nodes.max(initial=-1)) + 1, -1, dtype=np.int64)
        in_pos[in_nodes] = np.arange(len(in_nodes)) + n_o
        edges = np.stack([out_pos[oi], in_pos[ii]], axis=1) if len(oi) else np.zeros((0, 2), int)
        G = ig.Graph(n=n_o + len(in_nodes), edges=edges.tolist(), directed=False)
        G["name"] = name or "layer"
        G["conv"] = conv
        G.vs["type"] = [False] * n_o + [True] * len(in_nodes)
        G.vs["side"] = ["out"] * n_o + ["in"] * len(in_nodes)
        G.vs["index"] = [int(i) for i in out_nodes] + [int(j) for j in in_nodes]
        if rolled:
            G.es["multiplicity"] = mult.tolist()
        if wv is not None:
            G.es["weight"] = wv.tolist()
        graphs[name] = G
    return graphs[None] if None in graphs else graphs
