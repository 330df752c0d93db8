"""``masktopo prune-bench``: pruning methods on the Cubist Spiral at exact nnz budgets
(docs/search.md)."""

from __future__ import annotations

import argparse

from ._output import add_config_arguments, add_progress, command_config, print_config, show_progress

_DESCRIPTION = """\
The pruning benchmark of Zhang & Papyan (ICML 2024) on the Cubist Spiral: every method prunes
the 2-w-w-w-1 MLP to exactly K weights (the reference lands 1-2 below), bias masks from dead
units, and trains it; all runs of one width and method train at once. Writes into --out:
results/*.parquet (one row per run: method, width, K, seed, weight / model / effective nnz,
dead units, train accuracy, loss), results.parquet and summary.json (per method and width,
the smallest weight nnz reaching --target), run.json. --resume skips finished groups. Every
option is declared in PruneBenchConfig (masktopo.search.config)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    from masktopo.options import add_arguments
    from masktopo.search.config import PruneBenchConfig

    p = subparsers.add_parser(
        "prune-bench",
        help="pruning methods on the Cubist Spiral at exact nnz budgets",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p, PruneBenchConfig)
    add_config_arguments(p, "prune-bench", "output directory (required; created)")
    p.add_argument("--resume", action="store_true", help="continue the benchmark in --out")
    add_progress(p)
    return p


def run(args) -> int:
    from masktopo.search.config import PruneBenchConfig

    config = command_config(args, PruneBenchConfig, "prune-bench")[0]
    if args.print_config:
        print_config(config, "prune-bench")
        return 0
    if args.out is None:
        args.parser.error("the following arguments are required: --out")
    from masktopo.search.prune import bench_summary, run_prune_bench

    rows = run_prune_bench(config, args.out, resume=args.resume, progress=show_progress(args))
    for item in bench_summary(rows, config.target)["smallest_nnz"]:
        found = item["weight_nnz"] if item["weight_nnz"] is not None else "none"
        print(f"{item['method']:>10} width {item['width']:>3}: smallest weight nnz at "
              f">= {config.target:g}: {found}")  # fmt: skip
    print(f"{len(rows)} run{'' if len(rows) == 1 else 's'} -> {args.out}")
    return 0
