"""``masktopo info``: what a mask file or run directory holds (layers, shapes, densities)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

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
        "--layers",
        action="append",
        metavar="GLOB",
        help="only the layers whose names match one of these glob patterns (comma separated; "
        "repeat the flag to add more)",
    )
    p.add_argument(
        "--include",
        action="append",
        metavar="CLASS",
        help="tensors of a model folder described besides its linear layers: embeddings, head",
    )
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
    meta = dict(info.get("meta") or {})
    event_fields = meta.pop("event", None) if isinstance(meta.get("event"), dict) else None
    if meta:
        lines.append(f"  meta: {json.dumps(meta, default=str, sort_keys=True)}")
    # a run's event: its fields as words, wrapped (the per-layer nnz are the table)
    if event_fields:
        import textwrap

        fields = [f"{k}={format_cell(v) if not isinstance(v, dict | list) else json.dumps(v)}"
                  for k, v in sorted(event_fields.items())
                  if k not in ("nnz", "file") and v is not None]  # fmt: skip
        lines += textwrap.wrap(", ".join(fields), width=100, initial_indent="  event: ",
                               subsequent_indent="    ", break_on_hyphens=False)  # fmt: skip
    if "n_events" in info:
        event = info.get("event")
        described = f" (describing event {event})" if event is not None else ""
        lines.append(f"  run events: {info['n_events']}{described}")
    if info.get("solves"):  # a prune run: its solves per method (the final stage of each)
        by: dict[str, list[str]] = {}
        for sv in info["solves"]:
            if sv.get("stage") == sv.get("stages"):
                by.setdefault(str(sv["method"]), []).append(format_cell(sv["sparsity"]))
        text = "; ".join(f"{m} at {', '.join(v)}" for m, v in by.items())
        lines.append(f"  solves: {text} (results.csv; masktopo plot {info['path']} draws them)")
    if "skipped" in info:
        counts = Counter(t["class"] for t in info["skipped"])
        what = ", ".join(f"{n} {c}" for c, n in sorted(counts.items()))
        hint = ""
        if {"embedding", "head"} & counts.keys():  # the classes --include can add
            hint = "; --include embeddings,head adds the embeddings and the head"
        lines.append(
            f"  files: {info['n_files']}   not analyzed: {len(info['skipped'])} tensors"
            + (f" ({what}{hint})" if what else "")
        )
    header = ["name", "kind", "shape", "nnz", "density"]
    structure = bool(info["layers"]) and "nm" in info["layers"][0]
    if structure:
        header += ["dtype", "N:M", "deg_out min-max", "deg_in min-max"]
    rows = []
    for layer in info["layers"]:
        row = [layer["name"], layer["kind"], "x".join(str(s) for s in layer["shape"]),
               layer["nnz"], layer["density"]]  # fmt: skip
        if structure:
            row += [layer["dtype"], layer["nm"] or "-",
                    f"{layer['deg_out_min']}-{layer['deg_out_max']}",
                    f"{layer['deg_in_min']}-{layer['deg_in_max']}"]  # fmt: skip
        rows.append(tuple(row))
    table = render_rows(tuple(header), rows)
    lines.extend("  " + line for line in table.splitlines())
    return "\n".join(lines)


def run(args) -> int:
    from masktopo.errors import UnknownNameError
    from masktopo.inputs import info

    layers = _split(args.layers)
    include = _split(args.include)
    for item in include:
        if item not in ("embeddings", "head"):
            raise UnknownNameError("tensor class", item, ("embeddings", "head"))
    infos = [info(path, zeros_as_mask=args.zeros_as_mask, layers=layers, include=include)
             for path in args.paths]  # fmt: skip
    if args.json:
        sys.stdout.write(json.dumps(infos, indent=2, default=str) + "\n")
    else:
        sys.stdout.write("\n\n".join(describe(i) for i in infos) + "\n")
    return 0


def _split(values: list[str] | None) -> list[str]:
    """The items of a repeated, comma-separated flag."""
    return [v.strip() for item in values or () for v in item.split(",") if v.strip()]
