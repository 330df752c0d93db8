"""``masktopo pags``: PAGS masks before training (pags-spec §4; docs/pags.md).

Every argument is checked, the model built, the data read and the base mask computed before the
output directory is created, so a bad invocation writes nothing. Under ``torchrun`` the candidates
are split across the processes (gloo process group) and rank 0 writes the files.
"""

from __future__ import annotations

import argparse
import gc

from ._output import add_config_arguments, add_progress, command_config, print_config, show_progress

_DESCRIPTION = """\
Pruning at Initialization as Graph Sampling. Start from the mask of a PaI method (the base, scored
on the full training set), sample N candidate masks around it, score every layer's graph with the
N23 full-spectrum criteria on the initial weights, and keep the best. Writes into --out:
best.safetensors (best mask + the weights it was scored on), base.safetensors, snapshots/,
candidates.parquet (one row per candidate), run.json; analyze them with 'masktopo analyze'.
Under 'torchrun --nproc_per_node=K -m masktopo pags ...' the candidates are split across K
processes; the result is the same for any K. Every option is declared in PagsConfig
(masktopo.pags.config); --print-config shows them all as TOML."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    from masktopo.options import add_arguments
    from masktopo.pags.config import PagsConfig

    p = subparsers.add_parser(
        "pags",
        help="generate PAGS masks before training (graph-sampled PaI)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p, PagsConfig)
    add_config_arguments(p, "pags", "output directory (required; created)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out; ends as an uninterrupted run would",
    )
    add_progress(p)
    p.add_argument("--list-methods", action="store_true", help="list the PaI methods and exit")
    return p


def list_methods() -> str:
    from masktopo import pai

    from ._output import plain_text, render_rows

    rows = []
    for name, cls in pai.METHODS.items():
        doc = (cls.__doc__ or "").strip().splitlines()
        rows.append((name, "yes" if cls.data_free else "", plain_text(doc[0]) if doc else ""))
    return render_rows(("name", "data-free", "description"), rows)


def run(args) -> int:
    if args.list_methods:
        print(list_methods())
        return 0
    from masktopo.pags.config import PagsConfig

    config, given = command_config(args, PagsConfig, "pags")
    if args.print_config:
        print_config(config, "pags")
        return 0
    missing = [flag for flag, ok in (("--model", config.model is not None),
                                     ("--dataset", config.dataset is not None),
                                     ("--density", "density" in given),
                                     ("--out", args.out is not None)) if not ok]  # fmt: skip
    if missing:
        args.parser.error(f"the following arguments are required: {', '.join(missing)}")
    from masktopo.pags import run as run_pags
    from masktopo.pags.runner import check_method

    check_method(config.method)
    from masktopo.distributed import current_world, init_world

    init_world(config.device, backend="gloo")  # only small objects travel
    # The ~300k objects of the imports live as long as the process: out of the collector's
    # reach, its full collections (the run allocates millions of small objects) scan what the
    # run made only (PAGS n = 1000: ~1 s less; gc.freeze's documented use).
    gc.freeze()
    result = run_pags(config, args.out, resume=args.resume, progress=show_progress(args))
    from masktopo.runs.layout import BEST_FILE

    if current_world().main:
        sc = result.best_scores.network(config.invalid)[0]
        base = result.base_scores.network(config.invalid)[0]
        print(f"best: network score {sc:.6g} (base {base:.6g}), density "
              f"{result.best.density():.6g}, {result.n_done} candidates -> "
              f"{result.out / BEST_FILE}")  # fmt: skip
    return 0
