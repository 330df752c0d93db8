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

from masktopo import __version__
from masktopo.options import gather

from ._output import add_config_arguments, add_progress, print_config, render_rows, show_progress

_DESCRIPTION = """\
Train a sparse network with a sparsification method and record every mask change into a run
directory (run.json, events.jsonl, masks/event-NNNNNN.safetensors, checkpoint.pt, summary.json);
analyze it with 'masktopo analyze RUN'. Methods: dense, static (a PaI mask or --init-masks FILE),
itop, set, rigl (dynamic sparse training), gmp, granet (gradual pruning). Configs with the
published setups are in configs/. Under 'torchrun --nproc_per_node=K -m masktopo train ...' the
batch is split across K processes and the masks stay identical on every rank."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    from masktopo.options import add_arguments
    from masktopo.trainer.config import TrainConfig

    p = subparsers.add_parser(
        "train",
        help="train a sparse network, recording every mask",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p, TrainConfig)  # every option with a flag, declared in TrainConfig
    add_config_arguments(p, "train", "the run directory to create (new or empty)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in RUN from its checkpoint")
    add_progress(p)
    p.add_argument("--list-methods", action="store_true", help="list the methods and exit")
    return p


def list_methods() -> str:
    from masktopo.trainer.methods import METHODS

    rows = []
    for name, cls in METHODS.items():
        dt = cls.defaults.get("update_interval")
        growth = cls.defaults.get("growth")
        rows.append((name, "" if dt is None else dt, growth or "", cls.summary))
    return render_rows(("name", "delta_T", "growth", "description"), rows)


def _summary(result) -> str:
    cfg = result.config
    f = result.final

    def pct(v):
        return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.2f}%"

    lines = [
        f"{cfg.method} {cfg.model} on {cfg.dataset}: {result.steps} steps "
        f"({result.epochs:.2f} epochs) in {result.seconds:.1f} s",
        f"  final density {result.density:.6g} (target {cfg.density:g}), "
        f"{result.n_events} mask events",
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
        cfg = gather(tc.TrainConfig, config=args.config, table="train", flags=flags, sets=sets)
        out = args.out
    cfg = tc.resolve(cfg)
    if args.print_config:
        print_config(cfg, "train", f"masktopo train --config FILE (masktopo {__version__})")
        return 0
    if out is None:
        args.parser.error("the following arguments are required: --out")
    from masktopo.trainer.loop import train

    result = train(cfg, out, resume=bool(args.resume), progress=show_progress(args))
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        print(_summary(result), file=sys.stdout)
    return 0
