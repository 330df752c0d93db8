"""Benchmark: densifying sparse matrices for the batched (CUDA) spectral route.

``masktopo.analysis.spectral.dense_batches`` turns CSR matrices into zero-padded float64 batches
on a device: the step before the batched Gram + ``eigh`` solve. On an H200 it was half of a
Llama-2-7B block's analysis time (docs/performance.md, "GPU suite"), all of it host-side work and
copies. This times it on the seven matrices of one Llama-2-7B block at 50 % per row (``q, k, v,
o`` 4096 × 4096, ``gate, up`` 11008 × 4096, ``down`` 4096 × 11008; 101 M kept entries, binary):

* ``meta``: the host side alone (the device work is free on torch's meta device): what no GPU can
  speed up;
* ``cpu``: the whole step on the CPU (zeroing and scattering 7 batches of 4096 × 12,288 float64);
* ``cuda``: the whole step on the GPU, synchronised (when one is present).

Usage::

    python benchmarks/bench_densify.py                     # meta and cpu
    python benchmarks/bench_densify.py --device meta cuda  # on a GPU machine
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from _common import available_devices, log, machine_facts

from masktopo.analysis._engine import Parts
from masktopo.analysis.spectral import dense_batches

SHAPES = [(4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)]


def llama_block(seed: int = 0, shapes=SHAPES) -> list[Parts]:
    """The block's seven binary CSR matrices (or ``shapes``), half of every row kept at random."""
    rng = np.random.default_rng(seed)
    out = []
    for rows, cols in shapes:
        k = cols // 2
        keep = np.sort(np.argpartition(rng.random((rows, cols)), k, axis=1)[:, :k], axis=1)
        indptr = (np.arange(rows + 1) * k).astype(np.int32)
        out.append(Parts(np.ones(rows * k), keep.astype(np.int32).reshape(-1), indptr,
                         (rows, cols)))  # fmt: skip
    return out


def run(parts: list[Parts], device: str) -> float:
    t0 = time.perf_counter()
    for _, batch in dense_batches(parts, device, 1 << 27):
        del batch
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", nargs="+", default=["meta", "cpu"], choices=["meta", "cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    devices = available_devices(args.device)
    log("generating one Llama-2-7B block at 50 % per row ...")
    parts = llama_block()
    nnz = sum(P.nnz for P in parts)
    print("# bench_densify: `dense_batches` of one Llama-2-7B block, 50 % per row\n")
    print("\n".join(machine_facts(devices)))
    print(f"- {len(parts)} matrices, {nnz / 1e6:.1f} M kept entries; median of {args.repeats} "
          "after one warm-up\n")  # fmt: skip
    print("| device | s per block (median) | runs (s) |")
    print("|---|---|---|")
    for device in devices:
        run(parts, device)
        times = [run(parts, device) for _ in range(args.repeats)]
        runs = ", ".join(f"{t:.3f}" for t in times)
        print(f"| {device} | {statistics.median(times):.3f} | {runs} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
