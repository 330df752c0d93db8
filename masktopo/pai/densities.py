r"""Layer-density distributions: ERK, ER and uniform (RigL's algorithm), and exact layer counts.

A distribution maps layer shapes and a global density ``D`` to one density per layer. ERK and ER
give small layers more density than large ones, with one scale :math:`\varepsilon` for all layers
and dense-layer redistribution (Evci et al. 2020, *Rigging the Lottery*, ICML; the same code is in
ITOP, GraNet and rigl-torch). :func:`layer_counts` turns the densities into exact kept counts per
layer whose total is exactly ``round(D * N)``.

Shapes are in PyTorch orientation: ``[out, in]`` for a linear layer, ``[out, in, kh, kw]`` for a
convolution.

Examples
--------
>>> d = erk_densities({"a": (4, 4), "b": (100, 100)}, 0.5)
>>> d["a"], round(d["b"], 6)
(1.0, 0.4992)
>>> layer_counts({"a": (4, 4), "b": (100, 100)}, d)
{'a': 16, 'b': 4992}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from ..errors import MaskValidationError, UnknownNameError

__all__ = [
    "DISTRIBUTIONS",
    "apportion",
    "check_density",
    "check_shapes",
    "er_densities",
    "erk_densities",
    "keep_count",
    "layer_counts",
    "layer_densities",
    "register_distribution",
    "uniform_densities",
]

Shapes = Mapping[str, tuple[int, ...]]

#: Layer-density distributions by name: ``fn(shapes, density) -> {layer: density}``
#: (:func:`register_distribution`; :func:`layer_densities` and every ``distribution`` option).
DISTRIBUTIONS: dict[str, Callable[[Shapes, float], dict[str, float]]] = {}


def register_distribution(name: str):
    """Decorator: register ``fn(shapes, density) -> {layer: density}`` as distribution ``name``
    (then ``distribution = "name"`` works in PaI, PAGS and the trainer)."""

    def register(fn):
        DISTRIBUTIONS[name] = fn
        return fn

    return register


def check_density(density: float) -> float:
    """Return ``density`` as a float, or raise :class:`MaskValidationError` outside (0, 1]."""
    try:
        density = float(density)
    except (TypeError, ValueError):
        raise MaskValidationError(f"density must be a number in (0, 1], got {density!r}") from None
    if not 0.0 < density <= 1.0:  # also rejects NaN
        raise MaskValidationError(f"density must be in (0, 1], got {density!r}")
    return density


def check_shapes(shapes: Shapes) -> dict[str, tuple[int, ...]]:
    """Validate layer shapes (non-empty, positive dimensions) and return them as int tuples."""
    if not shapes:
        raise MaskValidationError("no layer shapes given")
    out = {}
    for name, shape in shapes.items():
        shape = tuple(int(s) for s in shape)
        if not shape or any(s <= 0 for s in shape):
            raise MaskValidationError(f"layer {name!r}: shape {shape} has no entries")
        out[name] = shape
    return out


def _solve(shapes: dict[str, tuple[int, ...]], raw: dict[str, float], density: float):
    r"""RigL's ε with dense-layer redistribution, for raw layer scores ``raw``.

    Solves :math:`\sum_{l \notin \mathcal{D}} \varepsilon r_l N_l = D \sum_l N_l -
    \sum_{l \in \mathcal{D}} N_l`; while the largest :math:`\varepsilon r_l` exceeds 1, the
    layer(s) with the largest raw score join the dense set :math:`\mathcal{D}`.
    """
    numel = {n: math.prod(s) for n, s in shapes.items()}
    total = math.fsum(numel.values())
    dense: set[str] = set()
    eps = 0.0
    while len(dense) < len(shapes):
        sparse = [n for n in shapes if n not in dense]
        divisor = math.fsum(raw[n] * numel[n] for n in sparse)
        rhs = density * total - math.fsum(numel[n] for n in dense)
        eps = rhs / divisor
        top = max(raw[n] for n in sparse)
        if eps * top <= 1.0:
            break
        # eps only grows as layers go dense, so every layer over 1 now stays over 1: moving the
        # largest-score layers one round at a time (as RigL does) ends in the same dense set.
        dense.update(n for n in sparse if raw[n] == top)
    return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}


@register_distribution("erk")
def erk_densities(shapes: Shapes, density: float, *, power_scale: float = 1.0) -> dict[str, float]:
    r"""Per-layer densities of the Erdős–Rényi-Kernel (ERK) distribution at a global density.

    RigL's algorithm (Evci et al. 2020; the same in ITOP, GraNet and rigl-torch): each layer gets
    the raw score :math:`r_l = (\sum \text{dims}) / (\prod \text{dims})`, raised to
    ``power_scale``, and density :math:`d_l = \varepsilon r_l` with one :math:`\varepsilon` for all
    layers such that the kept count matches the global density:

    .. math::
        \sum_{l \notin \mathcal{D}} \varepsilon r_l N_l
        = D \sum_l N_l - \sum_{l \in \mathcal{D}} N_l .

    While some layer would get :math:`\varepsilon r_l > 1`, the layer(s) with the largest score move
    to the dense set :math:`\mathcal{D}` (density 1) and :math:`\varepsilon` is solved again.

    Parameters
    ----------
    shapes : Mapping[str, tuple[int, ...]]
        Layer name -> weight shape (any number of dimensions: ``[out, in]``, ``[out, in, kh, kw]``).
    density : float
        Global density ``D`` in (0, 1]: kept entries over all entries of all layers.
    power_scale : float, optional
        Exponent applied to the raw scores (RigL's ``erk_power_scale``); 1 is ERK, 0 is uniform.

    Returns
    -------
    dict[str, float]
        Layer name -> density in (0, 1], in the order of ``shapes``. ``sum(d_l * N_l)`` equals
        ``density * sum(N_l)`` up to floating-point rounding.

    Raises
    ------
    MaskValidationError
        On a density outside (0, 1] or an empty shape.

    Examples
    --------
    >>> d = erk_densities({"a": (4, 4), "b": (100, 100)}, 0.5)
    >>> d["a"]
    1.0
    >>> round(d["b"], 6)   # (0.5 * 10016 - 16) / 10000
    0.4992
    """
    shapes = check_shapes(shapes)
    density = check_density(density)
    raw = {n: (sum(s) / math.prod(s)) ** power_scale for n, s in shapes.items()}
    return _solve(shapes, raw, density)


@register_distribution("er")
def er_densities(shapes: Shapes, density: float) -> dict[str, float]:
    r"""Per-layer densities of the Erdős–Rényi (ER) distribution: ERK without the kernel terms.

    RigL's ``erdos_renyi`` (``include_kernel=False``): the raw score uses only the two channel
    dimensions, :math:`r_l = (c_\text{out} + c_\text{in}) / (c_\text{out} c_\text{in})`, while
    :math:`N_l` still counts every entry (kernel included); :math:`\varepsilon` and the dense set
    are solved as in :func:`erk_densities`. For linear layers ER and ERK coincide (Mocanu et al.
    2018, SET, use :math:`\varepsilon (n_\text{in} + n_\text{out}) / (n_\text{in} n_\text{out})`).

    Parameters
    ----------
    shapes : Mapping[str, tuple[int, ...]]
        Layer name -> weight shape, at least 2-D.
    density : float
        Global density in (0, 1].

    Returns
    -------
    dict[str, float]
        Layer name -> density, with ``sum(d_l * N_l) == density * sum(N_l)`` up to rounding.

    Examples
    --------
    >>> d = er_densities({"conv": (8, 8, 3, 3), "fc": (4, 2)}, 0.5)
    >>> d["fc"], round(d["conv"], 6)   # fc goes dense; (0.5 * 584 - 8) / 576
    (1.0, 0.493056)
    """
    shapes = check_shapes(shapes)
    density = check_density(density)
    raw = {}
    for n, s in shapes.items():
        if len(s) < 2:
            raise MaskValidationError(f"layer {n!r}: ER needs an [out, in, ...] shape, got {s}")
        raw[n] = (s[0] + s[1]) / (s[0] * s[1])
    return _solve(shapes, raw, density)


@register_distribution("uniform")
def uniform_densities(
    shapes: Shapes, density: float, *, first_dense: bool = False
) -> dict[str, float]:
    """Every layer at the global density; with ``first_dense`` the first layer at 1 (RigL's variant).

    With ``first_dense`` the network's overall density is above ``density`` (RigL keeps the other
    layers at exactly ``density`` rather than compensating).
    """
    shapes = check_shapes(shapes)
    density = check_density(density)
    out = dict.fromkeys(shapes, density)
    if first_dense:
        out[next(iter(out))] = 1.0
    return out


def layer_densities(shapes: Shapes, density: float, distribution: str = "erk") -> dict[str, float]:
    """Per-layer densities of a registered distribution (:data:`DISTRIBUTIONS`): ``"erk"``,
    ``"er"``, ``"uniform"``, or one added with :func:`register_distribution`.

    ``"uniform"`` gives every layer the global density (no dense first layer here; see
    :func:`uniform_densities`).

    Raises
    ------
    UnknownNameError
        On a distribution that is not registered.
    """
    if distribution not in DISTRIBUTIONS:
        raise UnknownNameError("layer-density distribution", distribution, DISTRIBUTIONS)
    return DISTRIBUTIONS[distribution](shapes, density)


def keep_count(density: float, n: int) -> int:
    """Kept entries at ``density`` out of ``n``: ``round(density * n)`` (half to even), at most n."""
    return min(int(n), round(float(density) * int(n)))


def keeps_some(density: float, n: int, what: str = "prunable weights") -> int:
    """:func:`keep_count` ``(density, n)``, when it keeps at least one entry: the one rule every
    method (PaI, PAGS, every training method) applies to a target density.

    Raises
    ------
    MaskValidationError
        ``density 1e-09 keeps no entry of the 266200 prunable weights``.
    """
    k = keep_count(density, n)
    if k == 0:
        raise MaskValidationError(f"density {density!r} keeps no entry of the {int(n)} {what}")
    return k


def apportion(quotas: Sequence[float], caps: Sequence[int], total: int) -> list[int]:
    """Integer counts near ``quotas`` that sum exactly to ``total`` (largest-remainder method).

    Each count starts at ``floor(quota)`` (at most its cap); the remaining units go one each to the
    entries with the largest fractional parts, ties to the earlier entry. When the quotas sum to
    ``total`` (as ERK's do), every count is the floor or the ceiling of its quota.

    Raises
    ------
    MaskValidationError
        When ``total`` is negative or more than the caps allow.
    """
    caps = [int(c) for c in caps]
    total = int(total)
    if not 0 <= total <= sum(caps):
        raise MaskValidationError(f"cannot place {total} kept entries in layers of {sum(caps)}")
    counts = [max(0, min(cap, math.floor(q))) for q, cap in zip(quotas, caps, strict=True)]
    frac = [q - c for q, c in zip(quotas, counts, strict=True)]
    rest = total - sum(counts)
    order = sorted(range(len(counts)), key=lambda i: (-frac[i], i))
    while rest > 0:
        for i in order:
            if rest and counts[i] < caps[i]:
                counts[i] += 1
                rest -= 1
    while rest < 0:
        for i in reversed(order):
            if rest and counts[i] > 0:
                counts[i] -= 1
                rest += 1
    return counts


def layer_counts(
    shapes: Shapes, densities: Mapping[str, float], total: int | None = None
) -> dict[str, int]:
    """Exact kept counts per layer for per-layer ``densities``, summing to an exact total.

    The quotas ``d_l * N_l`` are apportioned by :func:`apportion` to ``total``, by default
    ``round(sum_l d_l N_l)``: for ERK/ER that is ``round(D * N)``, the global target. Each layer
    keeps ``floor`` or ``ceil`` of its quota; a dense layer (``d_l = 1``) keeps everything.
    """
    shapes = check_shapes(shapes)
    names = list(shapes)
    numel = [math.prod(shapes[n]) for n in names]
    quotas = [float(densities[n]) * k for n, k in zip(names, numel, strict=True)]
    if total is None:
        total = round(math.fsum(quotas))
    return dict(zip(names, apportion(quotas, numel, total), strict=True))
