"""Benchmark: the ensemble trainer against the one-model loop (issue 15).

Phase 2 of the sparsest-models search trains 2-3-3-3-1 supports (methods-spec §7.3): 25,992
supports × 6 settings = 155,952 runs of 50 epochs × 390 steps (batch 128). This script times,
on the same models (supports ``0, 1, ...`` of 2-3-3-3-1, lr 0.1, cosine, per-model data order):

1. **one-model loop**: :func:`masktopo.search.train_one`, the reference's way (``nn.Sequential``
   of Linear/ReLU, ``torch.optim.SGD`` with momentum and weight decay, ``BCEWithLogitsLoss``,
   masks re-applied after each step), one model after the other; ``--loop-models`` models,
   ``--loop-steps`` steps each, after a warm-up run.
2. **ensemble**: :class:`masktopo.search.EnsembleTrainer` with B models at once for each B of
   ``--batch`` (default 256, 1024, 4096), ``--steps`` steps after one warm-up step, on each route
   of ``--routes`` (default both on the CPU: ``compiled``, the numba kernel that ``route="auto"``
   takes there, and ``torch``, the batched-tensor route that CUDA takes). On CUDA (torch route
   only) B runs over ``--cuda-batch`` (default ``--batch`` and 16,384, 65,536). 2-3-3-3-1 has
   25,992 supports: above that, model ``i`` trains support ``i mod 25,992`` (from its own
   initial weights, seed ``i``).

The unit is the *model-step* (one SGD step of one model on one minibatch); the report gives
model-steps/s, the speed-up over the one-model loop, and the time of the full phase 2
(155,952 × 19,500 model-steps) extrapolated from each rate. The one-model loop is timed before
and after the ensembles and the faster of the two is the reference of the ratios (on a shared
machine, load changes during the run; this errs against the ensemble). The goal (issue 15):
≥ 100× the one-model loop on CPU; the full phase 2 in ≤ 10 min on one H100. ``--threads`` sets
torch's threads and so the compiled route's (default 1: on a shared machine the one-model loop
and the ensemble are compared thread for thread).

    python benchmarks/bench_search.py                       # CPU
    python benchmarks/bench_search.py --quick               # a smoke run (seconds)
    python benchmarks/bench_search.py --device cpu cuda     # and CUDA when present
    python benchmarks/bench_search.py --device cuda --cuda-batch 65536 155952   # CUDA only

``--device cuda`` alone on a machine without CUDA prints that on stderr and exits 1.

The report (Markdown) goes to stdout, progress to stderr; the load average is printed with it
because the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from _common import available_devices, log, machine_facts

from masktopo.search import (
    EnsembleTrainer,
    count_supports,
    init_params,
    support_masks,
    train_one,
)
from masktopo.search.ensemble import bias_masks_from_units
from masktopo.zoo import cubist_spiral

ARCH = (2, 3, 3, 3, 1)
PHASE2_RUNS = 155_952
STEPS_PER_RUN = 50 * 390


def _models(n: int):
    """Masks and initial weights of models ``0 .. n - 1``: model ``i`` has support
    ``i mod count_supports(ARCH)`` and initial weights from seed ``i``."""
    keys = [i % count_supports(ARCH) for i in range(n)]
    masks = [torch.from_numpy(m) for m in support_masks(ARCH, keys)]
    w, b = init_params(list(range(n)), ARCH, init_width=16)
    return masks, w, b


def bench_loop(x, y, n_models: int, steps: int) -> float:
    masks, w, b = _models(n_models)
    bias = bias_masks_from_units(masks)
    train_one(x, y, [v[[0]] for v in w], [v[[0]] for v in b], [m[[0]] for m in masks],
              [m[[0]] for m in bias], steps=5)  # warm-up (first-call costs)  # fmt: skip
    t0 = time.perf_counter()
    for i in range(n_models):
        sel = [i]
        train_one(x, y, [v[sel] for v in w], [v[sel] for v in b], [m[sel] for m in masks],
                  [m[sel] for m in bias], lr=0.1, schedule="cosine", epochs=50, order_seed=i,
                  steps=steps)  # fmt: skip
    return n_models * steps / (time.perf_counter() - t0)


def bench_ensemble(x, y, B: int, steps: int, device: str, route: str = "auto") -> float:
    masks, w, b = _models(B)
    t = EnsembleTrainer(x, y, w, b, masks, lr=0.1, schedule="cosine", epochs=50,
                        order_seeds=list(range(B)), device=device, route=route)  # fmt: skip
    t.run(1)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    t.run(steps)
    if device == "cuda":
        torch.cuda.synchronize()
    return B * steps / (time.perf_counter() - t0)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", nargs="+", default=["cpu"], choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument(
        "--cuda-batch",
        type=int,
        nargs="+",
        default=None,
        help="models at once on CUDA (default: --batch and 16384, 65536)",
    )
    p.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    p.add_argument("--loop-models", type=int, default=4)
    p.add_argument("--loop-steps", type=int, default=300, help="steps per one-model run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--routes",
        nargs="+",
        default=["compiled", "torch"],
        choices=["compiled", "torch"],
        help="the CPU routes of the ensemble",
    )
    p.add_argument(
        "--quick", action="store_true", help="B=256 only, 20 steps, 2 one-model runs of 100 steps"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.loop_models, args.loop_steps = [256], 20, 2, 100
    if min(args.batch + (args.cuda_batch or [])) < 1:
        p.error("--batch and --cuda-batch need positive sizes")
    return args


def main(argv=None) -> int:
    """Run the benchmark; the report goes to stdout. Returns the exit status."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = available_devices(args.device)
    if not devices:
        log(f"bench_search: no CUDA device (torch {torch.__version__}, CUDA build: "
            f"{torch.version.cuda or 'none'}) and no other device asked for; "
            "nothing to time")  # fmt: skip
        return 1
    x, y = cubist_spiral()
    print("# Ensemble trainer vs the one-model loop (2-3-3-3-1 supports, batch 128)\n")
    for line in machine_facts(devices):
        print(line)
    print(f"- torch threads: {args.threads}; load average before: {os.getloadavg()}\n")
    log("one-model loop ...")
    loop_before = bench_loop(x, y, args.loop_models, args.loop_steps)
    rows = []
    for dev in devices:
        if dev == "cpu":
            batches = args.batch
        else:
            batches = sorted(set(args.cuda_batch or [*args.batch, 16384, 65536]))
        for B in batches:
            for route in args.routes if dev == "cpu" else ["torch"]:
                log(f"ensemble {dev} {route} B={B} ...")
                rate = bench_ensemble(x, y, B, args.steps, dev, route)
                rows.append((f"ensemble ({dev}, {route})", B, rate))
    log("one-model loop again ...")
    loop_after = bench_loop(x, y, args.loop_models, args.loop_steps)
    loop = max(loop_before, loop_after)
    rows.insert(0, ("one-model loop (cpu)", 1, loop))
    print(f"one-model loop: {loop_before:,.0f} model-steps/s before the ensembles, "
          f"{loop_after:,.0f} after; the faster is the reference.\n")  # fmt: skip
    print("| trainer | models at once | model-steps/s | × one-model loop | full phase 2 |")
    print("|---|---:|---:|---:|---:|")
    for name, B, rate in rows:
        total = PHASE2_RUNS * STEPS_PER_RUN / rate
        print(f"| {name} | {B:,} | {rate:,.0f} | {rate / loop:,.1f} | {_human(total)} |")
    print(f"\nload average after: {os.getloadavg()}; full phase 2 = {PHASE2_RUNS:,} runs × "
          f"{STEPS_PER_RUN:,} steps, extrapolated from each row's rate.")  # fmt: skip
    n_sup = count_supports(ARCH)
    if max(B for _, B, _ in rows) > n_sup:
        print(f"\nRows with more than {n_sup:,} models at once repeat supports: model i trains "
              f"support i mod {n_sup:,} from its own initial weights (seed i).")  # fmt: skip
    return 0


def _human(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


if __name__ == "__main__":
    raise SystemExit(main())
