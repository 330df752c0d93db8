r"""Pruning-at-initialization methods: one small class each, registered by name in :data:`METHODS`.

A method either *scores* every prunable weight (:meth:`PaIMethod.score`; the driver in
:mod:`masktopo.pai.pruning` keeps the exact top-k, globally or per layer, once or over an
iterative schedule) or, for the layer-wise distributions (ERK, ER, uniform), fixes per-layer
densities and draws a uniformly random subset of exactly that size in each layer.

Scores are computed on a working copy of the model (never the caller's) in ``eval`` mode, with
the masks of earlier rounds applied to its weights (:math:`\theta \odot m`), as in Synaptic-Flow's
``Pruner`` (Tanaka et al. 2020; methods-spec §6.1-6.2). Formulas, with :math:`g = \partial L /
\partial \theta` the gradient of the loss summed over the given minibatches:

========== =============================================================== ===============
name       score (kept: largest)                                            default scope
========== =============================================================== ===============
random     i.i.d. uniform                                                   global
erk, er    ERK / ER layer densities, then uniform within each layer         per layer
uniform    the same density in every layer (first layer dense)              per layer
magnitude  :math:`|\theta|`                                                 global
snip       :math:`|g \odot \theta|`                                         global
grasp      :math:`\theta \odot H g` (Hessian-gradient product, logits / T)  global
synflow    :math:`|\theta \odot \partial R / \partial \theta|`, 100 rounds  global
iter-snip  SNIP on the masked network, 10 rounds                            global
force      :math:`|\theta_0 \odot g(\theta_0 \odot m)|`, 10 rounds          global
========== =============================================================== ===============
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..errors import MaskValidationError, UnknownNameError
from .densities import er_densities, erk_densities, uniform_densities
from .select import SCHEDULES

__all__ = [
    "ER",
    "ERK",
    "FORCE",
    "METHODS",
    "SNIP",
    "GraSP",
    "IterSNIP",
    "Magnitude",
    "PaIMethod",
    "Random",
    "SynFlow",
    "Uniform",
    "get_method",
]


@dataclass(frozen=True)
class PaIMethod:
    """Base class: class attributes describe the method, dataclass fields are its options.

    Attributes
    ----------
    name : str
        Registry name.
    data_free : bool
        Needs no training data (at most the input shape). ``needs_batches`` is its negation.
    randomized : bool
        The mask is random by construction (different generator, different mask).
    rescore_noise : bool
        PAGS's ``rescore`` sampler perturbs the weights (:func:`~masktopo.pai.perturb_weights`)
        before re-running the method, because re-running it on the same weights would return the
        same mask (pags-spec §4.2: SynFlow and iterative SNIP in the author code; magnitude and
        FORCE for the same reason).
    layerwise : bool
        The method is defined by per-layer densities (ERK, ER, uniform): only scope ``"local"``.
    default_scope, default_iterations, default_first_dense
        What :func:`~masktopo.pai.prune` uses when the caller passes ``None``.
    revive : bool
        In iterative use, weights pruned in earlier rounds are scored again and may come back
        (FORCE); otherwise they are out for good (score ``-inf``).
    replays_batches : bool
        The method reads the minibatches twice (GraSP), so they are held in memory.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    reference: ClassVar[str]
    data_free: ClassVar[bool]
    needs_batches: ClassVar[bool]
    randomized: ClassVar[bool] = False
    rescore_noise: ClassVar[bool] = False
    layerwise: ClassVar[bool] = False
    default_scope: ClassVar[str] = "global"
    default_iterations: ClassVar[int] = 1
    default_first_dense: ClassVar[bool] = False
    revive: ClassVar[bool] = False
    replays_batches: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "data_free" in cls.__dict__:
            cls.needs_batches = not cls.data_free

    @classmethod
    def options(cls) -> dict[str, Any]:
        """Option name -> default value."""
        return {f.name: f.default for f in fields(cls)}

    @classmethod
    def create(cls, **options) -> PaIMethod:
        """An instance with ``options``; unknown options raise :class:`MaskValidationError`."""
        unknown = sorted(set(options) - set(cls.options()))
        if unknown:
            known = ", ".join(sorted(cls.options())) or "none"
            raise MaskValidationError(
                f"method {cls.name!r} has no option {', '.join(map(repr, unknown))}; "
                f"its options: {known}"
            )
        method = cls(**options)
        method.validate()
        return method

    def validate(self) -> None:
        """Check option values (called by :meth:`create`)."""

    def prepare(self, model: torch.nn.Module) -> None:
        """Set up the working copy of the model before the first score (default: eval mode)."""
        model.eval()

    def score(self, run) -> dict[str, torch.Tensor]:
        """Scores of the prunable layers, ``run.pruned`` (the larger, the more worth keeping)."""
        raise NotImplementedError

    def layer_densities(self, shapes: dict[str, tuple[int, ...]], density: float):
        """Per-layer densities of a layer-wise method (``layerwise`` only)."""
        raise NotImplementedError


def _random_scores(run) -> dict[str, torch.Tensor]:
    g = run.generator
    return {
        n: torch.rand(run.shapes[n], generator=g, device=g.device, dtype=torch.float64).to(
            run.device
        )
        for n in run.pruned
    }


# -- random and layer-wise distributions ---------------------------------------------------------
@dataclass(frozen=True)
class Random(PaIMethod):
    """Uniformly random mask: i.i.d. uniform scores, exact top-k (any k-subset equally likely).

    Global scope keeps exactly ``round(D N)`` of all prunable weights, so layer densities equal
    ``D`` only in expectation; ``scope="local"`` is uniform per layer. Reference: the ``Rand``
    pruner of Tanaka et al. 2020 (Synaptic-Flow); Liu et al. 2022, *The unreasonable
    effectiveness of random pruning*, ICLR.
    """

    name: ClassVar[str] = "random"
    summary: ClassVar[str] = "uniformly random, exact global count"
    reference: ClassVar[str] = "Tanaka et al. 2020 (Rand); Liu et al. ICLR 2022"
    data_free: ClassVar[bool] = True
    randomized: ClassVar[bool] = True

    def score(self, run):
        return _random_scores(run)


@dataclass(frozen=True)
class ERK(PaIMethod):
    r"""Erdős–Rényi-Kernel densities, uniform random within each layer (RigL's initial mask).

    :math:`d_l = \min(1, \varepsilon (\sum \text{dims}) / (\prod \text{dims}))^{p}` with
    dense-layer redistribution (:func:`~masktopo.pai.densities.erk_densities`); each layer keeps
    exactly its apportioned count (``floor``/``ceil`` of :math:`d_l N_l`, total ``round(D N)``).
    Reference: Evci et al. 2020, *Rigging the Lottery*, ICML.

    Options
    -------
    power_scale : float
        RigL's ``erk_power_scale`` (default 1).
    """

    name: ClassVar[str] = "erk"
    summary: ClassVar[str] = "Erdős–Rényi-Kernel layer densities, random within layers"
    reference: ClassVar[str] = "Evci et al. ICML 2020 (RigL)"
    data_free: ClassVar[bool] = True
    randomized: ClassVar[bool] = True
    layerwise: ClassVar[bool] = True
    default_scope: ClassVar[str] = "local"
    power_scale: float = 1.0

    def validate(self):
        if not math.isfinite(self.power_scale):
            raise MaskValidationError(f"power_scale must be finite, got {self.power_scale!r}")

    def score(self, run):
        return _random_scores(run)

    def layer_densities(self, shapes, density):
        return erk_densities(shapes, density, power_scale=self.power_scale)


@dataclass(frozen=True)
class ER(ERK):
    r"""Erdős–Rényi densities (ERK without the kernel terms), uniform random within each layer.

    :math:`d_l = \varepsilon (c_\text{out} + c_\text{in}) / (c_\text{out} c_\text{in})` with
    dense-layer redistribution (:func:`~masktopo.pai.densities.er_densities`). Reference: Mocanu
    et al. 2018, *Scalable training of artificial neural networks with adaptive sparse
    connectivity* (SET), Nature Communications; RigL's ``erdos_renyi``.
    """

    name: ClassVar[str] = "er"
    summary: ClassVar[str] = "Erdős–Rényi layer densities (no kernel term), random within layers"
    reference: ClassVar[str] = "Mocanu et al. 2018 (SET); Evci et al. 2020"

    def layer_densities(self, shapes, density):
        if self.power_scale != 1.0:
            raise MaskValidationError("power_scale applies to 'erk' only")
        return er_densities(shapes, density)


@dataclass(frozen=True)
class Uniform(PaIMethod):
    """The same density ``D`` in every pruned layer, uniform random within it; first layer dense.

    RigL's ``uniform`` keeps the first layer dense (pass ``first_dense=False`` to
    :func:`~masktopo.pai.prune` for ITOP's all-sparse variant). The dense layer does not count in
    the budget, so the network's overall density is then above ``D``. Reference: Evci et al. 2020;
    Gale et al. 2019, *The state of sparsity in deep neural networks*.
    """

    name: ClassVar[str] = "uniform"
    summary: ClassVar[str] = "same density every layer, first layer dense (RigL)"
    reference: ClassVar[str] = "Evci et al. ICML 2020; Gale et al. 2019"
    data_free: ClassVar[bool] = True
    randomized: ClassVar[bool] = True
    layerwise: ClassVar[bool] = True
    default_scope: ClassVar[str] = "local"
    default_first_dense: ClassVar[bool] = True

    def score(self, run):
        return _random_scores(run)

    def layer_densities(self, shapes, density):
        return uniform_densities(shapes, density)


# -- scorers --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Scheduled(PaIMethod):
    """A scorer with an iterative schedule option (exponential or linear; methods-spec §1.5)."""

    schedule: str = "exponential"

    def validate(self):
        if self.schedule not in SCHEDULES:
            raise UnknownNameError("pruning schedule", self.schedule, SCHEDULES)


@dataclass(frozen=True)
class Magnitude(_Scheduled):
    r"""Magnitude at initialization: :math:`S = |\theta|`, global top-k.

    Reference: Han et al. 2015; as a PaI baseline, Frankle et al. 2021, *Pruning neural networks
    at initialization: why are we missing the mark?*, ICLR.
    """

    name: ClassVar[str] = "magnitude"
    summary: ClassVar[str] = "|θ| at initialization, global"
    reference: ClassVar[str] = "Han et al. 2015; Frankle et al. ICLR 2021"
    data_free: ClassVar[bool] = True
    rescore_noise: ClassVar[bool] = True

    def score(self, run):
        return {n: run.theta[n].abs() for n in run.pruned}


@dataclass(frozen=True)
class _DataScorer(_Scheduled):
    """A scorer that needs labelled minibatches; ``loss(outputs, targets)`` is a scalar."""

    data_free: ClassVar[bool] = False
    loss: Callable = field(default=F.cross_entropy)

    def validate(self):
        super().validate()
        if not callable(self.loss):
            raise MaskValidationError(
                f"loss must be a callable (outputs, targets) -> scalar, not {self.loss!r}"
            )


@dataclass(frozen=True)
class SNIP(_DataScorer):
    r"""Connection sensitivity: :math:`S = |g \odot \theta|`, :math:`g = \sum_b \nabla_\theta L_b`.

    The gradient is accumulated over the given minibatches before the absolute value (as
    Synaptic-Flow's ``SNIP`` and the PAGS author code do); ``L_b`` is the mean loss of batch b.
    Global top-k. Reference: Lee, Ajanthan, Torr 2019, *SNIP: single-shot network pruning based
    on connection sensitivity*, ICLR.
    """

    name: ClassVar[str] = "snip"
    summary: ClassVar[str] = "|g ⊙ θ| on minibatches, global"
    reference: ClassVar[str] = "Lee et al. ICLR 2019"

    def score(self, run):
        grads = run.loss_grads(self.loss)
        return {n: (grads[n] * run.theta[n].to(grads[n])).abs() for n in run.pruned}


@dataclass(frozen=True)
class IterSNIP(SNIP):
    r"""Iterative SNIP: 10 rounds of SNIP on the masked network, densities :math:`d^{j/10}`.

    Round j scores :math:`|g(\theta \odot m) \odot \theta|`; weights pruned earlier stay pruned.
    With several minibatches, round j uses batches ``j, j + J, j + 2J, ...`` (one batch per round
    when there are fewer batches than rounds, cycling). Reference: de Jorge et al. 2021,
    *Progressive skeletonization: trimming more fat from a network at initialization*, ICLR.
    """

    name: ClassVar[str] = "iter-snip"
    summary: ClassVar[str] = "SNIP over 10 exponential rounds, masked rescoring"
    reference: ClassVar[str] = "de Jorge et al. ICLR 2021"
    rescore_noise: ClassVar[bool] = True
    default_iterations: ClassVar[int] = 10


@dataclass(frozen=True)
class FORCE(IterSNIP):
    r"""FORCE: iterative SNIP in which pruned weights may come back.

    Round j scores :math:`|\theta_0 \odot g(\theta_0 \odot m)|` for *every* weight, pruned ones
    included (their gradient exists although their effective weight is 0), over 10 exponential
    rounds. Reference: de Jorge et al. 2021, ICLR.
    """

    name: ClassVar[str] = "force"
    summary: ClassVar[str] = "iterative SNIP where pruned weights can return (10 rounds)"
    reference: ClassVar[str] = "de Jorge et al. ICLR 2021"
    revive: ClassVar[bool] = True


@dataclass(frozen=True)
class GraSP(_DataScorer):
    r"""Gradient signal preservation: keep the largest :math:`S = \theta \odot H g`.

    :math:`g = \sum_b \nabla L_b` with logits divided by the temperature ``T`` (default 200) and
    the graph stopped; :math:`H g = \sum_b \nabla_\theta (g^\top \nabla_\theta L_b)` by double
    back-propagation. GraSP removes the largest :math:`-\theta \odot H g`, i.e. keeps the largest
    :math:`\theta \odot H g` (methods-spec §6.2; the normalisation by :math:`|\sum S|` does not
    change the ranking and is skipped). Gradients are over all maskable weights. Global top-k.
    Reference: Wang, Zhang, Grosse 2020, *Picking winning tickets before training by preserving
    gradient flow*, ICLR.
    """

    name: ClassVar[str] = "grasp"
    summary: ClassVar[str] = "θ ⊙ Hg (temperature 200, double backprop), global"
    reference: ClassVar[str] = "Wang et al. ICLR 2020"
    replays_batches: ClassVar[bool] = True
    temperature: float = 200.0

    def validate(self):
        super().validate()
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise MaskValidationError(f"temperature must be > 0, got {self.temperature!r}")

    def score(self, run):
        hg = run.hessian_grad(self.loss, self.temperature)
        return {n: hg[n] * run.theta[n].to(hg[n]) for n in run.pruned}


@dataclass(frozen=True)
class SynFlow(_Scheduled):
    r"""Iterative synaptic flow (data-free): :math:`S = |\theta \odot \partial R / \partial \theta|`.

    The working copy is converted to float64 and every floating parameter and buffer (biases and
    BatchNorm included) replaced by its absolute value, BatchNorm in eval mode;
    :math:`R = \mathbf{1}^\top f_{|\theta| \odot m}(\mathbf{1})` for an all-ones input of batch 1.
    100 rounds (``iterations``) at densities :math:`d^{j/100}`, global top-k each round. The
    caller's weights (and their signs) are never touched. Reference: Tanaka, Kunin, Yamins,
    Ganguli 2020, *Pruning neural networks without any data by iteratively conserving synaptic
    flow*, NeurIPS.
    """

    name: ClassVar[str] = "synflow"
    summary: ClassVar[str] = "|θ ⊙ ∂R/∂θ| on |θ|, 100 exponential rounds, float64"
    reference: ClassVar[str] = "Tanaka et al. NeurIPS 2020"
    data_free: ClassVar[bool] = True
    rescore_noise: ClassVar[bool] = True
    default_iterations: ClassVar[int] = 100

    def prepare(self, model):
        model.double()
        with torch.no_grad():
            for t in (*model.parameters(), *model.buffers()):
                if t.is_floating_point():
                    t.abs_()
        model.eval()

    def score(self, run):
        grads = run.output_grads()
        return {n: (grads[n] * run.base[n]).abs() for n in run.pruned}


#: Registry: name -> method class. Class attributes: ``data_free``, ``needs_batches``,
#: ``randomized``, ``rescore_noise``, ``layerwise``, ``default_scope``, ``default_iterations``.
METHODS: dict[str, type[PaIMethod]] = {
    cls.name: cls
    for cls in (Random, ERK, ER, Uniform, Magnitude, SNIP, GraSP, SynFlow, IterSNIP, FORCE)
}


def get_method(name: str) -> type[PaIMethod]:
    """The method class registered as ``name``; :class:`UnknownNameError` lists the known ones."""
    if isinstance(name, type) and issubclass(name, PaIMethod):
        return name
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise UnknownNameError("PaI method", str(name), METHODS) from None
