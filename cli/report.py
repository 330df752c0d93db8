"""``masktopo report``: one self-contained static HTML page about one or several runs.

See :mod:`masktopo.report` for what the page shows. The output file is checked before any run is
analyzed and written atomically once the page is complete; a run directory that cannot be read
(not a run, invalid run.json or events.jsonl) fails the command with one line and writes nothing,
while missing or corrupt event files are warned about, left out and named in the page.
"""

from __future__ import annotations

import argparse

from masktopo.options import FigureOptions, Options, RunOptions, add_arguments

from ._output import add_progress, apply_options, show_progress

_DESCRIPTION = """\
Write one HTML page about the run directories RUN...: the final metrics of summary.json, the
figures of topology over training (embedded), the per-layer metrics of the last event, the network
metrics of every event, the whole-network path analysis of the final masks (effective density,
dead units, ineffective weights), the resolved configuration and, for several runs, a comparison.
The page references no other file: open it in any browser, send it by mail, attach it to a paper's
supplement. Runs are analyzed through the cache in RUN/analysis/ (only new events are computed)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="one self-contained HTML page about runs (figures, tables, config)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="RUN", help="run directories")
    p.add_argument(
        "--out", "-o", metavar="FILE", required=True, help="the HTML file to write (atomically)"
    )
    p.add_argument(
        "--figures",
        choices=("svg", "png"),
        default="svg",
        help="how figures are embedded (default svg: sharp at any zoom)",
    )
    p.add_argument("--title", default=None, help="page title (default: 'masktopo report: RUNs')")
    add_arguments(p, FigureOptions, exclude=("against",))
    add_arguments(p, RunOptions)
    add_arguments(p, Options, only=("conv",))
    add_progress(p)
    return p


def run(args) -> int:
    apply_options(args, FigureOptions, RunOptions, Options)
    from masktopo.errors import MaskTopoError
    from masktopo.report import write_report
    from masktopo.runs import check_output

    if args.labels is not None and len(args.labels) != len(args.paths):
        raise MaskTopoError(f"--labels: {len(args.labels)} label(s) for {len(args.paths)} run(s)")
    check_output(args.out, args.paths, "the report")
    path = write_report(
        args.paths,
        args.out,
        labels=args.labels,
        every=args.every,
        conv=args.conv,
        cache=args.cache,
        progress=show_progress(args),
        figures=args.figures,
        x=args.x,
        title=args.title,
    )
    print(path)
    return 0
