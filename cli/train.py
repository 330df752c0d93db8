"""``masktopo train``: sparse training that records every mask (docs/trainer.md).

Every flag is derived from :class:`masktopo.trainer.config.TrainConfig`, where each option is
declared once. The configuration comes from defaults, then ``--config FILE.toml``, then the flags
(and ``--set KEY=VALUE`` for any other field); ``--print-config`` prints the resolved
configuration as TOML instead of training (``--print-config > x.toml`` then ``--config x.toml``
runs the same). With ``--resume RUN`` it comes from the run's run.json and only fields that do not
change the result may be given. Names and values are checked, and the data read, before the run
directory is created, so a bad invocation writes nothing.
"""

from __future__ import annotations

import argparse
import math
import sys

from masktopo.options import gather

from ._output import (
    add_config_arguments,
    add_progress,
    command_config,
    plain_text,
    print_config,
    show_progress,
)

_DESCRIPTION = """\
Train a sparse network with a sparsification method and record every mask change into a run
directory (run.json, events.jsonl, masks/event-NNNNNN.safetensors, checkpoint.pt, summary.json);
analyze it with 'masktopo analyze RUN'. Methods: dense, static (a PaI mask or --init-masks FILE),
itop, set, rigl (dynamic sparse training), gmp, granet (gradual pruning), chita (gradual CHITA
pruning), gap (scheduled grow-and-prune); --list-methods describes them. The published setups
ship as configs: --list-configs, then --config NAME. Under 'torchrun --nproc_per_node=K -m
masktopo train ...' the batch is split across K processes and the masks stay identical on every
rank."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    import shutil
    import textwrap

    from masktopo.options import add_arguments, settable_help
    from masktopo.trainer.config import TrainConfig

    width = max(shutil.get_terminal_size().columns - 2, 40)
    by_method = textwrap.fill("Defaults shown as \"the method's\" depend on --method: 'masktopo "
                              "train --list-methods' lists every method's.", width)  # fmt: skip
    p = subparsers.add_parser(
        "train",
        help="train a sparse network, recording every mask",
        description=_DESCRIPTION,
        epilog=f"{settable_help(TrainConfig, width=width)}\n\n{by_method}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p, TrainConfig)  # every option with a flag, declared in TrainConfig
    add_config_arguments(p, "train", "the run directory to create (new or empty; required to "
                         "train)")  # fmt: skip
    p.add_argument("--resume", metavar="RUN", help="continue the run in RUN from its checkpoint")
    add_progress(p)
    p.add_argument("--list-methods", action="store_true",
                   help="list the methods with all their defaults and exit")  # fmt: skip
    return p


def _setting(value) -> str:
    """A default as ``--set`` writes it (TOML): ``true``, ``0.5``, ``erk``; ``none`` when unset."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_setting(v)}" for k, v in value.items()) + "}"
    return str(value)


def describe_method(cls) -> str:
    """One method's description as plain text: its ``summary``, else the first paragraph of its
    docstring (reST markup removed)."""
    text = cls.summary or (cls.__doc__ or "").strip().split("\n\n")[0]
    return plain_text(text)


def list_methods(width: int | None = None) -> str:
    """Every method: its name and plain-text description, then every default it sets for the
    method-specific options (``name=value``), wrapped to ``width`` (default: the terminal's)."""
    import shutil
    import textwrap

    from masktopo.trainer.methods import METHODS

    if width is None:
        width = max(shutil.get_terminal_size().columns, 60)
    pad = max(len("method"), *(len(n) for n in METHODS)) + 2
    lines = ["method".ljust(pad) + "description; defaults of the method-specific options"]
    for name, cls in METHODS.items():
        lines += textwrap.wrap(describe_method(cls), width, initial_indent=name.ljust(pad),
                               subsequent_indent=" " * pad) or [name]  # fmt: skip
        defaults = ", ".join(f"{k}={_setting(v)}" for k, v in cls.defaults.items())
        if defaults:
            lines += textwrap.wrap("defaults: " + defaults, width, initial_indent=" " * pad,
                                   subsequent_indent=" " * (pad + 2), break_on_hyphens=False)  # fmt: skip
    lines.append("")
    lines.append("Any default is overridden with its flag or --set NAME=VALUE.")
    return "\n".join(lines)


def _summary(result) -> str:
    cfg = result.config
    f = result.final

    def pct(v):
        return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.2f}%"

    lines = [
        f"{cfg.method} {cfg.model} on {cfg.dataset}: {result.steps} steps "
        f"({result.epochs:.2f} epochs) in {result.seconds:.1f} s",
        f"  final density {result.density:.6g} ("
        + (
            "the masks of --init-masks"
            if cfg.init_masks is not None and cfg.method == "static"
            else f"target {cfg.density:g}"
        )
        + f"), {result.n_events} mask events",
        f"  train loss {f.get('train_loss', float('nan')):.4f}, train acc "
        f"{pct(f.get('train_acc'))}, val acc {pct(f.get('val_acc'))}, test acc "
        f"{pct(f.get('test_acc'))} (final model; the test set selected nothing)",
    ]
    if "R_s" in f:
        lines.append(f"  ITOP rate R_s {f['R_s']:.4f}")
    if result.out is not None:
        lines.append(f"  run directory: {result.out}  (masktopo analyze {result.out})")
    return "\n".join(lines)


def run(args) -> int:
    if args.list_methods:
        print(list_methods())
        return 0
    from masktopo.errors import MaskValidationError
    from masktopo.options import flag_values, parse_sets
    from masktopo.trainer import config as tc

    flags = flag_values(args, tc.TrainConfig)
    sets = parse_sets(args.sets)
    if args.resume:
        if args.config:
            raise MaskValidationError("--resume takes its config from the run; drop --config")
        if args.out and args.out != args.resume:
            raise MaskValidationError("--resume RUN continues RUN in place; drop --out")
        from pathlib import Path

        from masktopo.trainer.loop import resume_config

        given = gather(tc.TrainConfig, flags=flags, sets=sets)  # each value checked
        cfg = resume_config(Path(args.resume), **{k: getattr(given, k) for k in (*flags, *sets)})
        out = args.resume
    else:
        cfg, given = command_config(args, tc.TrainConfig, "train")
        out = args.out
        if cfg.method == "dense" and "density" not in given:  # dense keeps every weight
            import dataclasses

            cfg = dataclasses.replace(cfg, density=1.0)
        if cfg.method == "static" and cfg.init_masks is not None and "density" in given:
            raise MaskValidationError("static with init_masks trains the masks of that file at "
                                      "their density; drop density (--density)")  # fmt: skip
    cfg = tc.resolve(cfg)
    if args.print_config:
        print_config(cfg, "train")
        return 0
    if out is None:
        args.parser.error("the following arguments are required: --out")
    from masktopo.trainer.loop import train

    result = train(cfg, out, resume=bool(args.resume), progress=show_progress(args))
    from masktopo.distributed import current_world

    if current_world().main:
        print(_summary(result), file=sys.stdout)
    return 0
