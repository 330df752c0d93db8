"""Trainer overheads: masked vs dense step time, and the share of mask updates and dumps.

For one model and batch (default ResNet-18 at CIFAR shapes, batch 128, density 0.01, ERK):

* dense step: forward, loss, backward, SGD step (momentum 0.9, Nesterov, weight decay 5e-4);
* masked step: the same plus the post-step masking of weights and momentum;
* mask update: one ITOP update (magnitude drop, random or gradient growth, every layer);
* dump: recording one event as the trainer does by default (masks bit-packed, the weights at
  the kept positions only, at every event) and, for comparison, masks only: the part on the
  critical path (the kept values gathered and copied to host memory) and the total with the
  background part (bit-packing, checksums and the atomic write), and the file size;
* shares of run time: update / (ΔT · step) at ``--interval`` (default ΔT = 1500, ITOP's), and
  dump / (ΔT · step) at the published intervals ΔT = 100 (RigL), 1000 (GMP, GraNet) and 1500
  (ITOP, SET): the goal is at most 1 %.

Inputs are random tensors of the dataset's shape (no data files needed): the timings do not depend
on the values. On CUDA the steps use bfloat16 autocast and channels-last, as ``masktopo train``
does. The report (Markdown) goes to stdout, progress to stderr.

    python benchmarks/bench_train.py                     # CPU, ResNet-18, batch 128
    python benchmarks/bench_train.py --device cuda       # on a GPU
    python benchmarks/bench_train.py --model lenet5 --dataset fashion-mnist --steps 50
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import log, machine_facts

from masktopo.runs import RunWriter
from masktopo.seeding import generator
from masktopo.trainer.config import TrainConfig, resolve
from masktopo.trainer.masking import Masking
from masktopo.trainer.methods import make_sparsifier
from masktopo.zoo import get_model, get_spec, maskable_parameters


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _setup(args, device, growth):
    spec = get_spec(args.dataset)
    cfg = resolve(TrainConfig(method="itop", model=args.model, dataset=args.dataset,
                              density=args.density, growth=growth,
                              update_interval=args.interval))  # fmt: skip
    model = get_model(args.model, dataset=spec, generator=generator(0, "model")).to(device)
    image = len(spec.in_shape) == 3
    if device.type == "cuda" and image:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)  # fmt: skip
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(args.batch, *spec.in_shape, device=device, generator=g)
    if device.type == "cuda" and image:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, spec.num_classes, (args.batch,), device=device, generator=g)
    return cfg, model, opt, x, y


def _step(model, opt, x, y, amp, masking=None):
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=False)
    loss.backward()
    opt.step()
    if masking is not None:
        masking.apply(opt)


def _time_steps(fn, n, device):
    times = []
    for _ in range(n):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--density", type=float, default=0.01)
    p.add_argument("--interval", type=int, default=1500, help="ΔT for the shares (default 1500)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant (median)")
    p.add_argument("--rounds", type=int, default=3, help="alternating dense/masked rounds")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        log("no CUDA device: nothing to do")
        return 1
    amp = device.type == "cuda"

    cfg, model, opt, x, y = _setup(args, device, "random")
    maskable = maskable_parameters(model)
    total = 100 * args.interval
    sp = make_sparsifier(cfg, steps_per_epoch=args.interval, total_steps=total, device=device)
    masks, _ = sp.init_masks(model, maskable, generator(0, "masks", device=device))

    # dense and masked share one model; masking is switched on for the masked rounds only, and
    # the rounds alternate so that a slow phase of the machine hits both variants alike.
    log(f"warm-up ({args.model}, batch {args.batch}, {device})")
    for _ in range(3):
        _step(model, opt, x, y, amp)
    masking = Masking(model, masks)
    dense_t, masked_t = [], []
    for r in range(args.rounds):
        log(f"round {r + 1}/{args.rounds}: dense")
        dense_t.append(_time_steps(lambda: _step(model, opt, x, y, amp), args.steps, device))
        log(f"round {r + 1}/{args.rounds}: masked")
        masked_t.append(_time_steps(lambda: _step(model, opt, x, y, amp, masking), args.steps,
                                    device))  # fmt: skip
    t_dense, t_masked = statistics.median(dense_t), statistics.median(masked_t)
    # the masking alone, many times: robust to a noisy machine, unlike the difference of two
    # step times of seconds each
    t_apply = _time_steps(lambda: masking.apply(opt), 10 * args.steps, device)

    events = []

    def record(kind, **scalars):
        events.append(kind)

    upd = {}
    for growth in ("random", "gradient"):
        cfg_g = cfg.replace(growth=growth)
        cfg_g = resolve(cfg_g)
        sp = make_sparsifier(cfg_g, steps_per_epoch=args.interval, total_steps=total,
                             device=device)  # fmt: skip
        _step(model, opt, x, y, amp, masking)  # a fresh dense gradient
        times = []
        for k in range(3):
            _sync(device)
            t0 = time.perf_counter()
            sp.update((k + 1) * args.interval - 1, masking, opt, record)
            _sync(device)
            times.append(time.perf_counter() - t0)
        upd[growth] = statistics.median(times)
    assert events, "the sparsifier recorded no update event"

    # Dumps as the trainer records them: masks (bit-packed) with the weights at the kept positions
    # (the default, dump_weights = "all": every event), and masks only for comparison.
    names = list(maskable)
    dumps = {}
    for label, with_w in (("masks + kept weights (default, every event)", True),
                          ("masks only", False)):  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            rec = RunWriter(Path(tmp))
            crit, total_dump = [], []
            for _ in range(5):
                _sync(device)
                t0 = time.perf_counter()
                rec.record({n: masking.masks[n] for n in names},
                           {n: maskable[n] for n in names} if with_w else None,
                           kind="update", step=0, epoch=0)  # fmt: skip
                _sync(device)
                t1 = time.perf_counter()
                rec.flush()
                t2 = time.perf_counter()
                crit.append(t1 - t0)
                total_dump.append(t2 - t0)
            rec.close()
            size = next(Path(tmp, "masks").iterdir()).stat().st_size
        dumps[label] = (statistics.median(crit), statistics.median(total_dump), size)
    dense_bytes = 4 * sum(p.numel() for p in maskable.values())

    n_params = sum(p.numel() for p in model.parameters())
    n_mask = sum(p.numel() for p in maskable.values())
    span = args.interval * t_masked
    print(f"# bench_train: {args.model} ({args.dataset} shapes), batch {args.batch}, "
          f"density {args.density}, device {device}{' (bf16 autocast, channels-last)' if amp else ''}")  # fmt: skip
    print()
    for line in machine_facts([args.device]):
        print(line if line.startswith("- ") else f"- {line}")
    print(f"- {n_params:,} parameters, {n_mask:,} maskable in {len(maskable)} layers; median of "
          f"{args.steps} steps × {args.rounds} alternating rounds")  # fmt: skip
    print()
    print("| what | time | share |")
    print("|---|---|---|")
    print(f"| dense step | {1e3 * t_dense:.1f} ms | |")
    print(f"| masked step (+ post-step masking of weights and momentum) | {1e3 * t_masked:.1f} ms "
          f"| **{100 * (t_masked / t_dense - 1):+.1f}%** vs dense |")  # fmt: skip
    print(f"| post-step masking alone (`Masking.apply`) | {1e3 * t_apply:.2f} ms | "
          f"**{100 * t_apply / t_dense:.2f}%** of a dense step |")  # fmt: skip
    for growth, t in upd.items():
        print(f"| one ITOP update, {growth} growth | {1e3 * t:.1f} ms | {100 * t / span:.3f}% "
              f"of run time at ΔT = {args.interval} |")  # fmt: skip
    print()
    print(f"Dumps (one event file; a dense float32 weight dump would add {dense_bytes / 1e6:.1f} MB "
          f"per event). Share of run time = dump / (ΔT × masked step) at the published update "
          f"intervals (RigL 100, GMP/GraNet 1000, ITOP/SET 1500):")  # fmt: skip
    print()
    print("| dump | file | critical path | total incl. background write | share at ΔT = 100 "
          "| 1000 | 1500 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for label, (t_c, t_d, size) in dumps.items():
        shares = " | ".join(f"{100 * t_c / (dt * t_masked):.3f}% ({100 * t_d / (dt * t_masked):.3f}%)"
                            for dt in (100, 1000, 1500))  # fmt: skip
        print(f"| {label} | {size / 1e6:.2f} MB | {1e3 * t_c:.1f} ms | {1e3 * t_d:.1f} ms | "
              f"{shares} |")  # fmt: skip
    print()
    print("Shares: critical path (total incl. the background thread's packing and writing).")
    per_step = {"dense": dense_t, "masked": masked_t}
    print()
    print("Per-round medians (ms): " + "; ".join(
        f"{k} " + ", ".join(f"{1e3 * v:.1f}" for v in vals) for k, vals in per_step.items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
