r"""Pruning methods on the Cubist Spiral at an exact weight budget K (methods-spec §7.4).

Every method ends with **exactly K** kept weights (the reference lands 1–2 below: its strict
thresholds and the overshooting GMP schedule), and derives the bias masks from dead units
(:func:`~masktopo.search.ensemble.bias_masks_from_units`). All runs of one width train together
on the :class:`~masktopo.search.ensemble.EnsembleTrainer`; selection is an exact per-model
top-k (ties broken by position, :func:`topk_masks`).

``gmp``
    Gradual magnitude pruning during training (the reference's ``imp``): 199 events, one every
    :math:`\lfloor T/200 \rfloor` steps; after event :math:`e` the model keeps
    :math:`\mathrm{round}(K + (N-K)(1 - e/199)^3)` weights of largest :math:`|w|` over all layers
    (Zhu & Gupta 2017, cubic schedule), so the last event keeps K.
``lth``
    Lottery-ticket IMP with rewinding to the initialisation (Frankle & Carbin 2019): 5 rounds
    of ``epochs`` epochs; after round :math:`r = 1..4` keep
    :math:`\mathrm{round}(N (K/N)^{r/4})` by global magnitude, rewind the kept weights to their
    initial values and restart the optimizer and the schedule.
``snip``, ``grasp``, ``synflow``, ``iter-snip``, ``force``, ``random``
    At initialisation with :func:`masktopo.pai.prune` (global top-K, density K/N;
    BCE-with-logits loss for the data-driven scores), then trained with the mask fixed. SNIP,
    Iter-SNIP and FORCE score one batch of 128 points; GraSP, as the reference's
    ``GraSP_fetch_data`` with ``max(2, out_dim) = 2`` classes, 25 points of each class (the first
    of a seeded permutation) as two batches, class 0 then class 1. As in the reference's
    random-initialisation benchmark, SNIP and GraSP first re-initialise every weight matrix
    Xavier-normal (:math:`\mathcal N(0, 2/(n_{in}+n_{out}))`, biases kept) and the model trains
    from those weights (``xavier_reinit``; never with ``fixed_init``, where the reference does
    not either).
``rigl``
    RigL (Evci et al. 2020): ERK layer densities at K/N (:func:`masktopo.pai.prune` ``"erk"``),
    every :math:`\Delta T = 100` steps until :math:`0.75 T`, per layer drop the
    :math:`\lfloor \alpha_t n_l \rfloor` kept weights of smallest :math:`|w|`,
    :math:`\alpha_t = \tfrac{\alpha}{2}(1 + \cos(\pi t / T_{end}))`, :math:`\alpha = 0.3`, and
    grow as many where the dense gradient is largest (new weights start at 0): the count per
    layer never changes, so K is kept exactly.

``N = 2w + 2w^2 + w`` is the number of weights of the 2-w-w-w-1 network; budgets ``K >= N``
are skipped. Each result row records the nominal K, the measured weight nnz, the model nnz
(weights plus kept biases), the effective nnz (kept weights on an input→output path, from
:func:`masktopo.analysis.paths.analyze_paths`) and the dead units.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import MaskFileError, MaskValidationError
from ..files import atomic_write, atomic_write_json, require_parquet
from ..runs import (
    RunLock,
    RunWriter,
    check_resumable,
    check_same_config,
    read_run_json,
    run_kind,
)
from ..runs.layout import RESULTS_DIR, RESULTS_FILE, SUMMARY_FILE
from ..seeding import seed_for
from .config import PruneBenchConfig
from .ensemble import EnsembleTrainer, bias_masks_from_units, init_params
from .runner import layer_names, read_table, run_layers

__all__ = ["KIND", "prune_to_k", "read_bench", "run_prune_bench", "topk_masks"]

KIND = "prune-bench"
PAI_METHODS = ("snip", "grasp", "synflow", "iter-snip", "force", "random")
#: RigL's update interval, drop fraction and end (fraction of training), methods-spec §7.4.
RIGL_DELTA_T, RIGL_ALPHA, RIGL_END = 100, 0.3, 0.75


def topk_masks(scores: Sequence[torch.Tensor], k: torch.Tensor) -> list[torch.Tensor]:
    """Per model, keep the ``k[i]`` entries of largest score over all layers (exactly; ties by
    position, earlier layers first). ``scores`` ``[B, ...]`` per layer; ``-inf`` is never kept
    unless ``k`` exceeds the finite entries."""
    flat = torch.cat([s.reshape(s.shape[0], -1) for s in scores], dim=1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    keep = rank < k.to(flat.device)[:, None]
    out, at = [], 0
    for s in scores:
        n = s[0].numel()
        out.append(keep[:, at : at + n].reshape(s.shape))
        at += n
    return out


def _magnitude_masks(tr: EnsembleTrainer, k: torch.Tensor) -> None:
    """Global magnitude pruning of every model to ``k[i]`` kept weights, then bias masks."""
    scores = [torch.where(m, w.abs(), -math.inf) for w, m in zip(tr.w, tr.wmask, strict=True)]
    tr.wmask = topk_masks(scores, k)
    tr.bmask = bias_masks_from_units(tr.wmask)
    tr.apply_masks()


def _sizes(width: int) -> tuple[int, ...]:
    return (2, width, width, width, 1)


def n_weights(width: int) -> int:
    """``N = 2w + 2w^2 + w``: the weights of the 2-w-w-w-1 network."""
    return 2 * width + 2 * width * width + width


def _module(sizes, ws, bs, i: int):
    from ..zoo import get_model

    model = get_model("spiral-mlp", width=sizes[1])
    lins = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for lin, w, b in zip(lins, ws, bs, strict=True):
            lin.weight.copy_(w[i])
            lin.bias.copy_(b[i])
    return model


#: Methods the reference's random-initialisation benchmark re-initialises Xavier-normal.
XAVIER_METHODS = ("snip", "grasp")
#: GraSP's points per class (the reference's ``samples_per_class``).
GRASP_PER_CLASS = 25


def _xavier(seeds: Sequence[int], w: list[torch.Tensor]) -> list[torch.Tensor]:
    r"""Weight matrices ``[B, out, in]`` with model ``i``'s drawn Xavier-normal from ``seeds[i]``:
    :math:`\mathcal N(0, \sigma^2)`, :math:`\sigma = \sqrt{2/(n_{in} + n_{out})}`
    (``torch.nn.init.xavier_normal_``, gain 1; Glorot & Bengio 2010)."""
    out = []
    for v in w:
        n_out, n_in = v.shape[1:]
        std = math.sqrt(2.0 / (n_in + n_out))
        draws = []
        for s in seeds:
            g = torch.Generator().manual_seed(s)
            draws.append(torch.randn(n_out, n_in, generator=g, dtype=v.dtype) * std)
        out.append(torch.stack(draws))
    return out


def _bce(out, target):
    return torch.nn.functional.binary_cross_entropy_with_logits(out.reshape(-1), target.float())


def prune_to_k(
    method: str,
    width: int,
    ks: Sequence[int],
    seeds: Sequence[int],
    *,
    lr: float | Sequence[float] = 0.1,
    schedule: str | Sequence[str] = "cosine",
    epochs: int = 50,
    run_seed: int = 0,
    device: str = "cpu",
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    fixed_init: bool = False,
    xavier_reinit: bool = True,
) -> EnsembleTrainer:
    """Prune and train ``len(ks)`` 2-w-w-w-1 models with ``method``, model ``i`` to exactly
    ``ks[i]`` weights from the initialisation of ``seeds[i]`` (module docstring): its own
    width-w PyTorch default, or (``fixed_init``) the top-left block of a width-16 one shared by
    every width and method with that seed (the reference's fixed-init benchmark). With
    ``xavier_reinit`` (and not ``fixed_init``), SNIP and GraSP replace the weight matrices by
    Xavier-normal draws before scoring, as the reference does.

    Returns
    -------
    EnsembleTrainer
        The trained ensemble (``wmask``, ``bmask``, ``w``, ``b``; :meth:`evaluate`).
    """
    from .. import pai
    from ..zoo import cubist_spiral

    if x is None or y is None:
        x, y = cubist_spiral()
    sizes = _sizes(width)
    N = n_weights(width)
    ks = [int(k) for k in ks]
    if any(not 0 < k < N for k in ks):
        raise MaskValidationError(f"every K must be in 1 .. {N - 1} for width {width}")
    B = len(ks)
    if fixed_init:  # the top-left block of one width-16 initialisation per seed
        w, b = init_params([seed_for(s, "fixed-init") for s in seeds], sizes,
                           init_width=max(16, width))  # fmt: skip
    else:
        w, b = init_params([seed_for(s, "init", width) for s in seeds], sizes)
        if xavier_reinit and method in XAVIER_METHODS:
            w = _xavier([seed_for(s, "xavier", width) for s in seeds], w)
    order = [seed_for(s, "order", width, method, k) for s, k in zip(seeds, ks, strict=True)]
    k_t = torch.tensor(ks)
    dense = [torch.ones_like(v, dtype=torch.bool) for v in w]

    def trainer(wm, bm=None, n_epochs=epochs):
        return EnsembleTrainer(x, y, w, b, wm, bm, lr=lr, schedule=schedule, epochs=n_epochs,
                               order_seeds=order, seed=run_seed, device=device)  # fmt: skip

    if method == "gmp":
        tr = trainer(dense)
        interval = tr.total_steps // 200
        fixed = torch.tensor(ks, dtype=torch.float64)

        def gmp(t: EnsembleTrainer) -> None:
            e, r = divmod(t.step_count, interval)
            if r == 0 and 1 <= e <= 199:
                keep = torch.round(fixed + (N - fixed) * (1 - e / 199) ** 3).long()
                _magnitude_masks(t, keep)

        return tr.run(callback=gmp)
    if method == "lth":
        tr = trainer(dense)
        w0 = [v.clone() for v in tr.w]
        b0 = [v.clone() for v in tr.b]
        for r in range(1, 6):
            tr.run()
            if r == 5:
                break
            keep = torch.round(N * (k_t.double() / N) ** (r / 4)).long()
            _magnitude_masks(tr, keep)
            tr.w = [v.clone() for v in w0]
            tr.b = [v.clone() for v in b0]
            tr.reset_optimizer()
            tr.apply_masks()
        return tr
    if method in PAI_METHODS or method == "rigl":
        name = "erk" if method == "rigl" else method
        wm = [torch.zeros_like(v, dtype=torch.bool) for v in w]
        lnames = [f"{n}.weight" for n in layer_names(len(sizes) - 1)]
        for i in range(B):
            g = torch.Generator().manual_seed(seed_for(seeds[i], "prune", width, method, ks[i]))
            perm = torch.randperm(len(x), generator=g)
            if method == "grasp":  # GraSP_fetch_data: 25 points per class, class by class
                per = [perm[y[perm] == c][:GRASP_PER_CLASS] for c in (0, 1)]
                batches = [(x[p], y[p]) for p in per]
            else:
                batches = [(x[perm[:128]], y[perm[:128]])]
            opts = {"loss": _bce} if pai.get_method(name).needs_batches else {}
            ms = pai.prune(_module(sizes, w, b, i), name, ks[i] / N, batches=batches,
                           generator=g, weights=False, **opts)  # fmt: skip
            for j, n in enumerate(lnames):
                wm[j][i] = ms[n]
        tr = trainer(wm)
        if method != "rigl":
            return tr.run()
        tr.record_grads = True
        t_end = int(RIGL_END * tr.total_steps)

        def rigl(t: EnsembleTrainer) -> None:
            s = t.step_count
            if s % RIGL_DELTA_T or s > t_end:
                return
            alpha = RIGL_ALPHA / 2 * (1 + math.cos(math.pi * s / t_end))
            for j, (m, wt, gr) in enumerate(zip(t.wmask, t.w, t.dense_grads, strict=True)):
                n_drop = torch.floor(alpha * m.sum(dim=(1, 2)).double()).long()
                drop_score = torch.where(m, -wt.abs(), -math.inf)  # smallest |w| first
                dropped = topk_masks([drop_score], n_drop)[0]
                kept = m & ~dropped
                grow_score = torch.where(kept, -math.inf, gr.abs())
                grown = topk_masks([grow_score], n_drop)[0]
                t.wmask[j] = kept | grown
                t.w[j] = torch.where(grown, 0.0, wt)
                t.vw[j] = torch.where(grown, 0.0, t.vw[j])
            t.bmask = bias_masks_from_units(t.wmask)
            t.apply_masks()

        return tr.run(callback=rigl)
    raise MaskValidationError(f"unknown pruning method {method!r}")


def _rows(method, width, ks, seeds, lr, schedule, epochs, tr) -> list[dict]:
    from ..analysis.paths import analyze_paths, layer_graph
    from ..masks import MaskSet
    from ..zoo import get_model

    stats = tr.evaluate()
    graph = layer_graph(get_model("spiral-mlp", width=width), (2,))
    names = [f"{n}.weight" for n in layer_names(len(tr.w))]
    rows = []
    for i, k in enumerate(ks):
        ms = MaskSet({n: m[i].cpu() for n, m in zip(names, tr.wmask, strict=True)})
        pa = analyze_paths(ms, graph)
        w_nnz = pa.n_kept
        rows.append({
            "method": method, "width": int(width), "k": int(k), "seed": int(seeds[i]),
            "lr": float(lr), "schedule": schedule, "epochs": int(epochs),
            "weight_nnz": int(w_nnz),
            "model_nnz": int(w_nnz + sum(int(m[i].sum()) for m in tr.bmask)),
            "effective_nnz": int(pa.n_effective), "dead_units": int(pa.n_dead_units),
            "accuracy": float(stats.accuracy[i]), "loss": float(stats.loss[i]),
        })  # fmt: skip
    return rows


#: The columns of a pruning benchmark's rows (:func:`_rows`).
BENCH_COLUMNS = ("method", "width", "k", "seed", "lr", "schedule", "epochs", "weight_nnz",
                 "model_nnz", "effective_nnz", "dead_units", "accuracy", "loss")  # fmt: skip


def read_bench(out: str | os.PathLike):
    """The rows of a pruning benchmark (finished groups), as a pandas DataFrame: those of its
    results parts (``results/*.parquet``, one per finished group: the record, as for
    :func:`~masktopo.search.runner.read_results`), or of ``results.parquet`` (their
    concatenation, written at the end) when the folder has no parts.

    Raises
    ------
    MaskFileError
        A results part, or ``results.parquet`` read in their absence, is not readable parquet
        (cut off, damaged) or lacks a column of the rows (one line naming the file).
    """
    require_parquet(KIND)
    out = Path(out)
    final = out / RESULTS_FILE
    parts = _parts(out)
    if not parts and final.exists():
        return read_table(final, BENCH_COLUMNS, what="prune-bench results",
                          hint="; delete it (masktopo prune-bench --resume trains the runs "
                               "again and writes it)")  # fmt: skip
    return _read_parts(parts)


def _parts(out: Path) -> list[Path]:
    """The results parts of a pruning benchmark, in name order."""
    return sorted((out / RESULTS_DIR).glob("*.parquet")) if (out / RESULTS_DIR).is_dir() else []


def _read_parts(parts: list[Path]):
    """The rows of the results ``parts`` (:func:`_parts`), in their order (what
    ``results.parquet`` holds)."""
    import pandas as pd

    if not parts:
        return pd.DataFrame()
    again = ("; restore it, or delete it and run masktopo prune-bench --resume to train its "
             "runs again")  # fmt: skip
    return pd.concat([read_table(p, BENCH_COLUMNS, what="prune-bench results", hint=again)
                      for p in parts], ignore_index=True)  # fmt: skip


def run_prune_bench(
    config: PruneBenchConfig, out: str | os.PathLike, *, resume: bool = False,
    progress: bool = False,
):  # fmt: skip
    """Run the pruning benchmark into ``out``: one parquet part per (width, method, setting)
    group (all K and seeds of a group train together), ``results.parquet`` and summary.json
    at the end. A resumed benchmark skips the finished groups."""
    import pandas as pd

    from ..zoo import cubist_spiral

    require_parquet(KIND)
    out = Path(out)
    kind = run_kind(out) if out.is_dir() else None
    if resume:
        check_resumable(out, KIND)
    if not resume and (kind is not None or (out.is_dir() and any(out.iterdir()))):
        raise MaskFileError(out, "is not empty; choose an empty or new directory for --out")
    if not any(k < n_weights(w) for w in config.width_list() for k in config.nnz_grid()):
        sizes = ", ".join(f"width {w}: {n_weights(w)}" for w in config.width_list())
        raise MaskValidationError(f"nothing to run: every budget K in --nnz is at least the "
                                  f"weights of the network ({sizes})")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out)
    lock.acquire()
    try:
        if resume:
            check_same_config(read_run_json(out)["config"], config.to_dict(),
                              allowed=("device",), where=out)  # fmt: skip
            _read_parts(_parts(out))  # a damaged part is an error before anything is trained
        else:
            widest = max(config.width_list())
            RunWriter(out).write_run_json(
                KIND, {"config": config.to_dict(), "layers": run_layers(_sizes(widest))}
            )
        (out / RESULTS_DIR).mkdir(exist_ok=True)
        for width in config.width_list():
            over = [k for k in config.nnz_grid() if k >= n_weights(width)]
            if over:
                warnings.warn(f"width {width}: budget(s) K = {', '.join(map(str, over))} skipped: "
                              f"the 2-{width}-{width}-{width}-1 network has only "
                              f"{n_weights(width)} weights", stacklevel=2)  # fmt: skip
        x, y = cubist_spiral()
        groups = [(w, m, si) for w in config.width_list() for m in config.methods
                  for si in range(len(config.settings()))]  # fmt: skip
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(groups), unit="group", file=sys.stderr, dynamic_ncols=True)
        for width, method, si in groups:
            lr, sched = config.settings()[si]
            part = out / RESULTS_DIR / f"w{width}-{method}-s{si}.parquet"
            N = n_weights(width)
            grid = [k for k in config.nnz_grid() if k < N]
            if not part.exists() and grid:
                ks = [k for k in grid for _ in range(config.seeds)]
                seeds = [config.seed + j for _ in grid for j in range(config.seeds)]
                tr = prune_to_k(method, width, ks, seeds, lr=lr, schedule=sched,
                                epochs=config.epochs, run_seed=config.seed, device=config.device,
                                x=x, y=y, fixed_init=config.fixed_init,
                                xavier_reinit=config.xavier_reinit)  # fmt: skip
                df = pd.DataFrame(_rows(method, width, ks, seeds, lr, sched, config.epochs, tr))
                atomic_write(part, lambda f, df=df: df.to_parquet(f, index=False))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        rows = _read_parts(_parts(out))  # not results.parquet: a resume may have added parts
        atomic_write(out / RESULTS_FILE, lambda f: rows.to_parquet(f, index=False))
        atomic_write_json(out / SUMMARY_FILE, bench_summary(rows, config.target))
        return rows
    finally:
        lock.release()


def bench_summary(rows, target: float) -> dict:
    """Per (method, width): the smallest weight nnz (and model nnz) whose best run over seeds
    and settings reaches ``target``."""
    out: dict = {"target": target, "n_runs": len(rows), "smallest_nnz": []}
    if not len(rows):
        return out
    for (method, width), g in rows.groupby(["method", "width"], sort=True):
        best = g.groupby("weight_nnz")["accuracy"].max()
        hit = best[best >= target]
        out["smallest_nnz"].append({
            "method": method, "width": int(width),
            "weight_nnz": None if hit.empty else int(hit.index.min()),
            "mean_ineffective": float((g["weight_nnz"] - g["effective_nnz"]).mean()),
        })  # fmt: skip
    return out
