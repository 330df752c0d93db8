"""The registry of layer metrics: one :class:`Metric` per name, each with its formula.

A metric is a function of a :class:`MetricContext` registered with :func:`register_metric` (or
the :func:`metric` decorator) together with what it depends on: other metrics, and *quantities*
(:data:`QUANTITIES`, what planning computes for a layer: singular values of the binary, weighted
and normalized biadjacency, the IMDB degree groups, the connected components). Everything else is
derived from the registry: the order of computation (dependencies first), the spectral jobs queued
for a layer (the quantities the selected metrics need, transitively), :func:`metric_names`,
:data:`INT_METRICS`, the network aggregation rule and the table of docs/metrics.md
(:func:`metric_table_markdown`).

The built-in metrics are defined in :mod:`masktopo.analysis.metric_defs`; the analysis pipeline
(planning, solving, finishing) is :mod:`masktopo.analysis.metrics`, which re-exports this API.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import MaskValidationError, UnknownNameError

NaN = math.nan


@dataclass(frozen=True)
class Metric:
    """A registered layer metric.

    Attributes
    ----------
    name : str
        Output name (a DataFrame column, a ``--metrics`` entry).
    group : str
        Family the metric belongs to (``--list-metrics``, docs table).
    weighted : bool
        Needs the weights ``|W ⊙ M|``; left out when none are given.
    description : str
        One line with the formula (``--list-metrics``).
    depends : tuple of str
        Metrics and quantities (:data:`QUANTITIES`) the formula reads.
    integer : bool
        An integer count: summed by :func:`~masktopo.analysis.metrics.aggregate`, an ``Int64``
        column in :func:`~masktopo.analysis.metrics.analyze`.
    compute : callable
        ``compute(ctx: MetricContext) -> value``: the finishing formula of one layer.
    defined : str
        When the value is defined (docs table); NaN otherwise, with a reason.
    note : str
        Remark appended to the definition in the docs table (citation, reading).
    reduce : callable or None
        ``reduce(df, column, invalid) -> value``: network value from the per-layer table; None:
        the sum for integer counts, else the mean (:func:`~masktopo.analysis.metrics.aggregate`).
    """

    name: str
    group: str
    weighted: bool
    description: str
    depends: tuple[str, ...] = ()
    integer: bool = False
    compute: Callable[[MetricContext], Any] | None = field(default=None, repr=False, compare=False)
    defined: str = "always"
    note: str = ""
    reduce: Callable[..., Any] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Quantity:
    """What planning computes for a layer, that metrics can depend on."""

    name: str
    weighted: bool
    description: str


#: Quantities a metric may depend on (values: :meth:`MetricContext.quantity`).
QUANTITIES: dict[str, Quantity] = {
    q.name: q
    for q in (
        Quantity("components", False, "connected components among active nodes (int; 0 if empty)"),
        Quantity("sv_binary", False, "σ1, σ2 of the binary B (array of 2; None if empty)"),
        Quantity("sv_weighted", True, "σ1, σ2 of |W ⊙ M| (array of 2; None if empty)"),
        Quantity(
            "sv_normalized",
            False,
            "σ1, σ2 of D_out^-½ B D_in^-½ (array of 2; None unless 2 active nodes per side)",
        ),
        Quantity("imdb_groups", False, "IMDB degree groups, σ1, σ2 of each (list of ImdbGroup)"),
        Quantity("imdb_weighted", True, "the same groups, σ1, σ2 of each on |W ⊙ M|"),
    )
}


class LayerCounts(NamedTuple):
    """Sizes of one layer, computed by planning for every layer (:attr:`MetricContext.layer`)."""

    n_out: int
    n_in: int
    numel: int
    n_edges: int
    n_out_active: int
    n_in_active: int


class ImdbGroup(NamedTuple):
    """One IMDB degree group ``G_d = B[:, S_d]`` (inputs of fan-out ``d``), isolated outputs
    dropped: ``n_inputs = |S_d|``, ``n_outputs = |R_d|``, mean degrees ``d_in = d`` (inputs) and
    ``d_out = d·|S_d|/|R_d|`` (outputs), and ``sv`` its top two singular values."""

    degree: int
    n_inputs: int
    n_outputs: int
    d_in: float
    d_out: float
    sv: Any


class MetricContext:
    """What a metric's formula sees of one layer.

    Attributes
    ----------
    layer : LayerCounts
        The layer's sizes (always available).
    options : masktopo.analysis.metrics.Options
        Conv reading, gate and variants of the analysis.
    """

    __slots__ = ("_metric", "_quantities", "_values", "layer", "options", "reasons")

    def __init__(self, layer: LayerCounts, options, quantities: dict, reasons: list[str]):
        self.layer = layer
        self.options = options
        self._quantities = quantities
        self._values: dict[str, Any] = {}
        self._metric: Metric | None = None
        self.reasons = reasons

    def __getitem__(self, name: str) -> Any:
        """The value of the metric ``name`` on this layer (a declared dependency)."""
        if self._metric is not None and name not in self._metric.depends:
            raise KeyError(f"metric {self._metric.name!r} reads {name!r} but does not depend on it")
        return self._values[name]

    def quantity(self, name: str) -> Any:
        """The quantity ``name`` (:data:`QUANTITIES`, a declared dependency) of this layer."""
        if self._metric is not None and name not in self._metric.depends:
            raise KeyError(f"metric {self._metric.name!r} reads {name!r} but does not depend on it")
        return self._quantities[name]

    def why(self, text: str) -> None:
        """Record why a value is NaN (each text once, in order, joined into ``reason``)."""
        if text not in self.reasons:
            self.reasons.append(text)

    def has_edges(self) -> bool:
        """Whether the layer has edges; if not, records ``"layer has no edges"``."""
        if self.layer.n_edges:
            return True
        self.why("layer has no edges")
        return False

    def two_per_side(self) -> bool:
        """Whether both sides have at least 2 active nodes (σ2 is defined); records why not."""
        if not self.has_edges():
            return False
        n_o, n_i = self.layer.n_out_active, self.layer.n_in_active
        if min(n_o, n_i) >= 2:
            return True
        self.why(f"mu_hat undefined: {n_o} active output(s), {n_i} active input(s) (need 2 each)")
        return False


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------

#: Registered metrics by name, in table order (built-ins first, then registration order).
METRICS: dict[str, Metric] = {}
_BUILTIN: set[str] = set()
_RANK: dict[str, int] = {}  # position in the order of computation (dependencies first)
#: Names that cannot be metrics: the other columns of analysis tables, and the quantities.
_RESERVED = {"layer", "kind", "shape", "reason", "file", "event", "n_layers"}


class _Names(Sequence):
    """A live, read-only view of the names of the registered metrics that satisfy a test."""

    def __init__(self, test: Callable[[Metric], bool]):
        self._test = test

    def _names(self) -> tuple[str, ...]:
        return tuple(n for n, m in METRICS.items() if self._test(m))

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name) -> bool:
        m = METRICS.get(name) if isinstance(name, str) else None
        return m is not None and self._test(m)

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._names())


#: Names of the integer (count) metrics, in table order; follows the registry.
INT_METRICS = _Names(lambda m: m.integer)


def _cycle(deps: dict[str, tuple[str, ...]], start: str) -> list[str] | None:
    """A dependency path from ``start`` back to itself, or None."""
    path, seen = [start], set()

    def walk(name: str) -> bool:
        for dep in deps.get(name, ()):
            if dep == start:
                path.append(dep)
                return True
            if dep in deps and dep not in seen:
                seen.add(dep)
                path.append(dep)
                if walk(dep):
                    return True
                path.pop()
        return False

    return path if walk(start) else None


def _rerank() -> None:
    """Order of computation: depth first over the registry, dependencies before dependents,
    ties in table order (for the built-ins, the table order itself)."""
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        done.add(name)
        for dep in METRICS[name].depends:
            if dep in METRICS and dep not in done:
                visit(dep)
        order.append(name)

    for name in METRICS:
        if name not in done:
            visit(name)
    _RANK.clear()
    _RANK.update((n, i) for i, n in enumerate(order))


def _summary(compute) -> str:
    doc = inspect.getdoc(compute) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ").strip()


def register_metric(
    name: str,
    compute: Callable[[MetricContext], Any],
    *,
    depends: Iterable[str] = (),
    description: str | None = None,
    group: str = "custom",
    weighted: bool = False,
    integer: bool = False,
    defined: str = "always",
    note: str = "",
    reduce: Callable[..., Any] | None = None,
    replace: bool = False,
) -> Metric:
    """Add a layer metric to the registry.

    It then appears in :func:`metric_names`, in the rows of
    :func:`~masktopo.analysis.metrics.layer_metrics` and
    :func:`~masktopo.analysis.metrics.analyze`, in
    :func:`~masktopo.analysis.metrics.aggregate` and in ``masktopo analyze --list-metrics``.

    Parameters
    ----------
    name : str
        Output name, an identifier not used by another metric or a quantity.
    compute : callable
        ``compute(ctx) -> value`` for one layer, with ``ctx`` a :class:`MetricContext`:
        ``ctx["mu_hat"]`` is a dependency's value, ``ctx.quantity("sv_binary")`` a quantity's,
        ``ctx.layer`` the layer's sizes, ``ctx.options`` the analysis options, ``ctx.why(text)``
        records why a value is NaN.
    depends : iterable of str
        Metrics and quantities (:data:`QUANTITIES`: ``components``, ``sv_binary``,
        ``sv_weighted``, ``sv_normalized``, ``imdb_groups``, ``imdb_weighted``) the formula reads;
        only these are computed for it.
    description : str, optional
        One line with the formula; default the first paragraph of ``compute``'s docstring.
    group : str
        Family shown by ``--list-metrics``.
    weighted : bool
        Needs weights; required when a dependency is weighted.
    integer : bool
        An integer count (summed over layers, ``Int64`` column).
    defined : str
        When the value is defined (docs table).
    note : str
        Remark for the docs table.
    reduce : callable, optional
        ``reduce(df, column, invalid) -> value``: network value; default the sum for counts,
        else the mean over layers.
    replace : bool
        Redefine a metric registered earlier with this function (never a built-in one).

    Returns
    -------
    Metric

    Raises
    ------
    MaskValidationError
        For a bad or taken name, an unknown dependency, a dependency cycle, a weighted dependency
        of an unweighted metric, or a missing description (one-line messages).

    Examples
    --------
    >>> def mu_ratio(ctx):
    ...     "mu_hat / mu0"
    ...     return ctx["mu_hat"] / ctx["mu0"]
    >>> register_metric("mu_ratio", mu_ratio, depends=("mu_hat", "mu0"))  # doctest: +SKIP
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise MaskValidationError(f"metric name {name!r} must be an identifier (letters, _, 0-9)")
    if name in _RESERVED or name in QUANTITIES:
        raise MaskValidationError(f"metric name {name!r} is reserved")
    if name in _BUILTIN:
        raise MaskValidationError(f"metric {name!r} is built in and cannot be redefined")
    if name in METRICS and not replace:
        raise MaskValidationError(
            f"metric {name!r} is already registered (replace=True redefines it)"
        )
    if not callable(compute):
        raise MaskValidationError(f"metric {name!r}: compute must be callable")
    if isinstance(depends, str):
        depends = (depends,)
    deps = tuple(dict.fromkeys(depends))
    for dep in deps:
        if dep not in METRICS and dep not in QUANTITIES and dep != name:
            raise MaskValidationError(
                f"metric {name!r} depends on unknown {dep!r} (neither a metric nor one of the "
                f"quantities {', '.join(QUANTITIES)})"
            )
    graph = {n: m.depends for n, m in METRICS.items()}
    graph[name] = deps
    loop = _cycle(graph, name)
    if loop is not None:
        raise MaskValidationError(f"metric dependencies form a cycle: {' -> '.join(loop)}")
    for dep in deps:
        dep_w = METRICS[dep].weighted if dep in METRICS else QUANTITIES[dep].weighted
        if dep_w and not weighted:
            raise MaskValidationError(
                f"metric {name!r} depends on weighted {dep!r}: register it with weighted=True"
            )
    if weighted:
        for other, m in METRICS.items():
            if name in m.depends and not m.weighted:
                raise MaskValidationError(
                    f"metric {name!r} cannot become weighted: unweighted {other!r} depends on it"
                )
    description = _summary(compute) if description is None else description
    if not description or "\n" in description:
        raise MaskValidationError(
            f"metric {name!r} needs a one-line description (or a docstring summary)"
        )
    m = Metric(name, str(group), bool(weighted), description, deps, bool(integer), compute,
               defined, note, reduce)  # fmt: skip
    METRICS[name] = m
    _rerank()
    return m


def metric(name: str | None = None, **spec) -> Callable:
    """Decorator form of :func:`register_metric`: ``@metric("name", depends=(...))`` above the
    formula (the name defaults to the function's); returns the function unchanged."""

    def register(compute):
        register_metric(compute.__name__ if name is None else name, compute, **spec)
        return compute

    return register


def unregister_metric(name: str) -> Metric:
    """Remove a metric registered with :func:`register_metric` and return it.

    Raises :class:`UnknownNameError` for a name that is not registered and
    :class:`MaskValidationError` for a built-in metric or one that another metric depends on.
    """
    if name not in METRICS:
        raise UnknownNameError("metric", name, METRICS)
    if name in _BUILTIN:
        raise MaskValidationError(f"metric {name!r} is built in and cannot be removed")
    users = [n for n, m in METRICS.items() if name in m.depends]
    if users:
        raise MaskValidationError(f"metric {name!r} cannot be removed: {users[0]!r} depends on it")
    m = METRICS.pop(name)
    _rerank()
    return m


def _seal_builtins() -> None:
    """Mark every metric registered so far as built in (called once the definitions are in)."""
    _BUILTIN.update(METRICS)


def metric_names(weighted: bool = True) -> list[str]:
    """Registered metric names in table order; without the weighted ones if ``weighted=False``."""
    return [n for n, m in METRICS.items() if weighted or not m.weighted]


@dataclass(frozen=True)
class Selection:
    """What computing some metrics takes: every metric they need, in order of computation, and
    the quantities that planning must provide."""

    metrics: tuple[Metric, ...]
    quantities: frozenset[str]


def select(names: Iterable[str]) -> Selection:
    """The :class:`Selection` of ``names`` (registered metrics) and of their dependencies."""
    todo = list(names)
    need: set[str] = set()
    quantities: set[str] = set()
    while todo:
        name = todo.pop()
        if name in need:
            continue
        need.add(name)
        for dep in METRICS[name].depends:
            if dep in METRICS:
                todo.append(dep)
            else:
                quantities.add(dep)
    ordered = tuple(METRICS[n] for n in sorted(need, key=_RANK.__getitem__))
    return Selection(ordered, frozenset(quantities))


def compute_metrics(selection: Selection, ctx: MetricContext) -> dict[str, Any]:
    """Every metric of ``selection`` on one layer, dependencies first."""
    values = ctx._values
    for m in selection.metrics:
        ctx._metric = m
        values[m.name] = m.compute(ctx)
    ctx._metric = None
    return values


def mean_over_layers(df, col: str, invalid: str) -> float:
    """The default network rule: mean of the column over layers where it is defined
    (``invalid="skip"``) or over all layers with undefined values counted as 0 (``"zero"``)."""
    vals = df[col].astype(float)
    if invalid == "zero":
        vals = vals.fillna(0.0)
    return float(vals.mean()) if vals.notna().any() else NaN


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def metric_table_markdown() -> str:
    """The metric table of docs/metrics.md, rendered from the registry (one row per metric, in
    table order): name, group, definition (description, then the note), when it is defined."""
    lines = ["| name | group | definition | defined when |", "|---|---|---|---|"]
    for name, m in METRICS.items():
        definition = m.description + (f"; {m.note}" if m.note else "")
        defined = m.defined
        if m.weighted:
            defined = "weights given" + ("" if defined == "always" else f"; {defined}")
        lines.append(f"| `{name}` | {m.group} | {_cell(definition)} | {_cell(defined)} |")
    return "\n".join(lines) + "\n"
