"""Helpers shared by the benchmark scripts: progress, timing, number formats, machine facts."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import networkx as nx
import numpy as np
import scipy
import torch

import masktopo
from masktopo.threads import default_threads


def log(msg: str) -> None:
    """Progress on stderr, so that stdout holds only the report."""
    print(msg, file=sys.stderr, flush=True)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], repeats: int, *, device: str = "cpu", slow: float = math.inf):
    """Median wall time of ``repeats`` calls (one call when the first takes over ``slow`` s)."""
    times, result = [], None
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if times[0] > slow:
            break
    return statistics.median(times), result


def fmt_s(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def fmt_ratio(a: float, b: float) -> str:
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return "n/a"
    r = a / b
    if r < 1:
        return f"{r:.2g}×"
    return f"{r:,.0f}×" if r >= 10 else f"{r:.1f}×"


def gpu_absent_reason() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} present but not used (pass --device cpu cuda)"
    why = "torch built without CUDA" if torch.version.cuda is None else "no CUDA device"
    return f"no GPU was available ({why}, torch {torch.__version__})"


def machine_facts(devices: list[str]) -> list[str]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    facts = [
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- CPU: {cpu}; {os.cpu_count()} logical cores ({usable} usable by this process); "
        f"load average at start {load}",
        f"- torch.get_num_threads(): {torch.get_num_threads()}; MASKTOPO_WORKERS "
        f"{os.environ.get('MASKTOPO_WORKERS', 'unset')} → {default_threads()} thread(s) for the "
        "analysis and the PAGS loop",
        f"- Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, networkx {nx.__version__}, masktopo {masktopo.__version__}",
    ]
    if "cuda" in devices:
        facts.append(f"- GPU: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})")
    else:
        facts.append(f"- GPU: {gpu_absent_reason()}")
    return facts


def available_devices(requested: list[str]) -> list[str]:
    devices = []
    for d in dict.fromkeys(requested):
        if d == "cuda" and not torch.cuda.is_available():
            log(f"--device cuda: {gpu_absent_reason()}; skipping the CUDA timings.")
            continue
        devices.append(d)
    return devices
