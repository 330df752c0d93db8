"""Benchmark: the topology of a pruned LLM, Llama-2-7B shapes, every metric, bounded memory.

Generated Llama-2-7B weight matrices (per block: ``q, k, v, o`` 4096 × 4096, ``gate, up``
11008 × 4096, ``down`` 4096 × 11008; 32 blocks, 6.5 G weights), bf16, pruned to 50 % in one of
two ways:

* ``row``: per-row unstructured (Wanda-style: the largest half of every output row kept);
* ``2:4``: semi-structured (the 2 largest of every 4 consecutive inputs kept).

**ours**: :func:`masktopo.analysis.lazy.analyze_layers` (what ``masktopo analyze`` runs on a model
folder), every metric (weighted ones and IMDB groups included) plus the N:M and degree columns,
layers generated one chunk at a time (the generation is timed apart and left out). With
``--folder`` the model is first written as a sharded Hugging Face folder and read back through
:mod:`masktopo.store.hf_folder` (the reading is then part of the time). **scipy svds**: the
per-matrix baseline, ``scipy.sparse.linalg.svds(k=2)`` (ARPACK) on the binary, weighted and
normalized matrix of each layer (the three whole-matrix spectra; no IMDB groups), on the first
``--svds-blocks`` blocks, scaled to the whole model. Our σ are checked against it (largest
relative error).

Reported per pattern: total time, time per block, peak resident memory (``VmHWM`` of this
process, reset before each pattern), the machine and its load. ``--blocks 2`` is the quick mode.
``--dense-route off`` keeps every matrix on the compiled sparse engine (``$MASKTOPO_DENSE_ROUTE``;
``auto`` by default).

``--device cuda`` runs ``analyze_layers`` on the GPU (the layers are still generated on the CPU,
untimed, and moved by the analysis); without CUDA it prints that on stderr and exits 1. Each
pattern's result is also logged to stderr as one JSON line as soon as it is measured, so a run
stopped during a later pattern still leaves the earlier ones.

Usage::

    python benchmarks/bench_llm.py --blocks 2            # quick mode
    python benchmarks/bench_llm.py                       # the whole 7B mask set
    python benchmarks/bench_llm.py --device cuda --blocks 1 --svds-blocks 0   # GPU, quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from _common import fmt_s, log, machine_facts

from masktopo.analysis._engine import arpack_top
from masktopo.analysis.lazy import CHUNK_ENTRIES, LayerRef, analyze_layers, refs_of_source
from masktopo.analysis.structure import prune_nm
from masktopo.store.hf_folder import llama_shapes, open_source, write_folder

HIDDEN, INTER = 4096, 11008
PATTERNS = ("row", "2:4")


def _rss(key: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass


def layer_weight(name: str, shape: tuple[int, int], pattern: str, seed: int) -> torch.Tensor:
    """One generated, pruned bf16 weight (deterministic in ``name`` and ``seed``)."""
    g = torch.Generator().manual_seed(seed + sum(map(ord, name)) * 7919)
    w = torch.randn(shape, generator=g)
    if pattern == "2:4":
        w = prune_nm(w, 2, 4)
    else:
        a = w.abs()
        thr = a.kthvalue(shape[1] // 2, dim=1, keepdim=True).values
        w = w * (a > thr)
    return w.to(torch.bfloat16)


def model_shapes(blocks: int, hidden: int = HIDDEN, inter: int = INTER
                 ) -> dict[str, tuple[int, int]]:  # fmt: skip
    return {k: s for k, s in llama_shapes(hidden, inter, blocks, 32000).items()
            if ".layers." in k and len(s) == 2}  # fmt: skip


class Generated:
    """LayerRefs whose ``read`` generates the layer; the time spent generating is summed."""

    def __init__(self, shapes, pattern: str, seed: int):
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.refs = []
        for name, shape in shapes.items():
            self.refs.append(LayerRef(name, "linear", shape, float(np.prod(shape)),
                                      self._reader(name, shape, pattern, seed)))  # fmt: skip

    def _reader(self, name, shape, pattern, seed):
        def read():
            t0, c0 = time.perf_counter(), time.process_time()
            w = layer_weight(name, shape, pattern, seed)
            self.seconds += time.perf_counter() - t0
            self.cpu_seconds += time.process_time() - c0
            return w != 0, w

        return read


def svds_baseline(shapes, pattern: str, seed: int, blocks: int):
    """Seconds of ``svds(k=2)`` on the binary, weighted and normalized matrices of the first
    ``blocks`` blocks, and their σ by layer."""
    names = [n for n in shapes if int(n.split(".")[2]) < blocks]
    seconds, cpu, sv = 0.0, 0.0, {}
    for name in names:
        w = layer_weight(name, shapes[name], pattern, seed)
        t0, c0 = time.perf_counter(), time.process_time()
        wf = w.float().numpy()
        B = sp.csr_matrix(wf != 0, dtype=np.float64)
        W = sp.csr_matrix(np.abs(wf), dtype=np.float64)
        rs = np.asarray(B.sum(1)).ravel()
        cs = np.asarray(B.sum(0)).ravel()
        N = sp.diags(1 / np.sqrt(np.maximum(rs, 1))) @ B @ sp.diags(1 / np.sqrt(np.maximum(cs, 1)))
        sv[name] = [arpack_top(M) for M in (B, W, N.tocsr())]
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
        log(f"  svds {name}: {seconds:.1f} s so far")
    return seconds, cpu, sv


def run_pattern(args, pattern: str, shapes) -> dict:
    log(f"{pattern}: {len(shapes)} matrices, load {os.getloadavg()}")
    tmp = None
    if args.folder:
        tmp = tempfile.TemporaryDirectory(prefix="bench_llm_")
        tensors = {n: layer_weight(n, s, pattern, args.seed) for n, s in shapes.items()}
        write_folder(Path(tmp.name) / "model", tensors, shards=max(1, args.blocks // 4))
        del tensors
        gen = None
        refs = refs_of_source(open_source(Path(tmp.name) / "model"))
    else:
        gen = Generated(shapes, pattern, args.seed)
        refs = gen.refs
    warm = analyze_layers(refs[:1], device=args.device)  # compile and warm up: not timed
    del warm
    if gen is not None:
        gen.seconds = gen.cpu_seconds = 0.0
    _reset_peak()
    base = _rss("VmRSS:")
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    df = analyze_layers(refs, device=args.device, progress=args.progress,
                        chunk_entries=args.chunk_entries)  # fmt: skip
    gen_s = gen.seconds if gen is not None else 0.0
    total = time.perf_counter() - t0 - gen_s
    cpu = time.process_time() - c0 - (gen.cpu_seconds if gen is not None else 0.0)
    peak = _rss("VmHWM:")
    out = {"pattern": pattern, "device": args.device, "matrices": len(refs),
           "blocks": args.blocks, "seconds": total,
           "per_block": total / args.blocks, "cpu_seconds": cpu, "peak_rss": peak, "base_rss": base,
           "generation_s": gen.seconds if gen is not None else 0.0,
           "load": [load0, os.getloadavg()[0]],
           "nm": sorted(set(df["nm"])), "rows": len(df)}  # fmt: skip
    if args.svds_blocks > 0:
        secs, cpu_s, sv = svds_baseline(shapes, pattern, args.seed,
                                        min(args.svds_blocks, args.blocks))  # fmt: skip
        out["svds_seconds_measured"] = secs
        out["svds_cpu_seconds_measured"] = cpu_s
        out["svds_blocks"] = min(args.svds_blocks, args.blocks)
        out["svds_seconds_model"] = secs * 32 / out["svds_blocks"]  # the whole 7B model
        out["svds_cpu_seconds_model"] = cpu_s * 32 / out["svds_blocks"]
        err = 0.0
        by = df.set_index("layer")
        for name, (b, w, n) in sv.items():
            ours = [by.at[name, "mu0"], by.at[name, "mu_hat"], by.at[name, "weighted_mu0"],
                    by.at[name, "weighted_mu_hat"], 1 - by.at[name, "normalized_spectral_gap"]]  # fmt: skip
            ref = [b[0], b[1], w[0], w[1], n[1]]
            err = max(err, max(abs(o - r) / abs(r) for o, r in zip(ours, ref, strict=True)))
        out["max_rel_err_vs_svds"] = err
    if tmp is not None:
        tmp.cleanup()
    log(json.dumps(out))
    return out


def report(args, results) -> str:
    size = (
        "Llama-2-7B shapes"
        if (args.hidden, args.intermediate) == (HIDDEN, INTER)
        else (f"hidden {args.hidden}, MLP {args.intermediate} (NOT Llama-2-7B)")
    )
    lines = [f"# bench_llm: {size}, {args.blocks} of 32 blocks, bf16, 50 % sparse", ""]
    lines += machine_facts([args.device])
    lines += [f"- device: {args.device}; chunk: {args.chunk_entries:,} entries; "
              f"dense route: {os.environ.get('MASKTOPO_DENSE_ROUTE', 'auto')}; "
              f"input: {'HF folder on disk' if args.folder else 'generated in memory'}", ""]  # fmt: skip
    lines += [
        "CPU: seconds of CPU time of this process (all its threads), a measure less "
        "sensitive to the other processes of a busy machine than the wall time.",
        "",
    ]
    lines += ["| pattern | matrices | total (wall) | CPU | per block (wall) | whole model, wall "
              "(×32/blocks) | whole model, CPU | peak RSS | svds baseline, whole model (wall; CPU) "
              "| max rel. error vs svds | load (start, end) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        svds = (f"{fmt_s(r['svds_seconds_model'])} s; {fmt_s(r['svds_cpu_seconds_model'])} s "
                f"(measured on {r['svds_blocks']} block(s))"
                if "svds_seconds_model" in r else "not run")  # fmt: skip
        scale = 32 / r["blocks"]
        err = f"{r['max_rel_err_vs_svds']:.1e}" if "max_rel_err_vs_svds" in r else ""
        lines.append(
            f"| {r['pattern']} (N:M found: {', '.join(x or '-' for x in r['nm'])}) | "
            f"{r['matrices']} | {fmt_s(r['seconds'])} s | {fmt_s(r['cpu_seconds'])} s | "
            f"{fmt_s(r['per_block'])} s | {fmt_s(r['per_block'] * 32)} s | "
            f"{fmt_s(r['cpu_seconds'] * scale)} s | {r['peak_rss'] / 2**30:.2f} GiB | {svds} | {err} | "
            f"{r['load'][0]:.1f}, {r['load'][1]:.1f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", type=int, default=32, help="blocks of the model (2: quick mode)")
    p.add_argument("--patterns", default="row,2:4", help="row, 2:4 (comma separated)")
    p.add_argument("--svds-blocks", type=int, default=1,
                   help="blocks timed with the scipy svds baseline (0: none)")  # fmt: skip
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument(
        "--folder",
        action="store_true",
        help="write a sharded HF folder and read it lazily (needs 2 bytes a weight)",
    )
    p.add_argument("--dense-route", choices=("auto", "on", "off"), default=None,
                   help="set $MASKTOPO_DENSE_ROUTE (default: as set, else auto)")  # fmt: skip
    p.add_argument(
        "--chunk-entries",
        type=int,
        default=CHUNK_ENTRIES,
        help="mask entries analyzed at once (the memory bound; default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=HIDDEN, help="hidden size (smoke tests only)")
    p.add_argument("--intermediate", type=int, default=INTER, help="MLP size (smoke tests only)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    args.pattern_list = [x.strip() for x in args.patterns.split(",") if x.strip()]
    for x in args.pattern_list:
        if x not in PATTERNS:
            p.error(f"unknown pattern {x!r}; known: {', '.join(PATTERNS)}")
    if args.blocks < 1:
        p.error("--blocks must be at least 1")
    return args


def main(argv=None) -> int:
    """Run the benchmark; the report goes to stdout. Returns the exit status."""
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        log(f"bench_llm: --device cuda: no CUDA device (torch {torch.__version__}, CUDA build: "
            f"{torch.version.cuda or 'none'}); nothing to time")  # fmt: skip
        return 1
    if args.dense_route:
        os.environ["MASKTOPO_DENSE_ROUTE"] = args.dense_route
    patterns = args.pattern_list
    shapes = model_shapes(args.blocks, args.hidden, args.intermediate)
    results = [run_pattern(args, pat, shapes) for pat in patterns]
    text = report(args, results)
    sys.stdout.write(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
