r"""``masktopo prune``: one-shot and multi-stage pruning of a trained network into a run directory.

:func:`load_source` reads the trained weights (a run directory, a PAGS run directory, a mask file
with weights, or a plain PyTorch checkpoint of a zoo model); the weights of an input with masks
are its weights times its masks. :func:`prune` prunes them with every method at every sparsity
and writes the run (kind ``"prune"``):

* event 0 (``init``): the input's masks and weights :math:`\bar w` (dense or not), with their
  test accuracy;
* one ``prune`` event per solve (CHITA++: one per stage), masks and weights, with ``method``,
  ``sparsity``, ``stage``, ``stage_sparsity``, ``objective`` (the stage's own quadratic model),
  ``dist`` (:math:`\|w - \bar w\|` of the stage), ``new_non_zeros``, ``seconds`` (solver),
  ``grad_seconds``, ``test_acc`` and ``test_acc_bn``;
* ``results.csv`` and ``summary.json``: one row per method x sparsity, with the objective of the
  final weights under the model built at the input's weights (comparable across methods).

CHITA++ (methods-spec §5.2, item 6): stage :math:`t = 1 \dots T` prunes to :math:`s_t`
(:func:`stage_sparsities`) after recomputing :math:`G` at the current weights, with :math:`\bar w`
the current weights (earlier-pruned weights may revive: ``new_non_zeros``).

A sparse input: every method solves the problem over all :math:`p` maskable weights (weights the
input pruned may revive), but a sparsity must keep at most the input's nonzero weights
(otherwise the extra kept weights are zeros drawn as random ties): a one-line error names the
smallest sparsity allowed; CHITA++'s schedule starts at the larger of ``base_level`` and the
input's sparsity.

Nothing is written before every solve is done: the run is built in a staging folder beside
``out`` and moved into place at the end.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import git_commit, versions
from ..distributed import process_device
from ..errors import MaskFileError, MaskValidationError
from ..files import Staging, atomic_write_bytes, input_path
from ..pai.densities import keep_count
from ..runs import RunWriter, not_a_run, read_checkpoint, read_run, run_kind
from ..runs.layout import (
    BEST_FILE,
    EVENTS_FILE,
    INIT_FILE,
    MASKS_DIR,
    PRUNE_TABLE_FILE,
    RUN_FILE,
    SUMMARY_FILE,
)
from ..seeding import generator
from ..store import READ_SUFFIXES, check_finite, read_file, read_state_dict, read_state_file
from .bn import has_batchnorm, reestimate_bn
from .config import DEFAULT_BLOCK_SIZE, PruneConfig
from .gradients import check_memory, flatten, gradient_matrix, unflatten
from .solvers import Problem, SolverOptions, solve

__all__ = [
    "RESULTS_FILE",
    "TABLE_COLUMNS",
    "PruneResult",
    "Source",
    "input_accuracy_line",
    "load_source",
    "prune",
    "stage_sparsities",
]

#: The table of a pruning run: one row per method x sparsity (also in summary.json's ``rows``);
#: named in :mod:`masktopo.runs.layout`.
RESULTS_FILE = PRUNE_TABLE_FILE
TABLE_COLUMNS = ("method", "sparsity", "kept", "objective", "dist", "new_non_zeros",
                 "solver_s", "grad_s", "test_acc", "test_acc_bn", "event")  # fmt: skip


@dataclass
class Source:
    """Trained weights to prune.

    Attributes
    ----------
    path : pathlib.Path
    kind : str
        ``"run"``, ``"pags"``, ``"mask-file"`` or ``"checkpoint"``.
    model, dataset : str
        Zoo names (from the run, or the config).
    data_dir : str or None
    state : dict
        Tensors to load into the model (parameters and buffers by name); a masked layer's
        weights are already multiplied by its mask.
    options : dict
        Model options of the run (``width``), passed to :func:`masktopo.zoo.get_model`.
    masks : dict or None
        The input's bool masks of the layers it masks (None: a checkpoint, no masks); a maskable
        layer without a mask counts its nonzero weights as kept.
    maskable_only : bool
        ``state`` holds only the maskable weights (a mask file; a PAGS run without
        ``init.safetensors``): the model's other tensors keep their initial values.
    """

    path: Path
    kind: str
    model: str
    dataset: str
    data_dir: str | None
    state: dict[str, torch.Tensor]
    options: dict[str, Any] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] | None = None
    maskable_only: bool = False


@dataclass
class PruneResult:
    """What :func:`prune` returns: the run directory, the table rows, the input's accuracy.

    Attributes
    ----------
    out : pathlib.Path or None
    rows : list of dict
        One per method x sparsity (:data:`TABLE_COLUMNS`).
    input_acc : float
        Test accuracy of the input's weights (dense or not).
    seconds : float
    input_density : float
        Density of the input's masks (1.0: a dense input).
    input_nonzeros : int or None
        Nonzero maskable weights of the input.
    """

    out: Path | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    input_acc: float = math.nan
    seconds: float = 0.0
    input_density: float = 1.0
    input_nonzeros: int | None = None

    @property
    def dense_acc(self) -> float:
        """The former name of :attr:`input_acc` (the input's accuracy, dense or not)."""
        return self.input_acc


def stage_sparsities(target: float, stages: int, schedule: str, base: float) -> list[float]:
    r"""The CHITA++ stage sparsities :math:`s_1 < \dots < s_T = s` from ``base`` (methods-spec
    §5.2, item 6), :math:`u = t / T`:

    * ``poly``: :math:`s + (b - s)(1 - u)^3` (cubic);
    * ``linear``: :math:`b + (s - b) u`;
    * ``exp``: :math:`s - (s - b) 2^{-t}` (halving gaps), the last stage at :math:`s`;
    * ``const``: :math:`s` at every stage;
    * ``mfac``: geometric in density, :math:`1 - (1-b) ((1-s)/(1-b))^{u}`.
    """
    T = int(stages)
    if schedule == "const":
        return [target] * T
    if target <= base:  # nothing to schedule: one stage at the target
        return [target]
    out = []
    for t in range(1, T + 1):
        u = t / T
        if schedule == "poly":
            s = target + (base - target) * (1 - u) ** 3
        elif schedule == "linear":
            s = base + (target - base) * u
        elif schedule == "exp":
            s = target - (target - base) * 0.5**t
        elif schedule == "mfac":
            s = 1 - (1 - base) * ((1 - target) / (1 - base)) ** u
        else:
            raise MaskValidationError(f"unknown schedule {schedule!r}")
        out.append(s)
    out[-1] = target
    return out


# -- reading the trained weights --------------------------------------------------------------
def _masked(ms) -> dict[str, torch.Tensor]:
    """The weights of the mask set ``ms`` times its masks (zero where a mask prunes)."""
    return {n: w.masked_fill(~ms[n].to(w.device), 0) for n, w in ms.weights.items()}


def _run_names(p: Path, cfg: dict, config: PruneConfig) -> tuple[str, str]:
    """Model and dataset of the run at ``p`` (its config ``cfg``), checked against ``config``."""
    model, dataset = cfg.get("model"), cfg.get("dataset")
    for key, mine, theirs in (("model", config.model, model),
                              ("dataset", config.dataset, dataset)):  # fmt: skip
        if mine is not None and theirs is not None and mine != theirs:
            raise MaskFileError(p, f"the run used {key} {theirs!r}, not --{key} {mine!r}")
    model = config.model or model
    dataset = config.dataset or dataset
    if model is None or dataset is None:
        raise MaskFileError(p, "run.json names no model or dataset; pass --model and --dataset")
    return model, dataset


def _load_pags(p: Path, config: PruneConfig) -> Source:
    """A PAGS run: its best masks over the network it scored (``best.safetensors``'s weights
    times its masks, over ``init.safetensors``'s biases and buffers when the run has it)."""
    info = read_run(p).config
    cfg = {**info, **info.get("config", {})}
    model, dataset = _run_names(p, cfg, config)
    best = p / BEST_FILE
    if not best.is_file():
        raise MaskFileError(p, f"this PAGS run has no {BEST_FILE} yet (its best masks)")
    ms, _, has_weights = read_file(best, weights=True)
    if not has_weights:
        raise MaskFileError(best, "has no weights (the network PAGS scored); pruning needs them")
    init = p / INIT_FILE
    state = read_state_file(init) if init.is_file() else {}
    state.update(_masked(ms))
    data_dir = config.data_dir or cfg.get("data_dir")
    options = {"width": cfg["width"]} if cfg.get("width") is not None else {}
    return Source(p, "pags", model, dataset, data_dir, state, options, masks=dict(ms),
                  maskable_only=not init.is_file())  # fmt: skip


def load_source(path: str | os.PathLike, config: PruneConfig) -> Source:
    """The trained weights at ``path``.

    * a run directory: the last event's weights, over the model of its checkpoint when it has
      one;
    * a PAGS run directory: the network it scored (``init.safetensors``) with the weights of its
      best masks (``best.safetensors``), model and dataset from its run.json;
    * a mask file with weights (``config.model``, ``config.dataset``);
    * a PyTorch checkpoint (``.pt``, ``.pth``, ``.ckpt``, ``.bin``; ``weights_only=True``) of
      ``config.model``.

    The weights of an input with masks are its weights times its masks (only the layers its
    masks hold are masked).

    Parameters
    ----------
    path : str or os.PathLike
    config : PruneConfig
        ``model``, ``dataset`` and ``data_dir`` (required for a file; checked against a run's).

    Returns
    -------
    Source

    Raises
    ------
    MaskFileError
        Not readable; a mask file or an event without weights; a run with another model than
        ``--model``.
    MaskValidationError
        A file without ``--model``/``--dataset``.
    """
    p = input_path(path)
    if p.is_dir():
        kind = run_kind(p)
        if kind is None:
            raise not_a_run(p)
        if kind == "pags":
            return _load_pags(p, config)
        run = read_run(p)
        cfg = run.config.get("config", {})
        model, dataset = _run_names(p, cfg, config)
        if not run.events:
            raise MaskFileError(p, "the run has no event with weights" if kind == "train"
                                else run.no_events_reason())  # fmt: skip
        ms = run.load(None, weights=True)
        if not ms.has_weights:
            raise MaskFileError(run.event_path(None), "has no weights (the run was trained with "
                                "--dump-weights none); pruning needs the trained weights")  # fmt: skip
        state: dict[str, torch.Tensor] = {}
        ckpt = read_checkpoint(p)
        if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
            state.update({k: v for k, v in ckpt["model"].items() if isinstance(v, torch.Tensor)})
        state.update(_masked(ms))
        data_dir = config.data_dir or cfg.get("data_dir")
        options = {"width": cfg["width"]} if cfg.get("width") is not None else {}
        return Source(p, "run", model, dataset, data_dir, state, options, masks=dict(ms))
    if config.model is None or config.dataset is None:
        raise MaskValidationError(f"{p}: a file names no model or dataset; pass --model and "
                                  "--dataset")  # fmt: skip
    if READ_SUFFIXES.get(p.suffix.lower()) == "torch":
        state = read_state_dict(p)
        check_finite(p, state)
        return Source(p, "checkpoint", config.model, config.dataset, config.data_dir, state)
    ms, _, has_weights = read_file(p, weights=True)
    if not has_weights:
        raise MaskFileError(p, "is a mask file without weights; pruning needs the trained "
                            "weights (save it with its weights)")  # fmt: skip
    return Source(p, "mask-file", config.model, config.dataset, config.data_dir, _masked(ms),
                  masks=dict(ms), maskable_only=True)  # fmt: skip


def _build_model(source: Source, maskable_only: bool) -> tuple[nn.Module, list[str]]:
    from ..zoo import get_model, get_spec, maskable_parameters

    spec = get_spec(source.dataset)
    model = get_model(source.model, dataset=spec, generator=generator(0, "model"),
                      **source.options)  # fmt: skip
    names = list(maskable_parameters(model))
    own = model.state_dict()
    state = {k: v for k, v in source.state.items() if not k.endswith("_mask")}
    bad = [n for n in names if n not in state or tuple(state[n].shape) != tuple(own[n].shape)]
    if bad:
        n = bad[0]
        got = "no such tensor" if n not in state else f"shape {list(state[n].shape)}"
        raise MaskFileError(source.path, f"does not fit model {source.model!r}: layer {n!r} "
                            f"has {got}, the model needs {list(own[n].shape)}")  # fmt: skip
    if maskable_only:
        extra = [k for k in own if k not in names and not k.endswith("num_batches_tracked")]
        if extra:
            warnings.warn(f"{source.path}: holds only the maskable weights; the other tensors of "
                          f"{source.model!r} ({extra[0]}, ...) keep their initial values",
                          stacklevel=3)  # fmt: skip
    else:
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        unknown = [k for k in state if k not in own]
        if missing or unknown:
            what = f"lacks {missing[0]!r}" if missing else f"has {unknown[0]!r}"
            raise MaskFileError(source.path, f"does not fit model {source.model!r}: it {what}")
        for k, v in state.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise MaskFileError(source.path, f"does not fit model {source.model!r}: {k!r} "
                                    f"has shape {list(v.shape)}, the model needs "
                                    f"{list(own[k].shape)}")  # fmt: skip
    load = {k: v.to(own[k].dtype) for k, v in state.items() if k in own}
    model.load_state_dict(load, strict=False)
    return model, names


# -- evaluation --------------------------------------------------------------------------------
@torch.no_grad()
def _accuracy(model: nn.Module, data, batch: int = 1000) -> float:
    if data is None:
        return math.nan
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(data), batch):
        x, y = data.batch(torch.arange(i, min(i + batch, len(data)), device=data.data.device))
        correct += int((data.spec.predict(model(x)) == y).sum())
    model.train(was)
    return correct / len(data)


def _check_out(out: Path) -> None:
    if out.exists() or out.is_symlink():
        out = input_path(out)
        if not out.is_dir():
            raise MaskFileError(out, "cannot write a run there: it is a file, not a folder")
        if any(out.iterdir()):
            raise MaskFileError(out, "is not empty; choose an empty or new directory for --out")


# -- the run ------------------------------------------------------------------------------------
class _Pruner:
    """The state of one call: the model, its maskable weights, data, G at the dense weights."""

    def __init__(self, config: PruneConfig, source: Source, progress: bool):
        from ..zoo import get_spec, load_dataset

        self.cfg = config
        self.progress = progress
        self.device = process_device(config.device)
        self.dtype = torch.float64 if config.dtype == "float64" else torch.float32
        model, self.names = _build_model(source, maskable_only=source.maskable_only)
        self.model = model.to(self.device)
        params = dict(self.model.named_parameters())
        self.shapes = {n: tuple(params[n].shape) for n in self.names}
        self.w_bar = flatten(params, self.names).to(self.dtype)
        self.p = self.w_bar.numel()
        n, m = config.fisher_samples, config.fisher_batch
        copies = 2.5 if "chita++" in config.method else 1.5
        limit = None if config.memory_limit is None else config.memory_limit * 1e9
        check_memory(n, self.p, self.dtype, self.device, limit=limit, copies=copies)
        self.limit = limit
        for s in config.sparsity:
            if keep_count(1 - s, self.p) < 1:
                raise MaskValidationError(f"sparsity {s} keeps no weight of the {self.p} "
                                          "maskable weights")  # fmt: skip
        own = {n: source.masks[n] for n in self.names if source.masks and n in source.masks}
        self.input_masks = {n: own[n].to(self.device) if n in own else params[n].detach() != 0
                            for n in self.names}  # fmt: skip
        self.input_kept = sum(int(m.sum()) for m in self.input_masks.values())
        self.nonzeros = int((self.w_bar != 0).sum())
        _check_feasible(config.sparsity, self.p, self.nonzeros, self.input_kept)
        #: the input's sparsity by its nonzero weights: where CHITA++'s schedule may start
        self.input_sparsity = 1 - self.nonzeros / self.p
        self.spec = get_spec(source.dataset)
        train = load_dataset(source.dataset, data_dir=source.data_dir, split="train")
        try:
            test = load_dataset(source.dataset, data_dir=source.data_dir, split="test")
        except MaskFileError:
            test = None
        if n * m > len(train):
            raise MaskValidationError(f"fisher_samples x fisher_batch = {n * m} is more than the "
                                      f"{len(train)} training samples")  # fmt: skip
        self.train = train.to(self.device)
        self.test = test.to(self.device) if test is not None else None
        perm = torch.randperm(len(train), generator=generator(config.seed, "fisher-sample"))
        self.sample = perm[: n * m].to(self.device)
        self.bn = has_batchnorm(self.model)
        self.bn_state = {k: v.clone() for k, v in self.model.state_dict().items()
                         if k not in params}  # fmt: skip
        self.options = SolverOptions(max_iter=config.max_iter, ftol=config.ftol,
                                     kimp=config.kimp, outer_iter=config.outer_iter,
                                     block_size=config.block_size or DEFAULT_BLOCK_SIZE,
                                     refit=config.refit,
                                     keep_zero_columns=config.keep_zero_columns,
                                     layer_sizes=tuple(math.prod(s) for s in
                                                       self.shapes.values()))  # fmt: skip
        self._G0: Problem | None = None
        self.grad_seconds = 0.0

    # -- pieces ---------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        if self.progress:
            print(f"masktopo prune: {text}", file=sys.stderr, flush=True)

    def set_weights(self, w: torch.Tensor) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, t in unflatten(w, self.shapes).items():
                params[name].copy_(t.to(params[name].dtype))

    def reset(self) -> None:
        self.set_weights(self.w_bar)
        self.model.load_state_dict(self.bn_state, strict=False)

    def problem(self, w_bar: torch.Tensor) -> tuple[Problem, float]:
        r"""The problem at the model's current weights ``w_bar`` (G recomputed) and the seconds
        it took: the gradient rows and :math:`y = G \bar w`, which every solver's objective
        needs (formed here, so that the first solver timed on a problem does not pay for it)."""
        x, y = self.train.batch(self.sample)
        t0 = time.perf_counter()
        G = gradient_matrix(self.model, self.names, x, y, loss=self.spec.loss_fn,
                            minibatch=self.cfg.fisher_batch, chunk=self.cfg.chunk,
                            dtype=self.dtype, device=self.device, limit=self.limit)  # fmt: skip
        pb = Problem.build(G, w_bar, l2=self.cfg.l2, first_order=self.cfg.first_order,
                           alpha_one=self.cfg.alpha_one, minibatch=self.cfg.fisher_batch)  # fmt: skip
        pb.y  # noqa: B018 (formed once, cached in the problem)
        if G.device.type == "cuda":
            torch.cuda.synchronize(G.device)
        return pb, time.perf_counter() - t0

    @property
    def dense_problem(self) -> Problem:
        if self._G0 is None:
            self.reset()
            self._G0, s = self.problem(self.w_bar)
            self.grad_seconds = s
            self.note(f"G: {self._G0.G.shape[0]} x {self.p} gradient rows in {s:.2f} s")
        return self._G0

    def accuracies(self) -> tuple[float, float]:
        """Test accuracy now, and after re-estimating BatchNorm (NaN without BatchNorm)."""
        acc = _accuracy(self.model, self.test)
        if not self.bn:
            return acc, math.nan
        saved = {k: v.clone() for k, v in self.model.state_dict().items() if k in self.bn_state}
        n = self.cfg.bn_samples or len(self.train)
        idx = torch.randperm(len(self.train), generator=generator(self.cfg.seed, "bn"))[:n]
        reestimate_bn(self.model, (self.train.batch(idx[i : i + 256].to(self.device))[0]
                                   for i in range(0, len(idx), 256)))  # fmt: skip
        acc_bn = _accuracy(self.model, self.test)
        self.model.load_state_dict(saved, strict=False)
        return acc, acc_bn

    def record(self, writer: RunWriter, w: torch.Tensor, support: torch.Tensor,
               **scalars) -> int:  # fmt: skip
        masks = unflatten(support, self.shapes)
        weights = unflatten(w.float(), self.shapes)
        return writer.record(masks, weights, kind="prune", step=writer.n_events, epoch=0.0,
                             scalars=scalars)  # fmt: skip

    # -- one method at one sparsity -------------------------------------------------------------
    def run_one(self, writer: RunWriter, method: str, s: float) -> dict[str, Any]:
        k = keep_count(1 - s, self.p)
        gen = generator(self.cfg.seed, "ties", method, s, device=self.device)
        pb0 = self.dense_problem
        if method != "chita++":
            sol = solve(pb0, k, method, self.options, gen)
            self.set_weights(sol.w)
            acc, acc_bn = self.accuracies()
            dist = float((sol.w - self.w_bar).norm())
            new = int(((sol.w != 0) & (self.w_bar == 0)).sum())
            ev = self.record(writer, sol.w, sol.support, method=method, sparsity=s, stage=1,
                             stages=1, stage_sparsity=s, objective=sol.objective, dist=dist,
                             new_non_zeros=new, iterations=sol.iterations, seconds=sol.seconds,
                             grad_seconds=self.grad_seconds, test_acc=acc,
                             test_acc_bn=acc_bn)  # fmt: skip
            return {"method": method, "sparsity": s, "kept": k, "objective": sol.objective,
                    "dist": dist, "new_non_zeros": new, "solver_s": sol.seconds,
                    "grad_s": self.grad_seconds, "test_acc": acc, "test_acc_bn": acc_bn,
                    "event": ev}  # fmt: skip
        cfg = self.cfg
        w = self.w_bar.clone()
        solver_s = grad_s = 0.0
        new_total = 0
        ev = -1
        levels = stage_sparsities(s, cfg.stages, cfg.schedule,
                                  max(cfg.base_level, self.input_sparsity))  # fmt: skip
        for t, st in enumerate(levels, start=1):
            self.set_weights(w)
            if t == 1:
                pb, gs = pb0, self.grad_seconds
            else:
                pb, gs = self.problem(w)
            sol = solve(pb, keep_count(1 - st, self.p), cfg.stage_solver, self.options, gen)
            new = int(((sol.w != 0) & (w == 0)).sum())
            dist = float((sol.w - w).norm())
            w = sol.w
            self.set_weights(w)
            acc, acc_bn = self.accuracies()
            solver_s += sol.seconds
            grad_s += gs
            new_total += new
            ev = self.record(writer, sol.w, sol.support, method=method, sparsity=s, stage=t,
                             stages=len(levels), stage_sparsity=st, objective=sol.objective,
                             dist=dist, new_non_zeros=new, iterations=sol.iterations,
                             seconds=sol.seconds, grad_seconds=gs, test_acc=acc,
                             test_acc_bn=acc_bn)  # fmt: skip
            self.note(
                f"chita++ s={s:g} stage {t}/{len(levels)} at {st:.4f}: test acc {percent(acc)}"
            )
        return {"method": method, "sparsity": s, "kept": k, "objective": pb0.objective(w),
                "dist": float((w - self.w_bar).norm()), "new_non_zeros": new_total,
                "solver_s": solver_s, "grad_s": grad_s, "test_acc": acc, "test_acc_bn": acc_bn,
                "event": ev}  # fmt: skip


def _smallest_sparsity(p: int, nonzeros: int) -> str:
    """The smallest sparsity whose keep count out of ``p`` is at most ``nonzeros``, written with
    the digits that tell one weight of ``p`` from the next (``1 - 13533/266200``: ``0.949163``)."""
    exact = 1 - nonzeros / p
    for digits in range(max(2, math.ceil(math.log10(p))), 17):
        s = math.ceil(exact * 10**digits - 1e-6) / 10**digits
        if s < 1 and keep_count(1 - s, p) <= nonzeros:
            return f"{s:.{digits}f}".rstrip("0").rstrip(".")
    return repr(exact)


def _check_feasible(sparsities, p: int, nonzeros: int, kept: int) -> None:
    """Raise when a sparsity keeps more weights than the input has nonzero weights.

    Raises
    ------
    MaskValidationError
        ``sparsity 0.5 keeps 133100 weights, more than the 7525 nonzero weights of the input
        (density 0.02827; ...): ask for a sparsity of at least 0.971732``.
    """
    over = [(s, k) for s in sparsities if (k := keep_count(1 - s, p)) > nonzeros]
    if not over:
        return
    s, k = over[0]
    masks = ""
    if kept != nonzeros:
        masks = (f"; its masks keep {kept} weights (density {kept / p:.4g}), {kept - nonzeros} "
                 "of them zero")  # fmt: skip
    if nonzeros == 0:
        raise MaskValidationError(f"the input has no nonzero maskable weight{masks}: nothing "
                                  "to prune")  # fmt: skip
    raise MaskValidationError(f"sparsity {s:g} keeps {k} weights, more than the {nonzeros} "
                              f"nonzero weights of the input (density {nonzeros / p:.4g}{masks})"
                              f": ask for a sparsity of at least "
                              f"{_smallest_sparsity(p, nonzeros)}")  # fmt: skip


def _csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(TABLE_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v)
                    for k, v in r.items()})  # fmt: skip
    return buf.getvalue().encode()


def input_accuracy_line(acc: float, density: float) -> str:
    """The line that reports the input's test accuracy, in percent as ``masktopo train`` prints
    it: ``dense test accuracy 81.23%`` for a dense input (density 1), else ``input test
    accuracy 64.23% (density 0.05)``."""
    if density >= 1.0:
        return f"dense test accuracy {percent(acc)}"
    return f"input test accuracy {percent(acc)} (density {density:.4g})"


def percent(acc: float) -> str:
    """An accuracy (a fraction) as printed: ``81.23%``, ``n/a`` when undefined."""
    return f"{100 * acc:.2f}%" if math.isfinite(acc) else "n/a"


def prune(
    config: PruneConfig,
    source: str | os.PathLike | Source,
    out: str | os.PathLike | None,
    *,
    progress: bool = False,
) -> PruneResult:
    """Prune ``source`` with every method at every sparsity of ``config``; write the run to
    ``out`` (None: write nothing) and return the table.

    Raises
    ------
    MaskFileError
        A bad input (:func:`load_source`), a checkpoint for another model, an ``out`` that is not
        empty.
    MaskValidationError
        A gradient matrix that does not fit in memory, more samples than the training set, ...
    """
    t_start = time.perf_counter()
    if config.block_size is not None and not config.uses_blocks:
        # The reference's --block_size silently replaced the algorithm by block backsolve;
        # here a method is what it says, and a block size it does not use is reported.
        warnings.warn(f"--block-size {config.block_size} is used by bso-block only (the "
                      "reference's block approximation); "
                      f"{', '.join(config.method)} solve{'s' if len(config.method) == 1 else ''}"
                      " the whole problem (add --method bso-block for the block approximation)",
                      stacklevel=2)  # fmt: skip
    out_path = None if out is None else Path(os.fspath(out))
    if out_path is not None:
        _check_out(out_path)
    src = source if isinstance(source, Source) else load_source(source, config)
    pr = _Pruner(config, src, progress)
    resolved = config.replace(model=src.model, dataset=src.dataset, data_dir=src.data_dir)
    with contextlib.ExitStack() as stack:
        staging = None
        if out_path is not None:  # removed on leaving, committed files excepted
            staging = stack.enter_context(Staging(out_path, "the pruning run"))
        writer = RunWriter(staging.path if staging else None, background=False)
        writer.write_run_json("prune", {
            "git": git_commit(),
            "config": resolved.to_dict(),
            "seed": config.seed,
            "source": {"path": str(src.path), "kind": src.kind},
            "device": str(pr.device),
            "versions": versions(),
            "layers": [{"name": n, "kind": "conv" if len(s) > 2 else "linear", "shape": list(s)}
                       for n, s in pr.shapes.items()],
        })  # fmt: skip
        pr.reset()
        input_acc, input_bn = pr.accuracies()
        density = pr.input_kept / pr.p
        writer.record(pr.input_masks, unflatten(pr.w_bar.float(), pr.shapes), kind="init",
                      step=0, epoch=0.0,
                      scalars={"test_acc": input_acc, "test_acc_bn": input_bn})  # fmt: skip
        pr.note(f"{input_accuracy_line(input_acc, density)}: {pr.nonzeros} nonzero of {pr.p} "
                "maskable weights")  # fmt: skip
        rows = []
        for method in config.method:
            for s in config.sparsity:
                pr.reset()
                row = pr.run_one(writer, method, s)
                rows.append(row)
                pr.note(f"{method} s={s:g}: objective {row['objective']:.6g}, test acc "
                        f"{percent(row['test_acc'])}, solver {row['solver_s']:.2f} s")  # fmt: skip
        writer.close()
        seconds = time.perf_counter() - t_start
        if staging is not None:
            inp = {"test_acc": input_acc, "test_acc_bn": input_bn, "density": density,
                   "nonzeros": pr.nonzeros}  # fmt: skip
            writer.write_summary({"input": inp,
                                  **({"dense": inp} if density == 1.0 else {}),
                                  "rows": rows, "seconds": seconds,
                                  "gradient_rows_per_s": (pr.cfg.fisher_samples / pr.grad_seconds
                                                          if pr.grad_seconds else None)})  # fmt: skip
            atomic_write_bytes(staging.path / RESULTS_FILE, _csv(rows))
            names = [RUN_FILE, EVENTS_FILE, MASKS_DIR, SUMMARY_FILE, RESULTS_FILE]
            staging.commit([staging.path / n for n in names])
    return PruneResult(out_path, rows, input_acc, time.perf_counter() - t_start, density,
                       pr.nonzeros)  # fmt: skip
