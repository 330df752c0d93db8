"""A model traced into its layer graph (:func:`layer_graph`): sites, layer edges and links from a
torch.fx trace (the package docstring says how each operation is read)."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from ...errors import MaskValidationError
from .schema import GRAPH_FORMAT, GRAPH_FORMAT_VERSION, check_graph

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
