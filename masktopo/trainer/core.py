r"""Shared pieces of the sparse-training methods: exact counts, drop, growth, start masks, R_s.

Every method in :mod:`masktopo.trainer.methods` is a few lines over these functions, so no
method re-implements a drop rule, a growth rule, ERK or top-k (STYLE.md). All selections keep or
move an *exact* number of entries (methods-spec §1.3): scores go through
:func:`masktopo.pai.select.top_k_mask` (the k-th largest score by ``torch.topk``, entries strictly
above it kept, ties at it drawn with a seeded ``torch.Generator``), and entries that must not
be chosen score ``-inf``. The references instead threshold with a strict ``>`` after a sort (ties
drop more than asked) and draw random growth as Bernoulli(p) per empty slot (the count is right
only on average, so the density drifts); we do neither.

Notation for one maskable layer :math:`l`: :math:`N_l` entries, mask :math:`m_l`,
:math:`a_l = |m_l|_0` active entries, weight :math:`w_l`, dense gradient :math:`g_l`.

Everything runs on the tensors' device; functions that return counts synchronise (they are only
called on update steps). :func:`rewire_pending` is :func:`rewire` without any read from the
device, for a caller that checks all layers with one read
(:class:`~masktopo.trainer.methods.dst.Regrowth`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ..errors import MaskValidationError, UnknownNameError
from ..pai.densities import apportion, keep_count, layer_counts, layer_densities
from ..pai.select import (
    select_global,
    select_local,
    top_k_mask,
    top_k_mask_drawn,
    top_k_pending,
)

__all__ = [
    "DROPS",
    "GROWTHS",
    "DenseMomentum",
    "DropRule",
    "GrowthInputs",
    "GrowthRule",
    "drop_count",
    "drop_magnitude",
    "drop_set",
    "grow",
    "growth_scores",
    "itop_rate",
    "prune_magnitude",
    "prune_targets",
    "random_masks",
    "register_drop",
    "register_growth",
    "rewire",
    "rewire_pending",
    "start_counts",
    "start_masks",
    "top_k",
]

_NEG_INF = float("-inf")


# ------------------------------------------------------------------------------------------------
# Drop and growth rules: strategies registered by name
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DropRule:
    """A drop rule: ``drop(weight, mask, n, generator)`` returns the bool mask of exactly ``n``
    dropped active entries. A rule that keeps the active entries of largest ``keep_scores(weight)``
    says so (``keep_scores``), which lets :func:`rewire_pending` run it without reading back."""

    name: str
    summary: str
    drop: Callable[[torch.Tensor, torch.Tensor, int, torch.Generator], torch.Tensor]
    keep_scores: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass(frozen=True)
class GrowthInputs:
    """What a growth rule may read for one layer: the weight, the method's generator, and (when
    the rule declares it needs them) the dense gradient, the dense gradient momentum and the
    fired mask (every position active so far)."""

    weight: torch.Tensor
    generator: torch.Generator
    grad: torch.Tensor | None = None
    momentum: torch.Tensor | None = None
    fired: torch.Tensor | None = None


#: What the needs of a growth rule are called in its error message.
_NEEDS = {
    "grad": "the dense gradient (p.grad is None on an update step)",
    "momentum": "the dense gradient momentum",
    "fired": "the fired masks",
}


@dataclass(frozen=True)
class GrowthRule:
    """A growth rule: ``scores(inputs)`` ranks the empty positions (larger = grown first);
    ``needs`` names the inputs it reads (``"grad"``, ``"momentum"``, ``"fired"``), so that the
    methods provide them (a dense momentum is kept only for a rule that needs it)."""

    name: str
    summary: str
    scores: Callable[[GrowthInputs], torch.Tensor]
    needs: frozenset[str] = frozenset()


#: Drop rules by name (:func:`register_drop`).
DROPS: dict[str, DropRule] = {}
#: Growth rules by name (:func:`register_growth`; methods-spec §2.1 step 3.2).
GROWTHS: dict[str, GrowthRule] = {}


def register_drop(name: str, summary: str, keep_scores=None):
    """Decorator: register ``fn(weight, mask, n, generator) -> dropped`` as drop rule ``name``
    (then ``drop = "name"`` works in every DST method and in GraNet). ``keep_scores(weight)``:
    when ``fn`` keeps the active entries of largest such scores (exactly ``top_k`` of them among
    the mask), which :func:`rewire_pending` then computes itself."""

    def register(fn):
        DROPS[name] = DropRule(name, summary, fn, keep_scores)
        return fn

    return register


def register_growth(name: str, summary: str, needs: tuple[str, ...] = ()):
    """Decorator: register ``fn(inputs: GrowthInputs) -> scores`` as growth rule ``name``
    (then ``growth = "name"`` works in every DST method and in GraNet); ``needs`` names what it
    reads of ``inputs`` besides the weight and the generator."""
    unknown = sorted(set(needs) - set(_NEEDS))
    if unknown:
        raise MaskValidationError(f"growth rule {name!r}: unknown needs {unknown}; known: "
                                  f"{', '.join(_NEEDS)}")  # fmt: skip

    def register(fn):
        GROWTHS[name] = GrowthRule(name, summary, fn, frozenset(needs))
        return fn

    return register


def get_drop(name: str) -> DropRule:
    """The drop rule ``name`` (UnknownNameError listing the known ones)."""
    if name not in DROPS:
        raise UnknownNameError("drop rule", name, DROPS)
    return DROPS[name]


def get_growth(name: str) -> GrowthRule:
    """The growth rule ``name`` (UnknownNameError listing the known ones)."""
    if name not in GROWTHS:
        raise UnknownNameError("growth rule", name, GROWTHS)
    return GROWTHS[name]


def _count(mask: torch.Tensor) -> int:
    return int(mask.count_nonzero())


def top_k(
    scores: torch.Tensor,
    k: int,
    generator: torch.Generator,
    candidates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bool mask of exactly ``k`` largest ``scores`` among ``candidates``, ties drawn at random.

    Parameters
    ----------
    scores : torch.Tensor
        Floating-point scores (NaN not allowed).
    k : int
        How many to pick, ``0 <= k <= |candidates|``.
    generator : torch.Generator
        Breaks ties at the threshold (a uniformly random subset of the tied entries).
    candidates : torch.Tensor, optional
        Bool mask of the entries that may be picked (all when None); the others score ``-inf``.

    Raises
    ------
    MaskValidationError
        When ``k`` exceeds the number of candidates, or a score is NaN.
    """
    s = scores.detach().float()
    if candidates is not None:
        n = _count(candidates)
        if k > n:
            raise MaskValidationError(f"cannot pick {k} of {n} candidate entries")
        s = s.masked_fill(~candidates, _NEG_INF)
    return top_k_mask(s, int(k), generator)


def drop_count(rate: float, active: int, rounding: str = "ceil") -> int:
    r"""Entries to drop from a layer with ``active`` weights at drop rate ``rate``.

    ``"ceil"``: :math:`n = \lceil p\, a \rceil` (ITOP, GraNet: ``math.ceil(death_rate *
    num_nonzero)``); ``"floor"``: :math:`n = \lfloor p\, a \rfloor` (RigL keeps
    :math:`a - \lfloor p a \rfloor` by magnitude). The product is rounded to 9 decimals first, so
    that e.g. :math:`0.3 \cdot 10` is 3, not 4. At most ``active``.

    >>> drop_count(0.5, 7), drop_count(0.5, 7, "floor"), drop_count(0.3, 10), drop_count(1.0, 4)
    (4, 3, 3, 4)
    """
    x = round(float(rate) * int(active), 9)
    if rounding == "ceil":
        n = math.ceil(x)
    elif rounding == "floor":
        n = math.floor(x)
    else:
        raise UnknownNameError("drop-count rounding", rounding, ("ceil", "floor"))
    return max(0, min(int(active), n))


def _abs(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().abs()


@register_drop("magnitude", "the n active entries of smallest |w| (ITOP, RigL)", keep_scores=_abs)
def drop_magnitude(
    weight: torch.Tensor, mask: torch.Tensor, n: int, generator: torch.Generator
) -> torch.Tensor:
    r"""The ``n`` active entries of smallest :math:`|w|` (exactly ``n``; ties drawn at random).

    Keeps the :math:`a - n` largest :math:`|w|` among the active entries (ITOP's and RigL's
    magnitude drop; methods-spec §2.1). Returns the bool mask of the dropped entries.
    """
    a = _count(mask)
    if not 0 <= n <= a:
        raise MaskValidationError(f"cannot drop {n} of {a} active entries")
    keep = top_k(_abs(weight), a - n, generator, mask)
    return mask & ~keep


@register_drop("set", "SET: half the smallest positive, half the largest negative weights")
def drop_set(
    weight: torch.Tensor, mask: torch.Tensor, n: int, generator: torch.Generator
) -> torch.Tensor:
    r"""SET's drop: half the ``n`` from the smallest positive, half from the largest negative weights.

    Mocanu et al. (2018), *Scalable training of artificial neural networks with adaptive sparse
    connectivity*, Nature Communications; ITOP's ``magnitude_and_negativity`` death mode.
    :math:`\lceil n/2 \rceil` active entries with :math:`w \ge 0` are dropped in increasing
    order of :math:`w` and :math:`\lfloor n/2 \rfloor` with :math:`w < 0` in decreasing order
    (the negatives closest to 0). When one side has too few, the other side gives the rest, so
    exactly ``n`` are dropped (ITOP drops :math:`2\lceil n/2 \rceil`). Active zeros count as
    positive (the smallest ones). Returns the dropped entries.
    """
    w = weight.detach().float()
    pos = mask & (w >= 0)
    neg = mask & (w < 0)
    n_pos_avail, n_neg_avail = _count(pos), _count(neg)
    if not 0 <= n <= n_pos_avail + n_neg_avail:
        raise MaskValidationError(f"cannot drop {n} of {n_pos_avail + n_neg_avail} active entries")
    n_pos = min(math.ceil(n / 2), n_pos_avail)
    n_neg = n - n_pos
    if n_neg > n_neg_avail:
        n_neg = n_neg_avail
        n_pos = n - n_neg
    return top_k(-w, n_pos, generator, pos) | top_k(w, n_neg, generator, neg)


def _rand_like(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    r = torch.rand(t.shape, generator=generator, device=generator.device)
    return r.to(t.device)


@register_growth("random", "SET: uniformly random empty positions")
def _grow_random(x: GrowthInputs) -> torch.Tensor:
    """i.i.d. :math:`U[0, 1)`: the top-:math:`n` is a uniformly random :math:`n`-subset."""
    return _rand_like(x.weight, x.generator)


@register_growth("gradient", "RigL: largest |dense gradient|", needs=("grad",))
def _grow_gradient(x: GrowthInputs) -> torch.Tensor:
    """:math:`|g|`, the dense gradient of the last minibatch (NaN counts as 0); RigL, Evci et
    al. ICML 2020."""
    return torch.nan_to_num(x.grad.detach().float().abs(), nan=0.0)


@register_growth("momentum", "SNFS: largest |dense gradient momentum|", needs=("momentum",))
def _grow_momentum(x: GrowthInputs) -> torch.Tensor:
    r""":math:`|\mu|`, a dense momentum of the gradients (:class:`DenseMomentum`); SNFS,
    Dettmers & Zettlemoyer 2019."""
    return torch.nan_to_num(x.momentum.detach().float().abs(), nan=0.0)


@register_growth("random_unfired", "ITOP: random positions never active so far first",
                 needs=("fired",))  # fmt: skip
def _grow_random_unfired(x: GrowthInputs) -> torch.Tensor:
    """:math:`U[0, 1) + [\text{never fired}]`: a random subset of the positions never active so
    far, topped up with random fired ones when there are too few (ITOP)."""
    return _rand_like(x.weight, x.generator) + (~x.fired).float()


def growth_scores(
    rule: str,
    *,
    weight: torch.Tensor,
    generator: torch.Generator,
    grad: torch.Tensor | None = None,
    momentum: torch.Tensor | None = None,
    fired: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Scores of the growth rule ``rule`` (larger = grown first), shaped like ``weight``: the
    registered rule (:data:`GROWTHS`) applied to the inputs it needs.

    Raises
    ------
    MaskValidationError
        When the rule needs an input that is missing (``gradient growth needs the dense
        gradient ...``).
    UnknownNameError
        For a rule that is not registered.
    """
    g = get_growth(rule)
    x = GrowthInputs(weight, generator, grad, momentum, fired)
    for need in sorted(g.needs):
        if getattr(x, need) is None:
            raise MaskValidationError(f"{rule} growth needs {_NEEDS[need]}")
    return g.scores(x)


def grow(
    scores: torch.Tensor, candidates: torch.Tensor, n: int, generator: torch.Generator
) -> torch.Tensor:
    """The ``n`` candidates of largest score (exactly ``n``; ties drawn at random)."""
    return top_k(scores, n, generator, candidates)


def rewire(
    weight: torch.Tensor,
    mask: torch.Tensor,
    n: int,
    generator: torch.Generator,
    *,
    drop: str = "magnitude",
    growth: str = "random",
    grad: torch.Tensor | None = None,
    momentum: torch.Tensor | None = None,
    fired: torch.Tensor | None = None,
    reinit_when_same: bool = False,
    active: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One layer's drop-and-grow at constant count (ITOP, RigL, SET, GraNet's regeneration).

    1. Drop :math:`n` active entries by the ``drop`` rule (:func:`drop_magnitude`,
       :func:`drop_set`); :math:`m' = m \setminus D`.
    2. Grow :math:`n` entries among the positions empty after the drop, :math:`\neg m'`, which
       include the just-dropped ones (the references' and RigL TF's behaviour, methods-spec §1.4),
       by the ``growth`` rule (:func:`growth_scores`); :math:`m'' = m' \cup G`.
    3. New connections :math:`G \setminus m` (all of :math:`G` with ``reinit_when_same``) start at
       0 with zero optimizer state; a just-dropped weight that is regrown keeps its value.

    ``active``: the number of entries of ``mask`` when the caller knows it; then a drop rule
    with ``keep_scores`` and the growth read no count back (one read per selection, and the tied
    entries' positions when a tie needs a draw). Same result either way.

    Returns
    -------
    new_mask, new_connections : torch.Tensor
        :math:`m''` (exactly as many entries as :math:`m`) and the entries the caller must reset.
    """
    new_mask, new_connections, _ = _rewire_drawn(
        weight, mask, n, generator, drop=drop, growth=growth, grad=grad, momentum=momentum,
        fired=fired, reinit_when_same=reinit_when_same, active=active,
    )  # fmt: skip
    return new_mask, new_connections


def _rewire_drawn(weight, mask, n, generator, *, drop, growth, grad, momentum, fired,
                  reinit_when_same, active):  # fmt: skip
    """:func:`rewire`, and whether a selection drew among tied entries (known only with
    ``active``; False otherwise)."""
    rule = get_drop(drop)
    drew = False
    if active is not None and rule.keep_scores is not None:
        if not 0 <= n <= active:
            raise MaskValidationError(f"cannot drop {n} of {active} active entries")
        kept = rule.keep_scores(weight).detach().float().masked_fill(~mask, _NEG_INF)
        keep, drew = top_k_mask_drawn(kept, active - n, generator)
        dropped = mask & ~keep
    else:
        dropped = rule.drop(weight, mask, n, generator)
    after = mask & ~dropped
    scores = growth_scores(
        growth, weight=weight, generator=generator, grad=grad, momentum=momentum, fired=fired
    )
    if active is not None:  # the candidates ~after hold numel - active + n >= n entries
        grown, drew_grow = top_k_mask_drawn(
            scores.detach().float().masked_fill(after, _NEG_INF), n, generator
        )
        drew = drew or drew_grow
    else:
        grown = grow(scores, ~after, n, generator)
    new_mask = after | grown
    new_connections = grown if reinit_when_same else grown & ~mask
    return new_mask, new_connections, drew


def rewire_pending(
    weight: torch.Tensor,
    mask: torch.Tensor,
    n: int,
    active: int,
    generator: torch.Generator,
    *,
    drop: str = "magnitude",
    growth: str = "random",
    grad: torch.Tensor | None = None,
    momentum: torch.Tensor | None = None,
    fired: torch.Tensor | None = None,
    reinit_when_same: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    r""":func:`rewire` with no read from the device, or None for a drop rule without
    ``keep_scores`` (SET's: its split of :math:`n` depends on counts it reads).

    ``active`` is the number of entries of ``mask`` (known to the caller: counts are preserved).
    Both selections are :func:`~masktopo.pai.select.top_k_pending`, so no tie is drawn; the
    growth scores draw from ``generator`` as in :func:`rewire`.

    Returns
    -------
    new_mask, new_connections, check : torch.Tensor
        :func:`rewire`'s result, with the same generator use, when ``check`` (a 0-d bool on the
        device) is False; when it is True (a NaN score, or a tie at a threshold that needs the
        random draw) the caller restores the generator and runs :func:`rewire`.
    """
    rule = get_drop(drop)
    if rule.keep_scores is None:
        return None
    if not 0 <= n <= active:
        raise MaskValidationError(f"cannot drop {n} of {active} active entries")
    kept = rule.keep_scores(weight).detach().float().masked_fill(~mask, _NEG_INF)
    keep, check_drop = top_k_pending(kept, active - n)
    dropped = mask & ~keep
    after = mask & ~dropped
    scores = growth_scores(
        growth, weight=weight, generator=generator, grad=grad, momentum=momentum, fired=fired
    )
    # the candidates ~after hold numel - active + n >= n entries
    grown, check_grow = top_k_pending(scores.detach().float().masked_fill(after, _NEG_INF), n)
    new_mask = after | grown
    new_connections = grown if reinit_when_same else grown & ~mask
    return new_mask, new_connections, (check_drop | check_grow).any()


class DenseMomentum:
    r"""Dense momentum of the gradients for ``momentum`` growth: :math:`\mu \leftarrow \beta\mu + g`.

    ITOP masks the optimizer's momentum buffer after every step, so at an empty position it is 0
    and "momentum growth" there is degenerate; sparse momentum (Dettmers & Zettlemoyer 2019) ranks
    the momentum of the dense gradient, which this keeps (one fused multiply-add per step over the
    masked layers, updated from ``p.grad``).
    """

    def __init__(self, beta: float):
        self.beta = float(beta)
        self.buffers: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def step(self, params: Mapping[str, torch.nn.Parameter]) -> None:
        """Fold in the current gradients (parameters without a gradient are skipped)."""
        grads = {n: p.grad for n, p in params.items() if p.grad is not None}
        if not grads:
            return
        if self.buffers is None:
            self.buffers = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        bufs = [self.buffers[n] for n in grads]
        torch._foreach_mul_(bufs, self.beta)
        torch._foreach_add_(bufs, [g.float() for g in grads.values()])

    def state_dict(self) -> dict:
        """The momentum coefficient and a copy of the buffers (None before the first step)."""
        bufs = None if self.buffers is None else {n: b.clone() for n, b in self.buffers.items()}
        return {"beta": self.beta, "buffers": bufs}

    def load_state_dict(self, state: dict, device) -> None:
        """Restore :meth:`state_dict`'s output, moving the buffers to ``device``."""
        self.beta = float(state["beta"])
        bufs = state["buffers"]
        self.buffers = None if bufs is None else {n: b.to(device) for n, b in bufs.items()}


def start_counts(
    shapes: Mapping[str, tuple[int, ...]], density: float, distribution: str = "erk"
) -> dict[str, int]:
    r"""Exact kept counts per layer at a global ``density`` (``masktopo.pai`` densities and counts).

    ``distribution`` is ``"erk"``, ``"er"`` or ``"uniform"`` (:func:`masktopo.pai.layer_densities`,
    RigL's algorithm, methods-spec §1.6); the counts are :func:`masktopo.pai.layer_counts`: each
    layer ``floor`` or ``ceil`` of :math:`d_l N_l`, summing to :math:`\mathrm{round}(D N)`.
    """
    return layer_counts(shapes, layer_densities(shapes, density, distribution))


def random_masks(
    shapes: Mapping[str, tuple[int, ...]],
    counts: Mapping[str, int],
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Per layer a uniformly random subset of exactly ``counts[l]`` entries (``randperm``).

    rigl-torch's exact initial masks (methods-spec §1.6: ITOP and GraNet draw Bernoulli(d_l)
    masks, whose counts are only right on average).
    """
    out = {}
    for name, shape in shapes.items():
        numel = math.prod(shape)
        k = int(counts[name])
        if not 0 <= k <= numel:
            raise MaskValidationError(f"layer {name!r}: cannot keep {k} of {numel} entries")
        flat = torch.zeros(numel, dtype=torch.bool, device=generator.device)
        if k == numel:
            flat.fill_(True)
        elif k:
            flat[torch.randperm(numel, generator=generator, device=generator.device)[:k]] = True
        out[name] = flat.reshape(shape).to(device if device is not None else generator.device)
    return out


def start_masks(
    params: Mapping[str, torch.Tensor],
    density: float,
    distribution: str,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Random start masks at ``density`` with exact per-layer counts (:func:`start_counts`).

    A density of 1 gives all-True masks (GMP's and GraNet's dense start). The masks are on the
    parameters' device.
    """
    if not params:
        raise MaskValidationError("the model has no maskable layer (nn.Linear / nn.Conv weight)")
    shapes = {n: tuple(p.shape) for n, p in params.items()}
    device = next(iter(params.values())).device
    if density >= 1.0:
        return {n: torch.ones(s, dtype=torch.bool, device=device) for n, s in shapes.items()}
    return random_masks(shapes, start_counts(shapes, density, distribution), generator, device)


def itop_rate(fired: Mapping[str, torch.Tensor]) -> float:
    r"""ITOP's in-time over-parameterization rate (Liu et al. ICML 2021).

    .. math:: R_s = \frac{\sum_l |\bigcup_t m_{l,t}|_0}{\sum_l N_l}

    over the maskable layers, where ``fired[l]`` is the union of the layer's masks so far.
    """
    if not fired:
        return 1.0
    total = sum(f.numel() for f in fired.values())
    return float(torch.stack([f.count_nonzero() for f in fired.values()]).sum()) / total


def prune_targets(
    sizes: Mapping[str, int],
    active: Mapping[str, int],
    density: float,
    *,
    scope: str,
    start_densities: Mapping[str, float] | None = None,
    d_init: float = 1.0,
) -> int | dict[str, int]:
    r"""Kept counts of a magnitude-pruning event at network density ``density``.

    * ``"global"``: :math:`K = \mathrm{round}(d N)` over all :math:`N = \sum_l N_l` maskable
      entries (GraNet's global threshold, counted exactly).
    * ``"layer"``: each layer scales its start density,
      :math:`d_l = d_{l,0}\, d / d_i` (dense start: every layer at :math:`d`), with counts
      apportioned to the same total :math:`K` (each ``floor`` or ``ceil`` of :math:`d_l N_l`).

    Counts never exceed the layers' current ``active`` counts (pruned weights are not revived).
    """
    total_n = sum(sizes.values())
    k = min(keep_count(density, total_n), sum(active.values()))
    if scope == "global":
        return k
    if scope != "layer":
        raise UnknownNameError("prune scope", scope, ("global", "layer"))
    names = list(sizes)
    start = start_densities or dict.fromkeys(names, 1.0)
    quotas = [start[n] * sizes[n] * density / d_init for n in names]
    counts = apportion(quotas, [active[n] for n in names], k)
    return dict(zip(names, counts, strict=True))


def prune_magnitude(
    weights: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    keep: int | Mapping[str, int],
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    r"""Keep the largest :math:`|w|` among the active entries: ``keep`` in all layers or per layer.

    Global scope (an int): one exact top-:math:`K` of :math:`|w|` pooled over the layers (Zhu &
    Gupta 2017; GraNet's ``pruning``); layer scope (a dict): the top-:math:`k_l` within each layer.
    Inactive entries score ``-inf``, so a pruned weight never comes back.
    """
    scores = {n: weights[n].detach().abs().float().masked_fill(~masks[n], _NEG_INF) for n in masks}
    if isinstance(keep, Mapping):
        return select_local(scores, keep, generator)
    return select_global(scores, int(keep), generator)
