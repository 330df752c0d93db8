"""CHITA's solvers in torch against a numpy port of the reference algorithm, and the gradient rows.

The reference (mazumder-lab/CHITA at 89c606d, methods-spec §5) keeps ``G`` as a CPU numpy
array and runs its solvers in numpy/numba: float64 for CHITA (``Active_IHTCDLS``), but float32 for
backsolve and block backsolve (``Heuristic_LS``, ``Heuristic_LSBlock``: ``pruners/CHITA.py``
leaves torch's float32 gradients as they are for these two and casts w̄ to their dtype). The port
below (``np_*``) follows the spec's steps one for one, written here from the spec, not copied.
``bso`` and ``bso-block`` are timed in both dtypes, both sides in the same one (the float32 rows
are the reference's own arithmetic; masktopo's ``--dtype`` defaults to float64); ``chita`` in
float64:

* ``np_bso``: MP support (top-k |w̄|) then the ridge re-fit, Woodbury when n < |S| (Alg. 5);
* ``np_bso_block``: global magnitude top-k, then one re-fit per block, a Python loop over the
  blocks (Alg. 6; the reference loops with numba ``prange``);
* ``np_chita``: the active set (Alg. 4) over IHT with the exact line search (Alg. 2/3).

Ours: :func:`masktopo.prune.solve` on the same ``G`` (same dtype, same ``k``, same λ₂), with
``refit=False`` for ``chita`` so that both run the same algorithm (masktopo's default also
re-fits on the support, see docs/prune.md); the report gives the relative difference of the
objectives (both evaluated in float64 on the float64 ``G``) and the Jaccard index of the
supports. Our time includes building the
:class:`~masktopo.prune.Problem` (it forms y = G w̄, which the port does inside its solvers).
Each side runs once to warm up, then ``--repeat`` times, the two sides interleaved; the table
gives the median. ``--threads N`` sets torch's threads and every BLAS thread pool (numpy's and
scipy's, through threadpoolctl) to N for both sides; without it both run at their defaults.
Shapes:

* MLPNet (p = 32,360), n = ``--n-mlp`` (1000) rows of real per-sample gradients (Fashion-MNIST
  when its files are there, else random inputs), solvers ``bso`` and ``chita``;
* ResNet-20 (p = 268,336 maskable weights at CIFAR shapes), n = ``--n-resnet`` (500) rows from
  random CIFAR-shaped inputs (timings do not depend on the values), ``bso-block`` with B = 500.

Peak memory: on the CPU the growth of the process's resident memory during the call (sampled
every 2 ms: numpy and torch alike), on CUDA ``torch.cuda.max_memory_allocated``. Gradient rows
per second: :func:`masktopo.prune.gradient_matrix` (``vmap(grad)``, chunks of 64) against one
backward pass per row (:func:`~masktopo.prune.gradient_matrix_loop`, the reference's way).

    python benchmarks/bench_chita.py                      # CPU
    python benchmarks/bench_chita.py --device cpu cuda    # ours also on the GPU
    python benchmarks/bench_chita.py --quick              # small n, seconds
    python benchmarks/bench_chita.py --threads 1          # one thread on both sides
    python benchmarks/bench_chita.py --device cuda --repeat 2 --loop-rows 50  # ours: GPU only

The report (Markdown) goes to stdout, progress to stderr, with the machine load. ``--device cuda``
alone on a machine without CUDA prints that on stderr and exits 1 (with ``cpu`` beside it, the
CUDA timings are skipped).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import threading
import time
from functools import partial

import numpy as np
import scipy.linalg.blas  # noqa: F401 - loaded now, so that --threads limits its BLAS too
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from masktopo.pai.densities import keep_count
from masktopo.prune import Problem, SolverOptions, gradient_matrix, gradient_matrix_loop, solve
from masktopo.zoo import get_model, get_spec, load_dataset, maskable_parameters

#: The dtypes each solver is timed in (both sides): the reference runs backsolve and block
#: backsolve on float32 G, CHITA on float64 G.
DTYPES = {"bso": ("float32", "float64"), "bso-block": ("float32", "float64"), "chita": ("float64",)}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the numpy port of the reference ----------------------------------------------------------------
def np_objective(G, y, w_bar, lam, w, r=None):
    if r is None:
        r = y - G @ w
    return 0.5 * float(r @ r) + lam * float(((w - w_bar) ** 2).sum())


def np_topk(v, k):
    idx = np.argpartition(-np.abs(v), k - 1)[:k]
    s = np.zeros(v.shape, dtype=bool)
    s[idx] = True
    return v * s, s


def np_refit(G, y, w_bar, lam, idx):
    GS = G[:, idx]
    c = 2.0 * lam
    b = GS.T @ y + c * w_bar[idx]
    n, s = GS.shape
    if n < s:
        K = GS @ GS.T
        K[np.diag_indices(n)] += c
        return (b - GS.T @ np.linalg.solve(K, GS @ b)) / c
    A = GS.T @ GS
    A[np.diag_indices(s)] += c
    return np.linalg.solve(A, b)


def np_bso(G, w_bar, lam, k):
    y = G @ w_bar
    _, s = np_topk(w_bar, k)
    idx = np.flatnonzero(s)
    w = np.zeros_like(w_bar)
    w[idx] = np_refit(G, y, w_bar, lam, idx)
    return w, s


def np_blocks(sizes, B):
    out, start = [], 0
    for size in sizes:
        nb = max(1, size // B)
        for b in range(nb):
            out.append((start + b * B, start + size if b == nb - 1 else start + (b + 1) * B))
        start += size
    return out


def np_bso_block(G, w_bar, lam, k, sizes, B):
    _, s = np_topk(w_bar, k)
    w = np.zeros_like(w_bar)
    for lo, hi in np_blocks(sizes, B):
        idx = lo + np.flatnonzero(s[lo:hi])
        if len(idx) == 0:
            continue
        yb = G[:, lo:hi] @ w_bar[lo:hi]
        w[idx] = np_refit(G, yb, w_bar, lam, idx)
    return w, s


def np_lipschitz(G, lam, iters=30, tol=1e-4):
    v = np.random.default_rng(0).standard_normal(G.shape[1])
    v /= np.linalg.norm(v)
    s2 = 0.0
    for _ in range(iters):
        u = G.T @ (G @ v)
        new = float(v @ u)
        v = u / np.linalg.norm(u)
        done = abs(new - s2) <= tol * abs(new)
        s2 = new
        if done:
            break
    return 1.05 * (s2 + 2 * lam)


def np_iht(G, y, w_bar, lam, k, w, s, max_iter=500, ftol=1e-7, sea1=5):
    r = y - G @ w
    f = np_objective(G, y, w_bar, lam, w, r)
    for _ in range(max_iter):
        g = -(G.T @ r) + 2 * lam * (w - w_bar)
        gS = g * s
        gg = float(gS @ gS)
        off = np.where(s, 0.0, np.abs(g))
        big = off.max() if off.size else 0.0
        on = np.flatnonzero(s)
        eta_change = float(np.min(np.abs(w[on]) / (np.abs(g[on]) + big))) if big > 0 else math.inf
        best = (w, r, f, s)
        eta = 0.0
        if gg > 0:
            GgS = G @ gS
            denom = float(GgS @ GgS) + 2 * lam * gg
            eta = gg / denom
            best = (w - eta * gS, r + eta * GgS, f - 0.5 * eta * gg, s)
        if eta >= eta_change and math.isfinite(eta_change) and eta_change > 0:
            step, prev = eta_change / (1 + 1e-4), math.inf
            for _ in range(sea1):
                cand, cs = np_topk(w - step * g, k)
                cr = y - G @ cand
                cf = np_objective(G, y, w_bar, lam, cand, cr)
                if cf < best[2]:
                    best = (cand, cr, cf, cs)
                if cf >= prev:
                    break
                prev, step = cf, step * 2
        if best[2] >= f:
            break
        rel = (f - best[2]) / max(abs(f), 1e-300)
        w, r, _, s = best
        f = np_objective(G, y, w_bar, lam, w, r)
        if rel < ftol:
            break
    return w, s, f


def np_chita(G, w_bar, lam, k, kimp=1.5, outer=20, sea2=10, **iht):
    y = G @ w_bar
    eligible = (G**2).sum(0) > 0
    L = np_lipschitz(G, lam)
    start = np.where(eligible, w_bar, 0.0)  # α = 0: the gradient at w̄ is 0
    _, active = np_topk(start, min(int(eligible.sum()), math.ceil(kimp * k)))
    active &= eligible
    w, s = np_topk(start * active, k)
    f = np_objective(G, y, w_bar, lam, w)
    for _ in range(outer):
        idx = np.flatnonzero(active)
        GA = G[:, idx]
        LA = np_lipschitz(GA, lam)
        wa, sa, _ = np_iht(GA, y, w_bar[idx], lam, k, w[idx], s[idx], **iht)
        w = np.zeros_like(w)
        w[idx] = wa
        s = np.zeros_like(s)
        s[idx] = sa
        r = y - G @ w
        f = np_objective(G, y, w_bar, lam, w, r)
        g = -(G.T @ r) + 2 * lam * (w - w_bar)
        Lp, acc = 2 * LA, None
        for _ in range(sea2):
            cand, cs = np_topk(np.where(eligible, w - g / Lp, 0.0), k)
            cf = np_objective(G, y, w_bar, lam, cand)
            if cf < f:
                acc = (cand, cs, cf)
                break
            Lp *= 2
        if acc is None:
            break
        w, s, f = acc
        new = s & ~active
        if not new.any():
            break
        active |= new
    del L
    return w, s


# -- measuring ---------------------------------------------------------------------------------------
def _ours(G, w_bar, lam, k, method, opts):
    """Our solver on a new problem: ``y = G w̄`` is formed inside the call (``Problem`` forms
    it lazily), as the port does inside its solvers. ``Problem``'s argument checks (one read
    of G for NaN and inf, which the port does not do) run before the timed call."""
    pb = Problem(G, w_bar, lam)
    return partial(solve, pb, k, method, opts)


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(fn, device="cpu"):
    """``(seconds, peak bytes above the start, result)``.

    Starts with a 0.25 s pause: the BLAS thread pools (OpenBLAS's for numpy, OpenMP's for
    torch) keep spinning for a while after their last call, and on a small machine those
    threads would take the cores from the other side's first calls.
    """
    time.sleep(0.25)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0, torch.cuda.max_memory_allocated() - base, out
    base = _rss()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    stop.set()
    th.join()
    return dt, max(peak[0], _rss()) - base, out


def gb(x: float) -> str:
    return f"{x / 1e9:.3f}"


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def model_grads(name, dataset, n, device, real: bool, loop_rows: int):
    spec = get_spec(dataset)
    model = get_model(name, dataset=spec).to(device)
    names = list(maskable_parameters(model))
    g = torch.Generator().manual_seed(0)
    try:
        if not real:
            raise FileNotFoundError
        data = load_dataset(dataset, split="train")
        x, y = data.batch(torch.randperm(len(data), generator=g)[:n])
        source = f"{dataset} training samples"
    except Exception:
        x = torch.randn(n, *spec.in_shape, generator=g)
        y = torch.randint(0, spec.num_classes, (n,), generator=g)
        source = "random inputs"
    x, y = x.to(device), y.to(device)
    loss = spec.loss_fn
    gradient_matrix(model, names, x[:8], y[:8], loss=loss)  # warm-up (vmap's first call)
    gradient_matrix_loop(model, names, x[:2], y[:2], loss=loss)
    dt_v, _, G = measure(lambda: gradient_matrix(model, names, x, y, loss=loss), device)
    m = min(loop_rows, n)
    dt_l, _, _ = measure(lambda: gradient_matrix_loop(model, names, x[:m], y[:m], loss=loss),
                         device)  # fmt: skip
    w = torch.cat([dict(model.named_parameters())[k].detach().reshape(-1) for k in names])
    sizes = [dict(model.named_parameters())[k].numel() for k in names]
    return G, w.double(), sizes, source, (n / dt_v, m / dt_l)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring); ``--quick`` already applied."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", nargs="+", default=["cpu"], choices=["cpu", "cuda"],
                    help="where ours runs (the numpy port always runs on the CPU)")  # fmt: skip
    ap.add_argument("--n-mlp", type=int, default=1000)
    ap.add_argument("--n-resnet", type=int, default=500)
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.9, 0.98])
    ap.add_argument("--l2", type=float, default=1e-3)
    ap.add_argument("--loop-rows", type=int, default=200, help="rows timed one backward each")
    ap.add_argument("--skip-resnet", action="store_true")
    ap.add_argument("--skip-mlp", action="store_true")
    ap.add_argument("--quick", action="store_true", help="n = 200 / 100, one sparsity")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per side (median)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch and BLAS threads for both sides (default: as they are)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.quick:
        args.n_mlp, args.n_resnet, args.sparsity, args.loop_rows = 200, 100, [0.9], 50
    return args


def main(argv=None) -> int:
    """Run the benchmark; the report goes to stdout. Returns the exit status."""
    args = parse_args(argv)
    devices = [d for d in dict.fromkeys(args.device) if d == "cpu" or torch.cuda.is_available()]
    if len(devices) < len(set(args.device)):
        log(f"--device cuda: no CUDA device (torch {torch.__version__}, CUDA build: "
            f"{torch.version.cuda or 'none'})" + ("; nothing to time" if not devices else
                                                   "; skipping the CUDA timings"))  # fmt: skip
    if not devices:
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads, user_api="blas")
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    print("# bench_chita: torch solvers vs a numpy port of the CHITA reference\n")
    blas = ", ".join(f"{x['internal_api']} {x['num_threads']}" for x in threadpool_info()
                     if x["user_api"] == "blas")  # fmt: skip
    print(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}"
          f" (BLAS threads: {blas}); {args.repeat} timed runs per side, median")  # fmt: skip
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"- GPU: {gpu}; devices timed for ours: {', '.join(devices)}")
    print(f"- load average at start: {', '.join(f'{x:.2f}' for x in load0)}\n")
    cases = [] if args.skip_mlp else [("mlpnet", "fashion-mnist", args.n_mlp, True,
                                       ("bso", "chita"))]  # fmt: skip
    if not args.skip_resnet:
        cases.append(("resnet20", "cifar10", args.n_resnet, False, ("bso-block",)))
    rows, grad_rows = [], []
    for model, dataset, n, real, methods in cases:
        log(f"{model}: gradients, n = {n}")
        G, w_bar, sizes, source, (v_rate, l_rate) = model_grads(model, dataset, n, "cpu", real,
                                                                  args.loop_rows)  # fmt: skip
        grad_rows.append((model, "cpu", n, source, v_rate, l_rate))
        for dev in devices:
            if dev == "cuda":
                G2, w2, _, _, (v2, l2_) = model_grads(model, dataset, n, "cuda", real,
                                                      args.loop_rows)  # fmt: skip
                grad_rows.append((model, "cuda", n, source, v2, l2_))
                del G2, w2
        p = G.shape[1]
        lam = args.l2 * n / 2
        G64, w64 = G.numpy(), w_bar.numpy()
        y64 = G64 @ w64
        for method, dtype in ((m, d) for m in methods for d in DTYPES[m]):
            Gt, wt = G.to(getattr(torch, dtype)), w_bar.to(getattr(torch, dtype))
            Gn, wn = Gt.numpy(), wt.numpy()
            for s in args.sparsity:
                k = keep_count(1 - s, p)
                log(f"{model} {method} {dtype} s={s}: numpy port")
                if method == "bso":
                    ref = partial(np_bso, Gn, wn, lam, k)
                elif method == "bso-block":
                    ref = partial(np_bso_block, Gn, wn, lam, k, sizes, 500)
                else:
                    ref = partial(np_chita, Gn, wn, lam, k)
                opts = SolverOptions(refit=False, block_size=500, layer_sizes=tuple(sizes))
                ours = {}
                for dev in devices:
                    Gd, wd = Gt.to(dev), wt.to(dev)
                    ours[dev] = partial(_ours, Gd, wd, lam, k, method, opts)
                ref()  # warm-up
                for dev in devices:
                    ours[dev]()()
                t_np, t_ours = [], {dev: [] for dev in devices}
                m_np, mem, sols = None, {}, {}
                for _ in range(max(1, args.repeat)):  # the two sides interleaved
                    dt, m, (w_ref, s_ref) = measure(ref)
                    t_np.append(dt)
                    m_np = m if m_np is None else m_np  # peak memory of the first timed run
                    for dev in devices:
                        dt, m, sols[dev] = measure(ours[dev](), dev)  # a new problem each
                        t_ours[dev].append(dt)
                        mem.setdefault(dev, m)
                f_ref = np_objective(G64, y64, w64, lam, w_ref.astype(np.float64))
                for dev in devices:
                    sol = sols[dev]
                    sup = sol.support.cpu().numpy()
                    w_ours = sol.w.cpu().double().numpy()
                    f_ours = np_objective(G64, y64, w64, lam, w_ours)
                    rows.append((model, n, p, method, dtype, s, dev, float(np.median(t_np)),
                                 float(np.median(t_ours[dev])), m_np, mem[dev],
                                 abs(f_ours - f_ref) / max(abs(f_ref), 1e-300),
                                 jaccard(sup, s_ref)))  # fmt: skip
                ours = None
            Gt = Gn = None
        G = G64 = None
    print("## Solvers (same G, same k, same dtype on both sides)\n")
    print(
        "float32 rows of bso and bso-block are the reference's own dtype for them; the "
        "objectives of both results are evaluated in float64.\n"
    )
    print(
        "| model | n | p | solver | dtype | sparsity | ours on | numpy s | ours s | speed-up | "
        "numpy peak GB | ours peak GB | rel. objective diff | support Jaccard |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m, n, p, meth, dt, s, dev, tn, t, mn, mo, df, jc in rows:
        print(f"| {m} | {n} | {p:,} | {meth} | {dt} | {s:g} | {dev} | {tn:.3f} | {t:.3f} | "
              f"{tn / t:.1f}× | {gb(mn)} | {gb(mo)} | {df:.1e} | {jc:.4f} |")  # fmt: skip
    print("\n## Gradient rows per second\n")
    print(
        "| model | device | n | inputs | vmap(grad), rows/s | one backward per row, rows/s "
        "| speed-up |"
    )
    print("|---|---|---|---|---|---|---|")
    for m, dev, n, src, v, lr in grad_rows:
        print(f"| {m} | {dev} | {n} | {src} | {v:,.0f} | {lr:,.0f} | {v / lr:.1f}× |")
    load1 = os.getloadavg()
    print(f"\nload average at end: {', '.join(f'{x:.2f}' for x in load1)}; "
          f"total {time.perf_counter() - t_start:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
