r"""Batched scoring of PAGS candidates: N23's two layer criteria and the network score.

For a layer ℓ with mask ``M`` and the weights ``θ`` it is scored on (pags-spec §3.5), the
full-spectrum coordinate is

.. math::

    c_ℓ = (Δr_ℓ,\ λ_ℓ,\ \mathrm{IMDB}_{Δr,ℓ},\ \mathrm{IMDB}_{λ,ℓ})

with ``Δr`` the Ramanujan gap of the layer graph, ``λ = σ₁(|θ⊙M|) − σ₂(|θ⊙M|)`` the weighted
spectral gap, and the IMDB terms their Cheeger-weighted means over the nested regular subgraphs
([N23]_; :mod:`masktopo.analysis.metrics`). Entries that are undefined (the layer fails the
Ramanujan gate, no IMDB group survives) are set to 0, as the N23 code does. The two selection
criteria of a layer are

* ``imdb`` — ``IMDB_Δr,ℓ`` (undefined → 0, or NaN with ``invalid="skip"``);
* ``fs`` — ``‖c_ℓ − ref_ℓ‖₂``, the full-spectrum distance; ``ref = 0`` (the origin, what the
  author selection code uses) or the base mask's coordinate (pags-spec A5);

and the network score is ``S = mean_ℓ fs_ℓ`` (over all layers, or over the layers that pass the
gate with ``invalid="skip"``; pags-spec §3.6, A9).

Every layer of every candidate is planned first and all spectra are solved by one
:func:`~masktopo.analysis.spectral.solve_many` call (:func:`~masktopo.analysis.metrics.
layer_metric_rows`), on the CPU or batched on CUDA. :func:`rank_candidates` is the ranking pass
PAGS runs first: rigorous upper bounds of both criteria from a few Lanczos steps per matrix
(:mod:`masktopo.analysis.ranking`), and the exact criteria of chosen layers on demand, equal to
:func:`score_candidates`'s.

Scores are rounded to 27 significant bits (about 8 decimal digits) before they are compared: the
batched solvers are exact to about 1e-12 relative, but their last bits depend on which other
matrices share the batch, and selection must not depend on how candidates were batched or split
across processes.

References
----------
.. [N23] D. N. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology
   is a secret weapon", NeurIPS 2023.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..analysis.metrics import Options, layer_metric_rows
from ..analysis.ranking import COORDINATES, FLOOR_MARGIN, KeptPositions, rank_layers
from ..errors import MaskValidationError, UnknownNameError
from ..masks import MaskSet, check_layer_mapping, check_weight
from .config import INVALID

#: Metric columns computed for every candidate layer.
COORD_METRICS = COORDINATES
_BITS = 27


def quantize(x: np.ndarray) -> np.ndarray:
    """Round float64 values to 27 significant bits (NaN and ±0 are kept)."""
    x = np.asarray(x, dtype=np.float64)
    m, e = np.frexp(x)
    return np.ldexp(np.round(m * (1 << _BITS)) / (1 << _BITS), e)


@dataclass(frozen=True)
class Scores:
    """Per-layer PAGS criteria of ``c`` candidates over ``L`` layers.

    Attributes
    ----------
    layers : tuple of str
        Layer names (columns).
    coords : numpy.ndarray
        ``(c, L, 4)`` full-spectrum coordinates ``(Δr, λ, IMDB_Δr, IMDB_λ)``, undefined as 0.
    valid : numpy.ndarray
        ``(c, L)`` bool: the layer passes the Ramanujan gate (Δr and λ are defined).
    imdb_defined : numpy.ndarray
        ``(c, L)`` bool: ``IMDB_Δr`` is defined.
    fs : numpy.ndarray
        ``(c, L)`` full-spectrum distance ``‖c_ℓ − ref_ℓ‖₂`` (quantized).
    nnz : numpy.ndarray
        ``(c, L)`` int64 kept entries per layer.
    """

    layers: tuple[str, ...]
    coords: np.ndarray
    valid: np.ndarray
    imdb_defined: np.ndarray
    fs: np.ndarray
    nnz: np.ndarray

    def __len__(self) -> int:
        return self.fs.shape[0]

    def imdb(self, invalid: str = "zero") -> np.ndarray:
        """``(c, L)`` IMDB Ramanujan gap, quantized; undefined → 0 (``"zero"``) or NaN."""
        check_invalid(invalid)
        v = quantize(self.coords[..., 2])
        return v if invalid == "zero" else np.where(self.imdb_defined, v, np.nan)

    def fs_criterion(self, invalid: str = "zero") -> np.ndarray:
        """``(c, L)`` full-spectrum distance; with ``"skip"`` NaN where the gate fails."""
        check_invalid(invalid)
        return self.fs if invalid == "zero" else np.where(self.valid, self.fs, np.nan)

    def network(self, invalid: str = "zero") -> np.ndarray:
        """``(c,)`` network score: mean ``fs`` over layers (``"skip"``: over gated layers)."""
        check_invalid(invalid)
        if invalid == "zero":
            return quantize(self.fs.mean(axis=1))
        fs = np.where(self.valid, self.fs, 0.0)
        n = self.valid.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return quantize(np.where(n > 0, fs.sum(axis=1) / np.maximum(n, 1), np.nan))

    def take(self, index) -> Scores:
        """The scores of the candidates ``index`` (an int keeps a leading axis of 1)."""
        idx = np.atleast_1d(np.asarray(index))
        return Scores(self.layers, self.coords[idx], self.valid[idx], self.imdb_defined[idx],
                      self.fs[idx], self.nnz[idx])  # fmt: skip

    def set_layers(self, row: int, other: Scores, other_row: int, which: np.ndarray) -> None:
        """Copy layers ``which`` (bool ``(L,)``) of ``other[other_row]`` into ``self[row]``."""
        for name in ("coords", "valid", "imdb_defined", "fs", "nnz"):
            getattr(self, name)[row, which] = getattr(other, name)[other_row, which]

    def copy(self) -> Scores:
        return Scores(self.layers, self.coords.copy(), self.valid.copy(),
                      self.imdb_defined.copy(), self.fs.copy(), self.nnz.copy())  # fmt: skip

    @staticmethod
    def concat(parts: Sequence[Scores]) -> Scores:
        first = parts[0]
        return Scores(first.layers, *(np.concatenate([getattr(p, n) for p in parts])
                                      for n in ("coords", "valid", "imdb_defined", "fs", "nnz")))  # fmt: skip

    def to_dict(self) -> dict:
        """Plain lists (JSON) for the resume state."""
        return {"layers": list(self.layers), "coords": self.coords.tolist(),
                "valid": self.valid.tolist(), "imdb_defined": self.imdb_defined.tolist(),
                "fs": self.fs.tolist(), "nnz": self.nnz.tolist()}  # fmt: skip

    @staticmethod
    def from_dict(d: Mapping) -> Scores:
        return Scores(tuple(d["layers"]), np.asarray(d["coords"], dtype=np.float64),
                      np.asarray(d["valid"], dtype=bool), np.asarray(d["imdb_defined"], dtype=bool),
                      np.asarray(d["fs"], dtype=np.float64), np.asarray(d["nnz"], dtype=np.int64))  # fmt: skip


def check_invalid(invalid: str) -> str:
    if invalid not in INVALID:
        raise UnknownNameError("invalid-value rule", invalid, INVALID)
    return invalid


def _candidates(masksets, where: str) -> list:
    """``masksets`` as a list of candidates (MaskSet, or the positions of a Drawn one), all with
    the layers and shapes of the first."""
    if isinstance(masksets, MaskSet) or not isinstance(masksets, Sequence | Iterator):
        raise MaskValidationError(f"{where} takes a sequence of MaskSets (one per candidate), not "
                                  f"a {type(masksets).__name__}")  # fmt: skip
    masksets = list(masksets)
    if not masksets:
        raise MaskValidationError(f"{where} needs at least one candidate")
    first = None
    for i, ms in enumerate(masksets):
        if not isinstance(ms, Mapping) or not callable(getattr(ms, "shape", None)):
            raise MaskValidationError(f"candidate {i} is a {type(ms).__name__}, not a MaskSet")
        shapes = [(n, tuple(ms.shape(n))) for n in ms]
        if first is None:
            first = shapes
        elif shapes != first:
            what = "layers" if [n for n, _ in shapes] != [n for n, _ in first] else "layer shapes"
            raise MaskValidationError(f"candidate {i} has other {what} than candidate 0")
    return masksets


def _check_theta(weights, first) -> dict[str, torch.Tensor]:
    """θ for every layer of the candidates, checked once for all of them: a finite
    floating-point tensor of the layer's shape (:func:`masktopo.masks.check_weight`). A weight
    of another shape or with NaN would score every candidate silently wrong."""
    check_layer_mapping(weights, "weights")
    out = {}
    for n in first:
        if n not in weights:
            raise MaskValidationError(f"no weight for layer {n!r}")
        shape_only = torch.empty(tuple(first.shape(n)), dtype=torch.bool, device="meta")
        out[n] = check_weight(n, weights[n], shape_only)
    return out


def score_candidates(
    masksets: Sequence[MaskSet],
    *,
    weights: Mapping[str, torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    route: str = "auto",
    options: Options | None = None,
    reference: np.ndarray | None = None,
) -> Scores:
    """Score many candidate mask sets with one batched spectral solve.

    Parameters
    ----------
    masksets : sequence of MaskSet
        Candidates, all with the same layer names in the same order.
    weights : mapping of str to torch.Tensor, optional
        The weights ``θ`` every candidate is scored on (the PaI initialization, or the warm-start
        weights). Default: each candidate's own weights (an error if it has none).
    device : str or torch.device, optional
        Where the singular values are computed (``"cuda"``: the batched Gram route for the
        matrices :func:`~masktopo.analysis.spectral.on_device` sends there, the CPU engine for
        the others).
    route : {"auto", "batched"}
        ``"batched"``: the device route on the CPU too (the CUDA code path, for tests).
    options : masktopo.analysis.metrics.Options, optional
        Conv reading, gate and IMDB variant (default: unrolled, n23, n23). Empty layers are
        always allowed (their coordinate is 0).
    reference : numpy.ndarray, optional
        ``(L, 4)`` coordinate the distance is measured from (default: the origin).

    Returns
    -------
    Scores
        Per-layer coordinates and criteria of every candidate, in order.

    Examples
    --------
    >>> import torch
    >>> from masktopo.masks import MaskSet
    >>> g = torch.Generator().manual_seed(0)
    >>> w = {"fc.weight": torch.randn(20, 30, generator=g)}
    >>> cands = [MaskSet({"fc.weight": torch.rand(20, 30, generator=g) < 0.3}) for _ in range(3)]
    >>> s = score_candidates(cands, weights=w)
    >>> s.fs.shape, s.network().shape
    ((3, 1), (3,))
    """
    masksets = _candidates(masksets, "score_candidates")
    names = tuple(masksets[0])
    if weights is not None:
        weights = _check_theta(weights, masksets[0])
    base = options if options is not None else Options()
    opts = Options(base.conv, base.gate, base.imdb, base.narc, allow_empty=True)
    layers = []
    for i, ms in enumerate(masksets):
        ws = getattr(ms, "weights", None) if weights is None else weights
        if ws is None:
            raise MaskValidationError(f"candidate {i} has no weights and none were given")
        for n in names:
            if n not in ws:
                raise MaskValidationError(f"no weight for layer {n!r}")
            layers.append((n, ms[n], ws[n]))
    rows = layer_metric_rows(layers, metrics=[*COORD_METRICS, "n_edges"], options=opts,
                             device=device, route=route)  # fmt: skip
    c, L = len(masksets), len(names)
    raw = np.array([[r[k] for k in COORD_METRICS] for r in rows], dtype=np.float64).reshape(c, L, 4)
    nnz = np.array([r["n_edges"] for r in rows], dtype=np.int64).reshape(c, L)
    return _scores(names, raw, nnz, reference)


def _scores(names, raw: np.ndarray, nnz: np.ndarray, reference, valid=None) -> Scores:
    """Scores from raw ``(c, L, 4)`` coordinates (NaN where undefined); ``valid`` the gate's
    verdict when the raw Δr is not there to tell (default: where Δr is defined)."""
    valid = ~np.isnan(raw[..., 0]) if valid is None else valid
    imdb_defined = ~np.isnan(raw[..., 2])
    coords = np.nan_to_num(raw, nan=0.0)
    coords[..., 1] = np.where(valid, coords[..., 1], 0.0)  # λ counts only behind the gate
    diff = coords if reference is None else coords - np.asarray(reference)[None]
    fs = quantize(np.sqrt((diff * diff).sum(axis=-1)))
    return Scores(tuple(names), coords, valid, imdb_defined, fs, nnz)


class Ranking:
    """The ranking pass over ``c`` candidates (:func:`rank_candidates`).

    Attributes
    ----------
    estimate : Scores
        Criteria from the ranking pass's Ritz values (within about 1e-2 of the exact ones; the
        validity flags and edge counts are exact). Without estimates (:func:`rank_candidates`
        ``estimates=False``) only the IMDB criterion is estimated: ``fs`` and the coordinate's
        other entries are NaN.
    upper : Scores
        Rigorous upper bounds: ``upper.imdb()`` ≥ the exact IMDB criterion, ``upper.fs`` ≥ the
        exact full-spectrum distance (so ``upper.network()`` ≥ the exact network score), each
        after quantization (``fs`` is +∞ without estimates). Only these two criteria are
        meaningful in it.
    """

    def __init__(self, bounds, names, c: int, reference):
        L = len(names)
        self._bounds, self._c, self._names, self._ref = bounds, c, tuple(names), reference
        nnz = bounds.n_edges.reshape(c, L)
        self._nnz = nnz
        self._valid = bounds.valid.reshape(c, L)
        self.estimate = self._blank(_scores(names, bounds.estimate.reshape(c, L, 4), nnz,
                                            reference, self._valid))  # fmt: skip
        lo = np.nan_to_num(bounds.lower.reshape(c, L, 4), nan=0.0)
        hi = np.nan_to_num(bounds.upper.reshape(c, L, 4), nan=0.0)
        valid = self.estimate.valid
        lo[..., 1] = np.where(valid, lo[..., 1], 0.0)
        hi[..., 1] = np.where(valid, hi[..., 1], 0.0)
        fs_hi = _fs_upper(lo, hi, reference)
        if not bounds.estimated:  # only IMDB_Δr was bounded: fs has no finite bound
            fs_hi[:] = np.inf
        self.upper = Scores(self._names, hi, valid, self.estimate.imdb_defined, fs_hi, nnz)

    def _blank(self, sc: Scores, keep: np.ndarray | None = None) -> Scores:
        """Without estimates: NaN for what was not computed (``fs`` and the coordinate's entries
        other than ``IMDB_Δr``) outside the layers ``keep`` (bool ``(c, L)``)."""
        if self._bounds.estimated:
            return sc
        gone = np.ones(sc.fs.shape, dtype=bool) if keep is None else ~keep
        sc.fs[gone] = np.nan
        for k in (0, 1, 3):
            sc.coords[gone, k] = np.nan
        return sc

    def exact(self, which: np.ndarray, floor: tuple | None = None) -> Scores:
        """Scores with the layers ``which`` (bool ``(c, L)``) computed exactly (equal to
        :func:`score_candidates`'s) and the estimates elsewhere.

        ``floor``: ``(imdb, fs)``, two ``(L,)`` arrays of criteria (PAGS: the best's,
        ``best.imdb(invalid)[0]`` and ``best.fs_criterion(invalid)[0]``; NaN: none). A layer
        whose exact ``IMDB_Δr`` or whose ``fs`` upper bound (from its exact binary spectra and
        bounded weighted ones) is below its floor is not finished
        (:meth:`~masktopo.analysis.ranking.LayerBounds.exact_screened`): its coordinate and
        ``fs`` are NaN, so that it can never be accepted."""
        which = np.asarray(which, dtype=bool)
        flat = np.flatnonzero(which.reshape(-1))
        raw = self._bounds.estimate.copy()
        c, L = self._c, len(self._names)
        dropped = np.zeros(c * L, dtype=bool)
        if floor is None:
            raw[flat] = self._bounds.exact(flat)
        else:
            f_imdb, f_fs = (np.asarray(f, dtype=np.float64).reshape(L) for f in floor)
            ref = self._ref

            def screen(i, lower, upper):
                j = i % L
                lo, hi = np.nan_to_num(lower, nan=0.0), np.nan_to_num(upper, nan=0.0)
                valid = self._valid.reshape(-1)[i]
                lo[:, 1] = np.where(valid, lo[:, 1], 0.0)
                hi[:, 1] = np.where(valid, hi[:, 1], 0.0)
                fs_hi = _fs_upper(lo, hi, None if ref is None else np.asarray(ref)[j])
                imdb_hi = quantize(upper[:, 2])  # NaN (undefined): not dropped by it
                return ~(_below(imdb_hi, f_imdb[j]) | _below(fs_hi, f_fs[j]))

            raw[flat], finished = self._bounds.exact_screened(flat, screen)
            dropped[flat] = ~finished
        sc = _scores(self._names, raw.reshape(c, L, 4), self._nnz, self._ref, self._valid)
        if dropped.any():
            sc.fs[dropped.reshape(c, L)] = np.nan
        return self._blank(sc, which.reshape(c, L))


def _fs_upper(lo: np.ndarray, hi: np.ndarray, reference) -> np.ndarray:
    """Upper bounds of the full-spectrum distance from coordinate bounds ``lo ≤ c ≤ hi`` (``(…,
    4)``, undefined entries 0 and ``λ`` 0 outside the gate, as :func:`_scores` reads them),
    quantized."""
    ref = 0.0 if reference is None else np.asarray(reference)
    far = np.maximum(np.abs(lo - ref), np.abs(hi - ref))  # ≥ |exact − ref| per entry
    return quantize(np.sqrt((far * far).sum(axis=-1)))


def _below(value: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """``value`` below ``floor`` by more than the rounding margin of
    :data:`~masktopo.analysis.ranking.FLOOR_MARGIN` (False where either is NaN)."""
    with np.errstate(invalid="ignore"):
        return value < floor - FLOOR_MARGIN * np.maximum(1.0, np.abs(floor))


def rank_candidates(
    masksets: Sequence[MaskSet],
    *,
    weights: Mapping[str, torch.Tensor],
    options: Options | None = None,
    reference: np.ndarray | None = None,
    steps: int | None = None,
    device: str | torch.device | None = None,
    route: str = "auto",
    bounds: str = "all",
    estimates: bool = True,
    floor: np.ndarray | None = None,
) -> Ranking:
    """The ranking pass: rigorous bounds and estimates of every candidate's criteria from a few
    Lanczos steps per matrix (:mod:`masktopo.analysis.ranking`), and the exact criteria of
    chosen layers on demand (:meth:`Ranking.exact`).

    Parameters
    ----------
    masksets : sequence of MaskSet or Drawn
        Candidates, all with the same layers in the same order (a
        :class:`~masktopo.pags.sampling.Drawn` candidate is read by its positions).
    weights : mapping of str to torch.Tensor
        The weights ``θ`` every candidate is scored on.
    options : masktopo.analysis.metrics.Options, optional
        As :func:`score_candidates`.
    reference : numpy.ndarray, optional
        ``(L, 4)`` coordinate the distance is measured from (default: the origin).
    steps : int, optional
        Lanczos steps per matrix (default :data:`masktopo.analysis.ranking.RANK_STEPS`).
    device : str or torch.device, optional
        ``"cuda"``: both passes on the batched route on the GPU when a layer is large enough
        (:func:`~masktopo.analysis.ranking.rank_layers`), else on the CPU route.
    route : {"auto", "batched"}
        ``"batched"``: the batched (CUDA) route on the CPU too.
    bounds : {"all", "imdb"}
        ``"imdb"``: tight upper bounds of the IMDB criterion only (all the layerwise rule needs
        in practice), a cheaper pass (:func:`~masktopo.analysis.ranking.rank_layers`).
    estimates : bool
        False (with ``bounds="imdb"``): rank by the IMDB criterion alone, about half the
        ranking's cost; the estimates' ``fs`` is then NaN, and so is that of the layers
        :meth:`Ranking.exact` does not compute.
    floor : numpy.ndarray, optional
        ``(L,)``, with ``estimates=False``: per layer the IMDB criterion a candidate's layer must
        reach to matter (PAGS: the best's, ``best.imdb()[0]``; NaN: none). A layer whose upper
        bound is below it after a few Lanczos steps keeps that looser bound
        (:func:`~masktopo.analysis.ranking.rank_layers` ``floor``): the layers whose bound
        reaches a floor at least as high are the same, the estimates are the shorter pass's.

    Returns
    -------
    Ranking
    """
    masksets = _candidates(masksets, "rank_candidates")
    weights = _check_theta(weights, masksets[0])
    return _rank_checked(masksets, weights, options=options, reference=reference, steps=steps,
                         device=device, route=route, bounds=bounds, estimates=estimates,
                         floor=floor)  # fmt: skip


def _rank_checked(masksets: list, weights: Mapping[str, torch.Tensor], *, options=None,
                  reference=None, steps=None, device=None, route="auto", bounds="all",
                  estimates=True, floor=None) -> Ranking:  # fmt: skip
    """:func:`rank_candidates` for candidates and ``θ`` already checked (:func:`_candidates`,
    :func:`_check_theta`): the PAGS engine checks θ once, not in each of its ~250 calls at
    n = 1000 (summing ResNet-18's θ takes ~3 ms)."""
    names = tuple(masksets[0])
    layers = []
    for ms in masksets:
        positions = getattr(ms, "positions", None)  # a Drawn candidate: no dense mask needed
        for n in names:
            mask = ms[n] if positions is None else KeptPositions(ms.shape(n), positions(n))
            layers.append((n, mask, weights[n]))
    kw = {} if steps is None else {"steps": steps}  # checked there
    dev = None if device is None or torch.device(device).type == "cpu" else device
    if floor is not None:
        floor = np.asarray(floor, dtype=np.float64).reshape(-1)
        if floor.size != len(names):
            raise ValueError(f"floor has {floor.size} values for {len(names)} layers")
        kw["floor"] = np.tile(floor, len(masksets))
    bounds = rank_layers(layers, options=options, device=dev, route=route, bounds=bounds,
                         estimates=estimates, **kw)  # fmt: skip
    return Ranking(bounds, names, len(masksets), reference)
