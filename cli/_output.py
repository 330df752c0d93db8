"""Output helpers shared by the subcommands: aligned text tables fitted to the terminal, Markdown
tables, JSON records, plain text from reST, and the notices on stderr.

Light at import time (standard library only): pandas is imported only where a value may be pandas NA.
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

#: The narrowest a clipped free-text column (``reason``) is shown; narrower, it is left out.
MIN_CLIPPED = 12
#: What a text table says when it leaves columns out (``{shown}``, ``{total}``, ``{width}``).
HIDDEN_NOTE = (
    "showing {shown} of {total} columns to fit {width} terminal columns; every column: "
    "--columns all, or --format csv/json/markdown"
)
COMPILE_NOTE = "compiling the spectral kernel, once per install (about 30 s)"


#: The output format a ``--out`` file's suffix asks for (``analyze``, ``summarize``).
SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet",
                  ".md": "markdown", ".txt": "table"}  # fmt: skip


def output_format(fmt: str | None, out: str | None) -> str:
    """The output format: ``--format`` when given, else from the ``--out`` suffix, else table."""
    if fmt is not None:
        return fmt
    if out is not None:
        return SUFFIX_FORMATS.get(Path(out).suffix.lower(), "table")
    return "table"


def check_parquet(fmt: str, out: str | None) -> None:
    """Parquet goes to a file and needs pyarrow: say so before any work."""
    import importlib.util

    from masktopo.errors import MaskTopoError

    if fmt != "parquet":
        return
    if out is None:
        raise MaskTopoError("--format parquet needs --out FILE (parquet is not written to stdout)")
    if importlib.util.find_spec("pyarrow") is None:
        raise MaskTopoError(
            "--format parquet needs pyarrow: pip install 'masktopo[parquet]' (or pyarrow)"
        )


def format_cell(value) -> str:
    """Text of one table cell: floats with 6 significant digits, NaN as ``nan``, None as empty,
    a shape (a list of ints) as ``64x3x3x3``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple) and value and all(_is_int(v) for v in value):
        return "x".join(str(int(v)) for v in value)
    if _is_bool(value):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        return "nan" if math.isnan(value) else format(value, ".6g")
    return str(value)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not _is_bool(value)


def _is_bool(value) -> bool:
    if isinstance(value, bool):
        return True
    return type(value).__name__ in ("bool", "bool_") and type(value).__module__ == "numpy"


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_number(value) -> bool:
    return isinstance(value, numbers.Number) or _is_bool(value)


def _cells(header: Sequence[str], rows: Iterable[Sequence]):
    """``(numeric, cells, widths)`` of a table: which columns are numeric, every cell's text and
    each column's width (header included)."""
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
    return numeric, cells, widths


def _lines(header: Sequence[str], numeric, cells, widths) -> str:
    def cell(j: int, v: str) -> str:
        w = widths[j]
        v = v if len(v) <= w else v[: w - 1] + "…"  # a clipped free-text column
        return v.rjust(w) if numeric[j] else v.ljust(w)

    def line(values):
        return "  ".join(cell(j, v) for j, v in enumerate(values)).rstrip()

    return "\n".join([line(list(header)), *(line(c) for c in cells)])


def render_rows(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """Aligned plain-text table: numbers right-aligned, text left-aligned, two spaces between.

    A column is numeric when every value in it is a number (or missing); a missing value shows as
    ``nan`` in a numeric column and as nothing in a text column.
    """
    numeric, cells, widths = _cells(header, rows)
    return _lines(header, numeric, cells, widths)


def terminal_width() -> int | None:
    """The width text tables are fitted to: ``$COLUMNS`` when it is set to a positive integer,
    else the width of the terminal standard output is, else None (no limit: a pipe or a file
    gets every column it asked for)."""
    text = os.environ.get("COLUMNS", "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    try:
        if sys.stdout is not None and sys.stdout.isatty():
            return os.get_terminal_size(sys.stdout.fileno()).columns
    except (AttributeError, ValueError, OSError):
        pass
    return None


def fit_table(
    header: Sequence[str],
    rows: Iterable[Sequence],
    width: int | None,
    *,
    keep: Sequence[str] = (),
    clip: Sequence[str] = ("reason",),
) -> tuple[str, list[str]]:
    """:func:`render_rows` within ``width`` characters a line: ``(text, hidden columns)``.

    The ``keep`` columns are always shown; the others, in order, while they fit (a column that
    does not fit is left out and the next ones are still tried). A free-text column in ``clip``
    that does not fit whole is shown clipped (``…``) to the room left, when that is at least
    :data:`MIN_CLIPPED` characters. ``width=None``: every column.
    """
    header = list(header)
    numeric, cells, widths = _cells(header, rows)
    if width is None:
        return _lines(header, numeric, cells, widths), []
    chosen = [j for j, name in enumerate(header) if name in keep]
    used = sum(widths[j] for j in chosen) + 2 * max(len(chosen) - 1, 0)
    clipped: dict[int, int] = {}
    for j, name in enumerate(header):
        if j in chosen:
            continue
        need = widths[j] + (2 if chosen or clipped else 0)
        if used + need <= width:
            chosen.append(j)
            used += need
        elif name in clip and width - used - 2 >= MIN_CLIPPED:
            clipped[j] = width - used - 2
            used = width
    shown = sorted([*chosen, *clipped])
    hidden = [header[j] for j in range(len(header)) if j not in shown]
    w = [clipped.get(j, widths[j]) for j in shown]
    text = _lines(
        [header[j] for j in shown],
        [numeric[j] for j in shown],
        [[c[j] for j in shown] for c in cells],
        w,
    )
    return text, hidden


def frame_rows(df, columns: Sequence[str] | None = None) -> tuple[list[str], list[list]]:
    """The given columns of a DataFrame that exist (all when None), in order, and its rows as
    plain Python values (missing as None)."""
    cols = list(df.columns) if columns is None else [c for c in columns if c in df.columns]
    rows = [[_plain(v) for v in row] for row in df[cols].itertuples(index=False, name=None)]
    return cols, rows


def render_frame(df, columns: Sequence[str] | None = None) -> str:
    """:func:`render_rows` over the given columns of a DataFrame (those that exist), in order."""
    return render_rows(*frame_rows(df, columns))


def render_markdown(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned; ``|`` in cells escaped)."""
    numeric, cells, _ = _cells(header, rows)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines)


_ROLE = re.compile(r":[a-zA-Z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_LITERAL = re.compile(r"``([^`]+)``")
_REF = re.compile(r"`([^`<]+?)(?:\s*<[^>]*>)?`_{0,2}")
_STRONG = re.compile(r"\*\*([^*]+)\*\*")
_EMPH = re.compile(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])")
_CITATION = re.compile(r"\s*\[[A-Za-z][\w.]*\]_")


def plain_text(text: str) -> str:
    """reST (docstrings, summaries) as plain text for a terminal: roles (``:func:`~a.b.c```
    becomes ``c``), literals, emphasis, references and citations lose their markup, and
    whitespace is collapsed to single spaces."""
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1] if "~" in m.group(0) else
                     m.group(1), text)  # fmt: skip
    text = _LITERAL.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    text = _EMPH.sub(r"\1", text)
    text = _CITATION.sub("", text)
    text = _REF.sub(r"\1", text)
    return " ".join(text.split())


def _plain(value):
    """A Python scalar (numpy scalars unwrapped), a list (a shape), or None for a missing value
    (pandas NA/NaT)."""
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        value = value.item()  # a numpy scalar
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple) or getattr(value, "ndim", None) == 1:
        return [_plain(v) for v in value]  # a shape (a list, or an array read from parquet)
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


def note(text: str) -> None:
    """One line on stderr, ``masktopo: note: <text>``."""
    if sys.stderr is not None:
        print(f"masktopo: note: {' '.join(text.split())}", file=sys.stderr, flush=True)


_COMPILE_NOTED = False


def compile_notice(show: bool = True) -> bool:
    """Say once per process on stderr, before the first analysis, that the compiled spectral
    kernel is being built (:data:`COMPILE_NOTE`), when numba's disk cache does not hold it yet
    (:func:`masktopo.analysis.kernel_cache_is_cold`); ``show=False`` says nothing. Returns
    whether the note was printed. For the command line only: library calls stay silent."""
    global _COMPILE_NOTED
    if _COMPILE_NOTED or not show:
        return False
    from masktopo.analysis import kernel_cache_is_cold

    if not kernel_cache_is_cold():
        return False
    _COMPILE_NOTED = True
    note(COMPILE_NOTE)
    return True


def require_events(df, path):
    """``df`` (an :func:`masktopo.analysis.runs.analyze_run` table), or a one-line error saying
    why the run at ``path`` gave no rows (no mask events yet, or only bad event files)."""
    if df.empty:
        from masktopo.errors import MaskFileError

        bad = df.attrs["bad_events"]
        if not bad:
            raise MaskFileError(path, _why_no_events(path))
        raise MaskFileError(
            path, f"no event could be analyzed: all {len(bad)} selected event files are bad"
        )
    return df


def _why_no_events(path) -> str:
    """Why a run without mask events has none (:meth:`masktopo.runs.Run.no_events_reason`)."""
    from masktopo.errors import MaskTopoError
    from masktopo.runs import read_run

    try:
        return read_run(path).no_events_reason()
    except MaskTopoError:
        return "the run has no mask events yet (events.jsonl is empty)"


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
        type=config_path,
        help=f"a TOML config (top-level keys or a [{command}] table), or the NAME of a shipped "
        "config (--list-configs); --print-config shows the result",
    )
    p.add_argument(
        "--list-configs",
        action=_ListConfigs,
        nargs=0,
        help="list the shipped configs (use one with --config NAME) and exit",
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


def shipped_files(folder: str = "") -> dict[str, str]:
    """The TOML files installed with masktopo in ``masktopo.configs`` (or its sub-folder
    ``folder``): name (without ``.toml``) -> file path, sorted."""
    from importlib.resources import files

    sub = files("masktopo.configs")
    if folder:
        sub = sub / folder
    if not sub.is_dir():
        return {}
    return dict(sorted((f.name.removesuffix(".toml"), str(f)) for f in sub.iterdir()
                       if f.name.endswith(".toml")))  # fmt: skip


def shipped_configs() -> dict[str, str]:
    """The configs installed with masktopo (``masktopo.configs``): name -> file path."""
    found = shipped_files() | {f"repro/{k}": v for k, v in shipped_files("repro").items()}
    return dict(sorted(found.items()))


def config_path(value: str) -> str:
    """``--config``'s value: an existing file as given; else a shipped config's file when
    ``value`` names one (``gap_fmnist_lenet300``, with or without ``.toml``).

    Raises
    ------
    argparse.ArgumentTypeError
        Neither: the message names the closest shipped config and ``--list-configs``.
    """
    if Path(value).exists():
        return value
    name = value.removesuffix(".toml").removeprefix("configs/")
    shipped = shipped_configs()
    if name in shipped:
        return shipped[name]
    text = not_found(name, "config", list(shipped), "--list-configs lists them")
    raise argparse.ArgumentTypeError(f"{value}: {text}")


def not_found(name: str, what: str, shipped: list[str], listing: str) -> str:
    """``no such file, nor a shipped WHAT of that name`` for a file that is not there and whose
    ``name`` is not among the ``shipped`` ones, with the closest of them (when one is close),
    then ``listing`` (where the shipped ones are, or their names)."""
    import difflib

    close = difflib.get_close_matches(name, shipped, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"no such file, nor a shipped {what} of that name{hint}; {listing}"


class _ListConfigs(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        for name, path in shipped_configs().items():
            first = ""
            for line in Path(path).read_text(encoding="utf-8").splitlines():
                if line.startswith("#"):
                    first = line.lstrip("# ").strip()
                    break
            write_stdout(f"{name:34s} {first}\n")
        parser.exit(0)


def command_config(args, cls: type, command: str):
    """A typed-config command's config from its arguments (:func:`add_config_arguments`):
    the defaults of ``cls``, then the ``--config`` file (top-level keys or its ``[command]``
    table), then the flags, then ``--set``; with the names given explicitly
    (:func:`masktopo.options.gather_given`)."""
    from masktopo.options import flag_values, gather_given, parse_sets

    return gather_given(cls, config=args.config, table=command, flags=flag_values(args, cls),
                        sets=parse_sets(args.sets))  # fmt: skip


def print_config(cfg, command: str, usage: str = "--config FILE") -> None:
    """Write ``cfg`` to stdout as TOML that ``--config`` reads back into the same config, under
    a header line that says how (``masktopo COMMAND USAGE``) and which masktopo wrote it."""
    from masktopo import __version__
    from masktopo.options import to_toml

    header = f"masktopo {command} {usage} (masktopo {__version__})"
    write_stdout(to_toml(cfg, table=command, header=header))


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
