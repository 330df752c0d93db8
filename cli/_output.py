"""Output helpers shared by the subcommands: aligned text tables and JSON records.

Light at import time (standard library only): pandas is imported only where a value may be pandas NA.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Iterable, Sequence


def format_cell(value) -> str:
    """Text of one table cell: floats with 6 significant digits, NaN as ``nan``, None as empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if _is_bool(value):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        return "nan" if math.isnan(value) else format(value, ".6g")
    return str(value)


def _is_bool(value) -> bool:
    if isinstance(value, bool):
        return True
    return type(value).__name__ in ("bool", "bool_") and type(value).__module__ == "numpy"


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_number(value) -> bool:
    return isinstance(value, numbers.Number) or _is_bool(value)


def render_rows(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """Aligned plain-text table: numbers right-aligned, text left-aligned, two spaces between.

    A column is numeric when every value in it is a number (or missing); a missing value shows as
    ``nan`` in a numeric column and as nothing in a text column.
    """
    rows = [list(r) for r in rows]
    ncol = len(header)
    numeric = [
        all(_is_number(r[j]) or r[j] is None for r in rows) and any(_is_number(r[j]) for r in rows)
        for j in range(ncol)
    ]
    missing = ("nan", "")
    cells = [
        [missing[not numeric[j]] if _is_missing(v) else format_cell(v) for j, v in enumerate(r)]
        for r in rows
    ]
    widths = [max([len(header[j])] + [len(c[j]) for c in cells]) for j in range(ncol)]

    def line(values):
        parts = [
            v.rjust(widths[j]) if numeric[j] else v.ljust(widths[j]) for j, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(header)), *(line(c) for c in cells)])


def render_frame(df, columns: Sequence[str] | None = None) -> str:
    """:func:`render_rows` over the given columns of a DataFrame (those that exist), in order."""
    cols = list(df.columns) if columns is None else [c for c in columns if c in df.columns]
    rows = ([_plain(v) for v in row] for row in df[cols].itertuples(index=False, name=None))
    return render_rows(cols, rows)


def _plain(value):
    """A Python scalar (numpy scalars unwrapped), or None for a missing value (pandas NA/NaT)."""
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        value = value.item()
    if value is None or isinstance(value, str | bool | int | float):
        return value
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def json_records(df) -> list[dict]:
    """Rows of a DataFrame as JSON-ready dicts: NaN, infinities and missing values become None."""
    records = []
    for row in df.itertuples(index=False, name=None):
        rec = {}
        for col, v in zip(df.columns, row, strict=True):
            v = _plain(v)
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            rec[str(col)] = v
        records.append(rec)
    return records


def show_progress(args) -> bool:
    """Show a progress bar: when ``--progress`` was given, or when stderr is a terminal."""
    if args.progress:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def require_events(df, path):
    """``df`` (an :func:`masktopo.analysis.runs.analyze_run` table), or a one-line error saying
    why the run at ``path`` gave no rows (no mask events yet, or only bad event files)."""
    if df.empty:
        from masktopo.errors import MaskFileError

        bad = df.attrs["bad_events"]
        if not bad:
            raise MaskFileError(path, "the run has no mask events yet (events.jsonl is empty)")
        raise MaskFileError(
            path, f"no event could be analyzed: all {len(bad)} selected event files are bad"
        )
    return df


def warning_printer():
    """A ``warnings.showwarning`` for one command: each warning as one line, ``masktopo:
    warning: <message>``, and a message given again (the same bad line of a run read twice)
    only once."""
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        if text not in seen and sys.stderr is not None:
            seen.add(text)
            print(f"masktopo: warning: {text}", file=sys.stderr)

    return show


def require_stdout() -> None:
    """Fail (one line, before any work) when standard output is closed (``>&-``)."""
    from masktopo.errors import MaskTopoError

    if sys.stdout is None or getattr(sys.stdout, "closed", False):
        raise MaskTopoError("standard output is closed; write to a file with --out FILE")


def write_stdout(text: str) -> None:
    """Write ``text`` to standard output and flush it."""
    require_stdout()
    sys.stdout.write(text)
    sys.stdout.flush()


def add_progress(p) -> None:
    """``--progress``, the same for every command that shows a progress bar."""
    p.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar on stderr even when it is not a terminal",
    )


def add_config_arguments(p, command: str, out_help: str, out_metavar: str = "DIR") -> None:
    """``--out``, ``--config``, ``--set`` and ``--print-config`` of a command whose options are a
    typed config (:mod:`masktopo.options`)."""
    p.add_argument("--out", "-o", metavar=out_metavar, default=None, help=out_help)
    p.add_argument(
        "--config",
        metavar="FILE",
        help=f"a TOML config: top-level keys or a [{command}] table (see configs/ and "
        "--print-config)",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config field, also those without a flag, in TOML value syntax (--set "
        "name=0.1, --set name=word, --set name=[0.3,0.6]); --print-config lists them",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config as TOML (ready to edit and rerun with --config) and exit",
    )


def print_config(cfg, table: str, header: str) -> None:
    """Write ``cfg`` to stdout as TOML that ``--config`` reads back into the same config."""
    from masktopo.options import to_toml

    write_stdout(to_toml(cfg, table=table, header=header))


def apply_options(args, *classes) -> None:
    """For each option group (:class:`masktopo.options.Options`, ``RunOptions``, ...): check the
    flags given and set every option of the group on ``args`` to its value (the declared default
    where no flag was given)."""
    from masktopo.options import fields, flag_values, gather

    for cls in classes:
        values = gather(cls, flags=flag_values(args, cls))
        for f in fields(cls):
            if hasattr(args, f.name):
                setattr(args, f.name, getattr(values, f.name))
