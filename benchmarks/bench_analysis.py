"""Benchmark: ``masktopo.analysis.analyze`` against the way research scripts compute mask spectra.

For ResNet-18 (CIFAR) and ResNet-50 (ImageNet) mask sets with weights at densities 0.10, 0.02 and
0.01 (90/98/99 % sparsity), in one run:

* **ours, all metrics**: ``analyze(ms)`` (every registered metric, weighted ones included);
* **ours, spectra only**: ``analyze(ms, metrics=[mu0, mu_hat, weighted_mu0, weighted_mu_hat])``,
  the like-for-like comparison with the baselines;
* **networkx** (the typical research script): unrolled biadjacency as a scipy sparse matrix
  (weighted: ``|W ⊙ M|``) → ``nx.bipartite.from_biadjacency_matrix`` → ``nx.adjacency_spectrum``,
  ``μ0`` = largest ``|eig|``, ``μ̂`` = *third* largest ``|eig|`` (the authors' convention: ``+σ1``
  and ``−σ1`` fill the first two places). networkx runs a dense, non-symmetric eigensolve over
  all ``out + in`` nodes, so every distinct layer shape is timed once (on the first layer of that
  shape) and multiplied by its count; with ``--nx-max-nodes N`` only layers with at most N nodes
  are timed and the rest are extrapolated as ``n³`` from the largest timed layer;
* **eigsh on A** (the authors' code): ``scipy.sparse.linalg.eigsh(A, k=3, which="LM")`` on the full
  ``(out + in)²`` sparse adjacency ``A = [[0, B], [Bᵀ, 0]]``, every layer, every repeat.

Every baseline starts from the MaskSet's torch tensors, so building its matrix and graph is timed.
Each approach computes ``μ0`` and ``μ̂`` of the binary and of the weighted graph of every layer;
our values are checked against both baselines in the same run (largest relative error; for ``μ̂``
the denominator is ``max(μ̂_ref, 1e-3·μ0_ref)``).

Run ``python benchmarks/bench_analysis.py --help`` for the options and benchmarks/README.md for
how long a run takes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
import scipy.sparse as sp
import torch
from _common import available_devices, fmt_ratio, fmt_s, log, machine_facts, timed
from scipy.sparse.linalg import eigsh

from masktopo import examples
from masktopo.analysis import analyze

SPECTRA = ["mu0", "mu_hat", "weighted_mu0", "weighted_mu_hat"]
NETWORKS = {
    "resnet18": ("ResNet-18 (CIFAR)", examples.resnet18_cifar_shapes),
    "resnet50": ("ResNet-50 (ImageNet)", examples.resnet50_imagenet_shapes),
}
DENSITIES = (0.10, 0.02, 0.01)
SLOW_S = 3.0  # a networkx case slower than this runs once instead of --repeats times
WARMUP_LAYERS = 4  # our warm-up: analyze() on the first layers of each mask set


# --------------------------------------------------------------------------- baselines


def _unrolled(t: torch.Tensor) -> np.ndarray:
    return t.reshape(t.shape[0], -1).cpu().numpy()


def _biadjacencies(mask: torch.Tensor, weight: torch.Tensor) -> tuple[sp.csr_array, sp.csr_array]:
    """Binary and weighted (``|W ⊙ M|``, float64) unrolled biadjacencies, isolated nodes kept."""
    b = sp.csr_array(_unrolled(mask).astype(np.float64))
    w = sp.csr_array(np.abs(_unrolled(weight.to(torch.float64) * mask)))
    return b, w


def nx_spectra(mask: torch.Tensor, weight: torch.Tensor) -> np.ndarray:
    """(μ0, μ̂, weighted μ0, weighted μ̂) of one layer the networkx way."""
    out = []
    for B in _biadjacencies(mask, weight):
        G = nx.bipartite.from_biadjacency_matrix(B)  # edge attribute "weight" = entry
        ev = np.sort(np.abs(nx.adjacency_spectrum(G)))[::-1]
        out += [ev[0], ev[2]]  # third largest |eig| = σ2(B)
    return np.array(out)


def eigsh_spectra(mask: torch.Tensor, weight: torch.Tensor) -> np.ndarray:
    """(μ0, μ̂, weighted μ0, weighted μ̂) of one layer as the authors' code does it."""
    out = []
    for B in _biadjacencies(mask, weight):
        A = sp.bmat([[None, B], [B.T, None]], format="csr")
        vals = eigsh(A, k=3, which="LM")[0]
        ev = np.sort(np.abs(vals))[::-1]
        out += [ev[0], ev[-1]]
    return np.array(out)


# --------------------------------------------------------------------------- timing


@dataclass
class NxResult:
    seconds: float = math.nan  # whole network: measured + extrapolated
    measured_s: float = 0.0  # count × time of the timed shapes
    extrapolated_s: float = 0.0  # count × n³-extrapolated time of the untimed shapes
    n_shapes: int = 0
    n_timed: int = 0
    n_extrapolated_layers: int = 0
    wall_s: float = 0.0  # what networkx actually ran for
    ref_nodes: int = 0  # the largest timed layer (the n³ reference)
    values: dict[str, np.ndarray] = field(default_factory=dict)  # representative layers only


def time_networkx(ms, repeats: int, max_nodes: int | None) -> NxResult:
    """networkx on each distinct layer shape once, × its count; n³ extrapolation above max_nodes."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for name in ms.names:
        groups.setdefault(tuple(ms.shape(name)), []).append(name)
    res = NxResult(n_shapes=len(groups))
    measured: list[tuple[int, float, int]] = []  # (nodes, seconds per layer, count)
    pending: list[tuple[int, int]] = []  # (nodes, count)
    for shape, names in groups.items():
        nodes = shape[0] + math.prod(shape[1:])
        if max_nodes is not None and nodes > max_nodes:
            pending.append((nodes, len(names)))
            continue
        rep = names[0]
        t0 = time.perf_counter()
        sec, vals = timed(lambda r=rep: nx_spectra(ms[r], ms.weights[r]), repeats, slow=SLOW_S)
        res.wall_s += time.perf_counter() - t0
        res.values[rep] = vals
        measured.append((nodes, sec, len(names)))
        log(f"    networkx {'x'.join(map(str, shape))} ({nodes} nodes) x{len(names)}: {sec:.3f} s")
    res.n_timed = len(measured)
    res.measured_s = sum(sec * count for _, sec, count in measured)
    if pending:
        res.n_extrapolated_layers = sum(count for _, count in pending)
        if not measured:
            return res  # nothing to extrapolate from: seconds stays NaN
        ref_nodes, ref_sec, _ = max(measured)
        res.ref_nodes = ref_nodes
        res.extrapolated_s = sum(ref_sec * (n / ref_nodes) ** 3 * c for n, c in pending)
    res.seconds = res.measured_s + res.extrapolated_s
    return res


def time_eigsh(ms, repeats: int) -> tuple[float, dict[str, np.ndarray]]:
    """eigsh on the full adjacency of every layer, median over repeats of the whole loop."""

    def run():
        return {n: eigsh_spectra(ms[n], ms.weights[n]) for n in ms.names}

    return timed(run, repeats)


# --------------------------------------------------------------------------- correctness


def max_rel_err(df, ref: dict[str, np.ndarray]) -> tuple[float, int]:
    """Largest relative error of our four spectral values against ``ref`` and how many compared.

    For μ0 the denominator is μ0_ref, for μ̂ ``max(μ̂_ref, 1e-3·μ0_ref)`` (binary and weighted
    separately). Layers where our value is NaN (undefined by a validity gate) are skipped.
    """
    rows = df.set_index("layer")
    worst, n = 0.0, 0
    for name, r in ref.items():
        ours = rows.loc[name, SPECTRA].to_numpy(dtype=np.float64)
        for i in (0, 2):  # (mu0, mu_hat), (weighted_mu0, weighted_mu_hat)
            scale = r[i]
            for j, denom in ((i, scale), (i + 1, max(r[i + 1], 1e-3 * scale))):
                if np.isnan(ours[j]):
                    continue
                worst = max(worst, abs(ours[j] - r[j]) / denom)
                n += 1
    return worst, n


# --------------------------------------------------------------------------- report


def fmt_err(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1e}"


@dataclass
class Row:
    density: float
    ours: dict[str, tuple[float, float]]  # device -> (all metrics s, spectra-only s)
    nx: NxResult | None
    eigsh_s: float
    err_nx: float | None
    err_eigsh: float


def network_table(title: str, rows: list[Row], devices: list[str], args) -> list[str]:
    cols = ["density"]
    for d in devices:
        cols += [f"ours all metrics ({d}) s", f"ours spectra-only ({d}) s"]
    cols += ["networkx s", "eigsh on A s"]
    for d in devices:
        sfx = f" ({d})" if len(devices) > 1 else ""
        cols += [f"nx / ours-all{sfx}", f"nx / ours-spectra{sfx}", f"eigsh / ours-spectra{sfx}"]
    cols.append("max rel err (vs nx / vs eigsh)")
    lines = [f"### {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    notes = []
    for r in rows:
        nx_s = r.nx.seconds if r.nx else math.nan
        mark = " †" if r.nx and r.nx.extrapolated_s > 0 else ""
        cells = [f"{r.density:.2f} ({100 * (1 - r.density):.0f} %)"]
        for d in devices:
            cells += [fmt_s(r.ours[d][0]), fmt_s(r.ours[d][1])]
        cells += ["skipped" if r.nx is None else fmt_s(nx_s) + mark, fmt_s(r.eigsh_s)]
        for d in devices:
            a, s = r.ours[d]
            cells += [
                fmt_ratio(nx_s, a) + mark,
                fmt_ratio(nx_s, s) + mark,
                fmt_ratio(r.eigsh_s, s),
            ]
        cells.append(f"{fmt_err(r.err_nx)} / {fmt_err(r.err_eigsh)}")
        lines.append("| " + " | ".join(cells) + " |")
        if r.nx is not None:
            n = r.nx
            text = (
                f"- density {r.density:.2f}: networkx timed {n.n_timed} of {n.n_shapes} distinct "
                f"layer shapes ({n.wall_s:.0f} s of networkx wall time) = {fmt_s(n.measured_s)} s "
                f"for the layers of those shapes"
            )
            if n.n_extrapolated_layers:
                if math.isfinite(n.seconds):
                    text += (
                        f"; **{fmt_s(n.extrapolated_s)} s extrapolated** as n³ from the "
                        f"{n.ref_nodes}-node layer for {n.n_extrapolated_layers} layers with more "
                        f"than {args.nx_max_nodes} nodes"
                    )
                else:
                    text += (
                        f"; {n.n_extrapolated_layers} layers over {args.nx_max_nodes} nodes and "
                        "no smaller layer to extrapolate from"
                    )
            notes.append(text + ".")
    lines.append("")
    if any(r.nx and r.nx.extrapolated_s > 0 for r in rows):
        lines += [
            f"† includes an **extrapolated** part (`--nx-max-nodes {args.nx_max_nodes}`): "
            "layers above that size were not run through networkx; their time is "
            "t(largest timed layer) × (n / n_ref)³. That rests on one timing of one layer and "
            "can be far off (perf-notes: a quick run predicted 127 s where the full run "
            "measured 98 s); use a run without --nx-max-nodes for published numbers.",
            "",
        ]
    return lines + notes + [""]


def header(args, devices: list[str]) -> list[str]:
    nx_how = "skipped (--skip-nx)"
    if not args.skip_nx:
        limit = (
            "every layer shape"
            if args.nx_max_nodes is None
            else f"layer shapes with ≤ {args.nx_max_nodes} nodes, the rest **extrapolated** as n³"
        )
        nx_how = (
            "`nx.bipartite.from_biadjacency_matrix` (scipy sparse unrolled biadjacency; "
            "weighted: |W⊙M|) + `nx.adjacency_spectrum`, μ̂ = third largest |eig| (the authors' "
            "convention). Each distinct layer shape timed once, on the first layer of that "
            f"shape, × its count ({limit}); a case over {SLOW_S:.0f} s ran once, otherwise the "
            f"median of {args.repeats}"
        )
    return [
        "## masktopo analysis benchmark",
        "",
        f"Mask sets: `examples.random_maskset(shapes, density, distribution={args.distribution!r}, "
        f"weights=True, seed={args.seed})`; unrolled convs. Every approach computes μ0 and μ̂ of "
        "the binary and the weighted (|W⊙M|) graph of every layer, starting from the MaskSet's "
        "torch tensors (building matrices and graphs is inside the timed region).",
        "",
        f"- ours: `masktopo.analysis.analyze(ms)` (all metrics, with weights) and `analyze(ms, "
        f"metrics={SPECTRA})` (spectra only) on {', '.join(devices)}, route "
        f"`{args.route}`; median of "
        f"{args.repeats} after one warm-up on the first {WARMUP_LAYERS} layers"
        + ("; masks and weights already on the GPU" if "cuda" in devices else ""),
        f"- networkx: {nx_how}.",
        "- eigsh on A: `scipy.sparse.linalg.eigsh(A, k=3, which='LM')` on the full (out+in)² "
        "sparse adjacency A = [[0, B], [Bᵀ, 0]] of every layer (as the authors' code does), "
        f"μ̂ = third largest |eig|; whole network, median of {args.repeats}.",
        "- max rel err: our mu0 / mu_hat / weighted_mu0 / weighted_mu_hat (spectra-only and "
        "all-metrics runs) against the baseline's values; for μ̂ the denominator is "
        "max(μ̂_ref, 1e-3·μ0_ref). networkx values exist only for the timed layers.",
        "",
        "Machine:",
        "",
        *machine_facts(devices),
        "",
    ]


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--networks",
        nargs="+",
        choices=sorted(NETWORKS),
        default=None,
        help="networks to benchmark (default: all; --quick: resnet18)",
    )
    p.add_argument(
        "--densities",
        nargs="+",
        type=float,
        default=None,
        help=f"global densities (default: {DENSITIES}; --quick: 0.01)",
    )
    p.add_argument(
        "--distribution",
        choices=examples.DISTRIBUTIONS,
        default="uniform",
        help="layer-density distribution of the random mask sets (default: uniform)",
    )
    p.add_argument("--seed", type=int, default=0, help="mask and weight seed (default: 0)")
    p.add_argument(
        "--repeats", type=int, default=3, help="timed repeats, median reported (default: 3)"
    )
    p.add_argument(
        "--device",
        nargs="+",
        choices=["cpu", "cuda"],
        default=["cpu"],
        help="where our analyze() runs (baselines are CPU); an unavailable device "
        "is skipped with a message (default: cpu)",
    )
    p.add_argument(
        "--route",
        choices=["auto", "batched"],
        default="auto",
        help="our analyze()'s spectral route: auto (the CPU engine, on CUDA the GPU for matrices "
        "with a side of 2048 or more) or batched (the batched Gram route for every matrix, on "
        "the GPU with --device cuda) (default: auto)",
    )
    p.add_argument(
        "--nx-max-nodes",
        type=int,
        default=None,
        metavar="N",
        help="run networkx only on layers with <= N nodes, extrapolate the rest as "
        "n^3 (default: no limit; --quick: 1500)",
    )
    p.add_argument("--skip-nx", action="store_true", help="do not run networkx")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: resnet18, density 0.01, --nx-max-nodes 1500",
    )
    p.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.quick:
        args.networks = args.networks or ["resnet18"]
        args.densities = args.densities or [0.01]
        if args.nx_max_nodes is None:
            args.nx_max_nodes = 1500
    args.networks = args.networks or list(NETWORKS)
    args.densities = args.densities or list(DENSITIES)
    if any(not 0 < d <= 1 for d in args.densities):
        p.error("densities must be in (0, 1]")
    return args


def bench_maskset(ms, args, devices: list[str]) -> Row:
    ours, errs_nx, errs_eigsh, dfs = {}, [], [], []
    for d in devices:
        msd = ms.to(d) if d != "cpu" else ms
        r = args.route
        analyze(msd.select(msd.names[:WARMUP_LAYERS]), device=d, route=r)  # warm-up
        t_all, df_all = timed(
            lambda m=msd, d=d, r=r: analyze(m, device=d, route=r), args.repeats, device=d
        )
        t_sp, df_sp = timed(
            lambda m=msd, d=d, r=r: analyze(m, metrics=SPECTRA, device=d, route=r),
            args.repeats,
            device=d,
        )
        log(f"    ours ({d}): all metrics {t_all:.3f} s, spectra only {t_sp:.3f} s")
        ours[d] = (t_all, t_sp)
        dfs += [df_all, df_sp]
    t_eigsh, ref_eigsh = time_eigsh(ms, args.repeats)
    log(f"    eigsh on A: {t_eigsh:.3f} s")
    nxr = None
    if not args.skip_nx:
        nxr = time_networkx(ms, args.repeats, args.nx_max_nodes)
        log(f"    networkx: {fmt_s(nxr.seconds)} s ({fmt_s(nxr.extrapolated_s)} s extrapolated)")
    n_eigsh = 0
    for df in dfs:
        err, n = max_rel_err(df, ref_eigsh)
        errs_eigsh.append(err)
        n_eigsh = n
        if nxr is not None and nxr.values:
            errs_nx.append(max_rel_err(df, nxr.values)[0])
    log(
        f"    max rel err vs eigsh {max(errs_eigsh):.1e} ({n_eigsh} values)"
        + (f", vs networkx {max(errs_nx):.1e}" if errs_nx else "")
    )
    return Row(
        density=ms.meta["density"],
        ours=ours,
        nx=nxr,
        eigsh_s=t_eigsh,
        err_nx=max(errs_nx) if errs_nx else None,
        err_eigsh=max(errs_eigsh),
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    devices = available_devices(args.device)
    if not devices:
        log("no device left to time ours on; nothing to do.")
        return 1
    # Baseline warm-up (imports, first-call overheads) on a tiny layer.
    tiny = examples.random_maskset({"w": (16, 8, 3, 3)}, 0.3, distribution="uniform", seed=1)
    eigsh_spectra(tiny["w"], tiny.weights["w"])
    nx_spectra(tiny["w"], tiny.weights["w"])

    report = header(args, devices)
    t_start = time.perf_counter()
    for key in args.networks:
        title, shapes_fn = NETWORKS[key]
        shapes = shapes_fn()
        rows = []
        for density in args.densities:
            log(f"{title}, density {density} ({args.distribution}):")
            ms = examples.random_maskset(
                shapes, density, distribution=args.distribution, weights=True, seed=args.seed
            )
            rows.append(bench_maskset(ms, args, devices))
        title_full = (
            f"{title}: {len(shapes)} layers, {sum(math.prod(s) for s in shapes.values()):,} "
            f"weights, {args.distribution} densities"
        )
        report += network_table(title_full, rows, devices, args)
    report.append(f"Benchmark wall time: {time.perf_counter() - t_start:.0f} s.")
    text = "\n".join(report) + "\n"
    sys.stdout.write(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        log(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
