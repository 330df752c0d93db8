"""``masktopo demo``: the quick start on an embedded example, with no data to download.

Builds a CIFAR ResNet-18 mask set (ERK at density 0.05, Kaiming-normal weights, seed 0), saves it as
a safetensors file, loads it back and prints its layer metrics and the network summary.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ._output import compile_notice, fit_table, frame_rows, render_rows, terminal_width
from .analyze import KEY_COLUMNS, TABLE_COLUMNS, hidden_note

FILE_NAME = "demo-resnet18-erk.safetensors"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="save and analyze an embedded example mask set (no data needed)",
        description="Save a random ERK mask set of a CIFAR ResNet-18 (density 0.05, with "
        f"weights, seed 0) to DIR/{FILE_NAME}, load it back and print its metrics.",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="directory to save the example in (created if needed; default: a new temporary "
        "directory)",
    )
    return p


def run(args) -> int:
    from masktopo import analysis, examples, store
    from masktopo.files import writable_folder

    if args.out is None:
        out_dir = Path(tempfile.mkdtemp(prefix="masktopo-demo-"))
    else:
        out_dir = Path(args.out)
        writable_folder(out_dir, "the demo")  # one line when it is a file, say
        out_dir.mkdir(parents=True, exist_ok=True)
    maskset = examples.demo_maskset()
    path = store.save(out_dir / FILE_NAME, maskset)
    print(f"saved {maskset!r}\n   to {path}\n")
    sys.stdout.flush()

    loaded = store.load(path)
    compile_notice(_stderr_is_terminal())
    df = analysis.analyze(loaded)
    width = terminal_width()
    text, hidden = fit_table(*frame_rows(df, TABLE_COLUMNS), width, keep=KEY_COLUMNS)
    print(text)
    network = analysis.aggregate(df)
    rows = [(k, v) for k, v in network.items() if k not in ("level", "layer", "reason")]
    print("\nnetwork (aggregated over layers):")
    print(render_rows(("metric", "value"), rows))
    print(f"\nnext: masktopo analyze {path} --format csv --out metrics.csv")
    sys.stdout.flush()
    hidden_note(hidden, width, f"masktopo analyze {path} --columns all")
    return 0


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
