"""``masktopo info``: what a mask file or run directory holds (layers, shapes, densities)."""

from __future__ import annotations

import argparse
import json
import sys

from ._output import format_cell, render_rows


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "info",
        help="layers, shapes and densities of mask files",
        description="Describe each PATH (a mask file, a checkpoint or a run directory) without "
        "analyzing it: format, layers, counts, weights and, for run directories, the events.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="mask files or run directories")
    p.add_argument("--json", action="store_true", help="print a JSON list with one object per PATH")
    p.add_argument(
        "--zeros-as-mask",
        action="store_true",
        help="for checkpoints without masks: each weight's nonzeros define its mask",
    )
    return p


def describe(info: dict) -> str:
    """Text description of one :func:`masktopo.info` result."""
    lines = [str(info["path"])]
    lines.append(
        f"  format: {info['format']}   layers: {info['n_layers']}   "
        f"weights: {'yes' if info.get('has_weights') else 'no'}"
    )
    lines.append(
        f"  nnz: {info['nnz']:,} of {info['numel']:,}   density: {format_cell(info['density'])}"
    )
    if info.get("meta"):
        lines.append(f"  meta: {json.dumps(info['meta'], default=str, sort_keys=True)}")
    if "n_events" in info:
        event = info.get("event")
        described = f" (describing event {event})" if event is not None else ""
        lines.append(f"  run events: {info['n_events']}{described}")
    rows = [
        (
            layer["name"],
            layer["kind"],
            "x".join(str(s) for s in layer["shape"]),
            layer["nnz"],
            layer["density"],
        )
        for layer in info["layers"]
    ]
    table = render_rows(("name", "kind", "shape", "nnz", "density"), rows)
    lines.extend("  " + line for line in table.splitlines())
    return "\n".join(lines)


def run(args) -> int:
    from masktopo.inputs import info

    infos = [info(path, zeros_as_mask=args.zeros_as_mask) for path in args.paths]
    if args.json:
        sys.stdout.write(json.dumps(infos, indent=2, default=str) + "\n")
    else:
        sys.stdout.write("\n\n".join(describe(i) for i in infos) + "\n")
    return 0
