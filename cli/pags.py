"""``masktopo pags``: PAGS masks before training (pags-spec §4; docs/pags.md).

Every argument is checked, the model built, the data read and the base mask computed before the
output directory is created, so a bad invocation writes nothing. Under ``torchrun`` the candidates
are split across the processes (gloo process group) and rank 0 writes the files.
"""

from __future__ import annotations

import argparse
import os

from ._output import integer, number, show_progress

SAMPLERS = ("rescore", "rewire")
SELECTIONS = ("layerwise", "global")

_DESCRIPTION = """\
Pruning at Initialization as Graph Sampling. Start from the mask of a PaI method (the base, scored
on the full training set), sample N candidate masks around it, score every layer's graph with the
N23 full-spectrum criteria on the initial weights, and keep the best. Writes into --out:
best.safetensors (best mask + the weights it was scored on), base.safetensors, snapshots/,
candidates.parquet (one row per candidate), run.json; analyze them with 'masktopo analyze'.
Under 'torchrun --nproc_per_node=K -m masktopo pags ...' the candidates are split across K
processes; the result is the same for any K."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "pags",
        help="generate PAGS masks before training (graph-sampled PaI)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--model", metavar="NAME", help="network from the zoo: resnet18 resnet34 resnet20 resnet50 "
      "vgg16 vgg19 lenet5 lenet300 mlpnet spiral-mlp")  # fmt: skip
    a("--dataset", metavar="NAME", help="dataset: cifar10 cifar100 tiny-imagenet imagenet mnist "
      "fashion-mnist cubist-spiral (data-free methods need only its shapes, no files)")  # fmt: skip
    a("--method", metavar="NAME", default="erk",
      help="PaI method the candidates come from (default erk); see --list-methods")  # fmt: skip
    a("--density", type=number, default=None, metavar="D",
      help="fraction of the maskable weights to keep, in (0, 1] (required)")  # fmt: skip
    a("--n", "--candidates", dest="n", type=integer, default=1000, metavar="N",
      help="number of candidate masks to sample (default 1000); under torchrun spell it "
           "--candidates (torchrun reads --n as an abbreviation of its own options)")  # fmt: skip
    a("--iters", type=integer, default=20, metavar="I",
      help="minibatches per candidate's PaI scoring, rescore sampler (default 20)")  # fmt: skip
    a("--batch-size", type=integer, default=128, metavar="B",
      help="minibatch size for the PaI scoring (default 128)")  # fmt: skip
    a("--snapshot-every", type=integer, default=20, metavar="K",
      help="save snapshots/snapshot-T.safetensors every K candidates when the best changed "
      "(default 20; snapshot 0 is the base)")  # fmt: skip
    a("--sampler", choices=SAMPLERS, default="rescore",
      help="rescore: re-run the PaI method on fresh minibatches (noisy weights for data-free "
      "methods; default, author code); rewire: random re-wiring at the base's per-layer counts")  # fmt: skip
    a("--selection", choices=SELECTIONS, default="layerwise",
      help="layerwise: per-layer Pareto acceptance on (IMDB Ramanujan gap, full-spectrum norm), "
      "default; global: keep the whole candidate with the largest mean full-spectrum norm")  # fmt: skip
    a("--repair", action="store_true",
      help="bring each candidate back to the base's per-layer counts (top-|w|) before scoring, so "
      "layer-wise mixing keeps the density exact")  # fmt: skip
    a("--invalid", choices=("zero", "skip"), default="zero",
      help="layers failing the Ramanujan gate count as 0 (N23, default) or are skipped (I23)")  # fmt: skip
    a("--reference", choices=("origin", "base"), default="origin",
      help="full-spectrum distance from the origin (author code, default) or from the base "
      "mask's coordinate")  # fmt: skip
    a("--chunk", type=integer, default=32, metavar="C",
      help="candidates generated and scored per batch (speed only; default 32)")  # fmt: skip
    a("--seed", type=integer, default=0, metavar="S",
      help="run seed: model init and candidate t draw from (S, t) only (default 0)")  # fmt: skip
    a("--device", choices=("cpu", "cuda"), default="cpu",
      help="where PaI scoring and the spectra run (default cpu)")  # fmt: skip
    a("--data-dir", metavar="DIR", default=None,
      help="dataset directory (default: the dataset's standard place)")  # fmt: skip
    a("--out", "-o", metavar="DIR", default=None, help="output directory (required; created)")
    a("--resume", action="store_true",
      help="continue the interrupted run in --out; ends as an uninterrupted run would")  # fmt: skip
    a("--warm-start", metavar="CKPT", default=None,
      help="score on the weights of this checkpoint of --model instead of the initialization, "
      "e.g. warm/checkpoint.pt of 'masktopo train --method dense --density 1 --max-steps 500 "
      "--out warm'")  # fmt: skip
    a("--progress", action="store_true",
      help="show the progress bar even when stderr is not a terminal")  # fmt: skip
    a("--list-methods", action="store_true", help="list the PaI methods and exit")
    return p


def list_methods() -> str:
    from masktopo import pai

    from ._output import render_rows

    rows = []
    for name, cls in pai.METHODS.items():
        doc = (cls.__doc__ or "").strip().splitlines()
        rows.append((name, "yes" if cls.data_free else "", doc[0] if doc else ""))
    return render_rows(("name", "data-free", "description"), rows)


def _init_distributed(device: str) -> None:
    """Join the torchrun process group (gloo: only small objects travel)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def run(args) -> int:
    if args.list_methods:
        print(list_methods())
        return 0
    missing = [f for f, v in (("--model", args.model), ("--dataset", args.dataset),
                              ("--density", args.density), ("--out", args.out)) if v is None]  # fmt: skip
    if missing:
        args.parser.error(f"the following arguments are required: {', '.join(missing)}")
    from masktopo.pags import PagsConfig, run as run_pags  # noqa: I001

    config = PagsConfig(
        model=args.model, dataset=args.dataset, method=args.method, density=args.density,
        n=args.n, iters=args.iters, batch_size=args.batch_size,
        snapshot_every=args.snapshot_every, sampler=args.sampler, selection=args.selection,
        repair=args.repair, seed=args.seed, chunk=args.chunk, invalid=args.invalid,
        reference=args.reference, device=args.device, data_dir=args.data_dir,
        warm_start=args.warm_start,
    )  # fmt: skip
    from masktopo import zoo

    zoo.get_spec(args.dataset)  # names first: cheap, and one clear line each
    if args.model not in zoo.MODEL_NAMES:
        from masktopo.errors import UnknownNameError

        raise UnknownNameError("model", args.model, zoo.MODEL_NAMES)
    from masktopo.pags.runner import check_method

    check_method(args.method)
    _init_distributed(args.device)
    result = run_pags(config, args.out, resume=args.resume, progress=show_progress(args))
    import torch.distributed as dist

    from masktopo.runs.layout import BEST_FILE

    if not dist.is_initialized() or dist.get_rank() == 0:
        sc = result.best_scores.network(config.invalid)[0]
        base = result.base_scores.network(config.invalid)[0]
        print(f"best: network score {sc:.6g} (base {base:.6g}), density "
              f"{result.best.density():.6g}, {result.n_done} candidates -> "
              f"{result.out / BEST_FILE}")  # fmt: skip
    return 0
