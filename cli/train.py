"""``masktopo train``: sparse training that records every mask (docs/trainer.md).

The configuration comes from defaults, then ``--config FILE.toml``, then the flags (and ``--set
KEY=VALUE`` for any other field); with ``--resume RUN`` it comes from the run's run.json and only
fields that do not change the result may be given. Names and values are checked, and the data
read, before the run directory is created, so a bad invocation writes nothing.
"""

from __future__ import annotations

import argparse
import math
import sys

from ._output import integer, number, render_rows, show_progress

_DESCRIPTION = """\
Train a sparse network with a sparsification method and record every mask change into a run
directory (run.json, events.jsonl, masks/event-NNNNNN.safetensors, checkpoint.pt, summary.json);
analyze it with 'masktopo analyze RUN'. Methods: dense, static (a PaI mask or --init-masks FILE),
itop, set, rigl (dynamic sparse training), gmp, granet (gradual pruning). Configs with the
published setups are in configs/. Under 'torchrun --nproc_per_node=K -m masktopo train ...' the
batch is split across K processes and the masks stay identical on every rank."""

#: Flags that map to TrainConfig fields: (flag, field, type, help).
_FLAGS = (
    ("--method", "method", str, "sparsification method (default static); see --list-methods"),
    ("--model", "model", str, "zoo network: resnet18 resnet34 resnet20 resnet50 vgg16 vgg19 "
     "lenet5 lenet300 mlpnet spiral-mlp (default lenet300)"),
    ("--dataset", "dataset", str, "dataset: cifar10 cifar100 tiny-imagenet mnist fashion-mnist "
     "cubist-spiral (default fashion-mnist)"),
    ("--data-dir", "data_dir", str, "folder with the dataset's files (default: its standard "
     "place)"),
    ("--density", "density", float, "final fraction of maskable weights kept, in (0, 1]"),
    ("--epochs", "epochs", int, "training epochs (default 10)"),
    ("--batch-size", "batch_size", int, "global minibatch size (default 128)"),
    ("--lr", "lr", float, "peak learning rate (default 0.1)"),
    ("--optimizer", "optimizer", str, "sgd (momentum 0.9, Nesterov; default) or adamw"),
    ("--update-interval", "update_interval", int, "delta T: steps between mask updates "
     "(method default: itop/set 1500, rigl 100, gmp/granet 1000)"),
    ("--growth", "growth", str, "regrowth: random, gradient, momentum, random_unfired"),
    ("--init-method", "init_method", str, "static: the PaI method of the mask (default erk)"),
    ("--init-masks", "init_masks", str, "static: a mask file to train (e.g. pags/best.safetensors)"),
    ("--init-density", "init_density", float, "gmp/granet: density before pruning (1 = dense)"),
    ("--seed", "seed", int, "seed of every random draw (default 0)"),
    ("--device", "device", str, "auto (default), cpu or cuda"),
    ("--max-steps", "max_steps", int, "stop after this many steps (schedules keep their length)"),
    ("--dump-weights", "dump_weights", str, "weights in the event files, stored at the kept "
     "positions only: all (every event, default), ends (init and final) or none"),
    ("--checkpoint-every", "checkpoint_every", int, "steps between checkpoints within an epoch "
     "(default 500; 0: only at the end of each epoch); a killed run resumes from the last one"),
)  # fmt: skip


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a sparse network, recording every mask",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag, dest, kind, text in _FLAGS:
        p.add_argument(flag, dest=dest, type={int: integer, float: number}.get(kind, str), default=None, help=text,
                       metavar=dest.upper())  # fmt: skip
    p.add_argument("--out", metavar="DIR", help="the run directory to create (new or empty)")
    p.add_argument("--config", metavar="FILE", help="a TOML config (see configs/)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in RUN from its checkpoint")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config field (TOML value syntax: --set label_smoothing=0.1 --set "
        "lr_schedule=cosine); see docs/trainer.md for the fields",
    )
    p.add_argument("--progress", action="store_true", help="progress bar even when not a tty")
    p.add_argument("--list-methods", action="store_true", help="list the methods and exit")
    return p


def list_methods() -> str:
    from masktopo.trainer.config import METHOD_DEFAULTS, METHODS

    docs = {
        "dense": "every weight trained (baseline)",
        "static": "a fixed mask from a PaI method or a mask file",
        "itop": "ITOP: prune-and-regrow through the whole run (SET-ITOP; RigL-ITOP with "
        "--growth gradient)",
        "set": "SET in ITOP form: magnitude drop, random growth",
        "rigl": "RigL: gradient growth, alpha 0.3, updates stop at 75% of training",
        "gmp": "gradual magnitude pruning on the cubic schedule",
        "granet": "GMP plus zero-cost neuroregeneration (dense- or sparse-to-sparse)",
    }
    rows = []
    for name in METHODS:
        d = METHOD_DEFAULTS[name]
        dt = d.get("update_interval")
        rows.append((name, "" if dt is None else dt, d.get("growth") or "", docs[name]))
    return render_rows(("name", "delta_T", "growth", "description"), rows)


def _parse_sets(items: list[str]) -> dict:
    from masktopo.errors import MaskValidationError
    from masktopo.trainer.config import tomllib

    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise MaskValidationError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare word: a string
        out[key] = value
    return out


def _overrides(args) -> dict:
    from masktopo.trainer.config import check_keys, coerce

    values = {dest: getattr(args, dest) for _, dest, _, _ in _FLAGS}
    values = {k: v for k, v in values.items() if v is not None}
    sets = _parse_sets(args.sets)
    check_keys(sets, "--set field")
    for key, value in sets.items():
        values[key] = coerce(key, value, "--set")
    return values


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
    from masktopo.trainer import config as tc

    overrides = _overrides(args)
    if args.resume:
        if args.config:
            raise MaskValidationError("--resume takes its config from the run; drop --config")
        if args.out and args.out != args.resume:
            raise MaskValidationError("--resume RUN continues RUN in place; drop --out")
        from pathlib import Path

        from masktopo.trainer.loop import resume_config

        cfg = resume_config(Path(args.resume), **overrides)
        out = args.resume
    else:
        if not args.out:
            args.parser.error("the following arguments are required: --out")
        cfg = tc.load_toml(args.config, **overrides) if args.config else tc.TrainConfig(
            **overrides)  # fmt: skip
        out = args.out
    cfg = tc.resolve(cfg)
    from masktopo.trainer.loop import train

    result = train(cfg, out, resume=bool(args.resume), progress=show_progress(args))
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        print(_summary(result), file=sys.stdout)
    return 0
