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

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from ..errors import MaskValidationError

__all__ = [
    "GRAPH_FORMAT",
    "PathAnalysis",
    "analyze_paths",
    "check_graph",
    "layer_graph",
    "network_graph",
]

GRAPH_FORMAT = "masktopo.layer_graph"
GRAPH_FORMAT_VERSION = 1

#: Default size limits of :func:`network_graph` (nodes, edges).
MAX_NODES = 50_000
MAX_EDGES = 500_000

_MASKABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

# Modules that keep units as they are (elementwise, per-channel normalisation, pooling).
_PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.modules.dropout._DropoutNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
)

# Elementwise functions and methods (same shape in and out).
_ELEMENTWISE_FUNCTIONS = {
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu,
    F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, F.softplus, F.sigmoid,
    F.tanh, torch.sigmoid, torch.tanh, torch.clamp, torch.clip,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
    F.batch_norm, F.instance_norm,
}  # fmt: skip
_ELEMENTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "tanh", "clamp", "clamp_", "clip", "contiguous", "clone",
    "float", "double", "half", "to", "type_as",
}  # fmt: skip
# Pooling: units kept, spatial size changes.
_POOL_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
}  # fmt: skip
# Reductions: units kept when only spatial dimensions (>= 2) are reduced.
_REDUCE_FUNCTIONS = {torch.mean, torch.amax, torch.sum}
_REDUCE_METHODS = {"mean", "amax", "sum"}
# Scaling by a constant (a number, or a tensor not computed from the input) keeps units.
_SCALE_FUNCTIONS = {operator.mul, operator.imul, operator.truediv, operator.itruediv, torch.mul}
_SCALE_METHODS = {"mul", "mul_", "div", "div_"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
_FLATTEN_FUNCTIONS = {torch.flatten, torch.reshape}
_FLATTEN_METHODS = {"flatten", "view", "reshape"}
_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}


# ------------------------------------------------------------------------------------------------
# Tracing
# ------------------------------------------------------------------------------------------------
class _Builder:
    """Sites, layer edges and links collected while walking the traced graph."""

    def __init__(self, masked: set[str] | None):
        self.sites: list[dict] = []
        self.layers: list[dict] = []
        self.links: list[dict] = []
        self.masked = masked
        self._names: dict[str, int] = {}

    def site(self, name: str, kind: str, shape) -> int:
        n = self._names.get(name, 0) + 1
        self._names[name] = n
        label = name if n == 1 else f"{name}#{n}"
        self.sites.append(
            {"name": label, "kind": kind, "units": int(shape[0]), "shape": [int(s) for s in shape]}
        )
        return len(self.sites) - 1

    def link(self, src: int, dst: int, op: str, offset: int = 0, repeat: int = 1) -> None:
        self.links.append(
            {"src": src, "dst": dst, "op": op, "offset": int(offset), "repeat": int(repeat)}
        )


def _op_name(node) -> str:
    t = node.target
    if node.op == "call_module":
        return f"module {t!r}"
    if node.op == "call_method":
        return f"method .{t}()"
    return f"function {getattr(t, '__module__', '') or ''}.{getattr(t, '__name__', t)}".replace(
        "_operator.", "operator."
    )


def _meta_state(module: nn.Module, device: str) -> dict[str, torch.Tensor]:
    """The module's own parameters and buffers as fresh tensors on ``device`` (meta: no data)."""
    state = {}
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        if device == "meta":
            state[name] = torch.empty_like(t, device="meta")
        else:
            state[name] = t.detach().clone()
    return state


def _run_node(gm, node, env, device: str):
    from torch.func import functional_call
    from torch.fx.node import map_arg

    args = map_arg(node.args, lambda n: env[n.name])
    kwargs = map_arg(node.kwargs, lambda n: env[n.name])
    if node.op == "get_attr":
        obj = gm
        for part in node.target.split("."):
            obj = getattr(obj, part)
        if isinstance(obj, torch.Tensor):
            return torch.empty_like(obj, device="meta") if device == "meta" else obj.detach()
        return obj
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        self_obj, *rest = args
        return getattr(self_obj, node.target)(*rest, **kwargs)
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return functional_call(module, _meta_state(module, device), tuple(args), kwargs)
    raise AssertionError(node.op)  # pragma: no cover


def _propagate(gm, in_shape: tuple[int, ...], device: str) -> dict[str, Any]:
    """Values of every node of ``gm`` on a zero input of batch 2 (BatchNorm needs 2 samples)."""
    env: dict[str, Any] = {}
    with torch.no_grad():
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                env[node.name] = torch.zeros((2, *in_shape), device=device)
            elif node.op == "output":
                continue
            else:
                env[node.name] = _run_node(gm, node, env, device)
    return env


def _trace(model: nn.Module):
    from torch.fx import symbolic_trace

    try:
        return symbolic_trace(model)
    except Exception as e:  # fx raises many types (TraceError, TypeError, NotImplementedError)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MaskValidationError(
            f"layer_graph: torch.fx cannot trace {type(model).__name__} ({msg})"
        ) from None


def _dim(d, ndim: int) -> int:
    return d + ndim if d < 0 else d


def layer_graph(
    model: nn.Module,
    in_shape: Iterable[int],
    *,
    layers: Iterable[str] | None = None,
) -> dict:
    """Trace a model and describe how the units of its Linear/Conv layers connect.

    The model is traced with :func:`torch.fx.symbolic_trace` and its shapes propagated on a zero
    input of shape ``(2, *in_shape)`` on the ``meta`` device (no memory, no compute; the model's
    own tensors and BatchNorm statistics are not touched). If an operation has no meta kernel,
    the propagation is redone on the CPU with copies of the model's tensors.

    Parameters
    ----------
    model : torch.nn.Module
        The network. Its ``forward`` must be traceable by torch.fx (no control flow on values).
    in_shape : sequence of int
        One sample's shape, ``(C, H, W)`` or ``(D,)``.
    layers : iterable of str, optional
        The masked parameter names (default: every Linear/Conv weight used in ``forward``,
        which on the zoo's models are the keys of :func:`masktopo.zoo.models.
        maskable_parameters`). Linear/Conv layers not listed stay in the graph as dense edges
        (``"masked": false``).

    Returns
    -------
    dict
        JSON-able, with keys

        ``format``, ``format_version``
            ``"masktopo.layer_graph"``, 1.
        ``in_shape``
            The input shape.
        ``sites``
            In topological order; each ``{"name", "kind", "units", "shape"}`` where ``kind`` is
            ``input``, ``layer`` (the output of a Linear/Conv), ``add``, ``cat`` or ``flatten``,
            ``units`` the channel or feature count and ``shape`` the per-sample tensor shape.
        ``layers``
            Linear/Conv edges ``{"name", "module", "kind", "shape", "groups", "bias", "masked",
            "src", "dst"}``: ``name`` is the weight's parameter name, ``src``/``dst`` site
            indices (``src < dst``). A module called twice gives two edges with the same name.
        ``links``
            Parameter-free edges ``{"src", "dst", "op", "offset", "repeat"}``: unit ``i`` of
            ``src`` feeds units ``offset + i·repeat … offset + (i+1)·repeat − 1`` of ``dst``;
            ``op`` is ``add`` (a summand), ``cat`` or ``flatten``.
        ``input``, ``output``
            The site indices of the input and of the output.

    Raises
    ------
    MaskValidationError
        When the model cannot be traced, an operation cannot be read as unit connectivity (the
        message names it), the model has more than one input or output, or ``layers`` names a
        parameter that is not a Linear/Conv weight of the model.

    Examples
    --------
    >>> from torch import nn
    >>> g = layer_graph(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), (4,))
    >>> [(e["name"], e["src"], e["dst"]) for e in g["layers"]]
    [('0.weight', 0, 1), ('2.weight', 1, 2)]
    >>> [s["units"] for s in g["sites"]], g["output"]
    ([4, 3, 2], 2)
    """
    if not isinstance(model, nn.Module):
        raise MaskValidationError(f"layer_graph expects a torch.nn.Module, not {type(model)}")
    try:
        in_shape = tuple(int(s) for s in in_shape)
    except (TypeError, ValueError):
        raise MaskValidationError(
            f"layer_graph: in_shape must be sizes, got {in_shape!r}"
        ) from None
    if not in_shape or any(s < 1 for s in in_shape):
        raise MaskValidationError(f"layer_graph: in_shape must have positive sizes, got {in_shape}")
    weight_names = {id(p): n for n, p in model.named_parameters()}
    masked = None if layers is None else ({layers} if isinstance(layers, str) else set(layers))
    gm = _trace(model)
    try:
        env = _propagate(gm, in_shape, "meta")
    except Exception:
        try:
            env = _propagate(gm, in_shape, "cpu")
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MaskValidationError(
                f"layer_graph: {type(model).__name__} does not run on a zero input of shape "
                f"{in_shape} ({msg})"
            ) from None
    b = _Builder(masked)
    site_of: dict[str, int | None] = {}  # node -> site; None: a tensor not computed from the input
    n_inputs = 0
    out_site = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            n_inputs += 1
            if n_inputs > 1:
                raise MaskValidationError(
                    f"layer_graph: {type(model).__name__}.forward takes more than one input "
                    f"({node.name!r}); only single-input models are supported"
                )
            site_of[node.name] = b.site("input", "input", in_shape)
            continue
        if node.op == "output":
            out_site = _output_site(node, site_of)
            continue
        value = env[node.name]
        if node.op == "get_attr" or not isinstance(value, torch.Tensor):
            site_of[node.name] = None
            continue
        if all(site_of.get(a.name) is None for a in node.all_input_nodes):
            site_of[node.name] = None  # computed from constants only
            continue
        site_of[node.name] = _interpret(node, gm, env, site_of, b, weight_names)
    found = {e["name"] for e in b.layers}
    unknown = sorted(set() if masked is None else masked - found)
    if unknown:
        raise MaskValidationError(
            f"layer_graph: {', '.join(map(repr, unknown))} "
            f"{'is not a Linear/Conv weight' if len(unknown) == 1 else 'are not Linear/Conv weights'}"
            f" used in {type(model).__name__}.forward; layers found: {', '.join(sorted(found))}"
        )
    if not b.layers:
        raise MaskValidationError(f"layer_graph: {type(model).__name__} has no Linear/Conv layer")
    graph = {
        "format": GRAPH_FORMAT,
        "format_version": GRAPH_FORMAT_VERSION,
        "in_shape": list(in_shape),
        "sites": b.sites,
        "layers": b.layers,
        "links": b.links,
        "input": 0,
        "output": out_site,
    }
    return check_graph(graph)


def _output_site(node, site_of) -> int:
    arg = node.args[0]
    if isinstance(arg, (tuple, list)):
        if len(arg) != 1:
            raise MaskValidationError(
                "layer_graph: the model returns several tensors; only single-output models are "
                "supported"
            )
        arg = arg[0]
    site = site_of.get(getattr(arg, "name", None))
    if site is None:
        raise MaskValidationError("layer_graph: the model's output is not computed from its input")
    return site


def _interpret(node, gm, env, site_of, b: _Builder, weight_names) -> int:
    """The site of ``node``'s value, adding sites, layer edges and links as needed."""
    out = env[node.name]
    op = node.op
    target = node.target
    what = _op_name(node)
    # activation arguments (computed from the input), duplicates included: x + x has two
    acts = [a for a in _flat_args(node) if isinstance(a, Node) and site_of.get(a.name) is not None]
    x = env[acts[0].name]
    src = site_of[acts[0].name]

    def fail(why: str):
        raise MaskValidationError(
            f"layer_graph: cannot interpret {what} (node {node.name!r}): {why}"
        )

    def same_units() -> int:
        if len(acts) != 1:
            fail("it combines several activation tensors")
        if out.ndim < 2 or x.ndim < 2 or tuple(out.shape[:2]) != tuple(x.shape[:2]):
            fail(f"it maps shape {tuple(x.shape)} to {tuple(out.shape)}, not unit by unit")
        return src

    def is_fn(names) -> bool:
        return op == "call_function" and target in names

    def is_method(names) -> bool:
        return op == "call_method" and target in names

    if op == "call_module":
        module = gm.get_submodule(target)
        if isinstance(module, _MASKABLE):
            return _layer_edge(node, module, x, out, src, b, weight_names, fail)
        if isinstance(module, nn.Flatten):
            return _flatten(node, x, out, src, b, fail)
        if isinstance(module, _PASS_MODULES):
            return same_units()
        fail(f"{type(module).__name__} is not a Linear/Conv, pass-through, merge or flatten op")
    if is_fn(_ADD_FUNCTIONS) or is_method(_ADD_METHODS):
        if len(acts) == 1:  # x + constant (a number, or a tensor not computed from the input)
            if tuple(out.shape) != tuple(x.shape):
                fail(f"adding a constant changes the shape {tuple(x.shape)} → {tuple(out.shape)}")
            return src
        return _add(node, acts, site_of, env, out, b, fail)
    if is_fn(_CAT_FUNCTIONS):
        return _cat(node, site_of, env, out, b, fail)
    if is_fn(_FLATTEN_FUNCTIONS) or is_method(_FLATTEN_METHODS):
        if len(acts) != 1:
            fail("it combines several activation tensors")
        return _flatten(node, x, out, src, b, fail)
    if is_fn(_REDUCE_FUNCTIONS) or is_method(_REDUCE_METHODS):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = [dims] if isinstance(dims, int) else dims
        if (
            not isinstance(dims, (list, tuple))
            or not dims
            or any(not isinstance(d, int) or _dim(d, x.ndim) < 2 for d in dims)
        ):
            fail(f"only a reduction over spatial dimensions (>= 2) keeps units, got dim={dims!r}")
        return same_units()
    if is_fn(_ELEMENTWISE_FUNCTIONS) or is_method(_ELEMENTWISE_METHODS):
        if tuple(out.shape) != tuple(x.shape):
            fail(f"an elementwise op maps shape {tuple(x.shape)} to {tuple(out.shape)}")
        return same_units()
    if is_fn(_POOL_FUNCTIONS):
        if out.ndim != x.ndim:
            fail(f"pooling maps shape {tuple(x.shape)} to {tuple(out.shape)}")
        return same_units()
    if is_fn(_SCALE_FUNCTIONS) or is_method(_SCALE_METHODS):
        if len(acts) != 1:
            fail("it multiplies activation tensors together")
        if tuple(out.shape) != tuple(x.shape):
            fail(f"scaling by a constant broadcasts {tuple(x.shape)} to {tuple(out.shape)}")
        return same_units()
    fail("unknown to masktopo (supported: Linear/Conv, BatchNorm, activations, dropout, pooling, "
         "residual add, torch.cat, flatten/view/reshape)")  # fmt: skip


def _layer_edge(node, module, x, out, src, b: _Builder, weight_names, fail) -> int:
    kind = "linear" if isinstance(module, nn.Linear) else "conv"
    if kind == "linear" and x.ndim != 2:
        fail(
            f"a Linear layer applied to a {x.ndim}-D tensor {tuple(x.shape)} (units are ambiguous)"
        )
    if kind == "conv" and x.ndim != module.weight.ndim:
        fail(f"a convolution applied to an unbatched or odd-shaped input {tuple(x.shape)}")
    name = weight_names.get(id(module.weight), f"{node.target}.weight")
    dst = b.site(node.target, "layer", tuple(out.shape[1:]))
    b.layers.append(
        {
            "name": name,
            "module": node.target,
            "kind": kind,
            "shape": [int(s) for s in module.weight.shape],
            "groups": int(getattr(module, "groups", 1)),
            "bias": module.bias is not None,
            "masked": b.masked is None or name in b.masked,
            "src": src,
            "dst": dst,
        }
    )
    return dst


def _flatten(node, x, out, src, b: _Builder, fail) -> int:
    if tuple(out.shape) == tuple(x.shape):
        return src
    if x.ndim >= 3 and out.ndim >= 3 and tuple(out.shape[:2]) == tuple(x.shape[:2]):
        return src  # only the spatial dimensions are reshaped: units unchanged
    if x.ndim < 2 or out.ndim != 2 or out.shape[0] != x.shape[0] or out.shape[1] != x[0].numel():
        fail(f"only a flatten from (N, C, ...) to (N, C·...) is supported, got {tuple(x.shape)} → "
             f"{tuple(out.shape)}")  # fmt: skip
    repeat = math.prod(x.shape[2:])
    if repeat == 1:
        return src
    dst = b.site(node.name, "flatten", tuple(out.shape[1:]))
    b.link(src, dst, "flatten", 0, repeat)
    return dst


def _add(node, acts, site_of, env, out, b: _Builder, fail) -> int:
    for a in acts:
        if tuple(env[a.name].shape) != tuple(out.shape):
            fail(f"summand {a.name!r} of shape {tuple(env[a.name].shape)} is broadcast to "
                 f"{tuple(out.shape)}")  # fmt: skip
    dst = b.site(node.name, "add", tuple(out.shape[1:]))
    for a in acts:
        b.link(site_of[a.name], dst, "add")
    return dst


def _flat_args(node) -> list:
    out = []

    def walk(v):
        if isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        else:
            out.append(v)

    walk(node.args)
    walk(node.kwargs)
    return out


def _cat(node, site_of, env, out, b: _Builder, fail) -> int:
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if not isinstance(tensors, (list, tuple)) or not isinstance(dim, int):
        fail("only torch.cat of a list of tensors along a constant dimension is supported")
    if _dim(dim, out.ndim) != 1:
        fail(f"concatenation along dimension {dim}, not the unit dimension 1")
    dst = b.site(node.name, "cat", tuple(out.shape[1:]))
    offset = 0
    for t in tensors:
        v = env[t.name]
        s = site_of.get(t.name)
        if s is not None:
            b.link(s, dst, "cat", offset)
        offset += int(v.shape[1])
    return dst


# ------------------------------------------------------------------------------------------------
# Graph dict validation
# ------------------------------------------------------------------------------------------------
def _bad(why: str):
    raise MaskValidationError(f"invalid layer graph: {why}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


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
        if not isinstance(s, Mapping) or not _is_int(s.get("units")) or s["units"] < 1:
            _bad(f"site {i} has no positive integer 'units'")
        units.append(s["units"])
    n = len(sites)
    for key in ("input", "output"):
        if not _is_int(graph[key]) or not 0 <= graph[key] < n:
            _bad(f"{key!r} is not a site index in 0..{n - 1}")
    for i, e in enumerate(graph["layers"]):
        try:
            src, dst, shape, groups = e["src"], e["dst"], list(e["shape"]), e.get("groups", 1)
            name = e["name"]
        except (KeyError, TypeError):
            _bad(f"layer entry {i} lacks name/src/dst/shape")
        if not (_is_int(src) and _is_int(dst) and 0 <= src < dst < n):
            _bad(f"layer {name!r}: src {src!r} → dst {dst!r} is not a forward edge between sites")
        if len(shape) < 2 or not all(_is_int(x) and x > 0 for x in shape) or not _is_int(groups):
            _bad(f"layer {name!r}: bad shape {shape} or groups {groups!r}")
        if shape[0] != units[dst] or shape[1] * groups != units[src] or shape[0] % groups:
            _bad(f"layer {name!r}: weight shape {shape} (groups {groups}) does not connect "
                 f"{units[src]} to {units[dst]} units")  # fmt: skip
    for i, k in enumerate(graph["links"]):
        try:
            src, dst, off, rep = k["src"], k["dst"], k["offset"], k["repeat"]
        except (KeyError, TypeError):
            _bad(f"link {i} lacks src/dst/offset/repeat")
        if not (_is_int(src) and _is_int(dst) and 0 <= src < dst < n):
            _bad(f"link {i}: src {src!r} → dst {dst!r} is not a forward edge between sites")
        if not (_is_int(off) and _is_int(rep) and off >= 0 and rep >= 1):
            _bad(f"link {i}: bad offset {off!r} or repeat {rep!r}")
        if off + units[src] * rep > units[dst]:
            _bad(f"link {i}: {units[src]} units x {rep} at offset {off} overflow the "
                 f"{units[dst]} units of site {dst}")  # fmt: skip
    return dict(graph)


# ------------------------------------------------------------------------------------------------
# Path analysis
# ------------------------------------------------------------------------------------------------
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
        from ..masks import MaskSet

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
    from ..masks import MaskSet

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


# ------------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------------
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

    from ..errors import UnknownNameError

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
