"""Benchmark: the batched (CUDA) spectral route's solve, full ``eigh`` against block Krylov.

``masktopo.analysis.spectral.solve_many`` sends matrices with a smaller side of at least
``DEVICE_MIN_SIDE`` (2,048) to an accelerator, densified and bucketed by ``dense_batches``. Each
batch was solved by forming the Gram matrices and a full ``torch.linalg.eigh`` (3.5 s of a
Llama-2-7B block on an H200, docs/performance.md "GPU suite"); from ``KRYLOV_MIN_SIDE`` on it is
solved by the batched block Krylov of ``masktopo.analysis._krylov``. This times both on the
matrices of one Llama-2-7B block at 50 % per row (``q, k, v, o`` 4096 × 4096, ``gate, up``
11008 × 4096, ``down`` 4096 × 11008), binary and with |N(0, 1)| weights, on each device, after
the same densification (not timed), and prints their largest relative difference (to σ₁).

Usage::

    python benchmarks/bench_batched_route.py                 # CPU, q and gate only (--quick)
    python benchmarks/bench_batched_route.py --device cuda --full   # the whole block on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from _common import available_devices, log, machine_facts
from bench_densify import SHAPES, llama_block

from masktopo.analysis._engine import TOL
from masktopo.analysis._krylov import top_krylov
from masktopo.analysis.spectral import dense_batches


def eigh_route(B: torch.Tensor) -> torch.Tensor:
    """σ₁, σ₂ the way the batched route took them before Krylov: Gram, ``eigh``, Rayleigh–Ritz."""
    Bt = B.transpose(1, 2)
    _, V = torch.linalg.eigh(B @ Bt)
    return torch.linalg.svdvals(Bt @ V[..., -2:])


def krylov_route(B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """σ₁, σ₂ and the block steps of each matrix, by the route's block Krylov."""
    return top_krylov(B, 2, TOL)


def timed(fn, batches, device: str) -> tuple[float, list]:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = [fn(B) for B in batches]
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", nargs="+", default=["cpu"], choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=1, help="timed repeats, median (default 1)")
    ap.add_argument("--full", action="store_true",
                    help="all seven matrices of the block (default: q and gate, one of each "
                         "shape class)")  # fmt: skip
    ap.add_argument(
        "--shrink",
        type=int,
        default=1,
        help="divide every side by this (a smoke test of the script; default 1)",
    )
    args = ap.parse_args(argv)
    devices = available_devices(args.device)
    if not devices:
        log(f"bench_batched_route: --device cuda: no CUDA device (torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda or 'none'}); nothing to time")  # fmt: skip
        return 1
    log("generating one Llama-2-7B block at 50 % per row ...")
    shapes = SHAPES if args.full else [SHAPES[0], SHAPES[4]]
    shapes = [(a // args.shrink, b // args.shrink) for a, b in shapes]
    parts = llama_block(shapes=shapes)
    rng = np.random.default_rng(1)
    weighted = [P._replace(data=np.abs(rng.standard_normal(P.nnz))) for P in parts]
    names = ", ".join(f"{a} × {b}" for a, b in shapes)
    print("# bench_batched_route: eigh against block Krylov on the batched route\n")
    print("\n".join(machine_facts(devices)))
    print(f"- matrices: {names} (50 % per row), binary and |N(0,1)|-weighted; densified by "
          f"`dense_batches` (not timed); median of {args.repeats}\n")  # fmt: skip
    print("| device | values | eigh s | Krylov s | eigh / Krylov | block steps | max rel. diff |")
    print("|---|---|---|---|---|---|---|")
    for device in devices:
        for name, ps in (("binary", parts), ("weighted", weighted)):
            batches = [b for _, b in dense_batches(ps, device, 1 << 27)]
            krylov_route(batches[0][:1, :64, :128])  # warm-up (allocator, kernels)
            te, tk, steps = [], [], []
            for _ in range(args.repeats):
                t, ref = timed(eigh_route, batches, device)
                te.append(t)
                t, got = timed(krylov_route, batches, device)
                tk.append(t)
                steps = [int(s) for _, st in got for s in st]
            diff = max(
                float(((g[0] - r).abs() / r[:, :1]).max()) for g, r in zip(got, ref, strict=True)
            )
            e, k = statistics.median(te), statistics.median(tk)
            print(f"| {device} | {name} | {e:.2f} | {k:.2f} | {e / k:.1f}× | "
                  f"{', '.join(map(str, steps))} | {diff:.1e} |")  # fmt: skip
            del batches
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
