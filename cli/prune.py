"""``masktopo prune``: one-shot and multi-stage pruning of a trained network (docs/prune.md).

Every option is declared in :class:`masktopo.prune.config.PruneConfig`. The input is read, the
model built, the gradient matrix's memory checked and every solve done before anything is
written: the run directory appears whole at the end, or not at all.
"""

from __future__ import annotations

import argparse

from ._output import add_config_arguments, add_progress, command_config, print_config, show_progress

_DESCRIPTION = """\
Prune a trained network in one shot (or in CHITA++ stages) with CHITA (Benbaki et al., ICML 2023)
and its baselines, from n per-sample gradients (never a p x p Hessian): mp (magnitude), bso
(magnitude support + ridge re-fit), bso-block, iht, chita (active set), chita++ (multi-stage, G
recomputed per stage). INPUT is a run directory (its last event's weights), a PAGS run
directory (its best masks over the network it scored), a mask file with weights, or a PyTorch
checkpoint of a zoo model (then --model and --dataset); the weights of an input with masks are
its weights times its masks. A sparse input may be pruned further, to a sparsity that keeps at
most its nonzero weights. Every method at every sparsity goes into one run directory (run.json,
events.jsonl, masks/, results.csv, summary.json; analyze it with 'masktopo analyze OUT') and the
table is printed."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    from masktopo.options import add_arguments, settable_help
    from masktopo.prune.config import PruneConfig

    p = subparsers.add_parser(
        "prune",
        help="prune a trained network (CHITA, CHITA++, MP, BSO, IHT)",
        description=_DESCRIPTION,
        epilog=settable_help(PruneConfig),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", nargs="?", metavar="INPUT",
                   help="run directory, PAGS run directory, mask file with weights, or "
                        "checkpoint")  # fmt: skip
    add_arguments(p, PruneConfig)
    add_config_arguments(p, "prune", "the run directory to create (new or empty; required)")
    add_progress(p)
    return p


def table(rows: list[dict], input_acc: float, density: float = 1.0) -> str:
    """The printed table.

    Parameters
    ----------
    rows : list of dict
        One per method x sparsity (:data:`masktopo.prune.runner.TABLE_COLUMNS`).
    input_acc : float
        Test accuracy of the input's weights.
    density : float
        Density of the input's masks: its accuracy is labelled ``dense`` at 1, ``input``
        (with the density) below.

    Returns
    -------
    str
        The input's accuracy line, then one line per row; accuracies in percent (as ``masktopo
        train`` prints them; the files hold fractions), the accuracy after BatchNorm
        re-estimation only for a model that has BatchNorm layers (NaN in every row otherwise).
    """
    import math

    from masktopo.prune.runner import input_accuracy_line

    from ._output import render_rows

    bn = any(not math.isnan(r["test_acc_bn"]) for r in rows)
    header = ("method", "sparsity", "kept", "objective", "|w-w̄|", "new nz", "solver s",
              "test acc %", *(("acc (BN) %",) if bn else ()))  # fmt: skip
    body = [(r["method"], r["sparsity"], r["kept"], r["objective"], r["dist"],
             r["new_non_zeros"], r["solver_s"], round(100 * r["test_acc"], 2),
             *((round(100 * r["test_acc_bn"], 2),) if bn else ()))
            for r in rows]  # fmt: skip
    return input_accuracy_line(input_acc, density) + "\n" + render_rows(header, body)


def run(args) -> int:
    from masktopo.prune.config import PruneConfig

    config = command_config(args, PruneConfig, "prune")[0]
    if args.print_config:
        print_config(config, "prune")
        return 0
    missing = [name for name, ok in (("INPUT", args.input is not None),
                                     ("--out", args.out is not None)) if not ok]  # fmt: skip
    if missing:
        args.parser.error(f"the following arguments are required: {', '.join(missing)}")
    from masktopo.prune import prune

    result = prune(config, args.input, args.out, progress=show_progress(args))
    print(table(result.rows, result.input_acc, result.input_density))
    print(f"{len(result.rows)} results in {result.seconds:.1f} s -> {result.out}")
    return 0
