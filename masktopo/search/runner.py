"""Running a combinatorial search into a resumable output folder (``masktopo search``).

The runs of a search are its (key, setting) pairs in key-major order, numbered ``run = 0, 1,
...``: phase 1's keys are the architectures of :func:`~masktopo.search.enumerate.phase1_archs`,
phase 2's the support indices of :func:`~masktopo.search.enumerate.supports`. Runs are trained
``models_per_batch`` at a time by :class:`~masktopo.search.ensemble.EnsembleTrainer`; each model's
seeds derive from the search seed and its own key and setting only, so results never depend on
how runs are batched. The folder::

    run.json                     kind "search", the resolved config, the run counts
    .lock                        the writing process
    results/part-NNNNNN.parquet  one row per run of a finished batch (written last: the commit)
    masks/part-NNNNNN.safetensors  masks, weights and biases of that batch's runs above target
    checkpoint.pt                the batch in training, every ``checkpoint_every`` epochs
    results.parquet              every row, in run order (when the search is complete)
    summary.json                 totals and the sparsest runs above target

A killed search resumes with ``resume=True`` (``--resume``): finished batches are read back, the
batch in training restarts from its checkpoint, and the rest is trained; the result is the same,
bit for bit on the CPU, as an uninterrupted search. Nothing finished is trained again.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import MaskFileError, MaskValidationError, one_line
from ..files import atomic_write, atomic_write_bytes, atomic_write_json, require_parquet
from ..runs import (
    RunLock,
    RunWriter,
    check_resumable,
    check_same_config,
    read_checkpoint,
    read_run_json,
    run_kind,
    write_checkpoint,
)
from ..runs.layout import (
    CHECKPOINT_FILE,
    MASKS_DIR,
    RESULTS_DIR,
    RESULTS_FILE,
    SEARCH_MASKS_FORMAT,
    SUMMARY_FILE,
)
from ..seeding import seed_for
from .config import RESUMABLE_CHANGES, SPIRAL_INPUTS, SPIRAL_OUTPUTS, SearchConfig
from .ensemble import EnsembleTrainer, effective_counts, init_params
from .enumerate import (
    MATRIX_LIMIT,
    arch_text,
    block_masks,
    count_matrix_supports,
    count_supports,
    joint_indices,
    nnz_ranges,
    parse_arch,
    phase1_archs,
    support_masks,
    support_weight_nnz,
)

__all__ = [
    "KIND",
    "MAX_RUNS",
    "RESULTS_FILE",
    "SearchResult",
    "count_plan",
    "layer_names",
    "read_results",
    "read_search_masks",
    "read_table",
    "run_layers",
    "run_search",
    "search_plan",
]

KIND = "search"
#: Most runs one search trains (its keys × settings, or ``--limit`` of them): 64 times the
#: reference's phase 2 (155,952 runs), about 4.5 days on one CPU core at the rate measured in
#: docs/performance.md. A larger search is refused before anything is written.
MAX_RUNS = 10_000_000
_SPIRAL_NAMES = ("first_layer", "second_layer", "third_layer", "clf")
#: The columns of every row of a search (besides ``nnz_1 ... nnz_L``, one per matrix).
ROW_COLUMNS = ("run", "key", "index", "arch", "setting", "lr", "schedule", "seed", "epochs",
               "weight_nnz", "model_nnz", "effective_nnz", "accuracy", "loss",
               "above_target")  # fmt: skip


def layer_names(n_layers: int) -> list[str]:
    """Layer names of a 4-matrix MLP as in ``masktopo.zoo``'s spiral-mlp, else ``fc1 ...``."""
    if n_layers == len(_SPIRAL_NAMES):
        return list(_SPIRAL_NAMES)
    return [f"fc{i + 1}" for i in range(n_layers)]


def run_layers(sizes) -> list[dict]:
    """run.json's ``layers``: the weight matrices of an MLP of layer widths ``sizes``."""
    names = layer_names(len(sizes) - 1)
    return [{"name": f"{n}.weight", "kind": "linear", "shape": [int(sizes[i + 1]), int(sizes[i])]}
            for i, n in enumerate(names)]  # fmt: skip


def _part(directory: str, c: int, suffix: str) -> str:
    return f"{directory}/part-{c:06d}.{suffix}"


@dataclass
class SearchPlan:
    """The keys and runs of a search (:func:`search_plan`).

    ``keys`` lists the keys the runs up to ``n_runs`` train: all ``n_keys`` of them, or the
    first ``ceil(limit / n_settings)`` under a ``limit`` (never the whole range then).
    """

    config: SearchConfig
    keys: np.ndarray  # phase 2: support indices; phase 1: positions in phase1_archs
    archs: list[tuple[int, ...]] | None  # phase 1 only: the architectures of ``keys``
    n_settings: int
    n_keys: int | None = None  # keys of the whole search (default: len(keys))

    def __post_init__(self):
        if self.n_keys is None:
            self.n_keys = len(self.keys)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Layer widths of the trained networks (phase 1: the width-W container)."""
        if self.archs is None:
            return parse_arch(self.config.arch)
        return (SPIRAL_INPUTS, *([self.config.max_width] * 3), SPIRAL_OUTPUTS)

    @property
    def n_runs(self) -> int:
        n = self.n_keys * self.n_settings
        return n if self.config.limit is None else min(n, self.config.limit)

    def key_text(self, k: int) -> str:
        if self.archs is not None:
            return arch_text(self.archs[int(self.keys[k])])
        return f"{self.config.arch}#{int(self.keys[k])}"

    def batch(self, runs: list[int]):
        """Sizes, initial weights and biases, masks, lrs, schedules and order seeds of runs."""
        cfg = self.config
        kpos = [r // self.n_settings for r in runs]
        sets = cfg.settings()
        setting = [sets[r % self.n_settings] for r in runs]
        texts = [self.key_text(k) for k in kpos]
        if self.archs is None:
            sizes = parse_arch(cfg.arch)
            wm = [torch.from_numpy(m) for m in support_masks(sizes, self.keys[kpos])]
            init_width = cfg.init_width
        else:
            sizes = self.sizes
            W = cfg.max_width
            wm_np, _ = block_masks([self.archs[int(self.keys[k])] for k in kpos], W)
            wm = [torch.from_numpy(m) for m in wm_np]
            init_width = max(cfg.init_width, W)
        if cfg.fixed_init:
            init_seeds = [seed_for(cfg.seed, "fixed-init")] * len(texts)
        else:
            init_seeds = [seed_for(cfg.seed, "init", t) for t in texts]
        order = None
        if not cfg.shared_order:
            order = [seed_for(cfg.seed, "order", t, r % self.n_settings)
                     for t, r in zip(texts, runs, strict=True)]  # fmt: skip
        w, b = init_params(init_seeds, sizes, init_width=init_width)
        return sizes, w, b, wm, [s[0] for s in setting], [s[1] for s in setting], order, texts


@dataclass
class _Keys:
    """The phase-2 keys of a search, counted without being listed: ``head(n)`` lists the first
    ``n``. ``lazy``: listing ``n`` costs O(n) (else it lists all ``count`` first)."""

    count: int
    head: Callable[[int], np.ndarray]
    lazy: bool = True


def _ranges_head(starts: np.ndarray, sizes: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` indices of the consecutive ranges ``[starts[i], starts[i] + sizes[i])``."""
    n = int(min(n, int(sizes.sum()))) if len(sizes) else 0
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(sizes)
    j = int(np.searchsorted(ends, n))  # the range holding the n-th index
    lengths = sizes[: j + 1].copy()
    lengths[-1] -= int(ends[j]) - n
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.repeat(starts[: j + 1] - first, lengths) + np.arange(n, dtype=np.int64)


def _filter_listed(config: SearchConfig, arch, keys: np.ndarray) -> np.ndarray:
    """--max-weight-nnz, --per-nnz and --sparsest-first on listed keys (index order)."""
    nnz = support_weight_nnz(arch, keys)
    if config.max_weight_nnz is not None:
        keys, nnz = keys[nnz <= config.max_weight_nnz], nnz[nnz <= config.max_weight_nnz]
    if config.per_nnz is not None:
        pick = np.zeros(len(keys), dtype=bool)
        for v in np.unique(nnz):
            where = np.flatnonzero(nnz == v)
            pick[where[_evenly(len(where), config.per_nnz)]] = True
        keys, nnz = keys[pick], nnz[pick]
    if config.sparsest_first:
        keys = keys[np.argsort(nnz, kind="stable")]
    return keys


def _evenly(m: int, per: int) -> np.ndarray:
    """Positions of at most ``per`` of ``m`` items, evenly spaced (--per-nnz)."""
    k = min(m, per)
    return (np.arange(k) * (m / k)).astype(np.int64)


def _phase2_keys(config: SearchConfig, arch: tuple[int, ...]) -> _Keys:
    """The supports a phase-2 search trains, in its order: all of ``arch`` in index order, or
    those of --joint, --max-weight-nnz and --per-nnz, by weight nnz under --sparsest-first.

    Without --joint nothing is listed to count them: the supports of one weight nnz are
    consecutive index ranges (:func:`~masktopo.search.enumerate.nnz_ranges`)."""
    n = count_supports(arch)
    K, per = config.max_weight_nnz, config.per_nnz
    if config.joint:
        keys = np.asarray(joint_indices(arch))
        if K is not None or per is not None or config.sparsest_first:
            keys = _filter_listed(config, arch, keys)
        return _Keys(len(keys), lambda m: keys[:m])
    if K is None and per is None and not config.sparsest_first:
        return _Keys(n, lambda m: np.arange(min(m, n), dtype=np.int64))
    _check_listable(arch, "--max-weight-nnz, --per-nnz and --sparsest-first need")
    starts, sizes, nnz = nnz_ranges(arch)
    if K is not None:
        starts, sizes, nnz = starts[nnz <= K], sizes[nnz <= K], nnz[nnz <= K]
    if per is None:
        if config.sparsest_first:
            order = np.argsort(nnz, kind="stable")
            starts, sizes = starts[order], sizes[order]
        return _Keys(int(sizes.sum()), lambda m: _ranges_head(starts, sizes, m))
    values = np.unique(nnz)
    count = sum(min(int(sizes[nnz == v].sum()), per) for v in values)

    def listed(m: int) -> np.ndarray:
        parts = []
        for v in values:  # ascending weight nnz
            s, z = starts[nnz == v], sizes[nnz == v]
            ends = np.cumsum(z)
            pos = _evenly(int(ends[-1]), per)  # positions in the concatenated ranges
            r = np.searchsorted(ends, pos, side="right")
            parts.append(s[r] + pos - (ends[r] - z[r]))
        keys = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return (keys if config.sparsest_first else np.sort(keys))[:m]

    return _Keys(count, listed, lazy=False)


def _check_listable(arch: tuple[int, ...], what: str) -> None:
    """Every hidden matrix of ``arch`` has at most ``MATRIX_LIMIT`` canonical supports."""
    for i in range(len(arch) - 2):
        s = count_matrix_supports(arch[i + 1], arch[i])
        if s > MATRIX_LIMIT:
            raise MaskValidationError(
                f"--arch {arch_text(arch)}: {what} the canonical supports of each matrix "
                f"listed, and a [{arch[i + 1]}, {arch[i]}] matrix has {s:,} (more than "
                f"{MATRIX_LIMIT:,})"
            )


def count_plan(config: SearchConfig) -> int:
    """The number of keys a search covers, without listing them: phase 2 its supports (after
    ``joint``, ``max_weight_nnz`` and ``per_nnz``), phase 1 its ``max_width³`` architectures.
    ``limit`` is not applied (it caps runs, keys × settings). What ``--count`` prints.

    Raises
    ------
    MaskValidationError
        When --joint or a selection needs more supports listed than the enumeration allows.
    """
    if config.phase == 1:
        return config.max_width**3
    if not config.joint and config.max_weight_nnz is None and config.per_nnz is None:
        return count_supports(config.arch)  # --sparsest-first only orders them
    return _phase2_keys(config, parse_arch(config.arch)).count


def _first_keys(config: SearchConfig, n_keys: int, n_settings: int, where: str, noun: str,
                lazy: bool = True) -> int:  # fmt: skip
    """How many keys the runs of ``config`` need, of its ``n_keys``; refuses a search of more
    than ``MAX_RUNS`` runs, and one that lists more than ``MAX_RUNS`` keys (``lazy=False``)."""
    total = n_keys * n_settings
    runs = total if config.limit is None else min(total, config.limit)
    settings = f"{n_settings} setting" + ("s" if n_settings > 1 else "")
    head = f"{where}: {n_keys:,} {noun} × {settings} = {total:,} runs"
    if not lazy and n_keys > MAX_RUNS:
        raise MaskValidationError(
            f"{head}, and all {n_keys:,} {noun} are listed before one is trained (more than "
            f"{MAX_RUNS:,}); choose a smaller --per-nnz or --max-weight-nnz"
        )
    if runs > MAX_RUNS:
        if config.limit is None:
            hint = f"pass --limit N (N <= {MAX_RUNS}) to train the first N runs"
            if config.phase == 2:
                hint += ", or select supports with --max-weight-nnz or --per-nnz"
        else:
            hint = f"pass --limit {MAX_RUNS} or less"
        raise MaskValidationError(f"{head}, more than the {MAX_RUNS:,} one search trains; {hint}")
    return n_keys if config.limit is None else min(n_keys, -(-config.limit // n_settings))


def search_plan(config: SearchConfig) -> SearchPlan:
    """The keys and settings a search trains (no training, no files).

    Only the keys its runs need are listed: under ``config.limit`` the first ones, however
    many the search has.

    Raises
    ------
    MaskValidationError
        When the search has more than ``MAX_RUNS`` runs (``--limit`` fits it), or needs more
        supports listed than the enumeration allows.
    """
    n_settings = len(config.settings())
    if config.phase == 1:
        W = config.max_width
        n_keys = W**3
        n = _first_keys(config, n_keys, n_settings, f"--phase 1 --max-width {W}", "architectures")
        archs = phase1_archs(W, d_in=SPIRAL_INPUTS, d_out=SPIRAL_OUTPUTS, count=n)
        return SearchPlan(config, np.arange(n, dtype=np.int64), archs, n_settings, n_keys)
    arch = parse_arch(config.arch)
    _check_listable(arch, "a search needs")
    keys = _phase2_keys(config, arch)
    n = _first_keys(config, keys.count, n_settings, f"--arch {config.arch}", "supports",
                    keys.lazy)  # fmt: skip
    return SearchPlan(config, np.asarray(keys.head(n), dtype=np.int64), None, n_settings,
                      keys.count)  # fmt: skip


@dataclass
class SearchResult:
    """What :func:`run_search` returns: the rows so far and the output folder."""

    out: Path
    rows: object  # pandas.DataFrame
    complete: bool


def _check_out(out: Path, resume: bool) -> None:
    kind = run_kind(out) if out.is_dir() else None
    if out.exists() and not out.is_dir():
        raise MaskFileError(out, "cannot write a search there: it is a file, not a folder")
    if resume:
        check_resumable(out, KIND)
        return
    if kind is not None:
        again = "; pass --resume to continue it" if kind == KIND else ""
        raise MaskFileError(out, f"already holds a {kind} run{again}; choose another --out")
    if out.is_dir() and any(p.name != ".lock" for p in out.iterdir()):
        raise MaskFileError(out, "is not empty; choose an empty or new directory for --out")


def _results_parts(out: Path) -> list[Path]:
    """The results parts of the search in ``out``, in name order."""
    d = out / RESULTS_DIR
    return sorted(d.glob("part-*.parquet")) if d.is_dir() else []


def _next_part(parts: list[Path]) -> int:
    """The number of the next part: one past the highest (a part deleted to train its runs
    again never makes a new part overwrite a later one)."""
    numbers = [int(p.stem[5:]) for p in parts if p.stem[5:].isdigit()]
    return max(numbers, default=-1) + 1


def read_table(path: Path, columns=(), *, what: str = "results", hint: str = ""):
    """One parquet file of a result folder as a pandas DataFrame, its columns checked: the
    reader of the search's and the pruning benchmark's results files.

    Parameters
    ----------
    path : pathlib.Path
        The file.
    columns : sequence of str
        The columns the table must have.
    what : str
        What the table holds, for the message (``is not a table of WHAT``).
    hint : str
        Appended to a message: what the user can do about the file.

    Raises
    ------
    MaskFileError
        The file is not readable parquet (cut off, damaged, not parquet) or lacks a column,
        in one line naming it.
    """
    import pandas as pd
    import pyarrow

    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError, pyarrow.ArrowException) as e:  # ArrowInvalid is a ValueError
        why = one_line(e).replace(f"Could not open Parquet input source '{path}': ", "")
        raise MaskFileError(path, f"is not a readable parquet file, cut off or damaged ({why})"
                                  f"{hint}") from None  # fmt: skip
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MaskFileError(path, f"is not a table of {what}: no {', '.join(missing)} "
                                  f"column{'s' if len(missing) > 1 else ''}{hint}")  # fmt: skip
    return df


def _read_rows(path: Path):
    """One results file of a search (a part or ``results.parquet``), its columns checked
    (:func:`read_table`)."""
    again = ""
    if path.parent.name == RESULTS_DIR:  # a part: what brings its runs back
        again = (
            f"; restore it, or delete it (and {MASKS_DIR}/{path.stem}.safetensors if there "
            "is one) and run masktopo search --resume to train its runs again"
        )
    return read_table(path, ROW_COLUMNS, what="search results", hint=again)


def read_results(out: str | os.PathLike):
    """Every finished run's row of the search in ``out``, in run order (a pandas DataFrame).

    Raises
    ------
    MaskFileError
        A results file that cannot be read or is not a table of search rows (naming it).
    """
    import pandas as pd

    require_parquet(KIND)
    out = Path(out)
    parts = _results_parts(out)
    if not parts:
        final = out / RESULTS_FILE
        return _read_rows(final) if final.exists() else pd.DataFrame()
    df = pd.concat([_read_rows(p) for p in parts], ignore_index=True)
    return df.sort_values("run", kind="stable").reset_index(drop=True)


def read_search_masks(out: str | os.PathLike):
    """The masks of the runs above target: yields ``(row, MaskSet)`` with weights and ``meta``
    holding the biases and their masks."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from ..masks import MaskSet

    out = Path(out)
    if not (out / MASKS_DIR).is_dir():
        return
    for p in sorted((out / MASKS_DIR).glob("part-*.safetensors")):
        try:
            t = load_file(str(p))
        except (SafetensorError, OSError, ValueError) as e:
            raise MaskFileError(
                p, f"truncated or corrupt safetensors file ({one_line(e)})"
            ) from None
        if "run" not in t:
            raise MaskFileError(p, "is not a part of a search's masks (no 'run' tensor)")
        runs = t["run"]
        names = sorted({k.rsplit(".", 2)[0] for k in t if k.endswith(".weight.mask")},
                       key=lambda n: list(t).index(f"{n}.weight.mask"))  # fmt: skip
        for i, r in enumerate(runs):
            masks = {f"{n}.weight": torch.from_numpy(t[f"{n}.weight.mask"][i].astype(bool))
                     for n in names}  # fmt: skip
            weights = {f"{n}.weight": torch.from_numpy(t[f"{n}.weight"][i]) for n in names}
            meta = {
                "run": int(r),
                "bias": {n: t[f"{n}.bias"][i].tolist() for n in names},
                "bias_mask": {n: t[f"{n}.bias.mask"][i].astype(bool).tolist() for n in names},
            }
            yield int(r), MaskSet(masks, weights=weights, meta=meta)


def _rows(plan: SearchPlan, runs, texts, lrs, scheds, trainer, stats, sizes) -> list[dict]:
    cfg = plan.config
    layer_nnz = [m.sum(dim=(1, 2)).cpu() for m in trainer.wmask]
    bias_nnz = sum(m.sum(dim=1).cpu() for m in trainer.bmask)
    eff = effective_counts(trainer.wmask).cpu()
    rows = []
    for i, r in enumerate(runs):
        kp = r // plan.n_settings
        w_nnz = int(sum(int(n[i]) for n in layer_nnz))
        arch = plan.archs[int(plan.keys[kp])] if plan.archs is not None else sizes
        row = {
            "run": int(r),
            "key": texts[i],
            "index": int(plan.keys[kp]),
            "arch": arch_text(arch),
            "setting": int(r % plan.n_settings),
            "lr": float(lrs[i]),
            "schedule": scheds[i],
            "seed": int(cfg.seed),
            "epochs": int(cfg.epochs),
        }
        for j, n in enumerate(layer_nnz):
            row[f"nnz_{j + 1}"] = int(n[i])
        row.update(
            weight_nnz=w_nnz,
            model_nnz=w_nnz + int(bias_nnz[i]),
            effective_nnz=int(eff[i]),
            accuracy=float(stats.accuracy[i]),
            loss=float(stats.loss[i]),
            above_target=bool(stats.accuracy[i] >= cfg.target),
        )
        rows.append(row)
    return rows


def _mask_bytes(trainer: EnsembleTrainer, keep: list[int], runs: list[int]) -> bytes:
    from safetensors.torch import save

    names = layer_names(len(trainer.w))
    sel = torch.tensor(keep, dtype=torch.int64)
    tensors = {"run": torch.tensor([runs[i] for i in keep], dtype=torch.int64)}
    for n, w, b, m, bm in zip(
        names, trainer.w, trainer.b, trainer.wmask, trainer.bmask, strict=True
    ):
        tensors[f"{n}.weight"] = w.cpu()[sel].contiguous()
        tensors[f"{n}.weight.mask"] = m.cpu()[sel].to(torch.uint8).contiguous()
        tensors[f"{n}.bias"] = b.cpu()[sel].contiguous()
        tensors[f"{n}.bias.mask"] = bm.cpu()[sel].to(torch.uint8).contiguous()
    return save(tensors, metadata={"format": SEARCH_MASKS_FORMAT})


def run_search(
    config: SearchConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = False,
    on_checkpoint: Callable[[int], None] | None = None,
) -> SearchResult:
    """Train every run of a search into ``out`` (module docstring for the files).

    Parameters
    ----------
    config : SearchConfig
        The search.
    out : path
        A new or empty folder, or (``resume=True``) a search to continue.
    resume : bool
        Continue the search in ``out``; only ``device``, ``models_per_batch``,
        ``checkpoint_every`` and ``limit`` may differ from its config.
    progress : bool
        A progress bar on stderr (runs, runs/s, ETA).
    on_checkpoint : callable, optional
        Called with the batch number after each checkpoint (tests stop a search there).

    Returns
    -------
    SearchResult
    """
    import pandas as pd

    require_parquet(KIND)
    out = Path(out)
    _check_out(out, resume)
    plan = search_plan(config)
    if config.device == "cuda" and not torch.cuda.is_available():
        raise MaskValidationError("--device cuda: CUDA is not available")
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out)
    lock.acquire()
    try:
        if resume:
            saved = read_run_json(out)["config"]
            check_same_config(saved, config.to_dict(), allowed=RESUMABLE_CHANGES, where=out)
        else:
            RunWriter(out).write_run_json(KIND, {
                "config": config.to_dict(),
                "layers": run_layers(plan.sizes),
                "n_keys": plan.n_keys,
                "n_settings": plan.n_settings,
                "n_runs": plan.n_keys * plan.n_settings,
            })  # fmt: skip
        (out / RESULTS_DIR).mkdir(exist_ok=True)
        done = read_results(out)
        done_runs = set(done["run"].tolist()) if len(done) else set()
        n_parts = _next_part(_results_parts(out))
        ckpt = read_checkpoint(out) if resume else None
        todo = np.arange(plan.n_runs, dtype=np.int64)  # 8 bytes a run, not a list of ints
        todo = todo[~np.isin(todo, np.fromiter(done_runs, np.int64, len(done_runs)))]
        first: list[list[int]] = []
        if ckpt is not None and not set(ckpt["runs"]) & done_runs:
            first.append(list(ckpt["runs"]))
            todo = todo[~np.isin(todo, np.asarray(ckpt["runs"], dtype=np.int64))]
        else:
            ckpt = None
        B = config.models_per_batch
        trains = bool(first) or len(todo) > 0
        batches = itertools.chain(first, (todo[i : i + B].tolist() for i in range(0, len(todo), B)))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=plan.n_runs, initial=len(done_runs), unit="run", file=sys.stderr,
                       dynamic_ncols=True, smoothing=0.1)  # fmt: skip
        try:
            for runs in batches:
                c = n_parts
                _train_batch(plan, out, runs, c, ckpt, bar, on_checkpoint)
                ckpt = None
                n_parts += 1
        finally:
            if bar is not None:
                bar.close()
        rows = read_results(out)
        complete = len(rows) >= plan.n_runs
        if (complete and trains) or (complete and not (out / RESULTS_FILE).exists()):
            atomic_write(out / RESULTS_FILE, lambda f: rows.to_parquet(f, index=False))
        atomic_write_json(out / SUMMARY_FILE, summarize(rows, config.target, plan.n_runs))
        return SearchResult(out, rows if len(rows) else pd.DataFrame(), complete)
    finally:
        lock.release()


def _train_batch(plan, out, runs, c, ckpt, bar, on_checkpoint) -> None:
    import pandas as pd

    cfg = plan.config
    from ..zoo import cubist_spiral

    x, y = cubist_spiral()
    sizes, w, b, wm, lrs, scheds, order, texts = plan.batch(runs)
    trainer = EnsembleTrainer(x, y, w, b, wm, lr=lrs, schedule=scheds, epochs=cfg.epochs,
                              order_seeds=order, seed=cfg.seed, batch_size=cfg.batch_size,
                              device=cfg.device)  # fmt: skip
    if ckpt is not None:
        trainer.load_state_dict(ckpt["trainer"])
    spe = trainer.steps_per_epoch
    per_epoch = len(runs) / cfg.epochs
    if bar is not None and trainer.step_count:
        bar.update(per_epoch * (trainer.step_count // spe))
    while trainer.step_count < trainer.total_steps:
        trainer.run(spe)
        epoch = trainer.step_count // spe
        if bar is not None:
            bar.update(per_epoch)
        if epoch % cfg.checkpoint_every == 0 and trainer.step_count < trainer.total_steps:
            write_checkpoint(out, {"runs": list(runs), "trainer": trainer.state_dict()})
            if on_checkpoint is not None:
                on_checkpoint(c)
    stats = trainer.evaluate()
    rows = _rows(plan, runs, texts, lrs, scheds, trainer, stats, sizes)
    keep = [i for i, r in enumerate(rows) if r["above_target"]]
    if keep:
        (out / MASKS_DIR).mkdir(exist_ok=True)
        atomic_write_bytes(
            out / _part(MASKS_DIR, c, "safetensors"), _mask_bytes(trainer, keep, runs)
        )
    df = pd.DataFrame(rows)
    atomic_write(out / _part(RESULTS_DIR, c, "parquet"), lambda f: df.to_parquet(f, index=False))
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)  # the batch is committed
    if bar is not None:
        bar.n = math.floor(bar.n + 0.5)
        bar.refresh()


def summarize(rows, target: float, n_runs: int) -> dict:
    """Totals and the sparsest runs at or above ``target`` (by weight nnz, then model nnz)."""
    out = {"target": target, "n_runs": int(n_runs), "n_done": len(rows)}
    if not len(rows):
        return out
    hit = rows[rows["accuracy"] >= target]
    out["n_above_target"] = len(hit)
    out["best_accuracy"] = float(rows["accuracy"].max())
    if len(hit):
        best = hit.sort_values(["weight_nnz", "model_nnz", "accuracy"],
                               ascending=[True, True, False]).iloc[0]  # fmt: skip
        out["sparsest"] = json.loads(best.to_json())
        by_arch = hit.sort_values(["model_nnz", "weight_nnz"]).iloc[0]
        out["fewest_model_nnz"] = json.loads(by_arch.to_json())
    return out
