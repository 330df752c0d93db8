r"""Whole-network connectivity: dead units and weights on no input→output path.

A layer's mask describes one bipartite graph; a network is those graphs glued together at
*sites*. A site is a tensor of activations whose *units* are its channels (convolutions) or
features (linear layers). Maskable layers (Linear/Conv) are the edges between sites; everything
else that touches activations is read from a torch.fx trace of the model:

* BatchNorm, ReLU and other elementwise activations, dropout, max/average/adaptive pooling and
  spatial means keep units as they are (the tensor stays at the same site);
* a residual ``a + b`` (including an identity shortcut) makes a new site fed unit-by-unit by every
  summand: a unit of the sum is reachable if it is reachable in any summand;
* ``torch.cat`` along the unit dimension makes a new site fed by each part at its offset;
* a flatten (``flatten``, ``view``, ``reshape``) from ``(C, *S)`` to ``C·∏S`` features makes a
  new site where channel ``c`` feeds the ``∏S`` consecutive features ``c·∏S … (c+1)·∏S − 1``.

:func:`layer_graph` records this as a JSON-able dict (the trainer stores it in ``run.json``),
:func:`analyze_paths` finds, on a MaskSet, the units with no path from the input or to the output
and the kept weights that lie on no input→output path ("ineffective" weights [ZP24]_), and
:func:`network_graph` exports the whole network as one layered graph.

Reachability is computed at the level of units: a conv kernel entry ``M[o, c, u, v]`` is an edge
from channel ``c`` to channel ``o`` (the channel graph of ``M.any`` over the kernel dimensions);
which pixels a kernel entry touches (padding, stride) is ignored. Let ``F_s`` be the units of site
``s`` reachable from the input units and ``G_s`` those from which an output unit is reachable.
Then a kept entry of a layer from site ``s`` to site ``t`` joining unit ``c`` to unit ``o`` is
*effective* iff ``c ∈ F_s`` and ``o ∈ G_t``, and a unit is *alive* iff it is in both.

Biases (of the layers and of BatchNorm) are not paths: a unit with a bias but no path from the
input outputs a constant, which carries no information about the input and could be folded into
the next layer's biases; it counts as dead, and the weights leaving it as ineffective. Likewise
the analysis is purely structural: a ReLU unit that is always zero on the data is not dead here.

References
----------
.. [ZP24] X. Zhang, V. Papyan, "Sparsest Models Elude Pruning: An Exposé of Pruning's Current
   Capabilities", ICML 2024 (weights on no input→output path do not affect the function).
"""

from .export import BACKENDS, MAX_EDGES, MAX_NODES, network_graph
from .reachability import PathAnalysis, analyze_paths
from .schema import GRAPH_FORMAT, GRAPH_FORMAT_VERSION, check_graph
from .trace import layer_graph

__all__ = [
    "BACKENDS",
    "GRAPH_FORMAT",
    "GRAPH_FORMAT_VERSION",
    "MAX_EDGES",
    "MAX_NODES",
    "PathAnalysis",
    "analyze_paths",
    "check_graph",
    "layer_graph",
    "network_graph",
]
