"""Benchmark: PAGS candidate scoring and end-to-end runs against a networkx scorer.

Issue 3 part 7. For CIFAR ResNet-18 with ERK layer densities at global density 0.01 (99 %
sparsity), in one run:

1. **Scoring throughput** (candidates/s) of :func:`masktopo.pags.score_candidates`: every layer of
   every candidate gets its full-spectrum coordinate ``(Δr, λ, IMDB_Δr, IMDB_λ)`` on the weights
   θ, for chunks of 16 and 64 candidates (median of ``--repeats`` calls on the same candidates),
   with the default CPU worker count and with ``MASKTOPO_WORKERS=1``
   (:func:`masktopo.analysis.spectral.cpu_workers` reads the variable on every call), and on CUDA
   with ``--device cpu cuda``.
2. **networkx scorer** (the research-script way), written here: per layer the unrolled binary
   biadjacency and ``|θ ⊙ M|`` go through ``nx.bipartite.from_biadjacency_matrix``, isolated nodes
   are removed, degrees come from the graph, and ``nx.adjacency_spectrum`` gives ``μ0`` (largest
   ``|eig|``) and ``μ̂`` (*third* largest ``|eig|``) of the binary and the weighted graph; each IMDB
   degree group (inputs of equal fan-out and their neighbours) is an ``nx`` subgraph treated the
   same way. It is timed on ONE candidate: every distinct layer shape once (its first layer), ×
   its count. ``--nx-max-nodes N`` runs it only on layers with at most N nodes and extrapolates
   the rest as ``n³`` from the largest timed layer (marked *extrapolated*). Our coordinates of
   the same candidate are checked against it (max abs / rel error) on the layers it ran on.
3. **End to end**: ``masktopo.pags.run`` (what ``masktopo pags`` calls) with ``--model resnet18
   --dataset cifar10 --method erk --density 0.01`` into a temporary directory (ERK is data-free,
   so no CIFAR files are read): model, base mask, ``n`` candidates (default sampler ``rescore``:
   ERK re-drawn), scoring, selection and every file write. For ``n < 1000`` the time for
   ``n = 1000`` is extrapolated from the steady-state rate and labelled so.

4. **The command** (issue 20), with ``--cli``: ``masktopo pags --model resnet18 --dataset
   cifar10 --method erk --density 0.01 --candidates N --seed 1 --device cpu --out TMP`` as a
   fresh process (start-up and imports included), ``--repeats`` times, median reported with the
   load average before and after every run (with several variants, interleaved: each round runs
   every variant once); ``--cli-exact`` also times ``--exact`` (the
   all-exact path), ``--cli-estimates`` ``--estimates`` (every candidate's fs estimated) and ``--before TREE`` the same command from another source tree (e.g.
   ``git archive HEAD | tar -x -C /tmp/before``: the code before a change). Goal: n = 1000 in
   ≤ 10 s on 2 cores.

Targets (issue 3 part 7) are printed next to the numbers: ≥ 30 candidates/s on a 2-core CPU,
≥ 1000/s on one H100, so that ``n = 1000`` takes under a minute on either.

Run ``python benchmarks/bench_pags.py --help`` for the options and benchmarks/README.md for how
long a run takes.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
import scipy.sparse as sp
import torch
from _common import (
    available_devices,
    fmt_ratio,
    fmt_s,
    gpu_absent_reason,
    log,
    machine_facts,
    timed,
)

from masktopo import examples
from masktopo.analysis.spectral import cpu_workers
from masktopo.pags import PagsConfig, run, score_candidates

TARGET_CPU = 30.0  # candidates/s on a 2-core CPU
TARGET_GPU = 1000.0  # candidates/s on one H100
TARGET_E2E_S = 60.0  # n = 1000 end to end
N_TARGET = 1000
CHUNKS = (16, 64)
SLOW_S = 3.0  # a networkx case slower than this runs once instead of --repeats times
COORDS = ("Δr", "λ", "IMDB_Δr", "IMDB_λ")


# --------------------------------------------------------------------------- inputs


def make_theta(shapes, seed: int) -> dict[str, torch.Tensor]:
    """Dense Kaiming-normal (fan-in, gain √2) float32 weights θ, the same for every candidate."""
    g = torch.Generator().manual_seed(seed)
    return {
        n: torch.randn(s, generator=g) * math.sqrt(2.0 / math.prod(s[1:]))
        for n, s in shapes.items()
    }


def make_candidates(shapes, density: float, count: int, seed: int) -> list:
    """``count`` ERK mask sets (exact per-layer counts, index-sampled), seeds seed+1 … seed+count."""
    return [
        examples.random_maskset(shapes, density, distribution="erk", weights=False, seed=seed + i)
        for i in range(1, count + 1)
    ]


# --------------------------------------------------------------------------- timing


@contextmanager
def workers_env(value: str | None) -> Iterator[None]:
    """Set (or leave alone, for None) ``MASKTOPO_WORKERS`` for the duration of the block."""
    old = os.environ.get("MASKTOPO_WORKERS")
    if value is not None:
        os.environ["MASKTOPO_WORKERS"] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MASKTOPO_WORKERS", None)
        else:
            os.environ["MASKTOPO_WORKERS"] = old


@dataclass
class Throughput:
    device: str
    workers: str  # as reported ("2 (default)", "1 (MASKTOPO_WORKERS=1)", "—" on CUDA)
    chunk: int
    seconds: float  # median per call
    times: list[float]

    @property
    def rate(self) -> float:
        return self.chunk / self.seconds


def bench_throughput(cands, theta, args, devices: list[str]):
    """score_candidates on chunks of the same candidates; returns rows and candidate 0's coords."""
    rows: list[Throughput] = []
    coords0 = None
    settings = []
    for d in devices:
        if d == "cpu":
            settings += [("cpu", None, f"{cpu_workers()} (default)")]
            if cpu_workers() != 1:
                settings += [("cpu", "1", "1 (MASKTOPO_WORKERS=1)")]
        else:
            settings += [(d, None, "—")]
    for device, env, label in settings:
        with workers_env(env):
            score_candidates(cands[:2], weights=theta, device=device, route=args.route)  # warm-up
            for chunk in args.chunks:
                part = cands[:chunk]
                times = []
                for _ in range(args.repeats):
                    if device == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    sc = score_candidates(part, weights=theta, device=device, route=args.route)
                    times.append(time.perf_counter() - t0)
                    if coords0 is None and device == "cpu":
                        coords0 = (sc.coords[0], sc.valid[0], sc.imdb_defined[0], sc.layers)
                r = Throughput(device, label, chunk, statistics.median(times), times)
                rows.append(r)
                log(f"  ours {device}, workers {label}, chunk {chunk}: "
                    f"{r.seconds:.2f} s/call, {r.rate:.1f} candidates/s")  # fmt: skip
    if coords0 is None:  # CUDA only: take candidate 0 from the first device
        sc = score_candidates(cands[:1], weights=theta, device=devices[0], route=args.route)
        coords0 = (sc.coords[0], sc.valid[0], sc.imdb_defined[0], sc.layers)
    return rows, coords0


# --------------------------------------------------------------------------- networkx scorer


def _nx_top(G) -> tuple[float, float]:
    """μ0 = largest |eig|, μ̂ = third largest |eig| (+σ1 and −σ1 fill the first two places)."""
    ev = np.sort(np.abs(nx.adjacency_spectrum(G)))[::-1]
    return float(ev[0]), float(ev[2]) if ev.size > 2 else 0.0


def nx_layer_coords(mask: torch.Tensor, weight: torch.Tensor) -> tuple[np.ndarray, bool, bool]:
    """``(Δr, λ, IMDB_Δr, IMDB_λ)`` of one layer the networkx way (n23 gate and IMDB variant).

    Returns the coordinate (undefined entries as 0, Δr and λ as 0 behind a failed gate), whether
    the layer passes the Ramanujan gate and whether IMDB is defined.
    """
    m = mask.reshape(mask.shape[0], -1).numpy()
    w = np.abs(weight.reshape(m.shape).to(torch.float64).numpy()) * m
    G = nx.bipartite.from_biadjacency_matrix(sp.csr_array(m.astype(np.float64)))
    Gw = nx.bipartite.from_biadjacency_matrix(sp.csr_array(w))
    iso = list(nx.isolates(G))
    G.remove_nodes_from(iso)
    Gw.remove_nodes_from(iso)
    outs = [v for v, b in G.nodes(data="bipartite") if b == 0]
    ins = [v for v, b in G.nodes(data="bipartite") if b == 1]
    n_e = G.number_of_edges()
    coord = np.zeros(4)
    if n_e == 0:
        return coord, False, False
    d_out, d_in = n_e / len(outs), n_e / len(ins)  # mean fan-in of outputs / fan-out of inputs
    _, mu_hat = _nx_top(G)
    w0, wh = _nx_top(Gw)
    gate = d_out >= 3 and d_in > 1 and min(len(outs), len(ins)) >= 2
    if gate:
        coord[0] = math.sqrt(d_in - 1) + math.sqrt(d_out - 1) - mu_hat
        coord[1] = w0 - wh
    # IMDB: inputs grouped by fan-out d; group = those inputs and their neighbours.
    groups: dict[int, list[int]] = {}
    for v, d in G.degree(ins):
        groups.setdefault(d, []).append(v)
    drs, lams = [], []
    for d, S in groups.items():
        if len(S) < 2:
            continue
        R = set()
        for v in S:
            R.update(G.neighbors(v))
        n_s, n_r = len(S), len(R)
        d_r = d * n_s / n_r
        if not (d >= 3 and d_r > 1) or n_r < 2:
            continue
        nodes = [*S, *R]
        _, s2 = _nx_top(G.subgraph(nodes))
        ws1, ws2 = _nx_top(Gw.subgraph(nodes))
        c = max(n_s, n_r) / (n_s + n_r - 1)
        drs.append(c * (math.sqrt(d - 1) + math.sqrt(d_r - 1) - s2))
        lams.append(c * (ws1 - ws2))
    if drs:
        coord[2], coord[3] = float(np.mean(drs)), float(np.mean(lams))
    return coord, gate, bool(drs)


@dataclass
class NxResult:
    seconds: float = math.nan  # one candidate: measured + extrapolated
    measured_s: float = 0.0
    extrapolated_s: float = 0.0
    n_shapes: int = 0
    n_timed: int = 0
    n_extrapolated_layers: int = 0
    wall_s: float = 0.0
    ref_nodes: int = 0
    values: dict[str, tuple[np.ndarray, bool, bool]] = field(default_factory=dict)


def time_networkx(ms, theta, repeats: int, max_nodes: int | None) -> NxResult:
    """The networkx scorer on each distinct layer shape of ``ms`` once, × its count."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for name in ms.names:
        groups.setdefault(tuple(ms.shape(name)), []).append(name)
    res = NxResult(n_shapes=len(groups))
    measured: list[tuple[int, float, int]] = []
    pending: list[tuple[int, int]] = []
    for shape, names in groups.items():
        nodes = shape[0] + math.prod(shape[1:])
        if max_nodes is not None and nodes > max_nodes:
            pending.append((nodes, len(names)))
            continue
        rep = names[0]
        t0 = time.perf_counter()
        sec, vals = timed(lambda r=rep: nx_layer_coords(ms[r], theta[r]), repeats, slow=SLOW_S)
        res.wall_s += time.perf_counter() - t0
        res.values[rep] = vals
        measured.append((nodes, sec, len(names)))
        log(f"  networkx {'x'.join(map(str, shape))} ({nodes} nodes) x{len(names)}: {sec:.2f} s")
    res.n_timed = len(measured)
    res.measured_s = sum(sec * count for _, sec, count in measured)
    if pending:
        res.n_extrapolated_layers = sum(c for _, c in pending)
        if not measured:
            return res
        ref_nodes, ref_sec, _ = max(measured)
        res.ref_nodes = ref_nodes
        res.extrapolated_s = sum(ref_sec * (n / ref_nodes) ** 3 * c for n, c in pending)
    res.seconds = res.measured_s + res.extrapolated_s
    return res


def compare(coords0, nxr: NxResult) -> tuple[float, float, int, int]:
    """Max abs and rel error of our coordinates against networkx's, values compared, mismatches.

    Relative error denominator: ``max(|ref|, 1e-3·‖ref coordinate‖₂)`` (a coordinate entry can
    be near 0). A mismatch is a layer whose gate or IMDB definedness differs.
    """
    ours, valid, imdb_def, layers = coords0
    idx = {n: i for i, n in enumerate(layers)}
    worst_abs = worst_rel = 0.0
    n = mism = 0
    for name, (ref, gate, imdb_ok) in nxr.values.items():
        i = idx[name]
        if bool(valid[i]) != gate or bool(imdb_def[i]) != imdb_ok:
            mism += 1
        scale = 1e-3 * float(np.linalg.norm(ref))
        for a, b in zip(ours[i], ref, strict=True):
            err = abs(float(a) - float(b))
            worst_abs = max(worst_abs, err)
            denom = max(abs(float(b)), scale)
            if denom > 0:
                worst_rel = max(worst_rel, err / denom)
            n += 1
    return worst_abs, worst_rel, n, mism


# --------------------------------------------------------------------------- end to end


@dataclass
class EndToEnd:
    device: str
    n: int
    chunk: int
    total_s: float
    marks: list[tuple[int, float]]  # (candidates done, seconds since start) after each chunk
    best: float
    base: float

    @property
    def steady_rate(self) -> float:
        """Candidates/s after the first chunk (setup and base scoring excluded)."""
        if len(self.marks) < 2:
            return self.n / self.total_s
        (t0, s0), (t1, s1) = self.marks[0], self.marks[-1]
        return (t1 - t0) / (s1 - s0)

    def time_for(self, n: int) -> tuple[float, bool]:
        """Seconds for ``n`` candidates and whether that is measured (False: extrapolated)."""
        for done, s in self.marks:
            if done == n:
                return s, True
        if self.n >= n:
            return self.total_s * n / self.n, False
        return self.total_s + (n - self.n) / self.steady_rate, False


def bench_end_to_end(args, device: str) -> EndToEnd:
    config = PagsConfig(model="resnet18", dataset="cifar10", method="erk", density=args.density,
                        n=args.n, chunk=args.e2e_chunk, seed=args.seed, device=device,
                        route=args.route)  # fmt: skip
    marks: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench_pags_") as tmp:
        t0 = time.perf_counter()

        def stop(done: int) -> bool:
            marks.append((done, time.perf_counter() - t0))
            return False

        result = run(config, Path(tmp) / "pags", stop=stop)
        total = time.perf_counter() - t0
    r = EndToEnd(device, args.n, args.e2e_chunk, total, marks,
                 float(result.best_scores.network()[0]), float(result.base_scores.network()[0]))  # fmt: skip
    log(f"  end to end ({device}): n={r.n} in {total:.1f} s, steady {r.steady_rate:.1f} cand/s")
    return r


# --------------------------------------------------------------------------- report


def fmt_rate(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.1f}" if x >= 1 else f"{x:.2g}"


def header(args, shapes, cands) -> list[str]:
    nnz = sum(cands[0].nnz(n) for n in cands[0].names)
    numel = sum(math.prod(s) for s in shapes.values())
    return [
        "## masktopo PAGS benchmark",
        "",
        f"ResNet-18 (CIFAR): {len(shapes)} layers, {numel:,} weights. Candidates: "
        f"`examples.random_maskset(shapes, {args.density}, distribution='erk', weights=False, "
        f"seed=s)` for s = {args.seed + 1} … (exact per-layer counts; {nnz:,} kept entries, "
        f"density {nnz / numel:.4f}; drawn as positions, which travel with the masks as for "
        f"PAGS's own candidates); θ: dense Kaiming-normal float32 (seed {args.seed}), shared "
        "by all candidates. Unrolled convs, n23 gate and IMDB variant (the PAGS defaults). "
        f"Spectral route: `{args.route}`.",
        "",
        "Machine:",
        "",
        *machine_facts(args.devices),
        "",
    ]


def throughput_section(rows: list[Throughput], nx_s: float, nx_extra: bool, args) -> list[str]:
    mark = " †" if nx_extra else ""
    lines = [
        "### 1. Graph-scoring throughput: `score_candidates`, all full-spectrum terms",
        "",
        "Each call scores one chunk of candidates: every layer's (Δr, λ, IMDB_Δr, IMDB_λ) on θ "
        "(binary and |θ⊙M| spectra of the layer and of every IMDB degree group), then fs and the "
        f"network score. Median of {args.repeats} calls on the same candidates after one warm-up "
        "call; the candidate masks exist before the clock starts (generation is in part 3).",
        "",
        "| device | CPU workers | chunk | s / call (median) | candidates/s | s / candidate "
        "| target | vs networkx (1 candidate) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        target = TARGET_CPU if r.device == "cpu" else TARGET_GPU
        tname = f"≥ {target:,.0f}/s ({'2-core CPU' if r.device == 'cpu' else 'H100'})"
        ok = "met" if r.rate >= target else "**not met**"
        lines.append(
            f"| {r.device} | {r.workers} | {r.chunk} | {fmt_s(r.seconds)} | "
            f"**{fmt_rate(r.rate)}** | {fmt_s(1 / r.rate)} | {tname}: {ok} | "
            f"{fmt_ratio(nx_s, 1 / r.rate)}{mark} |"
        )
    lines.append("")
    lines.append(
        "Individual call times (s): "
        + "; ".join(
            f"{r.device}/w{r.workers.split()[0]}/c{r.chunk}: "
            + ", ".join(f"{t:.2f}" for t in r.times)
            for r in rows
        )
    )
    return [*lines, ""]


def nx_section(nxr: NxResult | None, coords0, args) -> list[str]:
    lines = ["### 2. networkx scorer (research-script way), one candidate", ""]
    if nxr is None:
        return [*lines, "Skipped (--skip-nx).", ""]
    limit = (
        "every distinct layer shape"
        if args.nx_max_nodes is None
        else f"distinct layer shapes with ≤ {args.nx_max_nodes} nodes; the larger ones "
        "**extrapolated** as n³ from the largest timed layer"
    )
    lines += [
        "Per layer: unrolled binary biadjacency and |θ⊙M| (scipy sparse) → "
        "`nx.bipartite.from_biadjacency_matrix` → remove isolated nodes → degrees from the graph → "
        "`nx.adjacency_spectrum` for μ0 (largest |eig|) and μ̂ (third largest |eig|) of the "
        "binary and the weighted graph; IMDB: inputs grouped by fan-out, each group with its "
        "neighbours as `G.subgraph(...)`, binary and weighted spectra likewise (n23 rules). "
        f"Timed on candidate 1 only: {limit}; each shape on its first layer, × its count "
        f"(a shape over {SLOW_S:.0f} s ran once, otherwise the median of {args.repeats}).",
        "",
        "| what | seconds |",
        "|---|---|",
        f"| measured: {nxr.n_timed} of {nxr.n_shapes} distinct shapes, × their counts "
        f"| {fmt_s(nxr.measured_s)} |",
    ]
    if nxr.n_extrapolated_layers:
        lines.append(
            f"| **extrapolated** (n³ from the {nxr.ref_nodes}-node layer): "
            f"{nxr.n_extrapolated_layers} layers over {args.nx_max_nodes} nodes "
            f"| {fmt_s(nxr.extrapolated_s)} |"
        )
    total = "**extrapolated** " if nxr.extrapolated_s > 0 else ""
    lines += [
        f"| {total}total per candidate | **{fmt_s(nxr.seconds)}** |",
        f"| {total}n = {N_TARGET} candidates | {fmt_s(nxr.seconds * N_TARGET)} "
        f"({fmt_s(nxr.seconds * N_TARGET / 3600)} h) |",
        f"| networkx wall time in this run | {fmt_s(nxr.wall_s)} |",
        "",
    ]
    if nxr.extrapolated_s > 0:
        lines += [
            "† The networkx per-candidate time includes an **extrapolated** part "
            f"(`--nx-max-nodes {args.nx_max_nodes}`); the extrapolation rests on one timing of "
            "one layer and can be off by 2× (perf-notes: a quick run predicted 319 s per PAGS "
            "candidate where the full run measured 170 s). Run without --nx-max-nodes for "
            "published numbers.",
            "",
        ]
    if nxr.values:
        a, r, n, mism = compare(coords0, nxr)
        lines += [
            f"Check of our coordinates (Δr, λ, IMDB_Δr, IMDB_λ) of candidate 1 against networkx "
            f"on the {len(nxr.values)} layers it ran on ({n} values): max abs error **{a:.1e}**, "
            f"max rel error **{r:.1e}** (denominator max(|ref|, 1e-3·‖ref coordinate‖)); "
            f"layers whose gate / IMDB definedness differ: {mism}.",
            "",
        ]
    return lines


def e2e_section(results: list[EndToEnd]) -> list[str]:
    lines = [
        "### 3. End to end: `masktopo.pags.run` (what `masktopo pags` calls)",
        "",
        "`PagsConfig(model='resnet18', dataset='cifar10', method='erk', density=…, n=…, chunk=…)` "
        "into a temporary directory: model build, base mask, candidates from the default "
        "`rescore` sampler (ERK re-drawn per candidate), scoring, layerwise selection, "
        "snapshots, candidates.parquet and state files. Steady rate: candidates after the first "
        "chunk over the time after the first chunk.",
        "",
        "| device | n | chunk | total s | candidates/s (overall) | candidates/s (steady) "
        f"| time for n = {N_TARGET} | target: n = {N_TARGET} < {TARGET_E2E_S:.0f} s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t, measured = r.time_for(N_TARGET)
        label = f"{fmt_s(t)} s" if measured else f"**{fmt_s(t)} s (extrapolated)**"
        ok = "met" if t < TARGET_E2E_S else "**not met**"
        if not measured:
            ok += " (extrapolated)"
        lines.append(
            f"| {r.device} | {r.n} | {r.chunk} | {fmt_s(r.total_s)} | {fmt_rate(r.n / r.total_s)} "
            f"| {fmt_rate(r.steady_rate)} | {label} | {ok} |"
        )
    lines.append("")
    for r in results:
        lines.append(
            f"- {r.device}: network score of the base mask {r.base:.6g}, of the best "
            f"{r.best:.6g}; setup + first chunk took {fmt_s(r.marks[0][1])} s."
        )
    if any(r.n < N_TARGET for r in results):
        lines.append(
            f"- n < {N_TARGET}: the n = {N_TARGET} time is **extrapolated** as the measured total "
            f"+ ({N_TARGET} − n) / steady rate."
        )
    return [*lines, ""]


def targets_section(rows: list[Throughput], e2e: list[EndToEnd], devices: list[str]) -> list[str]:
    lines = [
        "### Targets (issue 3 part 7)",
        "",
        "| target | measured here | status |",
        "|---|---|---|",
    ]
    cores = os.cpu_count()
    cpu = [r for r in rows if r.device == "cpu"]
    if cpu:
        best = max(cpu, key=lambda r: r.rate)
        note = "" if cores == 2 else f" (this machine has {cores} cores)"
        lines.append(
            f"| scoring ≥ {TARGET_CPU:.0f} candidates/s on a 2-core CPU | "
            f"{fmt_rate(best.rate)}/s (chunk {best.chunk}, workers {best.workers}){note} | "
            f"{'met' if best.rate >= TARGET_CPU else '**not met**'} "
            f"({fmt_ratio(best.rate, TARGET_CPU)} of target) |"
        )
    gpu = [r for r in rows if r.device == "cuda"]
    if gpu:
        best = max(gpu, key=lambda r: r.rate)
        name = torch.cuda.get_device_name(0)
        lines.append(
            f"| scoring ≥ {TARGET_GPU:,.0f} candidates/s on one H100 | {fmt_rate(best.rate)}/s "
            f"on {name} (chunk {best.chunk}) | {'met' if best.rate >= TARGET_GPU else '**not met**'}"
            f" ({fmt_ratio(best.rate, TARGET_GPU)} of target) |"
        )
    else:
        lines.append(
            f"| scoring ≥ {TARGET_GPU:,.0f} candidates/s on one H100 | not measured: "
            f"{gpu_absent_reason() if 'cuda' not in devices else 'CUDA not timed'} | — |"
        )
    for r in e2e:
        t, measured = r.time_for(N_TARGET)
        what = "measured" if measured else "extrapolated"
        lines.append(
            f"| end to end n = {N_TARGET} under {TARGET_E2E_S:.0f} s ({r.device}) | "
            f"{fmt_s(t)} s ({what} from n = {r.n}) | "
            f"{'met' if t < TARGET_E2E_S else '**not met**'} |"
        )
    return [*lines, ""]


# --------------------------------------------------------------------------- main


# --------------------------------------------------------------------------- the command


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


#: Runs ``python -m masktopo`` from the source tree given as the first argument, with that
#: tree's ``masktopo.cli`` and ``masktopo.configs`` (folders ``cli/`` and ``configs/`` mapped by
#: pyproject's package-dir): on PYTHONPATH alone the installed project's would be imported.
_TREE_MAIN = """
import importlib.util, runpy, sys
tree = sys.argv.pop(1)
import masktopo
for name, folder in (("masktopo.cli", "cli"), ("masktopo.configs", "configs")):
    spec = importlib.util.spec_from_file_location(
        name, f"{tree}/{folder}/__init__.py", submodule_search_locations=[f"{tree}/{folder}"])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
runpy.run_module("masktopo", run_name="__main__", alter_sys=True)
"""


def cli_run(count: int, extra: list[str], tree: Path | None, out: Path) -> tuple[float, float]:
    """Wall and CPU time (user + system, all threads) of ``masktopo pags ... --candidates
    count`` as a fresh process, from ``tree`` (its library, command-line layer and configs;
    PYTHONPATH and working folder) or this one."""
    import resource
    import subprocess

    env = dict(os.environ)
    cwd = None
    start = [sys.executable, "-m", "masktopo"]
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
        cwd = str(tree)
        start = [sys.executable, "-c", _TREE_MAIN, str(Path(tree).resolve())]
    cmd = [*start, "pags", "--model", "resnet18", "--dataset",
           "cifar10", "--method", "erk", "--density", "0.01", "--seed", "1", "--device", "cpu",
           *extra, "--candidates", str(count), "--out", str(out)]  # fmt: skip
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return dt, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def cli_section(args) -> list[str]:
    """The command's rows: every variant warmed up (2 candidates: numba's cache), then
    ``--repeats`` rounds that run every variant once, in turn (interleaved, so that a machine
    whose speed drifts during the benchmark favours none of them)."""
    variants = []
    if args.before is not None:
        variants.append((f"before ({args.before})", [], args.before))
    variants.append(("this tree, default (ranking then exact)", [], None))
    if args.cli_estimates:
        variants.append(("this tree, --estimates (every candidate's fs estimated)",
                         ["--estimates"], None))  # fmt: skip
    if args.cli_exact:
        variants.append(("this tree, --exact (all exact)", ["--exact"], None))
    lines = ["", f"#### 4. The command, n = {args.n} (fresh process each run)", "",
             "`masktopo pags --model resnet18 --dataset cifar10 --method erk --density 0.01 "
             f"--candidates {args.n} --seed 1 --device cpu --out TMP`, start-up included; "
             f"median of {args.repeats} after a 2-candidate warm-up run, the variants "
             "interleaved (each round runs every variant once).", "",
             "| code | median s | candidates/s | runs (s) | CPU s (user + sys) | load average "
             "before → after each run |", "|---|---|---|---|---|---|"]  # fmt: skip
    times: list[list[float]] = [[] for _ in variants]
    cpus: list[list[float]] = [[] for _ in variants]
    loads: list[list[tuple[str, str]]] = [[] for _ in variants]
    with tempfile.TemporaryDirectory() as tmp:
        for k, (_, extra, tree) in enumerate(variants):
            cli_run(2, extra, tree, Path(tmp) / f"warm{k}")
        for i in range(1, args.repeats + 1):
            for k, (label, extra, tree) in enumerate(variants):
                before = _load()
                dt, cpu = cli_run(args.n, extra, tree, Path(tmp) / f"o{k}-{i}")
                times[k].append(dt)
                cpus[k].append(cpu)
                loads[k].append((before, _load()))
                log(f"  {label}: run {i}: {dt:.1f} s (CPU {cpu:.1f} s), load {before} → "
                    f"{loads[k][-1][1]}")  # fmt: skip
    for k, (label, _, _) in enumerate(variants):
        med = statistics.median(times[k])
        runs = ", ".join(f"{t:.1f}" for t in times[k])
        cpu = ", ".join(f"{t:.1f}" for t in cpus[k])
        ld = "; ".join(f"{a} → {b}" for a, b in loads[k])
        lines.append(f"| {label} | **{med:.1f}** | {args.n / med:.1f} | {runs} | {cpu} | {ld} |")
    lines.append("")
    return lines


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--density", type=float, default=0.01, help="global density (default: 0.01)")
    p.add_argument(
        "--chunks",
        nargs="+",
        type=int,
        default=None,
        help=f"chunk sizes for the throughput (default: {' '.join(map(str, CHUNKS))}; --quick: 16)",
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="timed repeats, median reported (default: 3)"
    )
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help=f"end-to-end candidates (default: {N_TARGET}; --quick: 32)",
    )
    p.add_argument(
        "--e2e-chunk",
        type=int,
        default=None,
        help=f"end-to-end chunk (default: PagsConfig's, {PagsConfig().chunk}; --quick: 16)",
    )
    p.add_argument("--seed", type=int, default=0, help="θ and candidate seed (default: 0)")
    p.add_argument(
        "--device",
        nargs="+",
        choices=["cpu", "cuda"],
        default=["cpu"],
        help="where the scoring runs, throughput and end to end (cuda: when present; an "
        "unavailable CUDA is reported as such) (default: cpu)",
    )
    p.add_argument(
        "--nx-max-nodes",
        type=int,
        default=None,
        metavar="N",
        help="run networkx only on layers with <= N nodes, extrapolate the rest as n^3 "
        "(default: no limit, takes minutes; --quick: 1500)",
    )
    p.add_argument(
        "--route",
        choices=["auto", "batched"],
        default="auto",
        help="the spectral route of the scoring and the end-to-end run: auto (the CPU engine; on "
        "CUDA the GPU only for layers with a side of 2048 or more) or batched (the batched Gram "
        "route for every matrix, on the GPU with --device cuda) (default: auto)",
    )
    p.add_argument("--skip-nx", action="store_true", help="do not run the networkx scorer")
    p.add_argument("--skip-e2e", action="store_true", help="do not run the end-to-end part")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: chunk 16, n = 32 (end-to-end chunk 16), --nx-max-nodes 1500",
    )
    p.add_argument(
        "--cli",
        action="store_true",
        help="time the masktopo pags command end to end (part 4) instead of parts 1-3",
    )
    p.add_argument("--cli-exact", action="store_true", help="with --cli: also time --exact")
    p.add_argument("--cli-estimates", action="store_true",
                   help="with --cli: also time --estimates")  # fmt: skip
    p.add_argument("--before", type=Path, default=None, metavar="TREE",
                   help="with --cli: also time the command from this source tree")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.chunks = args.chunks or [16]
        args.n = args.n or 32
        args.e2e_chunk = args.e2e_chunk or 16
        if args.nx_max_nodes is None:
            args.nx_max_nodes = 1500
    args.chunks = args.chunks or list(CHUNKS)
    args.n = args.n or N_TARGET
    args.e2e_chunk = args.e2e_chunk or PagsConfig().chunk
    if args.repeats < 1 or args.n < 1 or args.e2e_chunk < 1 or min(args.chunks) < 1:
        p.error("--repeats, --n, --e2e-chunk and --chunks must be at least 1")
    if not 0 < args.density <= 1:
        p.error("--density must be in (0, 1]")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    args.devices = available_devices(args.device)
    if not args.devices:
        log("no device left to time on; nothing to do.")
        return 1
    t_start = time.perf_counter()
    if args.cli:
        log(f"4. the command, n = {args.n}")
        report = ["### `python benchmarks/bench_pags.py --cli`", "", "Machine:", "",
                  *machine_facts(["cpu"]), *cli_section(args)]  # fmt: skip
        report.append(f"Benchmark wall time: {time.perf_counter() - t_start:.0f} s.")
        text = "\n".join(report) + "\n"
        sys.stdout.write(text)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text, encoding="utf-8")
        return 0
    shapes = examples.resnet18_cifar_shapes()
    theta = make_theta(shapes, args.seed)
    log(f"generating {max(args.chunks)} ERK candidates at density {args.density} ...")
    cands = make_candidates(shapes, args.density, max(args.chunks), args.seed)

    log("1. scoring throughput")
    rows, coords0 = bench_throughput(cands, theta, args, args.devices)
    nxr = None
    if not args.skip_nx:
        log("2. networkx scorer on candidate 1")
        tiny = examples.random_maskset({"w": (16, 8, 3, 3)}, 0.5, distribution="uniform", seed=1)
        nx_layer_coords(tiny["w"], torch.randn(16, 8, 3, 3))  # warm-up (imports)
        nxr = time_networkx(cands[0], theta, args.repeats, args.nx_max_nodes)
        log(f"  networkx: {fmt_s(nxr.seconds)} s per candidate "
            f"({fmt_s(nxr.extrapolated_s)} s of it extrapolated)")  # fmt: skip
    e2e = []
    if not args.skip_e2e:
        log(f"3. end to end, n = {args.n}")
        e2e = [bench_end_to_end(args, d) for d in args.devices]

    nx_s = nxr.seconds if nxr else math.nan
    report = header(args, shapes, cands)
    report += targets_section(rows, e2e, args.devices)
    report += throughput_section(rows, nx_s, bool(nxr and nxr.extrapolated_s > 0), args)
    report += nx_section(nxr, coords0, args)
    if e2e:
        report += e2e_section(e2e)
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
