"""``masktopo summarize``: mean ± std of a sweep's runs per cell (docs/sweeps.md).

Every flag is derived from :class:`masktopo.sweep.config.SummarizeConfig`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

_DESCRIPTION = """\
Group the finished runs of a sweep folder by its axes (default: every axis but seed) and print,
per group, the number of runs and mean ± std (sample std over the runs) of each metric: a final
metric of the run (test_acc, the final model's test accuracy, by default), a field of its last
mask event (R_s, density), or a network topology metric of its last mask event (ramanujan_gap,
imdb_ramanujan_gap, ...; read from the run's analysis cache, computed once when missing).
--format csv, json or parquet (or an --out file with that suffix) gives the numbers as
<metric>_mean, <metric>_std and <metric>_n columns."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    from masktopo.options import add_arguments
    from masktopo.sweep.config import SummarizeConfig

    p = subparsers.add_parser(
        "summarize",
        help="mean ± std per cell of a sweep",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", metavar="SWEEP_DIR", help="a sweep folder (masktopo sweep --out)")
    p.add_argument("--out", "-o", metavar="FILE", default=None,
                   help="write the table to FILE (atomically) instead of stdout")  # fmt: skip
    add_arguments(p, SummarizeConfig)
    return p


def run(args) -> int:
    import json

    from masktopo.files import atomic_write_bytes
    from masktopo.options import flag_values, gather
    from masktopo.sweep import summarize
    from masktopo.sweep.config import SummarizeConfig
    from masktopo.sweep.summary import format_summary

    from ._output import check_parquet, output_format, render_markdown, render_rows, write_stdout

    cfg = gather(SummarizeConfig, flags=flag_values(args, SummarizeConfig))
    fmt = output_format(cfg.format, args.out)
    check_parquet(fmt, args.out)
    metrics = list(cfg.metrics)
    by = [] if cfg.by == ("none",) else cfg.by
    df = summarize(args.path, by=by, metrics=metrics)
    left = df.attrs.get("unfinished") or {}
    if left:
        from ._output import note

        total = sum(left.values())
        parts = ", ".join(f"{n} {st}" for st, n in left.items())
        again = " --retry-failed" if "failed" in left else ""
        note(f"{total} run(s) of the sweep are not in the table ({parts}; 'masktopo sweep FILE "
             f"--out {args.path}{again}' runs them and names each failure)")  # fmt: skip
    if fmt == "parquet":
        from masktopo.files import atomic_write

        atomic_write(Path(args.out), lambda f: df.to_parquet(f, index=False))
        return 0
    if fmt == "csv":
        text = df.to_csv(index=False)
    elif fmt == "json":
        records = json.loads(df.to_json(orient="records"))
        text = json.dumps(records, indent=1) + "\n"
    else:
        header, rows = format_summary(df, metrics, percent=cfg.percent)
        render = render_markdown if fmt == "markdown" else render_rows
        text = render(header, rows).rstrip("\n") + "\n"
        if df.empty:
            text = "no finished run yet\n"
    if args.out:
        atomic_write_bytes(Path(args.out), text.encode("utf-8"))
    else:
        write_stdout(text)
    return 0
