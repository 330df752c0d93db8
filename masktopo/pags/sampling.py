"""PAGS candidate sources, per-candidate seeding and density repair.

Candidate ``t`` (``t = 0`` is the base mask) draws all its randomness from generators seeded by
``(seed, t)`` only (:func:`generators`), so a run's candidates do not depend on how they are
chunked or split across processes.

Samplers (pags-spec §4.5, ambiguity A3):

``rescore`` (default, author code)
    Re-run the PaI method: data-driven methods score ``iters`` fresh minibatches of
    ``batch_size`` examples drawn (without replacement) from the training set; methods whose
    score would not change between draws (SynFlow, magnitude, and iterative SNIP/FORCE as in the
    author code: ``METHODS[m].rescore_noise``) score a copy of the model whose weights got the
    spec's Gaussian noise (:func:`masktopo.pai.perturb_weights`); random methods (ERK, ER, random,
    uniform) just draw again. The candidate is always scored on the clean ``θ``.
``rewire``
    Random re-wiring inside each layer at the base mask's exact per-layer counts: ``k_ℓ`` distinct
    positions drawn uniformly (:func:`masktopo.pai.subsets.uniform_subset`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch

from ..errors import MaskValidationError
from ..masks import MaskSet, mask_from_positions
from ..pai.subsets import random_positions, uniform_subset
from ..seeding import seed_for
from .config import SAMPLERS  # noqa: F401  (declared with the config, named here too)

#: A candidate source: ``t -> MaskSet`` (masks only; weights are ignored). A source whose
#: attribute ``concurrent`` is true may be called for different ``t`` from several threads at
#: once and gives small candidates (:class:`Drawn`): the PAGS loop then draws and ranks them a
#: few chunks ahead in its worker threads (:mod:`masktopo.pags.engine`).
Source = Callable[[int], MaskSet]


def generators(seed: int, t: int) -> tuple[torch.Generator, np.random.Generator]:
    """The torch and numpy generators of candidate ``t`` of a run seeded with ``seed``: the
    streams ``(seed, "candidate", t, "torch")`` and ``(..., "numpy")`` of
    :func:`masktopo.seeding.seed_for`, the one seed derivation of the package."""
    g = torch.Generator().manual_seed(seed_for(seed, "candidate", t, "torch"))
    return g, np.random.default_rng(seed_for(seed, "candidate", t, "numpy"))


def rewire(base: MaskSet, rng: np.random.Generator) -> MaskSet:
    """A random mask set with exactly ``base``'s per-layer counts (uniform k-subsets,
    :func:`masktopo.pai.subsets.uniform_subset`)."""
    masks = {}
    for name in base:
        shape = base.shape(name)
        numel = base.numel(name)
        k = base.nnz(name)
        masks[name] = mask_from_positions(shape, uniform_subset(rng, numel, k))
    return MaskSet(masks, {n: base.kind(n) for n in base})


def repair(ms: MaskSet, counts: Mapping[str, int], weights: Mapping[str, torch.Tensor]) -> MaskSet:
    """Bring every layer back to ``counts[layer]`` kept entries, by weight magnitude.

    A layer with too many entries keeps its ``k`` largest-``|θ|`` entries; a layer with too few
    adds the largest-``|θ|`` entries it does not have. Ties go to the lower flat index, so the
    result is deterministic. Layers already at their count are returned unchanged.
    """
    masks = {}
    for name in ms:
        m = ms[name]
        k = int(counts[name])
        have = int(torch.count_nonzero(m))
        if have == k:
            masks[name] = m
            continue
        if not 0 <= k <= m.numel():
            raise MaskValidationError(f"repair: count {k} does not fit layer {name!r}")
        flat = m.reshape(-1).clone()
        mag = weights[name].detach().reshape(-1).abs().to(torch.float64).cpu().numpy()
        pool = np.flatnonzero(flat.numpy() if have > k else ~flat.numpy())
        order = pool[np.argsort(-mag[pool], kind="stable")]
        if have > k:
            flat[:] = False
            flat[torch.from_numpy(order[:k])] = True
        else:
            flat[torch.from_numpy(order[: k - have])] = True
        masks[name] = flat.reshape(m.shape)
    return MaskSet(masks, {n: ms.kind(n) for n in ms})


class RewireSource:
    """``rewire`` sampler: candidate ``t`` re-wires every layer of ``base`` at its counts."""

    def __init__(self, base: MaskSet, seed: int):
        self.base = base.without_weights()
        self.seed = int(seed)

    def __call__(self, t: int) -> MaskSet:
        return rewire(self.base, generators(self.seed, t)[1])


def minibatches(dataset, iters: int, batch_size: int, generator: torch.Generator) -> list:
    """``iters`` random minibatches of ``batch_size`` ``(x, y)`` pairs from ``dataset``.

    Examples are drawn without replacement within each pass over the data (a fresh permutation
    from ``generator`` per pass), so a small dataset is cycled.
    """
    n = len(dataset)
    if n == 0:
        raise MaskValidationError("the dataset is empty")
    need = iters * batch_size
    perms = [torch.randperm(n, generator=generator) for _ in range(-(-need // n))]
    idx = torch.cat(perms)[:need]
    return [_gather(dataset, idx[i * batch_size : (i + 1) * batch_size]) for i in range(iters)]


def full_batches(dataset, batch_size: int) -> Iterator:
    """The whole dataset in order, in batches of ``batch_size`` (the base mask's "full data")."""
    n = len(dataset)
    for start in range(0, n, batch_size):
        yield _gather(dataset, torch.arange(start, min(n, start + batch_size)))


def _gather(dataset, idx: torch.Tensor):
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None:
        return tuple(t[idx] for t in tensors[:2])
    from torch.utils.data import default_collate

    batch = default_collate([dataset[int(i)] for i in idx])
    return tuple(batch[:2])


class Drawn(Mapping[str, torch.Tensor]):
    """A candidate given by the kept positions of every layer: the dense bool mask of a layer is
    built only when it is read (``drawn[name]``, for the files written and the fingerprints of
    accepted layers), never for scoring (:func:`masktopo.pags.scoring.rank_candidates` reads
    :meth:`positions`).

    Parameters
    ----------
    shapes : mapping of str to tuple of int
        Layer shapes, in order.
    positions : mapping of str to numpy.ndarray
        Ascending int64 flat (C-order) positions of the kept entries of every layer.
    kinds : mapping of str to str
        Layer kinds (:meth:`masktopo.masks.MaskSet.kind`).
    """

    def __init__(self, shapes, positions, kinds):
        self._shapes = {n: tuple(int(x) for x in s) for n, s in shapes.items()}
        self._pos = dict(positions)
        self._kinds = dict(kinds)
        self._dense: dict[str, torch.Tensor] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._dense:
            self._dense[name] = mask_from_positions(self._shapes[name], self._pos[name])
        return self._dense[name]

    def __iter__(self):
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)

    def positions(self, name: str) -> np.ndarray:
        """Ascending int64 flat positions of the kept entries of layer ``name``."""
        return self._pos[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def kind(self, name: str) -> str:
        return self._kinds[name]

    def without_weights(self) -> Drawn:
        return self

    def maskset(self) -> MaskSet:
        """The dense :class:`~masktopo.masks.MaskSet`."""
        return MaskSet({n: self[n] for n in self}, dict(self._kinds))


class _RandomDraw:
    """Candidates of a random PaI method (ERK, ER, uniform, random) drawn as positions.

    :func:`masktopo.pai.prune` draws a random method's mask as a uniform k-subset per layer
    (layer-wise methods, counts fixed by the method) or of all pruned entries (global scope),
    with :func:`masktopo.pai.subsets.random_positions` from the candidate's torch generator.
    This draws the same positions (the same call; tested against ``pai.prune``) without the
    dense masks; the per-layer counts, the global total and the dense layers are read off the
    base mask.
    """

    def __init__(self, base: MaskSet):
        meta = base.meta or {}
        dense = set(meta.get("dense_layers", []))
        self.names = list(base)
        self.shapes = {n: base.shape(n) for n in self.names}
        self.kinds = {n: base.kind(n) for n in self.names}
        self.pruned = [n for n in self.names if n not in dense]
        self.dense = [n for n in self.names if n in dense]
        self.sizes = np.array([base.numel(n) for n in self.pruned], dtype=np.int64)
        self.counts = [base.nnz(n) for n in self.pruned]
        self.local = meta.get("scope") != "global"
        self.all = {n: np.arange(base.numel(n), dtype=np.int64) for n in self.dense}

    def __call__(self, g: torch.Generator) -> Drawn:
        if self.local:
            picks = random_positions(g, self.sizes, counts=self.counts)
        else:
            picks = random_positions(g, self.sizes, total=sum(self.counts))
        pos = dict(self.all)
        pos.update(zip(self.pruned, picks, strict=True))
        return Drawn(self.shapes, {n: pos[n] for n in self.names}, self.kinds)


def random_draw(base: MaskSet, method: str) -> _RandomDraw | None:
    """The position sampler of ``method`` when it is a random one drawn in one step by
    :func:`masktopo.pai.prune` (its base mask says how), else None."""
    from .. import pai

    known = pai.METHODS.get(method)
    meta = base.meta or {}
    if known is None or not known.randomized or meta.get("method") != known.name:
        return None
    if meta.get("iterations", 0) not in (0, 1):
        return None
    return _RandomDraw(base)


class RescoreSource:
    """``rescore`` sampler: re-run the PaI method for each candidate.

    Parameters
    ----------
    model : torch.nn.Module
        The network at ``θ`` (never modified: noisy re-scoring uses a perturbed copy).
    method : str
        A name from :data:`masktopo.pai.METHODS`.
    density : float
        Target density.
    seed : int
        Run seed; candidate ``t`` uses :func:`generators` ``(seed, t)``.
    dataset : torch.utils.data.Dataset, optional
        Training data; required by data-driven methods.
    iters, batch_size : int
        Minibatches per candidate and their size.
    prune, perturb : callable, optional
        :func:`masktopo.pai.prune` and :func:`masktopo.pai.perturb_weights` (injected for tests).
    data_free : bool, optional
        Whether the method needs no data (default: from the METHODS registry).
    noise : bool, optional
        Score a perturbed copy of the model (default: ``METHODS[method].rescore_noise``; for a
        method outside the registry, ``data_free``).
    prune_kwargs : dict, optional
        Extra keyword arguments for ``prune``.
    base : MaskSet, optional
        The base mask ``prune`` gave for this method and density: for a random method (ERK, ER,
        uniform, random) candidates are then drawn as positions (:class:`Drawn`, the same masks
        as ``prune`` draws, without building them densely).
    """

    def __init__(self, model, method: str, density: float, seed: int, *, dataset=None,
                 iters: int = 20, batch_size: int = 128, prune=None, perturb=None,
                 data_free: bool | None = None, noise: bool | None = None,
                 prune_kwargs: dict | None = None, base: MaskSet | None = None):  # fmt: skip
        injected = prune is not None
        if prune is None or perturb is None or data_free is None or noise is None:
            from .. import pai

            prune = pai.prune if prune is None else prune
            perturb = pai.perturb_weights if perturb is None else perturb
            if data_free is None:
                data_free = bool(pai.METHODS[method].data_free)
            if noise is None:  # the registry's choice; an injected stub method: data-free ones
                known = pai.METHODS.get(method)
                noise = bool(known.rescore_noise) if known is not None else bool(data_free)
        self.model, self.method, self.density = model, method, float(density)
        self.seed, self.dataset = int(seed), dataset
        self.iters, self.batch_size = int(iters), int(batch_size)
        self.prune, self.perturb, self.data_free = prune, perturb, bool(data_free)
        self.noise = bool(noise)
        self.kwargs = dict(prune_kwargs or {})
        if not self.data_free and dataset is None:
            raise MaskValidationError(f"PaI method {method!r} needs a dataset")
        self.draw = None
        if base is not None and not injected and self.data_free and not self.noise:
            self.draw = random_draw(base, method)

    @property
    def concurrent(self) -> bool:
        """Whether candidates are drawn as positions (:class:`Drawn`: a pure function of the
        seed and ``t``, safe from several threads at once); a method that scores the model is
        not."""
        return self.draw is not None

    def __call__(self, t: int) -> MaskSet | Drawn:
        g, _ = generators(self.seed, t)
        if self.draw is not None:  # a random method: positions, no dense masks
            return self.draw(g)
        # Methods whose score does not change between draws (SynFlow, magnitude, iterative SNIP
        # as in the author code) score a perturbed copy; self.model is untouched. Random methods
        # (ERK, ...) need no noise: their masks are random by construction.
        model = self.perturb(self.model, g) if self.noise else self.model
        batches = None
        if not self.data_free:
            batches = minibatches(self.dataset, self.iters, self.batch_size, g)
        return self.prune(model, self.method, self.density, batches=batches, generator=g,
                          weights=False, **self.kwargs)  # fmt: skip
