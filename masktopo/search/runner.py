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

import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import MaskFileError, MaskValidationError
from ..files import atomic_write, atomic_write_bytes, atomic_write_json
from ..runs import (
    RunLock,
    RunWriter,
    check_same_config,
    read_checkpoint,
    read_run_json,
    run_kind,
    write_checkpoint,
)
from ..runs.layout import CHECKPOINT_FILE, MASKS_DIR, RESULTS_DIR, RESULTS_FILE, SUMMARY_FILE
from ..seeding import seed_for
from .config import RESUMABLE_CHANGES, SearchConfig
from .ensemble import EnsembleTrainer, effective_counts, init_params
from .enumerate import (
    arch_text,
    block_masks,
    count_supports,
    joint_indices,
    parse_arch,
    phase1_archs,
    support_masks,
    support_weight_nnz,
)

__all__ = [
    "KIND",
    "RESULTS_FILE",
    "SearchResult",
    "layer_names",
    "read_results",
    "read_search_masks",
    "run_layers",
    "run_search",
    "search_plan",
]

KIND = "search"
_SPIRAL_NAMES = ("first_layer", "second_layer", "third_layer", "clf")


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
    """The keys and runs of a search (:func:`search_plan`)."""

    config: SearchConfig
    keys: np.ndarray  # phase 2: support indices; phase 1: positions in phase1_archs
    archs: list[tuple[int, ...]] | None  # phase 1 only
    n_settings: int

    @property
    def sizes(self) -> tuple[int, ...]:
        """Layer widths of the trained networks (phase 1: the width-W container)."""
        if self.archs is None:
            return parse_arch(self.config.arch)
        return (2, *([self.config.max_width] * 3), 1)

    @property
    def n_runs(self) -> int:
        n = len(self.keys) * self.n_settings
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
            W = cfg.max_width
            sizes = (2, W, W, W, 1)
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


def search_plan(config: SearchConfig) -> SearchPlan:
    """The keys and settings a search trains (no training, no files)."""
    if config.phase == 1:
        if config.init_width < config.max_width:
            raise MaskValidationError(
                f"init_width {config.init_width} is smaller than max_width {config.max_width}"
            )
        archs = phase1_archs(config.max_width)
        keys = np.arange(len(archs), dtype=np.int64)
        return SearchPlan(config, keys, archs, len(config.settings()))
    arch = parse_arch(config.arch)
    if max(arch[1:-1]) > config.init_width:
        raise MaskValidationError(
            f"arch {config.arch} does not fit in init_width {config.init_width}"
        )
    if config.joint:
        keys = np.asarray(joint_indices(arch))
    else:
        keys = np.arange(count_supports(arch), dtype=np.int64)
    if config.max_weight_nnz is not None or config.sparsest_first or config.per_nnz:
        nnz = support_weight_nnz(arch, keys)
        if config.max_weight_nnz is not None:
            keys, nnz = keys[nnz <= config.max_weight_nnz], nnz[nnz <= config.max_weight_nnz]
        if config.per_nnz is not None:
            pick = np.zeros(len(keys), dtype=bool)
            for v in np.unique(nnz):
                where = np.flatnonzero(nnz == v)
                step = len(where) / min(len(where), config.per_nnz)
                pick[where[(np.arange(min(len(where), config.per_nnz)) * step).astype(int)]] = True
            keys, nnz = keys[pick], nnz[pick]
        if config.sparsest_first:
            keys = keys[np.argsort(nnz, kind="stable")]
    return SearchPlan(config, keys, None, len(config.settings()))


@dataclass
class SearchResult:
    """What :func:`run_search` returns: the rows so far and the output folder."""

    out: Path
    rows: object  # pandas.DataFrame
    complete: bool


def _require_parquet() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise MaskValidationError(
            "masktopo search writes parquet files, which needs pyarrow: pip install "
            "'masktopo[parquet]' (or pyarrow)"
        ) from None


def _check_out(out: Path, resume: bool) -> None:
    kind = run_kind(out) if out.is_dir() else None
    if out.exists() and not out.is_dir():
        raise MaskFileError(out, "cannot write a search there: it is a file, not a folder")
    if resume:
        if kind != KIND:
            raise MaskFileError(out, "--resume: not a search output folder (no search run.json)")
        return
    if kind is not None:
        again = "; pass --resume to continue it" if kind == KIND else ""
        raise MaskFileError(out, f"already holds a {kind} run{again}; choose another --out")
    if out.is_dir() and any(p.name != ".lock" for p in out.iterdir()):
        raise MaskFileError(out, "is not empty; choose an empty or new directory for --out")


def read_results(out: str | os.PathLike):
    """Every finished run's row of the search in ``out``, in run order (a pandas DataFrame)."""
    import pandas as pd

    out = Path(out)
    parts = (
        sorted((out / RESULTS_DIR).glob("part-*.parquet")) if (out / RESULTS_DIR).is_dir() else []
    )
    if not parts:
        final = out / RESULTS_FILE
        return pd.read_parquet(final) if final.exists() else pd.DataFrame()
    df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return df.sort_values("run", kind="stable").reset_index(drop=True)


def read_search_masks(out: str | os.PathLike):
    """The masks of the runs above target: yields ``(row, MaskSet)`` with weights and ``meta``
    holding the biases and their masks."""
    from safetensors.numpy import load_file

    from ..masks import MaskSet

    out = Path(out)
    if not (out / MASKS_DIR).is_dir():
        return
    for p in sorted((out / MASKS_DIR).glob("part-*.safetensors")):
        t = load_file(str(p))
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
    return save(tensors, metadata={"format": "masktopo.search-masks"})


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

    _require_parquet()
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
                "n_keys": len(plan.keys),
                "n_settings": plan.n_settings,
                "n_runs": len(plan.keys) * plan.n_settings,
            })  # fmt: skip
        (out / RESULTS_DIR).mkdir(exist_ok=True)
        done = read_results(out)
        done_runs = set(done["run"].tolist()) if len(done) else set()
        n_parts = len(list((out / RESULTS_DIR).glob("part-*.parquet")))
        ckpt = read_checkpoint(out) if resume else None
        todo = [r for r in range(plan.n_runs) if r not in done_runs]
        batches: list[list[int]] = []
        if ckpt is not None and not set(ckpt["runs"]) & done_runs:
            batches.append(list(ckpt["runs"]))
            todo = [r for r in todo if r not in set(ckpt["runs"])]
        else:
            ckpt = None
        B = config.models_per_batch
        batches += [todo[i : i + B] for i in range(0, len(todo), B)]
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
        if (complete and batches) or (complete and not (out / RESULTS_FILE).exists()):
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
