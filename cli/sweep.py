"""``masktopo sweep``: run a grid of runs (docs/sweeps.md).

Every flag is derived from :class:`masktopo.sweep.config.SweepConfig`. The sweep file and every
cell's config are checked before anything runs or is written; a finished run is never run
again, an interrupted one continues from its checkpoint, a failed one is listed and run again
only with ``--retry-failed``.
"""

from __future__ import annotations

import argparse

_DESCRIPTION = """\
Run every cell of a sweep file (a TOML file: [base] holds one command's config keys, with
command = "train" (default) or "pags"; [grid] lists values per key, whose product is taken;
[[include]] tables add cells) into the sweep folder --out: runs/ holds one run directory per
cell, named by the cell's values and a key from its settings. Run it again after a crash or
Ctrl-C: finished runs are skipped, interrupted ones continue from their checkpoint, failed ones
are listed (--retry-failed runs them again). Then 'masktopo summarize OUT' gives mean ± std per
cell and 'masktopo plot OUT' the figure. The shipped sweep files: configs/sweeps/ (a NAME such
as sweeps/e1_itop is enough)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    from masktopo.options import add_arguments
    from masktopo.sweep.config import SweepConfig

    p = subparsers.add_parser(
        "sweep",
        help="run a grid of runs (methods × settings × seeds), resumable",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="SWEEP.toml", help="the sweep file, or a shipped one's NAME")
    p.add_argument("--out", "-o", metavar="DIR", required=True,
                   help="the sweep folder (new, or one this sweep ran into before)")  # fmt: skip
    add_arguments(p, SweepConfig)
    return p


def sweep_file(value: str) -> str:
    """An existing file as given, else a shipped sweep file's path (``e1_itop``,
    ``sweeps/e1_itop``, with or without ``.toml``).

    Raises
    ------
    MaskFileError
        Neither: the message names the closest shipped sweep and lists them all.
    """
    from pathlib import Path

    from masktopo.errors import MaskFileError

    from ._output import not_found, shipped_files

    if Path(value).exists():
        return value
    name = value.removesuffix(".toml").removeprefix("configs/").removeprefix("sweeps/")
    shipped = shipped_files("sweeps")
    if name in shipped:
        return shipped[name]
    listing = f"shipped: {', '.join(shipped)}"
    raise MaskFileError(value, not_found(name, "sweep", list(shipped), listing))


def run(args) -> int:
    from masktopo.options import flag_values, gather
    from masktopo.sweep import run_sweep
    from masktopo.sweep.config import SweepConfig

    config = gather(SweepConfig, flags=flag_values(args, SweepConfig))
    result = run_sweep(sweep_file(args.file), args.out, config)
    return 1 if result.failed and not config.dry_run else 0
