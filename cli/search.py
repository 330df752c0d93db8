"""``masktopo search``: the sparsest-models combinatorial search (docs/search.md).

Every argument is checked and the run plan built before the output folder is created, so a bad
invocation (a wrong --arch, a search too large to train) writes nothing. ``--count`` prints the
number of supports (phase 2) or architectures (phase 1) without listing them, and trains
nothing.
"""

from __future__ import annotations

import argparse

from ._output import add_config_arguments, add_progress, command_config, print_config, show_progress

_DESCRIPTION = """\
Combinatorial search for the sparsest networks on the Cubist Spiral (Zhang & Papyan, ICML 2024,
Algorithm 1). Phase 1 trains the dense sub-network (d1, d2, d3) of the width-W MLP for every
d_l in 1..W; phase 2 trains every support of --arch with no empty row or column (modulo row
permutations per matrix; --joint: modulo hidden-unit relabellings). Each support is trained
with every (lr, schedule) setting, thousands of models at once. Writes into --out:
results/part-*.parquet (one row per run: key, setting, nnz, train accuracy, loss), masks/ (the
runs above --target), results.parquet and summary.json at the end, run.json. A killed search
continues with --resume and ends as an uninterrupted one would. Tip: on a busy machine set
OMP_NUM_THREADS=1 (tiny matrices gain nothing from threads). Every option is declared in
SearchConfig (masktopo.search.config)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    from masktopo.options import add_arguments
    from masktopo.search.config import SearchConfig

    p = subparsers.add_parser(
        "search",
        help="sparsest-models combinatorial search on the Cubist Spiral",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p, SearchConfig)
    add_config_arguments(p, "search", "output directory (required unless --count; created)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted search in --out; ends as an uninterrupted one would",
    )
    p.add_argument(
        "--count",
        action="store_true",
        help="print the number of supports (phase 2: of --arch, after --joint, --max-weight-nnz "
        "and --per-nnz) or architectures (phase 1: W³) and exit, without listing them (any "
        "--arch); --limit is not applied: it caps runs, and a search trains count × settings",
    )
    add_progress(p)
    return p


def run(args) -> int:
    from masktopo.search.config import SearchConfig

    config = command_config(args, SearchConfig, "search")[0]
    if args.print_config:
        print_config(config, "search")
        return 0
    if args.count:
        from masktopo.search.runner import count_plan

        print(count_plan(config))
        return 0
    if args.out is None:
        args.parser.error("the following arguments are required: --out")
    from masktopo.search.runner import run_search, search_plan

    plan = search_plan(config)  # checks the config before anything is written
    result = run_search(config, args.out, resume=args.resume, progress=show_progress(args))
    rows = result.rows
    hit = rows[rows["above_target"]] if len(rows) else rows
    line = f"{len(rows)} of {plan.n_runs} runs done, {len(hit)} at or above {config.target:g}"
    if len(hit):
        best = hit.sort_values(["weight_nnz", "model_nnz"]).iloc[0]
        line += (f"; sparsest: {best['key']} weight nnz {best['weight_nnz']}, model nnz "
                 f"{best['model_nnz']}, accuracy {best['accuracy']:.4f}")  # fmt: skip
    print(f"{line} -> {result.out}")
    return 0
