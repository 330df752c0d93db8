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
  (ITOP, SET): the goal is at most 1 %;
* GaP (``method="gap"``, ``--density``, uniform layer densities, ``--partitions`` K = 4 balanced
  by parameter count, at most one per maskable layer): the model built afresh under
  :class:`~masktopo.trainer.session.SparseSession` (started as the trainer starts it, SGD with
  momentum state), ``session.after_step`` timed at the boundary steps, events written as the
  trainer writes them (masks and kept weights, ``RunWriter``), critical path and total with the
  background write, and with no run directory for comparison. C-GaP (``gap_mode="cyclic"``):
  the boundary prunes the dense partition to its per-layer counts and grows the next (two
  events); P-GaP (``gap_mode="parallel"``, one process, GaP step L = 1): a replica start
  (snapshot, the combined model loaded, one event) and a round end (combine the K replicas,
  prune every layer, start the next round's replica 0; two events). ``--gap-cycles`` (default 4)
  cycles and rounds are driven, the run directory alternating between None and a temporary
  directory from cycle to cycle (after the ``init`` event, untimed); the weights are moved a
  little between boundaries (untimed) as training would. A figure is the median over a
  partition's boundaries, then the mean over the partitions. Shares: boundary / (L × masked
  step) at the GaP step lengths of the shipped configs, L = 842
  (configs/gap_fmnist_lenet300.toml) and 6255 (configs/gap_resnet50_imagenet.toml); the goal is
  at most 1 %.

Inputs are random tensors of the dataset's shape (no data files needed): the timings do not depend
on the values. On CUDA the steps use bfloat16 autocast and channels-last, as ``masktopo train``
does. The report (Markdown) goes to stdout, progress to stderr. ``--compile`` runs the dense and
masked steps of the default mode through ``torch.compile`` (the forward, default mode; compiled in
the warm-up, before any timing; the GaP rows stay eager).

    python benchmarks/bench_train.py                     # CPU, ResNet-18, batch 128
    python benchmarks/bench_train.py --device cuda       # on a GPU
    python benchmarks/bench_train.py --device cuda --compile  # the same steps with torch.compile
    python benchmarks/bench_train.py --model lenet5 --dataset fashion-mnist --steps 50
    # GaP rows as configs/gap_fmnist_lenet300.toml (model, batch, density; K = 3 layers), ~15 s:
    python benchmarks/bench_train.py --model lenet300 --dataset fashion-mnist --density 0.05

``--sparsify``: the overhead of :func:`masktopo.sparsify` in a user's own loop, on one transformer
block (``nn.TransformerEncoderLayer``, ``batch_first``; CPU: d_model 256, 4 heads, feed-forward
1024, batch 32, sequence 128; CUDA: d_model 1024, 16 heads, feed-forward 4096, batch 32, sequence
512, bfloat16 autocast), random inputs and targets, MSE loss, AdamW. Per training step:

* dense: forward, loss, backward, ``opt.step()`` (no masktopo);
* static: the same with ``sp = masktopo.sparsify(model, opt, method="static", density=0.1, ...)``
  and ``sp.step()`` after ``opt.step()`` (the post-step masking of the weights only);
* rigl: ``method="rigl"``, ``update_interval=100`` (``--interval``): the masking at every step plus
  one drop-and-grow update (and its event) every 100 steps, amortised;

each with ``out=None`` (nothing written) and with ``out=`` a temporary directory (the events are
written by a background thread: RigL's every 100 steps, masks and kept weights). Every variant has
its own copy of the same block and optimizer. After a warm-up, each of ``--rounds`` rounds times
``--steps`` consecutive steps of every variant, interleaved step by step (one step of each loop in
turn, the order rotated from round to round), so that a slow phase of a shared machine hits all
of them alike; a round's value is a variant's median step. A RigL window is placed around one
update step (the run's step counter ``sp.steps`` is moved forward before it; the schedules are
functions of the step): its value is the median ordinary step plus the window's whole excess over
it (the update step, slower steps after it, and waiting for the event's background write at the
end of the window) divided by ΔT. The reported figure is the median over rounds, and the overhead
is relative to the dense median. The post-step masking alone (``Masking.apply``) is also timed
many times, which is robust to a noisy machine.

    python benchmarks/bench_train.py --sparsify                  # CPU, about 1 minute
    python benchmarks/bench_train.py --sparsify --device cuda    # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import log, machine_facts
from torch import nn

import masktopo
from masktopo.runs import RunWriter
from masktopo.seeding import generator
from masktopo.trainer.config import TrainConfig, resolve
from masktopo.trainer.masking import Masking
from masktopo.trainer.methods import make_sparsifier
from masktopo.trainer.session import SparseSession
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


# ---------------------------------------------------------------------------------------------
# --sparsify: masktopo.sparsify in a user's loop, on a transformer block
# ---------------------------------------------------------------------------------------------
_BLOCK_DEFAULTS = {  # cpu, cuda
    "batch": (32, 32),
    "density": (0.1, 0.1),
    "interval": (100, 100),
    "steps": (10, 50),
    "rounds": (5, 5),
    "d_model": (256, 1024),
    "nhead": (4, 16),
    "ff": (1024, 4096),
    "seq": (128, 512),
}


class _Variant:
    """One loop: its own copy of the block and optimizer, and a SparseTraining or None."""

    def __init__(self, label, block, args, device, method=None, out=None):
        self.label, self.method = label, method
        self.model = copy.deepcopy(block).to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-sparsify-") if out else None
        self.sp = None
        if method is not None:
            # schedules long enough that RigL is still updating (at its start rate) in every window
            self.sp = masktopo.sparsify(
                self.model, self.opt, method=method, density=args.density,
                total_steps=100 * args.interval,
                out=Path(self.tmp.name, "run") if self.tmp else None,
                **({"update_interval": args.interval} if method == "rigl" else {}),
            )  # fmt: skip
        self.rounds: list[float] = []
        self.ordinary: list[float] = []
        self.update: list[float] = []

    def step(self, x, y, amp):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            out = self.model(x)
        loss = F.mse_loss(out.float(), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        if self.sp is not None:
            self.sp.step()

    def begin(self, n, interval):
        """Start a window of ``n`` steps; a RigL window holds one update step, in its middle."""
        if self.method == "rigl":
            # the next update step u ((u + 1) % ΔT == 0) at least n // 2 steps ahead
            u = ((self.sp.steps + n // 2) // interval + 1) * interval - 1
            self.sp.steps = u - n // 2
        self._times: list[float] = []
        self._updated: list[bool] = []

    def timed_step(self, x, y, amp, device):
        sp = self.sp
        before = sp.n_events if sp is not None else 0
        _sync(device)
        t0 = time.perf_counter()
        self.step(x, y, amp)
        _sync(device)
        self._times.append(time.perf_counter() - t0)
        self._updated.append(sp is not None and sp.n_events != before)

    def end(self, interval):
        """The window's value: its median step (RigL: amortised over ΔT)."""
        times, updated = self._times, self._updated
        if self.method != "rigl":
            self.rounds.append(statistics.median(times))
            return
        t0 = time.perf_counter()
        self.sp.session.writer.flush()  # wait for the background write of the window's event
        wait = time.perf_counter() - t0
        assert sum(updated) == 1, f"{self.label}: {sum(updated)} update steps in the window"
        ordinary = statistics.median(t for t, u in zip(times, updated, strict=True) if not u)
        excess = sum(times) + wait - len(times) * ordinary
        self.ordinary.append(ordinary)
        self.update.append(next(t for t, u in zip(times, updated, strict=True) if u))
        self.rounds.append(ordinary + excess / interval)

    def close(self):
        info = None
        if self.sp is not None:
            self.sp.finish()
        if self.tmp is not None:
            run = Path(self.tmp.name, "run")
            files = [f for f in run.rglob("*") if f.is_file()]
            info = (len(list((run / "masks").iterdir())), sum(f.stat().st_size for f in files))
            self.tmp.cleanup()
        return info


def _main_sparsify(args, device, amp) -> int:
    for key, values in _BLOCK_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, values[device.type == "cuda"])
    if args.steps < 4:
        log("--sparsify needs --steps 4 or more (a RigL window holds one update step)")
        return 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        block = nn.TransformerEncoderLayer(args.d_model, args.nhead, args.ff, batch_first=True)
    g = torch.Generator(device=device).manual_seed(0)
    shape = (args.batch, args.seq, args.d_model)
    x = torch.randn(*shape, device=device, generator=g)
    y = torch.randn(*shape, device=device, generator=g)

    static = f"static, density {args.density}"
    rigl = f"rigl, density {args.density}, ΔT = {args.interval}"
    variants = [
        _Variant("dense loop (forward, backward, AdamW step)", block, args, device),
        _Variant(static, block, args, device, "static"),
        _Variant(static, block, args, device, "static", out=True),
        _Variant(rigl, block, args, device, "rigl"),
        _Variant(rigl, block, args, device, "rigl", out=True),
    ]
    dense = variants[0]
    maskable = variants[1].sp.session.maskable
    log(f"warm-up (transformer block d_model {args.d_model}, batch {args.batch}, seq {args.seq}, "
        f"{device})")  # fmt: skip
    t_start = time.perf_counter()
    for v in variants:
        for _ in range(3):
            v.step(x, y, amp)
    for r in range(args.rounds):
        log(f"round {r + 1}/{args.rounds}: {args.steps} steps of each of {len(variants)} loops, "
            "interleaved")  # fmt: skip
        order = variants[r:] + variants[:r]  # who follows whom changes from round to round
        for v in order:
            v.begin(args.steps, args.interval)
        for _ in range(args.steps):
            for v in order:
                v.timed_step(x, y, amp, device)
        for v in order:
            v.end(args.interval)
    # the post-step masking alone, many times: robust to a noisy machine
    sp = variants[1].sp
    t_apply = _time_steps(lambda: sp.session.masking.apply(sp.optimizer), 10 * args.steps, device)
    written = [v.close() for v in variants]
    wall = time.perf_counter() - t_start

    t_dense = statistics.median(dense.rounds)
    n_params = sum(p.numel() for p in block.parameters())
    n_mask = sum(p.numel() for p in maskable.values())
    print(f"# bench_train --sparsify: one nn.TransformerEncoderLayer (d_model {args.d_model}, "
          f"{args.nhead} heads, feed-forward {args.ff}), batch {args.batch}, sequence {args.seq}, "
          f"AdamW, device {device}{' (bf16 autocast)' if amp else ''}")  # fmt: skip
    print()
    for line in machine_facts([args.device]):
        print(line if line.startswith("- ") else f"- {line}")
    print(f"- {n_params:,} parameters, {n_mask:,} maskable in {len(maskable)} weights "
          f"({', '.join(maskable)}); median of {args.steps} steps × {args.rounds} rounds, the "
          f"loops interleaved step by step, after 3 warm-up steps; benchmark wall time "
          f"{wall:.0f} s")  # fmt: skip
    print()
    print("| loop | out | time per step | overhead vs dense |")
    print("|---|---|---|---|")
    print(f"| {dense.label} | | {1e3 * t_dense:.1f} ms | |")
    for v, info in zip(variants[1:], written[1:], strict=True):
        t = statistics.median(v.rounds)
        what = "amortised, " if v.method == "rigl" else ""
        out = "None"
        if v.tmp is not None:
            out = f"temp dir ({info[0]} event files, {info[1] / 1e6:.1f} MB)"
        print(f"| {v.label} + `sp.step()` | {out} | {what}{1e3 * t:.1f} ms | "
              f"**{100 * (t / t_dense - 1):+.1f}%** |")  # fmt: skip
    print(f"| post-step masking alone (`Masking.apply`, {len(maskable)} weights) | | "
          f"{1e3 * t_apply:.2f} ms | **{100 * t_apply / t_dense:.2f}%** of a dense step |")  # fmt: skip
    print()
    print("RigL windows (median over rounds): the ordinary step, the update step (forward and "
          "backward, no optimizer step, masking, drop and grow in every weight, the event), and "
          "the amortised step = ordinary + the window's excess over it / ΔT:")  # fmt: skip
    print()
    print("| loop | out | ordinary step | update step | amortised step |")
    print("|---|---|---|---|---|")
    for v in variants[3:]:
        out = "None" if v.tmp is None else "temp dir"
        print(f"| {v.label} | {out} | {1e3 * statistics.median(v.ordinary):.1f} ms | "
              f"{1e3 * statistics.median(v.update):.1f} ms | "
              f"{1e3 * statistics.median(v.rounds):.1f} ms |")  # fmt: skip
    print()
    print("Per-round values (ms): " + "; ".join(
        f"{v.label}{'' if v.sp is None else (' tmp' if v.tmp else ' None')} "
        + ", ".join(f"{1e3 * t:.1f}" for t in v.rounds) for v in variants))  # fmt: skip
    return 0


# ---------------------------------------------------------------------------------------------
# GaP: the cost of a C-GaP boundary, a P-GaP replica start and a P-GaP round end
# ---------------------------------------------------------------------------------------------
#: The GaP step length L (iterations) of the shipped configs: configs/gap_fmnist_lenet300.toml
#: (2 epochs of 421 iterations: batch 128 on Fashion-MNIST's 54,000 training images) and
#: configs/gap_resnet50_imagenet.toml (5 epochs of about 1251 iterations: batch 1024 on ImageNet).
GAP_CONFIG_STEPS = (("gap_fmnist_lenet300", 2 * 421), ("gap_resnet50_imagenet", 5 * 1251))


@torch.no_grad()
def _perturb(session, optimizer, g) -> None:
    """The training between two boundaries, stood in for (untimed): every maskable weight moves a
    little (a grown partition's weights leave 0), then the masks are re-applied."""
    for p in session.maskable.values():
        p.add_(torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype), alpha=1e-3)
    session.masking.apply(optimizer)


def _gap_session(args, mode, k, device, x, y, amp):
    """The benchmark's model, built afresh, under ``SparseSession`` (method ``gap``), started as
    the trainer starts it, with an SGD optimizer that has momentum state."""
    model = get_model(args.model, dataset=get_spec(args.dataset), generator=generator(0, "model"))
    model = model.to(device)
    if device.type == "cuda" and x.dim() == 4:
        model.to(memory_format=torch.channels_last)
    maskable = maskable_parameters(model)
    # C-GaP: L = 10 iterations; P-GaP: L = 1, so that a round's K segment ends are K consecutive
    # iterations. One cycle (round) more than driven: every driven boundary grows the next
    # partition (starts the next round), as all but the run's last do.
    spe = 10 if mode == "cyclic" else 1
    cycles = args.gap_cycles + 1
    cfg = TrainConfig(method="gap", model=args.model, dataset=args.dataset, density=args.density,
                      gap_mode=mode, partitions=k, step_epochs=1.0, cycles=cycles,
                      finetune_epochs=1.0)  # fmt: skip
    session = SparseSession(cfg, model, maskable, steps_per_epoch=spe,
                            total_steps=(k * cycles + 1) * spe, device=device)  # fmt: skip
    session.start(generator(0, "masks", device=device))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)  # fmt: skip
    _step(model, opt, x, y, amp, session.masking)  # momentum buffers, as after any step
    return session, opt


def _gap_init_event(session, writer) -> None:
    """The run's ``init`` event, as the trainer records it before the first step (untimed: it
    also starts the writer's background thread)."""
    session.writer = writer
    session.record("init", **session.sparsifier.init_event())
    writer.flush()


def _gap_boundary(session, step, opt, device) -> tuple[float, float, int]:
    """``session.after_step`` at ``step``: (critical path, total with the background write, number
    of events recorded)."""
    before = session.writer.n_events
    _sync(device)
    t0 = time.perf_counter()
    session.after_step(step, opt)
    _sync(device)
    t1 = time.perf_counter()
    session.writer.flush()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t0, session.writer.n_events - before


def _event_sizes(run: Path) -> dict[str, list[tuple[int, int]]]:
    """Event kind -> (partition, size of the mask file) of its events in ``run``."""
    sizes: dict[str, list[tuple[int, int]]] = {}
    for line in (run / "events.jsonl").read_text(encoding="utf-8").splitlines():
        ev = json.loads(line)
        size = (run / ev["file"]).stat().st_size
        sizes.setdefault(ev["kind"], []).append((int(ev["partition"]), size))
    return sizes


def _gap(args, k, device, x, y, amp) -> tuple[dict, dict]:
    """Time GaP's boundaries; (label -> {"none": [(partition, crit, total)], "tmp": [...]},
    "cgap"/"pgap" and event kind -> (partition, file size)).

    ``args.gap_cycles`` C-GaP cycles and P-GaP rounds are driven; the run directory alternates
    from cycle to cycle (round to round) between None (nothing written) and a temporary
    directory, so that a slow phase of the machine hits both alike."""
    cycles = args.gap_cycles
    g = torch.Generator(device=device).manual_seed(1)
    rows: dict[str, dict[str, list]] = {}
    sizes: dict[str, list[tuple[int, int]]] = {}

    def add(label, out, part, times):
        rows.setdefault(label, {"none": [], "tmp": []})[out].append((part, *times[:2]))

    with tempfile.TemporaryDirectory(prefix="bench-gap-") as tmp:
        # C-GaP: boundary b (1-based) at step bL - 1 prunes partition (b-1) mod K and grows b mod K
        session, opt = _gap_session(args, "cyclic", k, device, x, y, amp)
        sp, masking = session.sparsifier, session.masking
        Path(tmp, "cgap").mkdir()
        none_w, tmp_w = RunWriter(None), RunWriter(Path(tmp, "cgap"))
        _gap_init_event(session, tmp_w)
        log(f"GaP: C-GaP, {k} partitions, {cycles * k} boundaries")
        for b in range(1, cycles * k + 1):
            out = "none" if (b - 1) // k % 2 == 0 else "tmp"
            session.writer = none_w if out == "none" else tmp_w
            _perturb(session, opt, g)
            times = _gap_boundary(session, b * sp.L - 1, opt, device)
            assert times[2] == 2, f"C-GaP boundary {b}: {times[2]} events, expected 2"
            nnz, pruned, grown = masking.nnz(), (b - 1) % k, b % k
            assert all(nnz[n] == sp.counts[n] for n in sp.layers_of(pruned)), f"boundary {b}"
            assert all(bool(masking.masks[n].all()) for n in sp.layers_of(grown)), f"boundary {b}"
            add("cgap", out, pruned, times)
        tmp_w.close()
        for kind, v in _event_sizes(Path(tmp, "cgap")).items():
            sizes[f"cgap {kind}"] = v

        # P-GaP (one process): L = 1, the segment end of replica i of round r is step rK + i
        session, opt = _gap_session(args, "parallel", k, device, x, y, amp)
        Path(tmp, "pgap").mkdir()
        none_w, tmp_w = RunWriter(None), RunWriter(Path(tmp, "pgap"))
        _gap_init_event(session, tmp_w)
        log(f"GaP: P-GaP, {k} replicas, {cycles} rounds")
        for r in range(cycles):
            out = "none" if r % 2 == 0 else "tmp"
            session.writer = none_w if out == "none" else tmp_w
            for i in range(k):
                _perturb(session, opt, g)  # replica i trains
                times = _gap_boundary(session, r * k + i, opt, device)
                end = i == k - 1
                assert times[2] == (2 if end else 1), f"P-GaP round {r} replica {i}: {times[2]}"
                add("pgap end" if end else "pgap replica", out, -1 if end else i, times)
            nnz = session.masking.nnz()  # after a round end: replica 0 of the next round
            sp = session.sparsifier
            assert all(nnz[n] == sp.counts[n] for n in sp.parts if sp.parts[n] != 0)
            assert all(int(sp.combined_masks[n].sum()) == sp.counts[n] for n in sp.parts)
        tmp_w.close()
        for kind, v in _event_sizes(Path(tmp, "pgap")).items():
            sizes[f"pgap {kind}"] = v
    return rows, sizes


def _print_gap(args, k, rows, sizes, t_masked) -> None:
    def mb(key, keep=lambda p: True):
        mbs = [s / 1e6 for p, s in sizes[key] if keep(p)]
        lo, hi = min(mbs), max(mbs)
        return f"{lo:.2f} MB" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}–{hi:.2f} MB"

    def per_part(samples, j):
        """Partition -> the median of value ``j`` over its boundaries."""
        parts = sorted({s[0] for s in samples})
        return {p: statistics.median(s[j] for s in samples if s[0] == p) for p in parts}

    def mean_of(samples, j):
        """The mean over the partitions of their medians: a boundary's cost averaged over a
        cycle (round), robust to a slow sample."""
        return statistics.fmean(per_part(samples, j).values())

    what = {
        "cgap": ("C-GaP boundary: prune the dense partition to its per-layer counts, grow the "
                 "next; 2 events", f"prune {mb('cgap prune')} + grow {mb('cgap grow')}"),
        "pgap replica": ("P-GaP replica start: snapshot of the replica, the combined model loaded, "
                         "the next partition dense, optimizer state cleared; 1 event",
                         f"grow {mb('pgap grow', lambda p: p != 0)}"),
        "pgap end": (f"P-GaP round end: the last replica's snapshot, combine {k} replicas, prune "
                     f"every layer, start replica 0 of the next round; 2 events",
                     f"prune {mb('pgap prune')} + grow {mb('pgap grow', lambda p: p == 0)}"),
    }  # fmt: skip
    configs = " | ".join(f"L = {n} ({name})" for name, n in GAP_CONFIG_STEPS)
    print(f"GaP (`method=\"gap\"`, density {args.density}, uniform, {k} partitions balanced by "
          f"parameter count, the events with masks and kept weights as the trainer records "
          f"them): `SparseSession.after_step` at a boundary step (C-GaP: {args.gap_cycles} "
          f"cycles, P-GaP: {args.gap_cycles} rounds, the run directory None and a temporary "
          f"directory alternating by cycle or round), the median over the boundaries of each "
          f"partition (C-GaP: the one pruned; P-GaP: the replica finished), then the mean over "
          f"the partitions; it includes the ordinary post-step masking. Share of run time = "
          f"boundary / (L × masked step) at the GaP step length L of the shipped configs; the "
          f"goal is at most 1 %:")  # fmt: skip
    print()
    print(f"| boundary | event files | out = None | temp dir: critical path | total incl. "
          f"background write | share at {configs} |")  # fmt: skip
    print("|---|---|---|---|---|" + "---|" * len(GAP_CONFIG_STEPS))
    for key, (label, files) in what.items():
        none = mean_of(rows[key]["none"], 1)
        t_c, t_d = mean_of(rows[key]["tmp"], 1), mean_of(rows[key]["tmp"], 2)
        shares = " | ".join(f"{100 * t_c / (n * t_masked):.3f}% ({100 * t_d / (n * t_masked):.3f}%)"
                            for _, n in GAP_CONFIG_STEPS)  # fmt: skip
        print(f"| {label} | {files} | {1e3 * none:.1f} ms | {1e3 * t_c:.1f} ms | "
              f"{1e3 * t_d:.1f} ms | {shares} |")  # fmt: skip
    print()
    print("Per-partition medians (ms; None, temp dir critical / total; C-GaP by the partition "
          "pruned, P-GaP by the replica finished): " + "; ".join(
        f"{key} " + ", ".join(
            f"{'' if p < 0 else f'{p}: '}{1e3 * v:.1f}, {1e3 * c:.1f} / {1e3 * d:.1f}"
            for (p, v), c, d in zip(per_part(rows[key]["none"], 1).items(),
                                    per_part(rows[key]["tmp"], 1).values(),
                                    per_part(rows[key]["tmp"], 2).values(), strict=True))
        for key in what))  # fmt: skip
    print()
    print("Per-boundary values (ms; None; temp dir critical/total): " + "; ".join(
        f"{key} " + ", ".join(f"{1e3 * t:.1f}" for _, t, _ in rows[key]["none"]) + "; "
        + ", ".join(f"{1e3 * c:.1f}/{1e3 * d:.1f}" for _, c, d in rows[key]["tmp"])
        for key in what))  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sparsify", action="store_true",
                   help="time masktopo.sparsify in a user's loop on a transformer block instead "
                        "(dense, static and RigL steps, with and without a run directory)")  # fmt: skip
    p.add_argument("--model", default="resnet18")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size (default 128; --sparsify: 32)")  # fmt: skip
    p.add_argument("--density", type=float, default=None,
                   help="density (default 0.01; --sparsify: 0.1)")  # fmt: skip
    p.add_argument("--interval", type=int, default=None,
                   help="ΔT for the shares (default 1500; --sparsify: RigL's 100)")  # fmt: skip
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per variant and round (default 20; --sparsify: 10 on CPU, "
                        "50 on CUDA)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=None,
                   help="alternating rounds (default 3; --sparsify: 5)")  # fmt: skip
    p.add_argument("--partitions", type=int, default=4,
                   help="GaP rows: partitions K (default 4, as configs/gap_resnet50_imagenet.toml; "
                        "at most the number of maskable layers)")  # fmt: skip
    p.add_argument("--gap-cycles", type=int, default=4,
                   help="GaP rows: C-GaP cycles and P-GaP rounds driven (default 4; at least 2)")  # fmt: skip
    p.add_argument("--d-model", type=int, default=None,
                   help="--sparsify: the block's width (default 256 on CPU, 1024 on CUDA)")  # fmt: skip
    p.add_argument("--nhead", type=int, default=None,
                   help="--sparsify: attention heads (default 4 on CPU, 16 on CUDA)")  # fmt: skip
    p.add_argument("--ff", type=int, default=None,
                   help="--sparsify: feed-forward width (default 1024 on CPU, 4096 on CUDA)")  # fmt: skip
    p.add_argument("--seq", type=int, default=None,
                   help="--sparsify: sequence length (default 128 on CPU, 512 on CUDA)")  # fmt: skip
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--compile", action="store_true",
                   help="default mode: the dense and masked steps with torch.compile (the "
                        "model's forward; compiled in the warm-up, not timed; GaP rows eager)")  # fmt: skip
    args = p.parse_args(argv)
    if args.compile and args.sparsify:
        log("--compile applies to the default mode only, not to --sparsify")
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        log("no CUDA device: nothing to do")
        return 1
    amp = device.type == "cuda"
    if args.sparsify:
        return _main_sparsify(args, device, amp)
    for key, value in (("batch", 128), ("density", 0.01), ("interval", 1500), ("steps", 20),
                       ("rounds", 3)):  # fmt: skip
        if getattr(args, key) is None:
            setattr(args, key, value)

    cfg, model, opt, x, y = _setup(args, device, "random")
    maskable = maskable_parameters(model)
    k_gap = min(args.partitions, len(maskable))
    if args.gap_cycles < 2 or k_gap < 2:
        log("the GaP rows need --gap-cycles 2 or more and 2 or more partitions (maskable layers)")
        return 2
    if k_gap != args.partitions:
        log(f"--partitions {args.partitions}: {args.model} has {len(maskable)} maskable layers; "
            f"GaP with {k_gap} partitions")  # fmt: skip
    total = 100 * args.interval
    sp = make_sparsifier(cfg, steps_per_epoch=args.interval, total_steps=total, device=device)
    masks, _ = sp.init_masks(model, maskable, generator(0, "masks", device=device))

    # dense and masked share one model; masking is switched on for the masked rounds only, and
    # the rounds alternate so that a slow phase of the machine hits both variants alike.
    # --compile: the same module compiled (shared parameters and buffers); the masks, updates
    # and dumps below keep using `model`
    fwd = torch.compile(model) if args.compile else model
    log(f"warm-up ({args.model}, batch {args.batch}, {device}"
        f"{', torch.compile' if args.compile else ''})")  # fmt: skip
    for _ in range(3):
        _step(fwd, opt, x, y, amp)
    masking = Masking(model, masks)
    if args.compile:  # any recompilation after the mask buffers were added: not timed
        for _ in range(2):
            _step(fwd, opt, x, y, amp)
            _step(fwd, opt, x, y, amp, masking)
    dense_t, masked_t = [], []
    for r in range(args.rounds):
        log(f"round {r + 1}/{args.rounds}: dense")
        dense_t.append(_time_steps(lambda: _step(fwd, opt, x, y, amp), args.steps, device))
        log(f"round {r + 1}/{args.rounds}: masked")
        masked_t.append(_time_steps(lambda: _step(fwd, opt, x, y, amp, masking), args.steps,
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
        _step(fwd, opt, x, y, amp, masking)  # a fresh dense gradient
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

    gap_rows, gap_sizes = _gap(args, k_gap, device, x, y, amp)

    n_params = sum(p.numel() for p in model.parameters())
    n_mask = sum(p.numel() for p in maskable.values())
    span = args.interval * t_masked
    print(f"# bench_train: {args.model} ({args.dataset} shapes), batch {args.batch}, "
          f"density {args.density}, device {device}{' (bf16 autocast, channels-last)' if amp else ''}"
          f"{', torch.compile' if args.compile else ''}")  # fmt: skip
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
    print()
    _print_gap(args, k_gap, gap_rows, gap_sizes, t_masked)
    per_step = {"dense": dense_t, "masked": masked_t}
    print()
    print("Per-round medians (ms): " + "; ".join(
        f"{k} " + ", ".join(f"{1e3 * v:.1f}" for v in vals) for k, vals in per_step.items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
