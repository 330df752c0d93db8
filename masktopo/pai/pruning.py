"""The pruning driver: :func:`prune`, :func:`scores` and :func:`perturb_weights`.

:func:`prune` validates its arguments, scores the prunable layers with a method from
:data:`~masktopo.pai.methods.METHODS` on a working copy of the model, keeps exact top-k counts
(globally or per layer, once or over an iterative schedule) and returns a
:class:`~masktopo.masks.MaskSet` carrying the caller's weights.
"""

from __future__ import annotations

import contextlib
import copy
import math
import operator
import warnings
from collections.abc import Iterable

import torch
from torch import nn

from ..checks import is_int
from ..errors import MaskTopoError, MaskValidationError, UnknownNameError, one_line
from ..masks import MaskSet, mask_from_positions
from ..zoo.models import MASKABLE_TYPES, maskable_parameters
from .densities import check_density, keeps_some, layer_counts
from .methods import PaIMethod, get_method
from .select import local_counts, schedule_densities, select_global, select_local, step_counts
from .subsets import random_positions

__all__ = ["SCOPES", "perturb_weights", "prune", "scores"]

#: Threshold scopes: one top-k over all prunable layers, or one per layer.
SCOPES = ("global", "local")


class _Run:
    """State of one pruning call: the working copy, the batches, the current round."""

    def __init__(self, model, method: PaIMethod, params, pruned, generator, batches, in_shape):
        self.model = model
        self.method = method
        self.pruned = pruned
        self.generator = generator
        self.theta = {n: p.detach() for n, p in params.items()}
        self.shapes = {n: tuple(p.shape) for n, p in params.items()}
        first = next(iter(params.values()))
        self.device = first.device
        self.round, self.rounds = 0, 1
        self._in_shape = None if in_shape is None else _check_in_shape(in_shape)
        self._batches = batches
        self._work = None
        self._masks = None

    # -- batches ----------------------------------------------------------------------------------
    def materialize(self, rounds: int) -> None:
        """Hold the batches in a list when they are read more than once."""
        self.rounds = rounds
        if self.method.needs_batches and (rounds > 1 or self.method.replays_batches):
            if not isinstance(self._batches, list):
                self._batches = list(self._batches)
            if not self._batches:
                raise MaskValidationError("batches is empty: give at least one (inputs, targets)")

    def round_batches(self) -> Iterable:
        """The (inputs, targets) minibatches of the current round, on the working device."""
        batches = self._batches
        if isinstance(batches, list):
            if not batches:
                raise MaskValidationError("batches is empty: give at least one (inputs, targets)")
            j, n_rounds = self.round, self.rounds
            batches = (
                batches[j::n_rounds] if len(batches) >= n_rounds else [batches[j % len(batches)]]
            )
        dtype = next(iter(self.work_params.values())).dtype
        count = 0
        for item in batches:
            x, y = _unpack(item)
            x = x.to(self.device, dtype) if x.is_floating_point() else x.to(self.device)
            count += 1
            yield x, y.to(self.device)
        if not count:
            raise MaskValidationError("batches is empty: give at least one (inputs, targets)")

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one input sample: given, or read from the first batch."""
        if self._in_shape is None:
            if self._batches is None:
                raise MaskValidationError(
                    f"method {self.method.name!r} needs the input shape: pass in_shape=(C, H, W) "
                    "or (D,), or batches"
                )
            first = next(iter(self._batches), None)
            if first is None:
                raise MaskValidationError("batches is empty: give at least one batch")
            self._in_shape = tuple(_unpack(first)[0].shape[1:])
        return self._in_shape

    # -- working copy -----------------------------------------------------------------------------
    @property
    def work(self) -> nn.Module:
        """A deep copy of the model, prepared by the method, masks applied to its weights."""
        if self._work is None:
            work = copy.deepcopy(self.model)
            self.method.prepare(work)
            for p in work.parameters():
                p.requires_grad_(False)
            self.work_params = maskable_parameters(work)
            for p in self.work_params.values():
                p.requires_grad_(True)
            self.base = {n: p.detach().clone() for n, p in self.work_params.items()}
            self._work = work
            self._apply()
        return self._work

    def set_masks(self, masks) -> None:
        """Masks of the pruned layers for the next round (applied as θ ⊙ m to the working copy)."""
        self._masks = masks
        if self._work is not None:
            self._apply()

    def _apply(self):
        if self._masks is None:
            return
        with torch.no_grad():
            for n, m in self._masks.items():
                self.work_params[n].copy_(self.base[n] * m)

    # -- derivatives ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _on_data(self, what: str):
        """The model's forward and the loss on ``what``: where they fail on the data (shapes,
        target dtype or range), one line naming the method and the batch."""
        try:
            yield
        except MaskTopoError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            raise MaskValidationError(
                f"{self.method.name}: the model or the loss failed on {what} ({one_line(e)}); "
                "check the inputs' shape (in_shape=) and the targets"
            ) from e

    def _zeros(self):
        return [torch.zeros_like(p) for p in self.work_params.values()]

    def _named(self, tensors):
        return dict(zip(self.work_params, tensors, strict=True))

    def loss_grads(self, loss) -> dict[str, torch.Tensor]:
        """Gradient of the loss summed over this round's batches, per maskable weight."""
        work = self.work
        params = list(self.work_params.values())
        total = self._zeros()
        for i, (x, y) in enumerate(self.round_batches()):
            with self._on_data(f"batch {i}"):
                value = loss(work(x), y)
            _accumulate(total, torch.autograd.grad(value, params, allow_unused=True))
        return self._named(total)

    def hessian_grad(self, loss, temperature: float) -> dict[str, torch.Tensor]:
        """GraSP's Hg: H = ∇²L (logits / T) over the maskable weights, g the stopped gradient."""
        work = self.work
        params = list(self.work_params.values())
        stopped = self._zeros()
        for i, (x, y) in enumerate(self.round_batches()):
            with self._on_data(f"batch {i}"):
                value = loss(work(x) / temperature, y)
            _accumulate(stopped, torch.autograd.grad(value, params, allow_unused=True))
        hg = self._zeros()
        for x, y in self.round_batches():
            grads = torch.autograd.grad(
                loss(work(x) / temperature, y), params, create_graph=True, allow_unused=True
            )
            z = sum((g * s).sum() for g, s in zip(grads, stopped, strict=True) if g is not None)
            if isinstance(z, torch.Tensor) and z.requires_grad:
                _accumulate(hg, torch.autograd.grad(z, params, allow_unused=True))
        return self._named(hg)

    def output_grads(self) -> dict[str, torch.Tensor]:
        """∂R/∂θ for R = sum of the outputs on an all-ones input of batch 1 (SynFlow)."""
        work = self.work
        dtype = next(iter(self.work_params.values())).dtype
        x = torch.ones((1, *self.in_shape), dtype=dtype, device=self.device)
        params = list(self.work_params.values())
        with self._on_data(f"an all-ones input of in_shape {self.in_shape}"):
            value = work(x).sum()
        grads = torch.autograd.grad(value, params, allow_unused=True)
        total = self._zeros()
        _accumulate(total, grads)
        return self._named(total)


def _parse_scope(cls, scope):
    if scope is None:
        return cls.default_scope
    if scope not in SCOPES:
        raise UnknownNameError("pruning scope", str(scope), SCOPES)
    if cls.layerwise and scope != "local":
        raise MaskValidationError(
            f"method {cls.name!r} sets per-layer densities: its scope is 'local', not {scope!r}"
        )
    return scope


def _parse_iterations(cls, iterations):
    if iterations is None:
        return cls.default_iterations
    if not is_int(iterations) or iterations < 1:
        raise MaskValidationError(f"iterations must be an integer >= 1, got {iterations!r}")
    if cls.layerwise and iterations != 1:
        raise MaskValidationError(f"method {cls.name!r} is not iterative: iterations must be 1")
    return iterations


def _setup(model, method, density, *, generator, scope, iterations, first_dense, last_dense):
    cls = get_method(method)
    if not isinstance(model, nn.Module):
        raise MaskValidationError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    density = check_density(density)
    scope = _parse_scope(cls, scope)
    iterations = _parse_iterations(cls, iterations)
    params = maskable_parameters(model)
    if not params:
        raise MaskValidationError("the model has no nn.Linear or nn.Conv weight to prune")
    names = list(params)
    dense = []
    if cls.default_first_dense if first_dense is None else first_dense:
        dense.append(names[0])
    if last_dense and names[-1] not in dense:
        dense.append(names[-1])
    pruned = [n for n in names if n not in dense]
    if not pruned:
        raise MaskValidationError("every maskable layer is kept dense: nothing left to prune")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    elif not isinstance(generator, torch.Generator):
        raise MaskValidationError(
            f"generator must be a torch.Generator, not {type(generator).__name__}"
        )
    return cls, density, scope, iterations, params, dense, pruned, generator


def prune(
    model: nn.Module,
    method: str,
    density: float,
    *,
    batches: Iterable | None = None,
    generator: torch.Generator | None = None,
    scope: str | None = None,
    iterations: int | None = None,
    first_dense: bool | None = None,
    last_dense: bool = False,
    in_shape: tuple[int, ...] | None = None,
    weights: bool = True,
    **options,
) -> MaskSet:
    r"""Prune at initialization: a mask of exactly the requested size over the model's weights.

    The prunable weights are :func:`masktopo.zoo.maskable_parameters` (every ``nn.Linear`` and
    ``nn.Conv1d/2d/3d`` weight, named as in ``model.named_parameters()``) except the layers kept
    dense. The method scores them on a deep
    copy of the model (the caller's model, its weights, gradients and mode are never modified);
    the exact top-k is kept, globally or per layer (:mod:`masktopo.pai.select`: ties at the
    threshold drawn at random with ``generator``). Iterative methods repeat score-and-keep over
    ``iterations`` rounds at densities :math:`d^{j/J}` (or ``1 - (1-d) j/J``), scoring the masked
    network each round.

    Kept counts: global scope keeps exactly ``round(density * N)`` of the ``N`` prunable weights;
    layer-wise scope and the ERK/ER/uniform methods keep ``floor`` or ``ceil`` of ``d_l * N_l``
    in each layer, apportioned so that the total is again exactly ``round(density * N)``.

    Parameters
    ----------
    model : torch.nn.Module
        The network at its initialization (or a warm-started checkpoint).
    method : str
        A name from :data:`~masktopo.pai.METHODS`: ``random``, ``erk``, ``er``, ``uniform``,
        ``magnitude``, ``snip``, ``grasp``, ``synflow``, ``iter-snip``, ``force``.
    density : float
        Fraction of the prunable weights to keep, in (0, 1].
    batches : iterable of (inputs, targets), optional
        Minibatches for the data-driven methods (``method.needs_batches``). Iterated once, except
        for GraSP (twice) and iterative methods (round j uses batches ``j, j + J, ...``, or batch
        ``j mod B`` when there are fewer than J), for which they are held in a list.
    generator : torch.Generator, optional
        All randomness (random scores, tie-breaking). ``None``: a fresh generator seeded with 0.
    scope : {"global", "local"}, optional
        Threshold over all prunable layers or per layer; default per method (``local`` only for
        erk, er and uniform).
    iterations : int, optional
        Pruning rounds; default per method (100 for synflow, 10 for iter-snip and force, else 1).
    first_dense, last_dense : bool, optional
        Keep the first / last maskable layer dense (all-True mask, outside the density budget).
        ``first_dense=None`` is the method's default: True for ``uniform`` (RigL), else False.
    in_shape : tuple of int, optional
        One input sample's shape, for SynFlow; read from the first batch when omitted.
    weights : bool
        Attach copies of the model's weights to the result (default). ``False`` skips the copy
        (PAGS scores every candidate on one shared θ, and a copy of ResNet-18's weights costs
        about as much as drawing an ERK mask).
    **options
        Method options: ``schedule`` ("exponential" or "linear") for the scorers, ``loss`` (a
        callable ``(outputs, targets) -> scalar``, default cross-entropy) for the data-driven ones,
        ``temperature`` (200) for GraSP, ``power_scale`` (1) for ERK.

    Returns
    -------
    MaskSet
        One bool mask per maskable weight (dense layers all True), on the model's device, with the
        model's weights (detached copies, not zeroed) attached, and ``meta`` recording the method,
        density, scope, iterations, dense layers, options and the generator's initial seed.

    Raises
    ------
    UnknownNameError
        Unknown method, scope or schedule.
    MaskValidationError
        Density outside (0, 1]; a data-driven method without batches; empty or malformed batches;
        a density that keeps no weight; an unknown option; nothing left to prune.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))
    >>> ms = prune(net, "erk", 0.2, generator=torch.Generator().manual_seed(1))
    >>> ms.nnz(), round(0.2 * (20 * 30 + 30 * 5))
    (150, 150)
    """
    cls, density, scope, iterations, params, dense, pruned, generator = _setup(
        model,
        method,
        density,
        generator=generator,
        scope=scope,
        iterations=iterations,
        first_dense=first_dense,
        last_dense=last_dense,
    )
    m = cls.create(**options)
    if m.needs_batches and batches is None:
        raise MaskValidationError(
            f"method {cls.name!r} scores on data: pass batches=, an iterable of (inputs, targets) "
            "minibatches"
        )
    sizes = {n: params[n].numel() for n in pruned}
    shapes = {n: tuple(params[n].shape) for n in pruned}
    total = keeps_some(density, sum(sizes.values()))

    # Kept counts per round: a list of ints (global) or of per-layer dicts (local).
    if cls.layerwise:
        final = layer_counts(shapes, m.layer_densities(shapes, density), total)
        plan = [final]
    else:
        steps = schedule_densities(density, iterations, getattr(m, "schedule", "exponential"))
        if scope == "global":
            plan = step_counts(total, sum(sizes.values()), steps)
        else:
            final = local_counts(sizes, density)
            per_layer = {n: step_counts(final[n], sizes[n], steps) for n in pruned}
            plan = [{n: per_layer[n][j] for n in pruned} for j in range(iterations)]

    masks = None
    if m.randomized and len(plan) == 1:
        # Random methods: a uniform k-subset per layer (or of all entries, global scope) drawn
        # as positions (masktopo.pai.subsets): the same distribution as the exact top-k of
        # i.i.d. uniform scores, without a score per weight (ms instead of ~0.6 s for ResNet-18).
        masks = _random_subsets(plan[0], shapes, generator, params[pruned[0]].device)
        plan = []
    else:
        run = _Run(model, m, params, pruned, generator, batches, in_shape)
        run.materialize(len(plan))
    for j, target in enumerate(plan):
        run.round = j
        if masks is not None:
            run.set_masks(masks)
        with torch.enable_grad():  # also when the caller is under torch.no_grad()
            s = m.score(run)
        select = select_local if isinstance(target, dict) else select_global
        if masks is None or m.revive:
            masks = select(s, target, generator)
        else:
            # Weights pruned in earlier rounds stay pruned: rank only the surviving entries.
            kept = select({n: s[n][masks[n]] for n in pruned}, target, generator)
            masks = {
                n: torch.zeros_like(masks[n]).masked_scatter_(masks[n], kept[n]) for n in pruned
            }

    out = {
        n: masks[n] if n in masks else torch.ones(p.shape, dtype=torch.bool, device=p.device)
        for n, p in params.items()
    }
    empty = [n for n in pruned if not bool(out[n].any())]
    if empty:  # layer collapse: allowed (a result in itself), never silent
        warnings.warn(
            f"{cls.name} at density {density:g} keeps no weight of {len(empty)} layer(s) "
            f"({', '.join(empty)}): the network is cut there (layer collapse); analyze needs "
            "--allow-empty-layers for such masks",
            UserWarning,
            stacklevel=2,
        )
    kept_weights = {n: p.detach().clone() for n, p in params.items()} if weights else None
    meta = {
        "source": "masktopo.pai.prune",
        "method": cls.name,
        "density": density,
        "scope": scope,
        "iterations": len(plan),
        "dense_layers": dense,
        "options": {k: _jsonable(getattr(m, k)) for k in m.options()},
        "generator_initial_seed": int(generator.initial_seed()),
    }
    return MaskSet(out, weights=kept_weights, meta=meta)


def _random_subsets(target, shapes, generator, device) -> dict[str, torch.Tensor]:
    """Uniformly random kept positions: ``target[name]`` per layer, or ``target`` in all."""
    names = list(shapes)
    sizes = [math.prod(shapes[n]) for n in names]
    if isinstance(target, dict):
        picks = random_positions(generator, sizes, counts=[target[n] for n in names])
    else:
        picks = random_positions(generator, sizes, total=int(target))
    # The positions travel with the masks: the graph analysis then need not scan them again.
    return {
        n: mask_from_positions(shapes[n], idx, device) for n, idx in zip(names, picks, strict=True)
    }


def _check_in_shape(in_shape) -> tuple[int, ...]:
    """One input sample's shape as a tuple of positive ints."""
    try:
        if not isinstance(in_shape, tuple | list | torch.Size) or not in_shape:
            raise TypeError
        shape = tuple(operator.index(s) for s in in_shape if not isinstance(s, bool))
        if len(shape) != len(in_shape) or min(shape) < 1:
            raise TypeError
    except TypeError:
        raise MaskValidationError(
            f"in_shape must be one input sample's shape, a tuple of positive ints such as "
            f"(3, 32, 32) or (784,), not {in_shape!r}"
        ) from None
    return shape


def _accumulate(total, grads) -> None:
    """``total[i] += grads[i]`` for each gradient that exists (unused parameters give None)."""
    for acc, g in zip(total, grads, strict=True):
        if g is not None:
            acc.add_(g)


def _unpack(item):
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise MaskValidationError(
            f"each batch must be an (inputs, targets) pair, got {type(item).__name__}"
        )
    x, y = item
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise MaskValidationError("batch inputs and targets must be tensors")
    return x, y


def _jsonable(value):
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return getattr(value, "__qualname__", None) or repr(value)


def scores(
    model: nn.Module,
    method: str,
    *,
    batches: Iterable | None = None,
    generator: torch.Generator | None = None,
    in_shape: tuple[int, ...] | None = None,
    first_dense: bool | None = None,
    last_dense: bool = False,
    **options,
) -> dict[str, torch.Tensor]:
    """The method's first-round scores of the prunable layers, on the unmasked network.

    The same quantities :func:`prune` ranks (larger = kept first), e.g. ``|g ⊙ θ|`` for SNIP or
    ``θ ⊙ Hg`` for GraSP, for inspection and "shuffle within layer" controls. The caller's model
    is not modified.
    """
    cls, _, _, _, params, _, pruned, generator = _setup(
        model,
        method,
        1.0,
        generator=generator,
        scope=None,
        iterations=None,
        first_dense=first_dense,
        last_dense=last_dense,
    )
    m = cls.create(**options)
    if m.needs_batches and batches is None:
        raise MaskValidationError(f"method {cls.name!r} scores on data: pass batches=")
    run = _Run(model, m, params, pruned, generator, batches, in_shape)
    run.materialize(1)
    with torch.enable_grad():
        return {n: s.detach() for n, s in m.score(run).items()}


def perturb_weights(
    model: nn.Module, generator: torch.Generator, *, inplace: bool = False
) -> nn.Module:
    r"""Add PAGS's re-scoring noise to every conv and linear weight (pags-spec §4.2).

    Additive Gaussian noise at the scale of the initialization: :math:`\sigma =
    \sqrt{2 / (k_h k_w C_\text{out})}` for a convolution (Kaiming fan-out; the product of all
    kernel sizes for 1-D and 3-D convolutions) and
    :math:`\sigma = 0.01` for a linear layer, drawn from ``generator`` module by module in
    ``model.modules()`` order. Biases and BatchNorm are left alone. PAGS's ``rescore`` sampler
    scores the perturbed copy and computes spectra with the clean weights.

    Parameters
    ----------
    model : torch.nn.Module
        The network; copied unless ``inplace``.
    generator : torch.Generator
        Source of the noise; the same state gives the same noise.
    inplace : bool, optional
        Perturb ``model`` itself instead of a deep copy.

    Returns
    -------
    torch.nn.Module
        The perturbed model (a copy unless ``inplace``).
    """
    if not isinstance(generator, torch.Generator):
        raise MaskValidationError(
            f"generator must be a torch.Generator, not {type(generator).__name__}"
        )
    target = model if inplace else copy.deepcopy(model)
    with torch.no_grad():
        for mod in target.modules():
            if not isinstance(mod, MASKABLE_TYPES):
                continue
            if not isinstance(mod, nn.Linear):  # a convolution
                sigma = math.sqrt(2.0 / (math.prod(mod.kernel_size) * mod.out_channels))
            else:
                sigma = 0.01
            w = mod.weight
            dtype = w.dtype if w.dtype in (torch.float32, torch.float64) else torch.float32
            noise = torch.randn(w.shape, generator=generator, device=generator.device, dtype=dtype)
            w.add_(noise.to(w.device, w.dtype), alpha=sigma)
    return target
