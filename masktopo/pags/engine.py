"""The PAGS loop: sample candidates, score them in batches, keep the best (pags-spec §4.6).

``t = 0`` is the base mask (the plain PaI mask, snapshot 0). For ``t = 1 … n`` a candidate comes
from the source (``rescore`` or ``rewire``, :mod:`masktopo.pags.sampling`), optionally repaired
to the base's per-layer counts, and is scored on ``θ`` (:mod:`masktopo.pags.scoring`).
Candidates are generated and scored in chunks; selection then runs over them in ``t`` order:

``layerwise`` (default, author code)
    For every layer ℓ, the candidate's layer replaces the best's when both
    ``IMDB_Δr,ℓ(cand) ≥ IMDB_Δr,ℓ(best)`` and ``fs_ℓ(cand) ≥ fs_ℓ(best)``. A layer identical to
    the best's is not counted as a change.
``global``
    The whole candidate replaces the best when its network score ``mean_ℓ fs_ℓ`` is strictly
    larger.

Scoring (default) is *ranking then exact*: a ranking pass bounds every candidate layer's two
criteria from a few Lanczos steps per matrix (:func:`~masktopo.pags.scoring.rank_candidates`:
rigorous upper bounds), and only the layers whose upper bounds can still be accepted against the
best before the chunk are computed exactly; the best only improves in ``t`` order, so no other
layer could be accepted, and the selection, the best's scores and the snapshots equal the
all-exact path's (``exact=True``, ``--exact``). Under the layerwise rule only the IMDB bound is
made tight (``bounds="imdb"``): the full-spectrum distance's upper bound rests on ``σ₂ ≤ σ₁``
and did not reject a single layer in the runs measured (docs/performance.md), so the cheaper
``σ₁ ≤ √(‖B‖₁‖B‖∞)`` replaces the Collatz–Wielandt pass there; the global rule keeps both.
Without ``estimates`` (the default) the layerwise rule's ranking bounds ``IMDB_Δr`` alone (its
groups' binary matrices; the fs bound is then +∞, which changes nothing, and the pass costs about
half). Rows of ``candidates.parquet`` hold the exact criteria of the layers accepted from the
candidate and the ranking estimates of the others (``IMDB_Δr`` only, ``fs`` NaN, without
``estimates``), so the rows, too, do not depend on the chunk size or the number of processes.

So every layer of the result scores at least its base layer under both criteria (layerwise), or
the result's network score is at least the base's (global): PAGS never returns a mask scoring below
its base under its own criterion.

Under ``torchrun`` (``torch.distributed`` initialized) rank ``r`` generates and scores the
candidates ``t ≡ r (mod world)`` of every chunk; the scores are all-gathered, every rank applies
the same selection in ``t`` order, and only the accepted layers' masks travel. The result does not
depend on the number of processes, nor on the chunk size. Rank 0 writes the files.

Output directory (all writes atomic): ``base.safetensors``, ``best.safetensors`` (masks + θ),
``snapshots/snapshot-NNNNNN.safetensors`` (snapshot 0 is the base; then every ``snapshot_every``
candidates when the best changed), ``candidates.parquet`` (one row per candidate, ``t = 0`` the
base), ``run.json`` (resolved config, seed, versions), ``state.json`` plus ``.pags-state/``
(the resume point, rewritten with candidates.parquet after a chunk once :data:`RESUME_EVERY_S`
seconds have passed since the last, and when the run ends or stops) and, once the run is
complete, ``summary.json``
(``final``: the best's and the base's network scores and densities, candidates, acceptances;
what ``masktopo summarize`` reads).
"""

from __future__ import annotations

import functools
import hashlib
import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import git_commit, versions
from ..analysis.metrics import layer_side
from ..analysis.spectral import on_device
from ..checks import is_int
from ..errors import MaskFileError, MaskValidationError
from ..files import atomic_write, atomic_write_bytes, atomic_write_json, require_parquet
from ..masks import MaskSet, kept_positions
from ..runs import RunLock, RunWriter, check_out_dir, check_same_config
from ..runs.layout import (
    BASE_FILE,
    BEST_FILE,
    CANDIDATES_FILE,
    SNAPSHOT_DIR,
    STATE_DIR,
    STATE_FILE,
    SUMMARY_FILE,
    snapshot_file,
    state_best_file,
)
from ..store import load as load_file
from ..store import save
from ..threads import default_threads, one_blas_thread
from .config import RESUMABLE_CHANGES, PagsConfig
from .pipeline import Tasks
from .sampling import Source, repair
from .scoring import Ranking, Scores, _rank_checked, score_candidates

#: Seconds of work between two resume points (state.json, candidates.parquet and the copy of
#: the best masks, written after a chunk); the run's end and a stop always write one.
RESUME_EVERY_S = 2.0
#: The ``format`` of state.json, the resume point (its version: 1).
STATE_FORMAT = "masktopo.pags-state"
STATE_VERSION = 1
#: What state.json's ``format`` said before the run layer (still read on resume).
_LEGACY_STATE_FORMAT = "masktopo.pags"


@dataclass
class PagsResult:
    """What :func:`run_pags` returns.

    Attributes
    ----------
    best, base : MaskSet
        The best mask and the base mask, with the weights θ they were scored on.
    best_scores, base_scores : Scores
        Their per-layer criteria (one row each).
    n_done : int
        Candidates processed (``n`` unless stopped early).
    candidates : pandas.DataFrame
        One row per candidate (``t = 0`` is the base); built on first use (from ``rows``, the
        same rows as dicts).
    snapshots : list of int
        The ``t`` of every snapshot written (0 first).
    out : pathlib.Path or None
        The output directory.
    exact_layers : int
        Candidate layers scored exactly in this run, over all processes (every layer with
        ``exact=True``; with ranking, those whose bounds could still be accepted, less those
        equal to the best's, whose scores are the best's). Speed only.
    """

    best: MaskSet
    base: MaskSet
    best_scores: Scores
    base_scores: Scores
    n_done: int
    rows: list[dict]
    snapshots: list[int]
    out: Path | None
    exact_layers: int = 0

    @functools.cached_property
    def candidates(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.rows)


class _Comm:
    """The process group (or a single process)."""

    def __init__(self):
        import torch.distributed as dist

        self.dist = dist if dist.is_available() and dist.is_initialized() else None
        self.rank = self.dist.get_rank() if self.dist else 0
        self.world = self.dist.get_world_size() if self.dist else 1

    def gather(self, obj) -> list:
        if self.dist is None:
            return [obj]
        out = [None] * self.world
        self.dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        self.gather(None)


def _fingerprint(positions: np.ndarray) -> str:
    """A layer mask's identity among masks of the same shape: a hash of its kept positions."""
    data = np.ascontiguousarray(positions, dtype=np.int64).tobytes()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _positions(masks, name: str) -> np.ndarray:
    """The kept positions of layer ``name`` of a candidate: those it was drawn as
    (:class:`~masktopo.pags.sampling.Drawn`: no dense mask is built), else a mask's."""
    positions = getattr(masks, "positions", None)
    return positions(name) if positions is not None else kept_positions(masks[name])


class _LazyFingerprints:
    """``name → _fingerprint`` of a candidate's layer, computed on first use (only accepted
    layers need it)."""

    def __init__(self, masks):
        self.masks, self.done = masks, {}

    def __getitem__(self, name: str) -> str:
        if name not in self.done:
            self.done[name] = _fingerprint(_positions(self.masks, name))
        return self.done[name]


def _owner_fingerprints(fps: _LazyFingerprints, names: list[str],
                        could: np.ndarray) -> dict[str, str]:  # fmt: skip
    """The fingerprints a candidate's owner sends with several processes: those of the layers
    ``could`` (bool ``(L,)``) that can still be accepted; the others are never read."""
    return {n: fps[n] for n, c in zip(names, could, strict=True) if c}


#: Chunks drawn and ranked ahead of the one being selected (candidates drawn as positions and
#: a worker thread only: a chunk of ResNet-18 candidates and their plans hold ~45 MB); more
#: when the chunks are too small to queue two tasks per worker (:class:`_Ahead`).
AHEAD = 2
#: Candidates per task when threads share the work: one per task costs ~1.5 ms more per
#: candidate in each pass (the calls' own overhead); four keep the threads evenly loaded.
PER_TASK = 4


class _Ahead:
    """This process's candidates drawn and ranked a few chunks ahead (:class:`~masktopo.pags.
    pipeline.Tasks`): one task per :data:`PER_TASK` candidates when a worker thread shares the
    work, one per chunk otherwise (the batched route ranks a chunk in one call). A source that
    is not ``concurrent`` (safe to call from several threads) is drawn by this thread, for the
    current chunk only."""

    def __init__(self, tasks: Tasks, candidate, rank, config: PagsConfig, comm: _Comm,
                 concurrent: bool):  # fmt: skip
        self.tasks, self.candidate, self.rank = tasks, candidate, rank
        self.config, self.comm, self.concurrent = config, comm, concurrent
        self.shared = tasks.threads > 1
        # at least two tasks queued per worker while this thread selects a chunk
        per_chunk = math.ceil(config.chunk / comm.world / PER_TASK)
        need = math.ceil(2 * (tasks.threads - 1) / max(1, per_chunk))
        self.ahead = max(AHEAD, need) if self.shared and concurrent else 0
        self.jobs: dict[int, list] = {}  # chunk start -> [(candidates t, future)]

    def _schedule(self, start: int) -> None:
        cfg, comm = self.config, self.comm
        mine = [u for u in range(start, min(cfg.n, start + cfg.chunk - 1) + 1)
                if u % comm.world == comm.rank]  # fmt: skip
        size = PER_TASK if self.shared else max(1, len(mine))
        groups = [mine[i : i + size] for i in range(0, len(mine), size)]
        jobs = []
        for us in groups:
            if self.concurrent:
                jobs.append((us, self.tasks.submit(self._drawn, us)))
            else:
                cands = [self.candidate(u) for u in us]
                jobs.append((us, self.tasks.submit(self._given, cands)))
        self.jobs[start] = jobs

    def _drawn(self, us: list[int]):
        return self._given([self.candidate(u) for u in us])

    def _given(self, cands: list):
        return cands, self.rank(cands)

    def prefetch(self, start: int) -> None:
        """Schedule the chunk starting at ``start`` and the next :data:`AHEAD` ones (those not
        scheduled yet)."""
        for k in range(self.ahead + 1):
            s = start + k * self.config.chunk
            if s <= self.config.n and s not in self.jobs:
                self._schedule(s)

    def take(self, start: int) -> list[tuple[list[int], list, Ranking]]:
        """The chunk starting at ``start``: ``(t, candidates, ranking)`` per group, after
        scheduling the next :data:`AHEAD` chunks."""
        self.prefetch(start)
        jobs = self.jobs.pop(start)
        done = self.tasks.results([future for _, future in jobs])
        return [(us, cands, rk) for (us, _), (cands, rk) in zip(jobs, done, strict=True)]


def _exact_pass(tasks: Tasks, groups, exact_mask: dict[int, np.ndarray], best: Scores,
                best_fp: dict[str, str], fps: dict, names: list[str],
                invalid: str | None = None) -> tuple[Scores | None, int]:  # fmt: skip
    """The exact criteria of the layers ``exact_mask`` of this process's ranked candidates
    (estimates elsewhere), one task per group; a layer with the fingerprint of the best's
    (before this chunk: ``best``, ``best_fp``) is not computed, its scores are the best's (the
    same mask scored on the same θ). ``invalid`` (the layerwise rule's): a layer shown below
    the best's criteria from its binary spectra is not finished (:meth:`Ranking.exact`
    ``floor``; it cannot be accepted: the best only improves). Returns the scores and how many
    layers were computed."""
    if not groups:
        return None, 0
    floor = None if invalid is None else (best.imdb(invalid)[0], best.fs_criterion(invalid)[0])
    parts, futures = [], []
    computed = 0
    for us, _, rk in groups:
        which = np.array([exact_mask[u] for u in us], dtype=bool).reshape(len(us), len(names))
        same = np.zeros_like(which)
        for i, u in enumerate(us):
            for j in np.flatnonzero(which[i]):
                same[i, j] = fps[u][names[j]] == best_fp[names[j]]
        which &= ~same
        computed += int(which.sum())
        parts.append(same)
        futures.append(tasks.submit(rk.exact, which, floor))
    out = tasks.results(futures)
    for same, sc in zip(parts, out, strict=True):
        for i in np.flatnonzero(same.any(axis=1)):
            sc.set_layers(i, best, 0, same[i])
    return Scores.concat(out), computed


def _pack(mask: torch.Tensor) -> tuple[bytes, tuple[int, ...]]:
    return np.packbits(mask.reshape(-1).numpy()).tobytes(), tuple(mask.shape)


def _unpack(packed: tuple[bytes, tuple[int, ...]]) -> torch.Tensor:
    data, shape = packed
    n = math.prod(shape)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n).astype(bool)
    return torch.from_numpy(bits).reshape(shape)


def _ge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a ≥ b`` where an undefined ``a`` never wins and a defined ``a`` beats an undefined ``b``."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(a), False, np.where(np.isnan(b), True, a >= b))


def accept(config: PagsConfig, best: Scores, cand: Scores, i: int) -> np.ndarray:
    """Bool ``(L,)``: the layers of candidate ``i`` of ``cand`` that replace the best's."""
    inv = config.invalid
    if config.selection == "layerwise":
        ok_imdb = _ge(cand.imdb(inv)[i], best.imdb(inv)[0])
        ok_fs = _ge(cand.fs_criterion(inv)[i], best.fs_criterion(inv)[0])
        return ok_imdb & ok_fs
    c, b = cand.network(inv)[i], best.network(inv)[0]
    win = (not np.isnan(c)) and (np.isnan(b) or c > b)
    return np.full(len(cand.layers), bool(win))


def _row(t: int, sc: Scores, i: int, config: PagsConfig, numel: int, accepted: int,
         best: Scores, exact: int | None = None) -> dict:  # fmt: skip
    inv = config.invalid
    fs, imdb = sc.fs_criterion(inv)[i], sc.imdb(inv)[i]
    nan = float("nan")
    # fs is NaN where it was not computed (ranking without --estimates): no summary then
    some = np.isfinite(fs).any() and not np.isnan(sc.fs[i]).any()
    return {
        "t": t,
        "network_score": float(sc.network(inv)[i]),
        "density": float(sc.nnz[i].sum() / numel),
        "fs_mean": float(np.nanmean(fs)) if some else nan,
        "fs_min": float(np.nanmin(fs)) if some else nan,
        "fs_max": float(np.nanmax(fs)) if some else nan,
        "imdb_mean": float(np.nanmean(imdb)) if np.isfinite(imdb).any() else nan,
        "gated_layers": int(sc.valid[i].sum()),
        "accepted_layers": accepted,
        # how many of the layers' values in this row are exact (the rest: ranking estimates)
        "exact_layers": len(sc.layers) if exact is None else exact,
        "best_network_score": float(best.network(inv)[0]),
        "best_density": float(best.nnz[0].sum() / numel),
        "fs": [float(v) for v in fs],
        "imdb_gap": [float(v) for v in imdb],
    }


class _Writer:
    """Atomic writes into the output directory (rank 0 only; a no-op elsewhere)."""

    def __init__(self, out: Path | None, active: bool, theta: Mapping[str, torch.Tensor], kinds):
        self.out, self.active, self.theta, self.kinds = (
            out,
            active and out is not None,
            theta,
            kinds,
        )
        self._extra = None  # the thread writing start_extra's files
        self._extra_error: BaseException | None = None

    def maskset(self, masks: Mapping[str, torch.Tensor], meta: dict | None = None, weights=True):
        w = {n: self.theta[n] for n in masks} if weights else None
        return MaskSet(dict(masks), self.kinds, w, meta=meta)

    def save(self, rel: str, masks, meta: dict | None = None, weights: bool = True) -> None:
        if self.active:
            save(self.out / rel, self.maskset(masks, meta, weights))

    def json(self, rel: str, obj: dict) -> None:
        if self.active:
            atomic_write_json(self.out / rel, obj)

    def start_extra(self, files: Mapping[str, Callable[[], bytes]]) -> None:
        """Write ``files`` (name → a function giving the bytes) atomically in a background
        thread: they overlap with the run (a 45 MB file is mostly the disk's time)."""
        if not self.active or not files:
            return
        import threading

        def write() -> None:
            try:
                for rel, make in files.items():
                    atomic_write_bytes(self.out / rel, make())
            except BaseException as e:  # raised again by finish_extra
                self._extra_error = e

        self._extra = threading.Thread(target=write, name="masktopo-pags-files")
        self._extra.start()

    def finish_extra(self, raise_error: bool = True) -> None:
        """Wait for :meth:`start_extra`'s files; raise what writing them raised."""
        thread = self._extra
        if thread is None:
            return
        thread.join()
        self._extra = None
        if raise_error and self._extra_error is not None:
            raise self._extra_error

    def rows(self, rows: list[dict]) -> None:
        if self.active:  # pyarrow directly: the columns pandas' to_parquet wrote, ~2x faster
            import pyarrow.parquet as pq

            table = _rows_table(rows)
            atomic_write(self.out / CANDIDATES_FILE, lambda f: pq.write_table(table, f))


def _rows_table(rows: list[dict]):
    """The rows (:func:`_row`) as a pyarrow table, column by column from numpy buffers: a number
    column as int64 or float64, a list column as a list of float64 (what
    ``pa.Table.from_pylist`` makes of them; ``pa.array`` of anything imports pandas, ~0.2 s of a
    PAGS run)."""
    import pyarrow as pa

    def array(a: np.ndarray):
        if a.dtype not in (np.int64, np.float64, np.int32):  # pragma: no cover - not in a row
            return pa.array(a)
        return pa.Array.from_buffers(pa.from_numpy_dtype(a.dtype), len(a),
                                     [None, pa.py_buffer(np.ascontiguousarray(a))])  # fmt: skip

    columns = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if isinstance(values[0], list):
            offsets = np.zeros(len(values) + 1, dtype=np.int32)
            np.cumsum([len(v) for v in values], out=offsets[1:])
            flat = np.fromiter((x for v in values for x in v), np.float64, int(offsets[-1]))
            columns[key] = pa.ListArray.from_arrays(array(offsets), array(flat))
        else:
            columns[key] = array(np.array(values))
    return pa.table(columns)


def _read_state(out: Path, config: PagsConfig, names: list[str]) -> dict | None:
    """The resume point (state.json), checked against ``config`` and the run's layers
    ``names``; None when the run stopped before writing its first one."""
    import json

    path = out / STATE_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MaskFileError(path, f"cannot read the resume state ({e})") from None
    if not isinstance(state, dict) or state.get("format") not in (
        STATE_FORMAT,
        _LEGACY_STATE_FORMAT,
    ):
        raise MaskFileError(path, "is not a masktopo PAGS state file")
    old = state.get("config", {})
    check_same_config(old, config.to_dict(), allowed=RESUMABLE_CHANGES, where=path)
    _check_state(state, path, config, names)
    return state


def _check_state(state: dict, path: Path, config: PagsConfig, names: list[str]) -> None:
    """The fields of state.json that the resume reads, checked (a one-line error naming the
    field, before anything in the run is written)."""

    def bad(problem: str):
        return MaskFileError(path, f"{problem}; cannot resume")

    def whole(key: str, value) -> int:
        if not is_int(value):
            raise bad(f"{key} is {value!r}, not an integer")
        return value

    for key in ("next_t", "best_file", "best_scores", "changed", "snapshots"):
        if key not in state:
            raise bad(f"has no {key!r}")
    next_t = whole("next_t", state["next_t"])
    if next_t < 1:
        raise bad(f"next_t is {next_t}; the first candidate is 1")
    if next_t > config.n + 1:
        raise bad(f"the run has scored {next_t - 1} candidates already, more than n = {config.n}")
    if "best_t" in state and not 0 <= whole("best_t", state["best_t"]) < next_t:
        raise bad(f"best_t is {state['best_t']}, not a candidate before next_t = {next_t}")
    if not isinstance(state["changed"], bool):
        raise bad(f"changed is {state['changed']!r}, not true or false")
    snaps = state["snapshots"]
    if not isinstance(snaps, list) or any(not is_int(t) or not 0 <= t < next_t for t in snaps):
        raise bad(f"snapshots must list candidates 0 … {next_t - 1}")
    rel = state["best_file"]
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise bad(f"best_file {rel!r} is not a file of the run directory")
    try:
        sc = Scores.from_dict(state["best_scores"])
    except (KeyError, TypeError, ValueError) as e:
        raise bad(f"best_scores cannot be read ({type(e).__name__}: {e})") from None
    L = len(names)
    shapes = [getattr(sc, k).shape for k in ("valid", "imdb_defined", "fs", "nnz")]
    if list(sc.layers) != names or sc.coords.shape != (1, L, 4) or any(s != (1, L) for s in shapes):
        raise bad("best_scores are not of this run's layers")


def _read_rows(out: Path, next_t: int) -> list[dict]:
    """The rows of candidates ``0 … next_t − 1`` from candidates.parquet (later rows, written
    before the run stopped, are dropped: the resume computes them again)."""
    import pyarrow.parquet as pq

    path = out / CANDIDATES_FILE
    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise MaskFileError(path, f"cannot be read ({e}); cannot resume") from None
    try:
        rows = [r for r in rows if r["t"] < next_t]
    except (KeyError, TypeError):
        raise MaskFileError(path, "is not a PAGS candidates table (no t column)") from None
    if sorted(r["t"] for r in rows) != list(range(next_t)):
        raise MaskFileError(path, f"does not hold one row for each candidate 0 … {next_t - 1} "
                                  "that state.json counts; cannot resume")  # fmt: skip
    return rows


def run_pags(
    base: MaskSet,
    weights: Mapping[str, torch.Tensor],
    source: Source,
    config: PagsConfig,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    stop: Callable[[int], bool] | None = None,
    run_info: dict | None = None,
    extra_files: Mapping[str, Callable[[], bytes]] | None = None,
) -> PagsResult:
    """Run PAGS from a base mask.

    Parameters
    ----------
    base : MaskSet
        The plain PaI mask (snapshot 0).
    weights : mapping of str to torch.Tensor
        θ: the weights every candidate is scored on (and saved with the masks).
    source : callable
        ``t -> MaskSet``; candidate ``t`` must depend only on ``(seed, t)``
        (:class:`~masktopo.pags.sampling.RescoreSource`, :class:`~masktopo.pags.sampling.
        RewireSource`).
    config : PagsConfig
        The run's parameters.
    out : path, optional
        Output directory (created); nothing is written when None.
    resume : bool
        Continue the run in ``out`` from its last chunk; ends as an uninterrupted run would.
    progress : bool
        Show a tqdm progress bar on stderr (rank 0).
    stop : callable, optional
        ``stop(t_done) -> bool``, asked after every chunk: True ends the run early (it can be
        resumed).
    run_info : dict, optional
        Extra entries for run.json (model, dataset, ...).
    extra_files : mapping of str to callable, optional
        More files of the run: name in ``out`` → a function giving their bytes. Written
        atomically (rank 0) in a background thread once this process holds the run's lock, and
        waited for before returning (``masktopo pags``'s ``init.safetensors``).

    Returns
    -------
    PagsResult
    """
    comm = _Comm()
    names = list(base)
    theta = {n: weights[n].detach().cpu() for n in names}
    kinds = {n: base.kind(n) for n in names}
    base_masks = {n: base[n].cpu() for n in names}
    counts = {n: int(torch.count_nonzero(m)) for n, m in base_masks.items()}
    numel = sum(m.numel() for m in base_masks.values())
    opts, device = config.options(), config.device
    out = None if out is None else Path(out)
    writer = _Writer(out, comm.rank == 0, theta, kinds)

    def score(cands: list[MaskSet]) -> Scores:
        return score_candidates(cands, weights=theta, device=device, route=config.route,
                                options=opts, reference=ref)  # fmt: skip

    # The layerwise rule is decided by the IMDB bound (the fs bound, σ₂ ≤ σ₁, practically never
    # rejects): only that one is made tight. The global rule needs every fs bound.
    tight = "imdb" if config.selection == "layerwise" else "all"

    # Without --estimates the layerwise rule ranks by the IMDB bound alone (the fs bound is
    # then +inf): half the ranking's cost, the same selection; rows lack the fs estimates.
    estimates = config.estimates or tight != "imdb"

    # Without estimates, a layer whose IMDB bound after a few steps is already below the best's
    # criterion keeps that bound (scoring.rank_candidates floor): the best only improves, so
    # the best when a chunk is ranked (set below after every chunk, read by the worker thread)
    # is never above the best its layers are compared with, and the same layers reach the exact
    # pass as with every bound tight. Its estimates (the rows) do not depend on the floor.
    floor: list = [None]

    def rank(cands: list[MaskSet]) -> Ranking:
        # θ was checked once, by the base's score below (not again in every ranking call)
        return _rank_checked(cands, theta, options=opts, reference=ref, device=device,
                             route=config.route, bounds=tight, estimates=estimates,
                             floor=floor[0])  # fmt: skip

    base_ms = MaskSet(base_masks, kinds)
    ref = None
    base_scores = score([base_ms])
    if config.reference == "base":
        ref = base_scores.coords[0]
        base_scores = score([base_ms])
    base_fp = {n: _fingerprint(kept_positions(m)) for n, m in base_masks.items()}

    lock = None
    if out is not None and comm.rank == 0:
        require_parquet("pags", "writes candidates.parquet")
        check_out_dir(out, "pags", resume=resume)
        lock = RunLock(out)
        if resume:
            lock.acquire()  # before reading the state: no other process writes it meanwhile
    # Ranking then exact on the CPU: threads share the candidates' work (pipeline.Tasks); the
    # batched route and the all-exact path score a chunk in one call. On CUDA with route="auto"
    # the layers stay on the CPU route unless one is large (analysis.spectral.on_device).
    cpu = not any(on_device(layer_side(m, opts), device, config.route) for m in base_masks.values())
    try:
        threads = default_threads() if cpu and not config.exact else 1
        with Tasks(threads) as tasks, one_blas_thread():
            return _run(base_masks, kinds, theta, counts, numel, base_scores, base_fp, score,
                        rank, source, config, comm, writer, lock, tasks, out=out, resume=resume,
                        progress=progress, stop=stop, run_info=run_info,
                        extra_files=extra_files or {},
                        floor=None if estimates else floor)  # fmt: skip
    finally:
        writer.finish_extra(raise_error=False)  # nothing is written once the lock is released
        if lock is not None:
            lock.release()


def _run(base_masks, kinds, theta, counts, numel, base_scores, base_fp, score, rank, source,
         config, comm, writer, lock, tasks, *, out, resume, progress, stop, run_info,
         extra_files, floor=None) -> PagsResult:  # fmt: skip
    """The PAGS loop of :func:`run_pags`; ``floor``: a one-item list the ranking reads the
    best's IMDB criteria from (kept current here after every chunk), or None."""
    names = list(base_masks)

    def set_floor() -> None:
        if floor is not None:  # a new array each time: the worker thread may be reading one
            floor[0] = best_sc.imdb(config.invalid)[0]

    # Ranking then exact (the default), on the compiled CPU engine or the batched route.
    ranked = not config.exact

    def candidate(u: int):
        c = source(u).without_weights()
        if list(c) != names:
            raise MaskValidationError(f"candidate {u} has other layers than the base mask")
        return repair(c, counts, theta) if config.repair else c

    ahead = _Ahead(tasks, candidate, rank, config, comm, getattr(source, "concurrent", False))
    state = _read_state(out, config, names) if resume else None
    if resume and state is None and comm.rank == 0:
        warnings.warn(f"{out}: the PAGS run stopped before its first resume point; starting it "
                      "again from candidate 1 with the same settings", stacklevel=3)  # fmt: skip
    if state is not None:
        stored_base = load_file(out / BASE_FILE, weights=False)
        if list(stored_base) != names or any(
            not torch.equal(stored_base[n], base_masks[n]) for n in names
        ):
            raise MaskFileError(out / BASE_FILE, "differs from this run's base mask; cannot resume")
        rel = state["best_file"]
        best_path = out / (rel if "/" in rel else f"{STATE_DIR}/{rel}")
        best_ms = load_file(best_path, weights=False)
        if list(best_ms) != names or any(best_ms[n].shape != base_masks[n].shape for n in names):
            raise MaskFileError(best_path, "holds other layers than this run's base mask; "
                                           "cannot resume")  # fmt: skip
        best = {n: best_ms[n] for n in names}
        best_sc = Scores.from_dict(state["best_scores"])  # checked by _read_state
        # from the masks (state.json's copy may come from an older way of hashing)
        best_fp = {n: _fingerprint(kept_positions(best[n])) for n in names}
        changed = state["changed"]
        snapshots = list(state["snapshots"])
        next_t = state["next_t"]
        best_t = int(state.get("best_t", next_t - 1))
        state_best = None  # the first resume point of this process writes its own copy
        set_floor()
        rows = _read_rows(out, next_t)
        writer.start_extra(extra_files)  # the run is this one, and run_pags holds its lock
        comm.barrier()  # every rank has read the state before rank 0 rewrites it
    else:
        best = dict(base_masks)
        best_sc = base_scores.copy()
        best_fp = dict(base_fp)
        changed, snapshots, next_t = False, [0], 1
        best_t = 0
        rows = [_row(0, base_scores, 0, config, numel, 0, best_sc)]
        if writer.active:
            if not resume:
                out.mkdir(parents=True, exist_ok=True)
                lock.acquire()
                check_out_dir(out, "pags", resume=False)  # nobody started a run here meanwhile
            (out / SNAPSHOT_DIR).mkdir(exist_ok=True)
            (out / STATE_DIR).mkdir(exist_ok=True)
            writer.start_extra(extra_files)  # the lock is held now
        set_floor()
        if ranked:  # the worker ranks the first chunks while this thread writes the start
            ahead.prefetch(1)
        comm.barrier()
        meta = {"pags": {"t": 0, "role": "base"}}
        RunWriter(out if writer.active else None).write_run_json("pags", {
            "git": git_commit(), "config": config.to_dict(),
            "seed": config.seed, "versions": versions(), "world_size": comm.world,
            "layers": [{"name": n, "kind": kinds[n], "shape": list(base_masks[n].shape),
                        "base_nnz": counts[n]} for n in names],
            "base_density": sum(counts.values()) / numel, **(run_info or {}),
        })  # fmt: skip
        writer.save(BASE_FILE, base_masks, meta)
        writer.save(snapshot_file(0), base_masks, meta, weights=False)
        state_best = _write_state(writer, config, 1, best, best_sc, best_fp, changed, snapshots,
                                  rows)  # fmt: skip

    bar = None
    if progress and comm.rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.n, initial=next_t - 1, unit="cand", file=sys.stderr,
                   desc="pags", dynamic_ncols=True)  # fmt: skip
        bar.set_postfix(best=f"{best_sc.network(config.invalid)[0]:.5g}")

    t = next_t
    n_exact = 0
    last_point, improved_since = time.monotonic(), False  # the resume point written last
    L = len(names)
    while t <= config.n:
        chunk = list(range(t, min(config.n, t + config.chunk - 1) + 1))
        mine = [u for u in chunk if u % comm.world == comm.rank]
        exact_mask: dict[int, np.ndarray] = {}
        if ranked:
            # Ranking pass (drawn and ranked ahead, while the chunks before were selected):
            # rigorous upper bounds of every candidate's criteria; the exact criteria only for
            # the layers whose bounds can still be accepted against the best before this chunk
            # (the best only improves in t order, so nothing else can be).
            groups = ahead.take(t)
            cands = {u: c for us, cs, _ in groups for u, c in zip(us, cs, strict=True)}
            bounds: dict[int, tuple[Scores, Scores]] = {}
            mine_b = {u: (rk.upper.take(i), rk.estimate.take(i))
                      for us, _, rk in groups for i, u in enumerate(us)}  # fmt: skip
            for part in comm.gather(mine_b):
                bounds.update(part)
            exact_mask = {u: accept(config, best_sc, bounds[u][0], 0) for u in chunk}
            fps = {u: _LazyFingerprints(cands[u]) for u in mine}
            local_sc, computed = _exact_pass(
                tasks, groups, exact_mask, best_sc, best_fp, fps, names,
                config.invalid if config.selection == "layerwise" else None,
            )  # fmt: skip
            n_exact += sum(comm.gather(computed))
        else:
            cands = {u: candidate(u) for u in mine}
            fps = {u: _LazyFingerprints(cands[u]) for u in mine}
            local_sc = score(list(cands.values())) if cands else None
            n_exact += len(chunk) * L
        # Fingerprints: only of the layers that would be accepted (a single process has the
        # masks at hand); with several processes the owner computes them before the gather for
        # the layers that beat the best before this chunk: the best only improves within the
        # chunk, so no other layer can be accepted (and a dense mask costs ~8 ms a candidate).
        local = {u: (local_sc.take(i), fps[u] if comm.world == 1
                     else _owner_fingerprints(fps[u], names, accept(config, best_sc, local_sc, i)
                                              & (exact_mask[u] if ranked else True)))
                 for i, u in enumerate(mine)}  # fmt: skip
        gathered: dict[int, tuple[Scores, dict]] = {}
        for part in comm.gather(local):
            gathered.update(part)

        src: dict[str, int | None] = dict.fromkeys(names)  # None: the best before this chunk
        snaps_here: list[tuple[int, dict]] = []
        for u in chunk:
            sc, fps = gathered[u]
            ok = accept(config, best_sc, sc, 0)
            if ranked:  # a layer not computed exactly was shown not to be accepted
                ok &= exact_mask[u]
            for j in np.flatnonzero(ok):  # a layer equal to the best one is not a change
                ok[j] = fps[names[j]] != best_fp[names[j]]
            if ok.any():
                best_sc.set_layers(0, sc, 0, ok)
                for j in np.flatnonzero(ok):
                    src[names[j]] = u
                    best_fp[names[j]] = fps[names[j]]
                changed = True
            shown = sc
            if ranked:  # the row: exact values of the accepted layers, estimates elsewhere
                shown = bounds[u][1].copy()
                shown.set_layers(0, sc, 0, ok)
            accepted = int(ok.sum())
            rows.append(_row(u, shown, 0, config, numel, accepted, best_sc,
                             accepted if ranked else L))  # fmt: skip
            if u % config.snapshot_every == 0 and changed:
                snaps_here.append((u, dict(src)))
                changed = False
        set_floor()

        need = {(s, n) for _, st in [*snaps_here, (None, src)] for n, s in st.items()
                if s is not None}  # fmt: skip
        sent = {(u, n): _pack(cands[u][n]) for u, n in need if u in cands}
        masks: dict[tuple[int, str], torch.Tensor] = {}
        if comm.world == 1:
            masks = {(u, n): cands[u][n] for u, n in need}
        else:
            for part in comm.gather(sent):
                masks.update({k: _unpack(v) for k, v in part.items()})

        def state_of(st: dict) -> dict[str, torch.Tensor]:
            return {n: best[n] if s is None else masks[(s, n)] for n, s in st.items()}  # noqa: B023

        for u, st in snaps_here:  # masks only: θ is in base.safetensors and best.safetensors
            writer.save(snapshot_file(u), state_of(st),
                        {"pags": {"t": u, "role": "snapshot"}}, weights=False)  # fmt: skip
            snapshots.append(u)
        new_best = state_of(src)
        improved = any(s is not None for s in src.values())
        if improved:
            # best.safetensors (masks and θ: 45 MB for ResNet-18) is written when the run ends;
            # the resume points below hold the best masks meanwhile.
            best_t = chunk[-1]
            improved_since = True
        best = new_best
        t = chunk[-1] + 1
        if bar is not None:
            bar.update(len(chunk))
            bar.set_postfix(best=f"{best_sc.network(config.invalid)[0]:.5g}")
        stopping = stop is not None and stop(t - 1)
        # A resume point after the chunks of RESUME_EVERY_S seconds, and when the run ends or
        # stops (its writes, each synced to disk, would otherwise cost ~8 % of a fast run); the
        # resume copy of the best masks is rewritten only when the best changed since the last.
        if stopping or t > config.n or time.monotonic() - last_point >= RESUME_EVERY_S:
            state_best = _write_state(writer, config, t, best, best_sc, best_fp, changed,
                                      snapshots, rows, best_t,
                                      None if improved_since else state_best)  # fmt: skip
            last_point, improved_since = time.monotonic(), False
        if stopping:
            break
    # best.safetensors: written once, when the run ends or stops (a resumed run rewrites it)
    writer.save(BEST_FILE, best, {"pags": {"t": best_t, "role": "best"}})
    if t - 1 >= config.n:  # finished: summary.json, what masktopo summarize reads of a run
        writer.json(SUMMARY_FILE, {"final": _final(config, best_sc, base_scores, numel, rows,
                                                   comm.world)})  # fmt: skip
    writer.finish_extra()
    if bar is not None:
        bar.close()
    return PagsResult(
        best=writer.maskset(best, {"pags": {"t": t - 1, "role": "best"}}),
        base=writer.maskset(base_masks, {"pags": {"t": 0, "role": "base"}}),
        best_scores=best_sc, base_scores=base_scores, n_done=t - 1,
        rows=rows, snapshots=snapshots, out=out, exact_layers=n_exact,
    )  # fmt: skip


def _final(config, best_sc: Scores, base_sc: Scores, numel: int, rows: list[dict],
           world: int) -> dict:  # fmt: skip
    """The final numbers of a finished run (``summary.json``'s ``final``): the best's and the
    base's network scores and densities, the best's mean criteria, and how many candidates and
    layer acceptances there were (over the whole run, resumes included)."""
    best = _row(0, best_sc, 0, config, numel, 0, best_sc)
    base = _row(0, base_sc, 0, config, numel, 0, base_sc)
    return {
        "network_score": best["network_score"], "base_network_score": base["network_score"],
        "density": best["density"], "base_density": base["density"],
        "fs_mean": best["fs_mean"], "imdb_mean": best["imdb_mean"],
        "gated_layers": best["gated_layers"], "candidates": len(rows) - 1,
        "accepted_layers": sum(int(r["accepted_layers"]) for r in rows),
        "improved_candidates": sum(1 for r in rows if r["accepted_layers"]),
        "world_size": world,
    }  # fmt: skip


def _write_state(writer: _Writer, config, next_t, best, best_sc, best_fp, changed, snapshots,
                 rows, best_t: int = 0, best_file: str | None = None) -> str | None:  # fmt: skip
    """Rows, then the best masks, then state.json (the commit point), then stale state files.

    ``best_file``: the resume copy of the best masks written by an earlier call, when the best
    has not changed since (it is referenced again instead of rewritten). Returns the copy now
    referenced (None when nothing is written)."""
    if not writer.active:
        return None
    writer.rows(rows)
    if best_file is None:
        best_file = state_best_file(next_t)
        writer.save(best_file, best, weights=False)
    writer.json(STATE_FILE, {
        "format": STATE_FORMAT, "version": STATE_VERSION, "config": config.to_dict(),
        "next_t": next_t, "best_file": best_file, "best_scores": best_sc.to_dict(),
        "best_fp": best_fp, "changed": changed, "snapshots": snapshots, "best_t": best_t,
    })  # fmt: skip
    keep = (writer.out / best_file).name
    for old in (writer.out / STATE_DIR).glob("best-*.safetensors"):
        if old.name != keep:
            old.unlink(missing_ok=True)
    return best_file
