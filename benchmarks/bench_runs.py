"""Benchmark: run analysis (``masktopo.analysis.runs.analyze_run``) of a synthetic training run.

Issue 5 part 6: analyzing a run of 100 events of ResNet-18 masks at 99 % sparsity should take at
most 30 s on a 2-core CPU, and re-analyzing it with nothing new at most 1 s.

The run is written as a real run directory (``run.json``, ``events.jsonl``, one safetensors file
per event with the weights at the kept positions, as the trainer writes them), the way a
dynamic-sparse-training run looks: event 0 is
``examples.random_maskset(resnet18_cifar_shapes(), 0.01, distribution="erk", weights=True)``;
every later event moves ``--move`` (default 3 %) of each layer's kept edges (drops that many kept
positions at random and grows as many new ones, exact counts, as SET does), and the kept weights
drift by 1 % noise. Weights are dumped at every event (the trainer's default, ``--weights
all``), at the first and last event only (``ends``), or never.

Timed, in one process (imports and the synthetic run excluded):

1. full analysis: ``analyze_run(run)`` with an empty cache, default workers (two threads on a
   2-core machine), and with ``workers=1`` for comparison (``--skip-serial`` leaves it out);
2. re-analysis with nothing new: ``analyze_run(run)`` again (median of ``--repeats``);
3. incremental: 5 more events appended, ``analyze_run(run)`` computes only those;
4. the command line, ``python -m masktopo analyze RUN --out topology.parquet``, with nothing new
   (a subprocess: interpreter start and imports included).

The parallel and serial tables are compared (largest relative difference). Markdown report on
stdout, progress on stderr. ``python benchmarks/bench_runs.py --help`` lists the options.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import fmt_s, log, machine_facts

import masktopo
from masktopo import examples, store
from masktopo.analysis.runs import analyze_run
from masktopo.analysis.spectral import cpu_workers

TARGET_FULL_S = 30.0
TARGET_AGAIN_S = 1.0
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the synthetic run


class SyntheticRun:
    """Writes the events of a DST-like run into ``root`` through :func:`masktopo.save`."""

    def __init__(self, root: Path, args):
        self.root, self.args = root, args
        self.shapes = examples.resnet18_cifar_shapes()
        base = examples.random_maskset(
            self.shapes, args.density, distribution=args.distribution, weights=True, seed=args.seed
        )
        self.rng = np.random.default_rng(args.seed + 1)
        self.kept = {n: np.flatnonzero(base[n].numpy().reshape(-1)) for n in base}
        self.values = {n: base.weights[n].numpy().reshape(-1)[self.kept[n]] for n in base}
        self.n = 0
        root.mkdir(parents=True)
        (root / "masks").mkdir()
        run = {
            "format": "masktopo.run",
            "format_version": 1,
            "created": "2026-01-01T00:00:00+00:00",
            "masktopo_version": masktopo.__version__,
            "config": {"method": "synthetic-set", "density": args.density, "move": args.move},
            "seed": args.seed,
            "layers": [
                {"name": x.name, "kind": x.kind, "shape": list(x.shape)} for x in base.layers()
            ],
        }
        (root / "run.json").write_text(json.dumps(run), encoding="utf-8")

    def _move(self) -> tuple[dict, dict]:
        """Drop ``move`` of each layer's kept positions, grow as many new ones; weights drift."""
        drop = {}
        for name, shape in self.shapes.items():
            numel, kept = math.prod(shape), self.kept[name]
            m = round(self.args.move * kept.size)
            if m == 0 or kept.size == numel:
                drop[name] = 0
                continue
            gone = self.rng.choice(kept.size, size=m, replace=False)
            stay = np.delete(np.arange(kept.size), gone)
            grown = np.empty(0, dtype=np.int64)
            while grown.size < m:  # exact count: redraw until m new positions
                draw = np.setdiff1d(self.rng.integers(0, numel, size=2 * m), kept)
                grown = np.union1d(grown, draw)
            grown = self.rng.permutation(grown)[:m]
            noise = 1 + 0.01 * self.rng.standard_normal(stay.size)
            self.values[name] = np.concatenate([
                self.values[name][stay] * noise.astype(np.float32),
                (0.01 * self.rng.standard_normal(m)).astype(np.float32),
            ])  # fmt: skip
            self.kept[name] = np.concatenate([kept[stay], grown])
            drop[name] = m
        return drop, dict(drop)

    def add(self, last: bool) -> None:
        k = self.n
        drop, grow = self._move() if k else ({}, {})
        kind = "init" if k == 0 else "final" if last else "regen"
        dump = self.args.weights == "all" or (self.args.weights == "ends" and kind != "regen")
        masks, weights = {}, {}
        for name, shape in self.shapes.items():
            flat = torch.zeros(math.prod(shape), dtype=torch.bool)
            flat[torch.from_numpy(self.kept[name])] = True
            masks[name] = flat.reshape(shape)
            if dump:
                w = torch.zeros(math.prod(shape))
                w[torch.from_numpy(self.kept[name])] = torch.from_numpy(self.values[name])
                weights[name] = w.reshape(shape)
        ms = masktopo.MaskSet(masks, weights=weights or None)
        rel = f"masks/event-{k:06d}.safetensors"
        store.save(self.root / rel, ms, weights="kept" if ms.has_weights else "dense")
        line = {"event": k, "step": 100 * k, "epoch": k / 10, "kind": kind, "file": rel,
                "has_weights": ms.has_weights, "nnz": ms.nnz_per_layer(),
                "density": ms.density()}  # fmt: skip
        if k:
            line.update(drop=drop, grow=grow, R_s=float(self.rng.random()))
        if k % 10 == 0 or last:
            line.update(train_loss=1.0 / (k + 1), val_acc=0.5 + k / 400)
        with open(self.root / "events.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        self.n += 1


# --------------------------------------------------------------------------- timing


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _max_rel_diff(a, b) -> float:
    worst = 0.0
    for col in a.columns:
        if a[col].dtype == object or col not in b:
            continue
        x = a[col].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        y = b[col].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        if not np.array_equal(np.isnan(x), np.isnan(y)):
            return math.inf
        ok = ~np.isnan(x)
        d = np.abs(x[ok] - y[ok]) / np.maximum(np.abs(y[ok]), 1e-300)
        d[np.abs(x[ok] - y[ok]) == 0] = 0
        worst = max(worst, float(d.max(initial=0.0)))
    return worst


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    load_at_start = os.getloadavg()
    tmp = None
    if args.dir is None:
        tmp = tempfile.mkdtemp(prefix="bench_runs-")
        root = Path(tmp) / "run"
    else:
        root = args.dir
        if root.exists():
            sys.exit(f"{root} exists; give a new directory")
    try:
        log(f"writing a synthetic run of {args.events} events to {root} ...")
        sr = SyntheticRun(root, args)
        t_make, _ = _timed(lambda: [sr.add(i == args.events - 1) for i in range(args.events)])
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        log(f"  {fmt_s(t_make)} s, {size / 2**20:.0f} MiB")

        log(f"1. full analysis, workers={cpu_workers()} (default) ...")
        t_full, df = _timed(lambda: analyze_run(root))
        log(f"  {fmt_s(t_full)} s")
        t_serial, diff = math.nan, math.nan
        if not args.skip_serial:
            log("   and workers=1 (in this process), no cache ...")
            t_serial, serial = _timed(lambda: analyze_run(root, workers=1, cache=False))
            diff = _max_rel_diff(df, serial)
            log(f"  {fmt_s(t_serial)} s; largest relative difference {diff:.1e}")

        log("2. re-analysis with nothing new ...")
        again = [_timed(lambda: analyze_run(root))[0] for _ in range(args.repeats)]
        t_again = statistics.median(again)
        log(f"  {fmt_s(t_again)} s (median of {args.repeats})")

        log("3. five new events, incremental ...")
        for i in range(5):
            sr.add(i == 4)
        t_inc, inc = _timed(lambda: analyze_run(root))
        assert inc.attrs["computed"] == list(range(args.events, args.events + 5))
        log(f"  {fmt_s(t_inc)} s")

        log("4. the command line with nothing new ...")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        out_file = Path(tmp or root.parent) / "topology.parquet"
        cmd = [sys.executable, "-m", "masktopo", "analyze", str(root), "--out", str(out_file)]
        cli = []
        for _ in range(args.repeats):
            t, proc = _timed(lambda: subprocess.run(cmd, env=env, capture_output=True, text=True))
            if proc.returncode != 0:
                sys.exit(f"masktopo analyze failed: {proc.stderr}")
            cli.append(t)
        t_cli = statistics.median(cli)
        probe = [sys.executable, "-c", "import masktopo.analysis.runs"]
        t_import, _ = _timed(lambda: subprocess.run(probe, env=env, check=True))
        log(f"  {fmt_s(t_cli)} s (imports alone {fmt_s(t_import)} s)")
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = len(df)
    cmdline = " ".join(
        ["python benchmarks/bench_runs.py", *(sys.argv[1:] if argv is None else argv)]
    )
    lines = [
        f"### `{cmdline}` ({time.strftime('%Y-%m-%d')})",
        "",
        f"Synthetic run: {args.events} events of CIFAR ResNet-18 masks (21 layers, 11,164,352 "
        f"weights), `{args.distribution}` layer densities at global density {args.density} "
        f"({(1 - args.density) * 100:.0f} % sparse), {args.move * 100:g} % of each layer's kept "
        f"edges moved per event, weights dumped: {args.weights}; {size / 2**20:.0f} MiB on disk, "
        f"written in {fmt_s(t_make)} s. Table: {rows:,} rows × {df.shape[1]} columns, every "
        "metric.",
        "",
        "Machine:",
        "",
        *machine_facts(["cpu"]),
        f"- load average at start of this benchmark: "
        f"{', '.join(f'{x:.2f}' for x in load_at_start)} (the machine is shared)",
        "",
        "| what | seconds | target |",
        "|---|---|---|",
        f"| full analysis, {cpu_workers()} worker threads (default) | {fmt_s(t_full)} | "
        f"≤ {TARGET_FULL_S:.0f} s: {'met' if t_full <= TARGET_FULL_S else '**not met**'} |",
        f"| full analysis, workers=1 | {fmt_s(t_serial)} | (comparison) |",
        f"| re-analysis, nothing new (median of {args.repeats}) | {fmt_s(t_again)} | "
        f"≤ {TARGET_AGAIN_S:.0f} s: {'met' if t_again <= TARGET_AGAIN_S else '**not met**'} |",
        f"| 5 new events, incremental | {fmt_s(t_inc)} | |",
        f"| `masktopo analyze RUN --out topology.parquet`, nothing new (subprocess, median of "
        f"{args.repeats}) | {fmt_s(t_cli)} | (of which {fmt_s(t_import)} s start and imports) |",
        "",
        (
            "Parallel vs serial tables: not compared (--skip-serial)."
            if args.skip_serial
            else f"Parallel vs serial tables: largest relative difference {diff:.1e}."
        ),
        "",
        f"Benchmark wall time: {time.perf_counter() - t_start:.0f} s.",
    ]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
        log(f"report written to {args.out}")
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=100, help="events in the run (default: 100)")
    p.add_argument("--density", type=float, default=0.01, help="global density (default: 0.01)")
    p.add_argument(
        "--distribution",
        choices=("erk", "er", "uniform"),
        default="erk",
        help="layer densities (default: erk)",
    )
    p.add_argument(
        "--move", type=float, default=0.03, help="share of kept edges moved per event (0.03)"
    )
    p.add_argument(
        "--weights",
        choices=("ends", "all", "none"),
        default="all",
        help="events that dump weights (at the kept positions, as the trainer does): all "
        "(default), ends (first and last), none",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5, help="repeats of the re-analysis timings")
    p.add_argument("--skip-serial", action="store_true", help="do not time workers=1")
    p.add_argument(
        "--dir", type=Path, default=None, help="write the run here (default: a temp dir)"
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary run directory")
    p.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    if args.events < 1 or args.repeats < 1 or not 0 < args.density <= 1 or not 0 <= args.move < 1:
        p.error("--events and --repeats must be >= 1, --density in (0, 1], --move in [0, 1)")
    return args


if __name__ == "__main__":
    sys.exit(main())
