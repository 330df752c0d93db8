"""Entry point of the ``masktopo`` command (console script ``cli.main:main``, ``python -m
masktopo``).

Exit codes: 0 on success, 2 on a user error (a :class:`~masktopo.errors.MaskTopoError`, an
unreadable or unwritable file, a usage error), 130 when interrupted (Ctrl-C), 143 when terminated
(SIGTERM, which unwinds the command as Ctrl-C does: temporary files removed, runs resumable). A
user error prints one line, ``masktopo: error: <message>``, on stderr and never a traceback; an
interruption one line, ``masktopo: interrupted`` (with how to resume, for commands that can).

The first analysis after an install compiles the spectral kernel (numba, about 30 s): the commands
that analyze say so once on stderr (``masktopo: note: compiling the spectral kernel, ...``) when
numba's cache is cold and stderr is a terminal (or ``--progress`` is given); ``analyze`` and
``demo`` say it where their analysis starts, the others before they run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence

from masktopo import __version__
from masktopo.distributed import exit_process
from masktopo.errors import MaskTopoError

from . import (
    analyze,
    demo,
    info,
    pags,
    plot,
    prune,
    prune_bench,
    report,
    search,
    summarize,
    sweep,
    train,
)
from ._output import compile_notice, show_progress, warning_printer

#: The subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS = (analyze, info, pags, train, prune, sweep, summarize, search, prune_bench, plot,
               report, demo)  # fmt: skip

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
#: 128 + SIGTERM, as a shell reports a process that SIGTERM ended.
EXIT_TERMINATED = 143
#: Commands that run the compiled spectral kernel and are noticed here, before they run (analyze
#: and demo give the notice themselves, once their inputs are read).
COMPILING = ("plot", "report", "pags")
#: Flags that make a command list or print something instead of working.
_NO_WORK = ("list_methods", "list_metrics", "print_config")


class Parser(argparse.ArgumentParser):
    """argparse with a short usage line in its error messages.

    The full usage of ``train``, ``pags`` or ``prune`` runs to 15–20 lines, which push the one
    line that says what is wrong out of sight; an error shows the positional arguments and
    ``[options]`` instead (``--help`` still shows everything).
    """

    def format_usage(self) -> str:
        full = super().format_usage()
        if full.count("\n") <= 3:
            return full
        positionals = [a for a in self._actions if not a.option_strings]
        formatter = self._get_formatter()
        formatter.add_usage(None, positionals, [])
        short = formatter.format_help().rstrip("\n")
        return f"{short} [options]  ('{self.prog} --help' lists them)\n"


def unrecognized(extra: Sequence[str], parser: argparse.ArgumentParser) -> str:
    """The message for arguments ``parser`` does not know, with the closest known option of
    each misspelled flag (``--densty``: did you mean ``--density``?)."""
    import difflib

    known = [s for a in parser._actions for s in a.option_strings]
    hints = []
    for flag in (arg.split("=", 1)[0] for arg in extra if arg.startswith("--")):
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.7)
        if close:
            hints.append(f"{flag}: did you mean {close[0]}?")
    text = f"unrecognized arguments: {' '.join(extra)}"
    return text + (f" ({'; '.join(hints)})" if hints else "")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``masktopo`` command with all subcommands."""
    parser = Parser(
        prog="masktopo",
        description="Topology of sparse neural networks: mask files and mask-graph metrics.",
        epilog="Run 'masktopo COMMAND --help' for a command's options; 'masktopo demo' to try it.",
    )
    parser.add_argument("--version", action="version", version=f"masktopo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        sub = module.add_parser(subparsers)
        sub.set_defaults(run=module.run, parser=sub)
    return parser


def error_line(exc: BaseException) -> str:
    """One line describing a user error (whitespace, newlines included, collapsed)."""
    if isinstance(exc, OSError) and not isinstance(exc, MaskTopoError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename is not None else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _shows_progress(args) -> bool:
    """The progress rule (``--progress``, or stderr a terminal) for any command's ``args``."""
    return show_progress(argparse.Namespace(progress=getattr(args, "progress", False)))


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM (:func:`_on_sigterm`), so that a command unwinds as on
    Ctrl-C: temporary files removed, run directories left resumable."""


def _on_sigterm(signum, frame):
    raise Terminated


@contextlib.contextmanager
def _sigterm_unwinds():
    """SIGTERM raises :class:`Terminated` while a command runs (in the main thread only: a
    handler cannot be set elsewhere); the previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _interrupted_by(exc: BaseException) -> KeyboardInterrupt | None:
    """The :class:`KeyboardInterrupt` (Ctrl-C, or :class:`Terminated`) in ``exc``'s chain: numba
    turns one that arrives while it loads a compiled function into a ``SystemError``."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _interrupted(exc: KeyboardInterrupt, args) -> int:
    """One line saying the command was stopped (and how to continue a run), and the exit code."""
    term = isinstance(exc, Terminated)
    more = ""
    if args is not None and hasattr(args, "resume"):
        more = f"; a run it left is continued with --resume (masktopo {args.command} --help)"
    print(f"masktopo: {'terminated' if term else 'interrupted'}{more}", file=sys.stderr)
    return EXIT_TERMINATED if term else EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``masktopo`` command on ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = None
    try:
        with _sigterm_unwinds():
            parser = build_parser()
            args, extra = parser.parse_known_args(argv)
            if extra:  # named by the command they were given to, with suggestions
                target = getattr(args, "parser", parser)
                target.error(unrecognized(extra, target))
            with warnings.catch_warnings():
                # Every command shows its warnings (not once per process: tests and notebooks
                # run several), one line each, a repeated one once.
                warnings.simplefilter("always", UserWarning)
                warnings.showwarning = warning_printer()
                if args.command in COMPILING and not any(getattr(args, a, False) for a in _NO_WORK):
                    compile_notice(_shows_progress(args))
                return int(args.run(args) or 0)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return _exit_code(exc)
    except KeyboardInterrupt as exc:
        return _interrupted(exc, args)
    except SystemError as exc:
        stop = _interrupted_by(exc)
        if stop is None:
            raise
        return _interrupted(stop, args)
    except BrokenPipeError:
        # stdout closed early (``masktopo analyze ... | head``): not an error worth a message.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1
    except (MaskTopoError, OSError) as exc:
        print(f"masktopo: error: {error_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """Destroy the torchrun process group a command started (nothing when none did)."""
    launched = sys.modules.get("masktopo.distributed")  # imported only by the commands that use it
    if launched is not None:
        launched.close_world()


if __name__ == "__main__":
    exit_process(main())
