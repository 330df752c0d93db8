"""GPU suite: check and benchmark every CUDA route of masktopo in one command, in a few minutes.

    python benchmarks/gpu_suite.py [--out REPORT.md] [--quick | --full] [--parts tests,analysis,...]

Made for a GPU lent for one call of a few minutes. Each step runs in a subprocess of its own with
its own timeout, inside a total budget (``--budget``, default 480 s in quick mode). Every step also
has a reserve: while a step runs, the reserves of the steps after it are kept back from the
budget, so a step that hangs is stopped in time for all the others to get at least their reserve
(the quick reserves add up to 425 s). Progress lines with the elapsed time go to stderr. The
steps, in order (``--parts`` selects by part; ``--list`` prints the exact command lines, timeouts
and reserves without running them):

========  ==========================================================================================
part      what runs
========  ==========================================================================================
tests     ``python -m pytest -q -m cuda -p no:cacheprovider``: the ``@pytest.mark.cuda`` tests
          (passed / failed / skipped counts and the failures' names, from a JUnit XML file)
analysis  ``bench_analysis.py``: ``analyze()`` of ResNet-50 mask sets at 90 / 98 / 99 % sparsity on
          ``--device cuda`` (goal ≤ 0.1 s per mask set, all metrics)
pags      ``bench_pags.py``: ``score_candidates`` of ResNet-18 ERK 99 % candidates on CUDA (goal
          ≥ 1,000 candidates/s) and PAGS end to end; chunks of 64 and 256 in a second run only
          when chunks of 16 already reach 100 candidates/s
search    ``bench_search.py --device cuda``: model-steps/s of the ensemble trainer of
          ``masktopo search`` at 16,384 and 65,536 models at once and the full phase 2 of
          2-3-3-3-1 (155,952 runs) extrapolated from the best rate (goal ≤ 10 min, issue 15)
chita     ``bench_chita.py --device cuda``: our CHITA solvers on the GPU against the numpy port of
          the reference on the CPU, same G: MLPNet n = 1000 (bso, chita), ResNet-20 n = 500
          (bso-block, B = 500), 90 and 98 % (goal ≥ 10× the numpy path, issue 14)
train     ``bench_train.py --device cuda``: masked vs dense training step of ResNet-18 at CIFAR
          shapes, bf16 autocast and channels-last (goal: masked ≤ 3 % over dense) and the event
          dump's share of run time (goal ≤ 1 %), eager and again with ``--compile``
          (``torch.compile``; run last, it compiles for a minute or more)
sparsify  ``bench_train.py --sparsify --device cuda``: ``masktopo.sparsify`` in a user's loop on a
          transformer block (goal: ≤ 3 % over the dense step)
llm       ``bench_batched_route.py --device cuda --full``: the batched route's solve of one
          Llama-2-7B block, full ``eigh`` against block Krylov (goal: faster, the same σ to
          1e-9); then ``bench_llm.py --device cuda``: every metric of generated Llama-2-7B layers
          at 50 % (per-row and 2:4); quick mode measures 1 block of 32 and extrapolates ×32,
          ``--full`` measures all 32 (goal: the whole 7B mask set ≤ 10 s on one H100, issue 18)
========  ==========================================================================================

The compiled training step (part ``train``) runs last; the large-chunk PAGS run right after the
first one, as its condition is known then.

The report (default ``docs/gpu-suite-report.md``, or ``--out``) holds the machine (GPU, memory,
driver, CUDA, torch, masktopo version and commit, date), each step's status and wall time, a table
"figure | measured | goal | met?" with the headline figures taken from the benchmarks' Markdown by
small regular expressions (and, for ``llm``, from the JSON line it logs after each pattern, so a
run stopped in its second pattern still gives the first; "not parsed" where that fails; quick-mode
extrapolations are said so in the cell), and every step's full output in a
``<details>`` section. It is rewritten after every step, so a suite killed from outside still
leaves what had finished. Exit status 0 when every step ran (goals missed are reported, not
errors), 1 when a step failed, timed out or was not started for lack of budget.

Without CUDA (``torch.cuda.is_available()`` false) it prints one line and exits 0, writing nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path("docs") / "gpu-suite-report.md"  # relative to the repository root
PARTS = ("tests", "analysis", "pags", "search", "chita", "train", "sparsify", "llm")
BUDGET_S = {"quick": 480.0, "full": 1800.0}  # quick: fits a GPU lent for one call of 10 minutes
MIN_START_S = 20.0  # a step is not started with less budget left than this
PAGS_FAST = 100.0  # chunk-16 candidates/s above which the large-chunk PAGS run is worth it
OUTPUT_CAP = 200_000  # characters of a step's stdout kept in the report
STDERR_LINES = 80  # lines of a step's stderr kept in the report (all of them if it failed: 400)

# Goals, as the issues and docs/performance.md state them.
GOAL_ANALYSIS_S = 0.1  # ResNet-50 mask set, all metrics, on one GPU
GOAL_PAGS_RATE = 1000.0  # candidates/s on one H100
GOAL_PAGS_E2E_S = 60.0  # n = 1000 end to end
GOAL_STEP_PCT = 3.0  # masked (or sparsify) step over dense, %
GOAL_DUMP_PCT = 1.0  # event dump, % of run time
GOAL_CHITA_SPEEDUP = 10.0  # ours on the GPU over the numpy port of the reference (issue 14)
GOAL_SEARCH_S = 600.0  # the full phase 2 of 2-3-3-3-1 on one H100 (issue 15)
GOAL_LLM_S = 10.0  # the whole Llama-2-7B mask set, all metrics, on one H100 (issue 18)
ANALYSIS_DENSITIES = (0.10, 0.02, 0.01)
#: (model, solver, the issue's n, the reference's dtype for that solver: its backsolves run on
#: float32 G, CHITA on float64; bench_chita.py times both sides in the same dtype).
CHITA_CASES = (
    ("mlpnet", "bso", 1000, "float32"),
    ("mlpnet", "chita", 1000, "float64"),
    ("resnet20", "bso-block", 500, "float32"),
)
CHITA_MODELS = {"mlpnet": "MLPNet", "resnet20": "ResNet-20"}
SEARCH_RUNS, SEARCH_STEPS = 155_952, 50 * 390  # phase 2 of 2-3-3-3-1: runs × steps per run
LLM_BLOCKS = 32  # blocks of Llama-2-7B
LLM_PATTERNS = {"row": "per-row (Wanda-style)", "2:4": "2:4"}


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Step:
    """One subprocess of the suite.

    Attributes
    ----------
    key : str
        Unique name (``"train-compile"``).
    part : str
        The ``--parts`` name it belongs to (one of :data:`PARTS`).
    title : str
        What it measures, for the report.
    args : tuple of str
        The command line after the Python interpreter.
    timeout_s : float
        Its own time limit (the remaining budget may cut it shorter, see :func:`allot`).
    when : callable, optional
        ``when(results)`` with the results so far by key: ``None`` to run the step, or the reason
        to skip it.
    reserve_s : float
        The time kept back for it while the steps before it run (0: none).
    """

    key: str
    part: str
    title: str
    args: tuple[str, ...]
    timeout_s: float
    when: Callable[[dict[str, Result]], str | None] | None = None
    reserve_s: float = 0.0

    @property
    def script(self) -> str | None:
        """The benchmark script it runs (relative to the repository root), or None."""
        return self.args[0] if self.args[0].endswith(".py") else None

    @property
    def flags(self) -> list[str]:
        """The ``--flags`` it passes (without values)."""
        return [a.split("=", 1)[0] for a in self.args if a.startswith("--")]

    def command(self, python: str = "python") -> list[str]:
        """The full command line."""
        return [python, *self.args]

    def shell(self) -> str:
        """The command line as one would type it."""
        return shlex.join(self.command())

    def value(self, flag: str) -> list[str] | None:
        """The values given after ``flag`` (up to the next ``--flag``), or None without it."""
        if flag not in self.args:
            return None
        rest = self.args[self.args.index(flag) + 1 :]
        end = next((i for i, a in enumerate(rest) if a.startswith("--")), len(rest))
        return list(rest[:end])


def plan(parts: Sequence[str], full: bool, tmp: Path) -> list[Step]:
    """The steps of a run, in the order they run.

    Parameters
    ----------
    parts : sequence of str
        The parts to run (names from :data:`PARTS`).
    full : bool
        Bigger sizes (``--full``) instead of the quick ones.
    tmp : Path
        A scratch directory (the tests' JUnit XML file goes there).

    Returns
    -------
    list of Step
        Tests, analysis, PAGS (and the large-chunk PAGS run, conditional), the ensemble trainer,
        CHITA's solvers, the eager training step, sparsify, the LLM layers, and the compiled
        training step last (its compilation is the longest and least certain part). Quick
        reserves add up to 425 s (under the 480 s budget), full ones to 1,580 s.
    """
    if full:
        analysis = "--networks resnet18 resnet50 --device cpu cuda --repeats 5"
        pags = "--chunks 16 64 --n 1000 --e2e-chunk 64"
        train, sparsify = "--steps 100 --rounds 7", "--rounds 9"
        search = "--cuda-batch 4096 16384 65536 155952 --steps 200 --loop-models 4 --loop-steps 300"
        chita = "--device cpu cuda --repeat 5 --loop-rows 200"
        llm = "--blocks 32 --svds-blocks 1"
    else:
        analysis = "--networks resnet50 --device cuda --repeats 3"
        pags = "--chunks 16 --n 32 --e2e-chunk 16"
        train, sparsify = "--steps 50 --rounds 5", "--rounds 5"
        search = "--cuda-batch 16384 65536 --steps 50 --loop-models 2 --loop-steps 100"
        chita = "--device cuda --repeat 2 --loop-rows 50"
        llm = "--blocks 1 --svds-blocks 0"
    densities = " ".join(f"{d:g}" for d in ANALYSIS_DENSITIES)
    pags_cuda = "benchmarks/bench_pags.py --device cuda --skip-nx --repeats 3"
    train_cuda = f"benchmarks/bench_train.py --device cuda {train}"
    # key, part, title, command line after `python`, timeout and reserve in s (quick, full),
    # condition. The quick reserves follow the wall times of the first run on an H200
    # (docs/gpu-suite-report.md, 2026-12-04), a little under them where the budget allows; the
    # llm step, which timed out at 90 s there (37 s per pattern after start-up), got 150 s (its
    # reserve 80 s: 20 s went to llm-route, the batched route's solve alone, run before it). The
    # 55 s left of the budget go to whichever steps run over.
    spec = [
        ("tests", "tests", "the CUDA tests (`@pytest.mark.cuda`)",
         "-m pytest -q -m cuda -p no:cacheprovider -ra", (150, 150), (50, 60), None),
        ("analysis", "analysis", "analyze() on CUDA: ResNet-50 mask sets, 90/98/99 % sparse",
         f"benchmarks/bench_analysis.py {analysis} --densities {densities} --skip-nx",
         (120, 400), (60, 150), None),
        ("pags", "pags", "PAGS scoring and end to end on CUDA: ResNet-18, ERK 99 %",
         f"{pags_cuda} {pags}", (100, 600), (40, 200), None),
        ("pags-large", "pags", "PAGS scoring on CUDA, chunks of 64 and 256",
         f"{pags_cuda} --skip-e2e --chunks 64 256", (60, 120), (20, 60), _pags_fast),
        ("search", "search", "ensemble trainer on CUDA: model-steps/s, full phase 2 of 2-3-3-3-1",
         f"benchmarks/bench_search.py --device cuda {search}", (60, 180), (25, 90), None),
        ("chita", "chita", "CHITA solvers on CUDA vs the numpy port: MLPNet, ResNet-20",
         f"benchmarks/bench_chita.py {chita}", (90, 300), (35, 150), None),
        ("train", "train", "masked vs dense training step, ResNet-18 CIFAR, eager",
         train_cuda, (90, 240), (25, 120), None),
        ("sparsify", "sparsify", "masktopo.sparsify overhead on a transformer block",
         f"benchmarks/bench_train.py --sparsify --device cuda {sparsify}", (90, 240), (20, 120),
         None),
        ("llm-route", "llm", "the batched route's solve on CUDA: eigh vs block Krylov, one "
         "Llama-2-7B block", "benchmarks/bench_batched_route.py --device cuda --full", (60, 120),
         (20, 30), None),
        ("llm", "llm", "every metric of Llama-2-7B layers at 50 % (per-row, 2:4) on CUDA",
         f"benchmarks/bench_llm.py --device cuda --patterns row,2:4 {llm}", (150, 900), (80, 400),
         None),
        ("train-compile", "train", "masked vs dense training step, ResNet-18 CIFAR, torch.compile",
         f"{train_cuda} --compile", (200, 360), (50, 200), None),
    ]  # fmt: skip
    steps = []
    for key, part, title, line, timeouts, reserves, when in spec:
        if part not in parts:
            continue
        args = tuple(line.split())
        if key == "tests":
            args += (f"--junitxml={tmp / 'cuda-tests.xml'}",)
        steps.append(
            Step(key, part, title, args, float(timeouts[full]), when, float(reserves[full]))
        )
    return steps


def allot(step: Step, left: float, later: Sequence[Step], scale: float = 1.0) -> float:
    """The time limit of ``step`` when ``left`` seconds of the budget remain.

    Parameters
    ----------
    step : Step
        The step about to start.
    left : float
        Seconds of the budget left.
    later : sequence of Step
        The steps planned after it: their reserves are kept back.
    scale : float
        Factor on the reserves (below 1 when a small ``--budget`` cannot hold them all).

    Returns
    -------
    float
        ``min(step.timeout_s, left - scale * sum of the later reserves)``, at least 0. Since each
        step is cut so, the steps after a hung one still get their reserves.
    """
    keep = scale * sum(s.reserve_s for s in later)
    return max(0.0, min(step.timeout_s, left - keep))


def _pags_fast(results: dict[str, Result]) -> str | None:
    """Run the large-chunk PAGS step only when the chunk-16 CUDA rate makes it cheap."""
    res = results.get("pags")
    if res is None or res.status != "ok":
        return "the first PAGS run did not finish"
    rates = pags_rates(res.stdout)
    rate = max(rates.values(), default=None)
    if rate is None:
        return "no CUDA rate could be parsed from the first PAGS run"
    if rate < PAGS_FAST:
        return (
            f"{rate:.1f} candidates/s at chunk 16, under {PAGS_FAST:.0f}/s: a chunk of 256 "
            f"would take {256 / rate:.0f} s a call"
        )
    return None


# --------------------------------------------------------------------------- running


@dataclass
class Result:
    """What one step gave.

    ``status`` is ``"ok"`` (exit status 0), ``"failed"`` (another exit status, or it could not
    start), ``"timed out"``, ``"not run"`` (the budget was spent: counts as a failure) or
    ``"skipped"`` (its condition said so: not a failure).
    """

    step: Step
    status: str
    rc: int | None = None
    wall_s: float = 0.0
    timeout_s: float = 0.0
    stdout: str = ""
    stderr: str = ""
    note: str = ""
    junit: str | None = None  # the tests' JUnit XML, when written

    @property
    def bad(self) -> bool:
        """Whether this result makes the suite exit 1."""
        return self.status not in ("ok", "skipped")


class _Interrupted(Exception):
    """SIGTERM from outside: stop the running step, write the report, exit 1."""


def _on_sigterm(signum, frame):  # pragma: no cover - signal handler
    raise _Interrupted()


def _kill_group(proc: subprocess.Popen) -> None:
    """End the step's process group (its own session: the step and whatever it started)."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_step(step: Step, timeout_s: float, tmp: Path) -> Result:
    """Run ``step`` in a subprocess of its own session, with ``timeout_s``.

    Parameters
    ----------
    step : Step
        The step.
    timeout_s : float
        Its time limit in seconds; on expiry its process group gets SIGTERM, then SIGKILL.
    tmp : Path
        Where its stdout and stderr are written while it runs.

    Returns
    -------
    Result
        Status, exit status, wall time and the outputs (whatever was written before a timeout).
    """
    out_f, err_f = tmp / f"{step.key}.stdout", tmp / f"{step.key}.stderr"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    rc, status, note = None, "failed", ""
    with open(out_f, "wb") as fo, open(err_f, "wb") as fe:
        try:
            proc = subprocess.Popen(
                step.command(sys.executable),
                cwd=ROOT,
                stdout=fo,
                stderr=fe,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            return Result(step, "failed", note=f"could not start: {exc}", timeout_s=timeout_s)
        try:
            rc = proc.wait(timeout=timeout_s)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            status, note = "timed out", f"killed after {timeout_s:.0f} s"
        except BaseException:
            _kill_group(proc)
            raise
    wall = time.perf_counter() - t0
    res = Result(step, status, rc, wall, timeout_s, _read(out_f), _read(err_f), note)
    junit = next((a.split("=", 1)[1] for a in step.args if a.startswith("--junitxml=")), None)
    if junit and Path(junit).is_file():
        res.junit = _read(Path(junit))
    return res


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------- parsing


@dataclass
class MdTable:
    """A Markdown table of a benchmark's output: the heading above it, header and body cells."""

    heading: str
    header: list[str]
    rows: list[list[str]]

    def col(self, pattern: str) -> int | None:
        """Index of the first header cell matching the regular expression, or None."""
        return next((i for i, h in enumerate(self.header) if re.search(pattern, h)), None)


def md_tables(text: str) -> list[MdTable]:
    """Every Markdown table in ``text`` (``| a | b |`` lines under a ``|---|`` separator).

    Parameters
    ----------
    text : str
        Markdown.

    Returns
    -------
    list of MdTable
        In order; each with the last ``#`` heading line before it ("" if none).
    """

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    tables, heading = [], ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line.startswith("|") and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", nxt):
            table = MdTable(heading, cells(line), [])
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                table.rows.append(cells(lines[i]))
                i += 1
            tables.append(table)
            continue
        i += 1
    return tables


_NUM = r"[-+−]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?"


def number(cell: str) -> float | None:
    """The first number in a table cell (``**1,234**`` → 1234.0, ``+1.2%`` → 1.2), or None."""
    m = re.search(_NUM, cell.replace("*", ""))
    if m is None:
        return None
    try:
        return float(m.group().replace(",", "").replace("−", "-"))
    except ValueError:
        return None


def percent_pair(cell: str) -> tuple[float, float] | None:
    """``"0.009% (0.017%)"`` → (0.009, 0.017): a share on the critical path and in total."""
    m = re.search(rf"({_NUM})\s*%\s*\(\s*({_NUM})\s*%\s*\)", cell.replace("*", ""))
    return None if m is None else (number(m.group(1)), number(m.group(2)))


def parse_pytest(stdout: str, junit: str | None = None) -> dict | None:
    """Counts and failures of a pytest run: from its JUnit XML, else its summary line.

    Parameters
    ----------
    stdout : str
        pytest's output (``-q -ra``).
    junit : str, optional
        The ``--junitxml`` file's text.

    Returns
    -------
    dict or None
        ``passed``, ``failed``, ``errors``, ``skipped`` (ints) and ``failures`` (test ids), or
        None if neither source could be read.
    """
    if junit:
        try:
            root = ET.fromstring(junit)
        except ET.ParseError:
            root = None
        if root is not None:
            suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
            n = {
                k: sum(int(s.get(k, 0)) for s in suites)
                for k in ("tests", "failures", "errors", "skipped")
            }
            failures = []
            for case in root.iter("testcase"):
                if case.find("failure") is not None or case.find("error") is not None:
                    failures.append(f"{case.get('classname', '')}::{case.get('name', '')}")
            return {
                "passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"],
                "failed": n["failures"],
                "errors": n["errors"],
                "skipped": n["skipped"],
                "failures": failures,
            }
    summary = [
        ln for ln in stdout.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", ln)
    ]
    if not summary:
        return None
    counts = {k: 0 for k in ("passed", "failed", "errors", "skipped")}
    for num, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", summary[-1]):
        counts["errors" if word.startswith("error") else word] += int(num)
    failures = re.findall(r"^(?:FAILED|ERROR) (\S+)", stdout, flags=re.M)
    return {**counts, "failures": failures}


def pags_rates(text: str, device: str = "cuda") -> dict[int, float]:
    """Chunk → candidates/s of ``device`` from bench_pags.py's throughput table."""
    rates: dict[int, float] = {}
    for t in md_tables(text):
        i_dev, i_chunk, i_rate = t.col(r"^device$"), t.col(r"^chunk$"), t.col(r"^candidates/s$")
        if None in (i_dev, i_chunk, i_rate):
            continue
        for r in t.rows:
            if len(r) > max(i_dev, i_chunk, i_rate) and r[i_dev] == device:
                chunk, rate = number(r[i_chunk]), number(r[i_rate])
                if chunk is not None and rate is not None:
                    rates[int(chunk)] = max(rate, rates.get(int(chunk), 0.0))
    return rates


# --------------------------------------------------------------------------- figures


@dataclass
class Figure:
    """One row of the goal table: ``met`` is "yes", "no", "not parsed", "not run" or "—"."""

    name: str
    measured: str
    goal: str
    met: str


def _judge(ok: bool) -> str:
    return "yes" if ok else "no"


def _missing(name: str, goal: str, why: str = "not parsed") -> Figure:
    return Figure(name, why, goal, why)


def tests_figures(summary: dict | None) -> list[Figure]:
    """The CUDA tests' row: all must pass and none be skipped on a machine with CUDA."""
    name, goal = "CUDA tests (`pytest -m cuda`)", "all pass, none skipped"
    if summary is None:
        return [_missing(name, goal)]
    s = summary
    measured = (
        f"{s['passed']} passed, {s['failed']} failed, {s['errors']} errors, {s['skipped']} skipped"
    )
    ok = s["failed"] == s["errors"] == s["skipped"] == 0 and s["passed"] > 0
    return [Figure(name, measured, goal, _judge(ok))]


def analysis_figures(text: str, device: str = "cuda", network: str = "ResNet-50") -> list[Figure]:
    """``analyze()`` seconds per mask set of ``network`` at each density, and the error check."""
    goal = f"≤ {GOAL_ANALYSIS_S:g} s"
    col_all = rf"^ours all metrics \({device}\) s$"
    col_sp = rf"^ours spectra-only \({device}\) s$"
    tables = [t for t in md_tables(text) if network in t.heading and t.col(col_all) is not None]
    figs, errs = [], []
    for d in ANALYSIS_DENSITIES:
        name = (
            f"`analyze()` {network} mask set, {100 * (1 - d):.0f} % sparse, all metrics ({device})"
        )
        t, row = next(
            ((t, r) for t in tables for r in t.rows if r and r[0].startswith(f"{d:.2f}")),
            (None, None),
        )
        v = number(row[t.col(col_all)]) if row and len(row) > t.col(col_all) else None
        if v is None:
            figs.append(_missing(name, goal))
            continue
        i_sp, i_err = t.col(col_sp), t.col(r"^max rel err")
        spectra = number(row[i_sp]) if i_sp is not None and len(row) > i_sp else None
        extra = f" (spectra only {spectra:g} s)" if spectra is not None else ""
        figs.append(Figure(name, f"{v:g} s{extra}", goal, _judge(v <= GOAL_ANALYSIS_S)))
        if i_err is not None and len(row) > i_err:
            err = number(row[i_err].split("/")[-1])
            if err is not None:
                errs.append(err)
    name = f"`analyze()` {network} max rel error vs eigsh ({device}, all densities)"
    if errs:
        figs.append(Figure(name, f"{max(errs):.1e}", "— (CPU runs: ≤ 1.3e-14)", "—"))
    else:
        figs.append(_missing(name, "— (CPU runs: ≤ 1.3e-14)"))
    return figs


def pags_figures(texts: Sequence[str], device: str = "cuda") -> list[Figure]:
    """PAGS scoring rate (best chunk over ``texts``) and the n = 1000 end-to-end time."""
    rates: dict[int, float] = {}
    for text in texts:
        for chunk, rate in pags_rates(text, device).items():
            rates[chunk] = max(rate, rates.get(chunk, 0.0))
    name = f"PAGS scoring, ResNet-18 ERK 99 % candidates/s ({device}, best chunk)"
    goal = f"≥ {GOAL_PAGS_RATE:,.0f}/s"
    if rates:
        best = max(rates, key=rates.get)
        others = ", ".join(f"chunk {c}: {rates[c]:,.1f}/s" for c in sorted(rates) if c != best)
        measured = f"{rates[best]:,.1f}/s at chunk {best}" + (f" ({others})" if others else "")
        figs = [Figure(name, measured, goal, _judge(rates[best] >= GOAL_PAGS_RATE))]
    else:
        figs = [_missing(name, goal)]
    name = f"PAGS end to end, n = 1000 ({device})"
    goal = f"< {GOAL_PAGS_E2E_S:.0f} s"
    for text in texts:
        for t in md_tables(text):
            i_dev, i_n, i_t = t.col(r"^device$"), t.col(r"^n$"), t.col(r"^time for n = 1000")
            if None in (i_dev, i_n, i_t):
                continue
            for r in t.rows:
                if len(r) > max(i_dev, i_n, i_t) and r[i_dev] == device:
                    v = number(r[i_t])
                    if v is None:
                        continue
                    how = (
                        f"extrapolated from n = {r[i_n]}"
                        if "extrapolated" in r[i_t]
                        else "measured"
                    )
                    return [
                        *figs,
                        Figure(name, f"{v:g} s ({how})", goal, _judge(v < GOAL_PAGS_E2E_S)),
                    ]
    return [*figs, _missing(name, goal)]


def train_figures(text: str, label: str) -> list[Figure]:
    """Masked vs dense step and the dump share (ΔT = 100) from bench_train.py's default mode."""
    step_name = f"masked vs dense step, ResNet-18 CIFAR batch 128, bf16 AMP, channels-last, {label}"
    dump_name = f"event dump (masks + kept weights) share of run time at ΔT = 100, {label}"
    step_goal, dump_goal = f"≤ +{GOAL_STEP_PCT:g} %", f"≤ {GOAL_DUMP_PCT:g} % (critical path)"
    figs = {}
    for t in md_tables(text):
        if t.header[:1] == ["what"] and t.col(r"^share$") is not None:
            rows = {r[0].split(" (")[0]: r for r in t.rows if len(r) >= 3}
            dense, masked = rows.get("dense step"), rows.get("masked step")
            pct = number(masked[2]) if masked else None
            if pct is not None:
                times = f"dense {dense[1]}, masked {masked[1]}" if dense else f"masked {masked[1]}"
                figs["step"] = Figure(
                    step_name, f"{pct:+.1f} % ({times})", step_goal, _judge(pct <= GOAL_STEP_PCT)
                )
        if t.header[:1] == ["dump"]:
            i = t.col(r"ΔT = 100$")
            row = next((r for r in t.rows if r and r[0].startswith("masks + kept weights")), None)
            pair = percent_pair(row[i]) if row and i is not None and len(row) > i else None
            if pair is not None:
                crit, total = pair
                figs["dump"] = Figure(
                    dump_name,
                    f"{crit:.3f} % ({total:.3f} % with the background write)",
                    dump_goal,
                    _judge(crit <= GOAL_DUMP_PCT),
                )
    return [
        figs.get("step") or _missing(step_name, step_goal),
        figs.get("dump") or _missing(dump_name, dump_goal),
    ]


SPARSIFY_LOOPS = (
    ("static", "None"),
    ("static", "temp dir"),
    ("rigl", "None"),
    ("rigl", "temp dir"),
)


def sparsify_figures(text: str) -> list[Figure]:
    """Overhead of each ``sparsify`` loop over the dense loop from ``bench_train.py --sparsify``."""
    goal = f"≤ +{GOAL_STEP_PCT:g} %"
    found: dict[tuple[str, str], Figure] = {}
    for t in md_tables(text):
        i = t.col(r"^overhead vs dense$")
        if t.header[:1] != ["loop"] or i is None:
            continue
        for r in t.rows:
            if len(r) <= i or "sp.step()" not in r[0]:
                continue
            method = r[0].split(",")[0].strip()
            out = "None" if r[1].startswith("None") else "temp dir"
            pct = number(r[i])
            if pct is None:
                continue
            amort = "amortised " if "amortised" in r[2] else ""
            name = f"sparsify overhead, transformer block, {method}, out = {out}"
            found[(method, out)] = Figure(
                name,
                f"{pct:+.1f} % ({amort}{r[2].split(', ')[-1]})",
                goal,
                _judge(pct <= GOAL_STEP_PCT),
            )
    return [
        found.get(k)
        or _missing(f"sparsify overhead, transformer block, {k[0]}, out = {k[1]}", goal)
        for k in SPARSIFY_LOOPS
    ]


def _cols(t: MdTable, patterns: dict[str, str]) -> dict[str, int] | None:
    """Column indices of ``t`` by name (``patterns``: name → header regex), or None if any is
    missing."""
    cols = {k: t.col(pat) for k, pat in patterns.items()}
    return None if None in cols.values() else cols


def _pct(sparsity: str) -> str:
    """``"0.9"`` → ``"90 %"``."""
    v = number(sparsity)
    return sparsity if v is None else f"{100 * v:g} %"


def chita_figures(text: str, device: str = "cuda") -> list[Figure]:
    """CHITA's solvers on ``device`` against the numpy port, from ``bench_chita.py``'s tables.

    Parameters
    ----------
    text : str
        The benchmark's stdout (Markdown).
    device : str
        The "ours on" device whose rows count.

    Returns
    -------
    list of Figure
        One row per case of :data:`CHITA_CASES` (the numpy port's time over ours at every
        sparsity run in the reference's dtype for the solver; met when the smallest speed-up is
        at least :data:`GOAL_CHITA_SPEEDUP`), one with the largest objective difference and
        smallest support Jaccard index over the float64 rows (no goal: the CPU runs agree to
        8e-12 with identical supports), and one with the gradient rows per second (no goal).
        A table without a dtype column (older reports) counts as float64 throughout.
    """
    goal = f"≥ {GOAL_CHITA_SPEEDUP:g}× the numpy port"
    found: dict[tuple[str, str, str], list[tuple]] = {}
    diffs, jaccards, grads = [], [], []
    solver_cols = {"model": r"^model$", "n": r"^n$", "solver": r"^solver$", "s": r"^sparsity$",
                   "on": r"^ours on$", "tn": r"^numpy s$", "to": r"^ours s$", "x": r"^speed-up$",
                   "diff": r"^rel\. objective diff$", "jac": r"^support Jaccard$"}  # fmt: skip
    grad_cols = {"model": r"^model$", "dev": r"^device$", "n": r"^n$", "vmap": r"^vmap\(grad\)",
                 "loop": r"^one backward per row", "x": r"^speed-up$"}  # fmt: skip
    for t in md_tables(text):
        c = _cols(t, solver_cols)
        if c is not None:
            dcol = t.col(r"^dtype$")  # None in older reports: float64 throughout
            for r in t.rows:
                if len(r) <= max(c.values()) or r[c["on"]] != device:
                    continue
                x = number(r[c["x"]])
                if x is None:
                    continue
                dtype = r[dcol] if dcol is not None else "float64"
                key = (r[c["model"]], r[c["solver"]], dtype)
                found.setdefault(key, []).append((r[c["s"]], r[c["n"]], x, r[c["tn"]], r[c["to"]]))
                diff, jac = number(r[c["diff"]]), number(r[c["jac"]])
                if diff is not None and jac is not None and dtype == "float64":
                    diffs.append(diff)
                    jaccards.append(jac)
        c = _cols(t, grad_cols)
        if c is not None:
            for r in t.rows:
                if len(r) > max(c.values()) and r[c["dev"]] == device:
                    name = CHITA_MODELS.get(r[c["model"]], r[c["model"]])
                    grads.append(f"{name} n = {r[c['n']]}: {r[c['vmap']]} vs {r[c['loop']]} "
                                 f"rows/s ({r[c['x']]})")  # fmt: skip
    figs = []
    for model, solver, n_goal, dtype in CHITA_CASES:
        block = ", block 500" if solver == "bso-block" else ""
        name = (
            f"CHITA `{solver}`, {CHITA_MODELS[model]} n = {n_goal}{block}, {dtype} (the "
            f"reference's): numpy port / ours ({device})"
        )
        rows = found.get((model, solver, dtype))
        if not rows:
            figs.append(_missing(name, goal))
            continue
        speed = ", ".join(f"{x:g}× at {_pct(s)}" for s, _, x, _, _ in rows)
        times = f"numpy {' / '.join(r[3] for r in rows)} s, ours {' / '.join(r[4] for r in rows)} s"
        ns = sorted({r[1] for r in rows})
        at = "" if ns == [str(n_goal)] else f"; at n = {', '.join(ns)}, not {n_goal}"
        worst = min(r[2] for r in rows)
        figs.append(
            Figure(name, f"{speed} ({times}{at})", goal, _judge(worst >= GOAL_CHITA_SPEEDUP))
        )
    name = f"CHITA ours ({device}) against the numpy port: same result"
    agree_goal = "— (CPU runs: Jaccard 1.0000, objectives within 8e-12)"
    if diffs:
        measured = (
            f"objectives within {max(diffs):.1e} relative, support Jaccard ≥ "
            f"{min(jaccards):.4f} ({len(diffs)} float64 solves)"
        )
        figs.append(Figure(name, measured, agree_goal, "—"))
    else:
        figs.append(_missing(name, agree_goal))
    name = f"CHITA gradient rows/s ({device}): vmap(grad) vs one backward per row"
    figs.append(Figure(name, "; ".join(grads), "—", "—") if grads else _missing(name, "—"))
    return figs


def search_figures(text: str, device: str = "cuda") -> list[Figure]:
    """The full phase 2 of 2-3-3-3-1 extrapolated from ``bench_search.py``'s best ``device`` rate.

    Parameters
    ----------
    text : str
        The benchmark's stdout (Markdown).
    device : str
        The device of the ensemble rows that count.

    Returns
    -------
    list of Figure
        One row: runs × steps (read from the report's last line, else :data:`SEARCH_RUNS` ×
        :data:`SEARCH_STEPS`) over the best ensemble rate, against :data:`GOAL_SEARCH_S`; the
        measured cell names the rate, its number of models at once, the other sizes' rates and
        the ratio to the one-model loop (on the CPU).
    """
    runs, steps = SEARCH_RUNS, SEARCH_STEPS
    m = re.search(r"full phase 2 = ([\d,]+) runs × ([\d,]+) steps", text)
    if m:
        runs, steps = int(number(m.group(1))), int(number(m.group(2)))
    name = (
        f"full phase 2 of 2-3-3-3-1 ({runs:,} runs × {steps:,} steps), extrapolated from the best "
        f"ensemble rate ({device})"
    )
    goal = f"≤ {GOAL_SEARCH_S / 60:g} min (one H100)"
    rates: dict[int, float] = {}
    loop = None
    for t in md_tables(text):
        c = _cols(t, {"who": r"^trainer$", "B": r"^models at once$", "rate": r"^model-steps/s$"})
        if c is None:
            continue
        for r in t.rows:
            if len(r) <= max(c.values()):
                continue
            B, rate = number(r[c["B"]]), number(r[c["rate"]])
            if B is None or rate is None or rate <= 0:
                continue
            if r[c["who"]].startswith(f"ensemble ({device}"):
                rates[int(B)] = max(rate, rates.get(int(B), 0.0))
            elif r[c["who"]].startswith("one-model loop"):
                loop = rate
    if not rates:
        return [_missing(name, goal)]
    best = max(rates, key=rates.get)
    secs = runs * steps / rates[best]
    others = ", ".join(f"B = {b:,}: {rates[b] / 1e6:.2f} M/s" for b in sorted(rates) if b != best)
    ratio = f", {rates[best] / loop:,.0f}× the one-model loop on the CPU" if loop else ""
    measured = (
        f"{secs:,.0f} s = {secs / 60:.1f} min ({rates[best] / 1e6:.2f} M model-steps/s at "
        f"B = {best:,}{ratio}" + (f"; {others}" if others else "") + ")"
    )
    return [Figure(name, measured, goal, _judge(secs <= GOAL_SEARCH_S))]


def route_figures(text: str, device: str = "cuda") -> list[Figure]:
    """The batched route's solve, ``eigh`` against block Krylov, from
    ``bench_batched_route.py``'s table: one row per kind of values (binary, weighted)."""
    found: dict[str, Figure] = {}
    for t in md_tables(text):
        c = _cols(t, {"device": r"^device", "values": r"^values", "eigh": r"^eigh s",
                      "krylov": r"^Krylov s", "diff": r"rel\. diff"})  # fmt: skip
        if c is None:
            continue
        for r in t.rows:
            e, k, d = (number(r[c[x]]) for x in ("eigh", "krylov", "diff"))
            if r[c["device"]] != device or None in (e, k, d):
                continue
            name = f"batched route, one Llama-2-7B block, {r[c['values']]}: block Krylov"
            found[r[c["values"]]] = Figure(
                name, f"{k:.2f} s against eigh {e:.2f} s; max rel. diff {d:.1e}",
                "faster than eigh, the same σ to 1e-9", _judge(k < e and d <= 1e-9),
            )  # fmt: skip
    goal = "faster than eigh, the same σ to 1e-9"
    name = "batched route, one Llama-2-7B block, {}: block Krylov"
    return [found.get(v) or _missing(name.format(v), goal) for v in ("binary", "weighted")]


def _llm_runs(stdout: str, stderr: str, device: str) -> tuple[dict[str, dict], bool]:
    """Per pattern ``{"whole", "per_block", "blocks", "peak_gib"}`` of ``bench_llm.py`` on
    ``device`` (``whole``: 32 × the seconds per block, the table's own column): from
    its stdout table, else from the JSON line it logs to stderr after each pattern. Also whether
    the shapes were Llama-2-7B's."""
    runs: dict[str, dict] = {}
    llama = "NOT Llama-2-7B" not in stdout
    dev = re.search(r"^- device: (\w+);", stdout, flags=re.M)
    blocks = re.search(r"^# bench_llm: .*?, (\d+) of 32 blocks", stdout, flags=re.M)
    if dev is not None and dev.group(1) == device and blocks is not None:
        for t in md_tables(stdout):
            c = _cols(t, {"pat": r"^pattern$", "per": r"^per block \(wall\)$",
                          "whole": r"^whole model, wall", "rss": r"^peak RSS$"})  # fmt: skip
            if c is None:
                continue
            for r in t.rows:
                ok = len(r) > max(c.values())
                per, whole = (number(r[c["per"]]), number(r[c["whole"]])) if ok else (None, None)
                if per is not None and whole is not None:
                    runs[r[c["pat"]].split(" (")[0]] = {
                        "whole": whole,
                        "per_block": per,
                        "blocks": int(blocks.group(1)),
                        "peak_gib": number(r[c["rss"]]),
                    }
    for line in stderr.splitlines():
        if not line.startswith("{") or '"pattern"' not in line:
            continue
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if d.get("device") != device or d.get("pattern") in runs or "per_block" not in d:
            continue
        runs[d["pattern"]] = {
            "whole": float(d["per_block"]) * LLM_BLOCKS,
            "per_block": float(d["per_block"]),
            "blocks": int(d["blocks"]),
            "peak_gib": d["peak_rss"] / 2**30 if "peak_rss" in d else None,
        }
    return runs, llama


def llm_figures(
    stdout: str, stderr: str = "", patterns: Sequence[str] = tuple(LLM_PATTERNS), device="cuda"
) -> list[Figure]:
    """The whole Llama-2-7B mask set's time per pattern from ``bench_llm.py``.

    Parameters
    ----------
    stdout, stderr : str
        The benchmark's outputs: the table, and the per-pattern JSON lines (what a run stopped
        in a later pattern leaves).
    patterns : sequence of str
        The patterns the run was asked for (one row each).
    device : str
        The device the run must have used.

    Returns
    -------
    list of Figure
        Per pattern: 32 × the seconds per block (measured when all 32 blocks ran, else
        extrapolated, and said so) against :data:`GOAL_LLM_S`; "—" instead of yes/no when the
        layers were not Llama-2-7B's.
    """
    runs, llama = _llm_runs(stdout, stderr, device)
    goal = f"≤ {GOAL_LLM_S:g} s (one H100)"
    figs = []
    for pat in patterns:
        name = (
            f"whole Llama-2-7B mask set ({LLM_BLOCKS} blocks), 50 % "
            f"{LLM_PATTERNS.get(pat, pat)}, all metrics ({device})"
        )
        run = runs.get(pat)
        if run is None:
            figs.append(_missing(name, goal))
            continue
        total, b = run["whole"], run["blocks"]
        how = (
            "measured on all 32 blocks"
            if b == LLM_BLOCKS
            else f"extrapolated ×{LLM_BLOCKS / b:g} from {b} block{'s' * (b > 1)}"
        )
        rss = f"; peak RSS {run['peak_gib']:.2f} GiB" if run["peak_gib"] is not None else ""
        shapes = "" if llama else "; NOT Llama-2-7B shapes"
        measured = f"{total:.3g} s ({how}, {run['per_block']:.3g} s per block{rss}{shapes})"
        met = _judge(total <= GOAL_LLM_S) if llama else "—"
        figs.append(Figure(name, measured, goal, met))
    return figs


def figures(results: dict[str, Result], steps: Sequence[Step]) -> list[Figure]:
    """The goal table's rows for the steps planned, from their results so far.

    Parameters
    ----------
    results : dict
        Step key → :class:`Result` (steps not yet run are absent).
    steps : sequence of Step
        The plan.

    Returns
    -------
    list of Figure
        Rows of a step that has not run say "not run"; of one that ran but whose figure could
        not be found, "not parsed" (with the step's status when it did not finish).
    """
    keys = {s.key for s in steps}
    out: list[Figure] = []

    def text(key: str) -> str:
        return results[key].stdout if key in results else ""

    def err(key: str) -> str:
        return results[key].stderr if key in results else ""

    def fix(figs: list[Figure], key: str) -> list[Figure]:
        res = results.get(key)
        if res is None or res.status in ("not run", "skipped"):
            why = "not run" if res is None or res.status == "not run" else "skipped"
            return [_missing(f.name, f.goal, why) if f.met == "not parsed" else f for f in figs]
        if res.status != "ok":
            return [
                Figure(f.name, f"not parsed ({res.status})", f.goal, "not parsed")
                if f.met == "not parsed"
                else f
                for f in figs
            ]
        return figs

    try_ = _safe
    if "tests" in keys:
        res = results.get("tests")
        summary = try_(lambda: parse_pytest(res.stdout, res.junit)) if res else None
        out += fix(tests_figures(summary), "tests")
    if "analysis" in keys:
        out += fix(try_(lambda: analysis_figures(text("analysis")), "analysis"), "analysis")
    if "pags" in keys:
        figs = try_(lambda: pags_figures([text("pags"), text("pags-large")]), "pags")
        out += fix(figs, "pags")
    if "search" in keys:
        out += fix(try_(lambda: search_figures(text("search")), "search"), "search")
    if "chita" in keys:
        out += fix(try_(lambda: chita_figures(text("chita")), "chita"), "chita")
    if "train" in keys:
        out += fix(try_(lambda: train_figures(text("train"), "eager"), "train"), "train")
    if "sparsify" in keys:
        out += fix(try_(lambda: sparsify_figures(text("sparsify")), "sparsify"), "sparsify")
    if "llm-route" in keys:
        figs = try_(lambda: route_figures(text("llm-route")), "llm-route")
        out += fix(figs, "llm-route")
    if "llm" in keys:
        step = next(s for s in steps if s.key == "llm")
        pats = (step.value("--patterns") or [",".join(LLM_PATTERNS)])[0].split(",")
        figs = try_(lambda: llm_figures(text("llm"), err("llm"), pats), "llm")
        out += fix(figs, "llm")
    if "train-compile" in keys:
        figs = try_(lambda: train_figures(text("train-compile"), "torch.compile"), "train")
        out += fix(figs, "train-compile")
    return out


def _safe(fn: Callable, part: str | None = None):
    """``fn()``; a parser that raises gives one "not parsed" row (or None) instead of a crash."""
    try:
        return fn()
    except Exception as exc:  # a malformed output must not cost the report
        if part is None:
            return None
        return [
            Figure(
                f"{part}: figures", f"not parsed ({type(exc).__name__}: {exc})", "—", "not parsed"
            )
        ]


# --------------------------------------------------------------------------- the report


def goal_table(figs: Sequence[Figure]) -> list[str]:
    """The Markdown table "figure | measured | goal | met?" (a missed goal in bold)."""
    lines = ["| figure | measured | goal | met? |", "|---|---|---|---|"]
    for f in figs:
        met = "**no**" if f.met == "no" else f.met
        lines.append(f"| {f.name} | {f.measured} | {f.goal} | {met} |")
    return lines


def _fence(text: str, lang: str) -> list[str]:
    ticks = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return [f"{ticks}{lang}", text.rstrip("\n"), ticks]


def _tail(text: str, n: int) -> str:
    lines = text.rstrip("\n").splitlines()
    return "\n".join(
        ([f"[… {len(lines) - n} earlier lines]"] if len(lines) > n else []) + lines[-n:]
    )


def render_report(
    facts: Sequence[str],
    steps: Sequence[Step],
    results: dict[str, Result],
    *,
    command: str,
    total_s: float,
    finished: bool = True,
) -> str:
    """The whole report as Markdown.

    Parameters
    ----------
    facts : sequence of str
        Machine and version lines (``- GPU: …``).
    steps : sequence of Step
        The plan.
    results : dict
        Step key → :class:`Result` for the steps that ran (or were skipped or not started).
    command : str
        The suite's command line.
    total_s : float
        The suite's wall time so far.
    finished : bool
        False while steps remain (the report is rewritten after each step).

    Returns
    -------
    str
        Markdown: status, machine, steps, goal table, CUDA test failures, each step's output.
    """
    bad = [results[s.key] for s in steps if s.key in results and results[s.key].bad]
    pending = [s.key for s in steps if s.key not in results]
    if not finished:
        state = (
            f"**in progress or interrupted**: {len(pending)} step(s) not finished "
            f"({', '.join(pending)})"
        )
    elif bad:
        state = "exit status 1: " + ", ".join(f"{r.step.key} {r.status}" for r in bad)
    else:
        state = "exit status 0: every step ran (goals missed, if any, are in the table)"
    lines = [
        "# GPU suite report",
        "",
        f"`{command}`: {state}; suite wall time {total_s:.0f} s.",
        "",
        "## Machine",
        "",
        *facts,
        "",
        "## Steps",
        "",
        "| step | command | status | wall s | timeout s |",
        "|---|---|---|---|---|",
    ]
    for s in steps:
        r = results.get(s.key)
        if r is None:
            lines.append(f"| {s.key} | `{s.shell()}` | not finished | | {s.timeout_s:.0f} |")
            continue
        status = r.status + (f" (exit {r.rc})" if r.status == "failed" and r.rc is not None else "")
        status += f": {r.note}" if r.note else ""
        status = f"**{status}**" if r.bad else status
        ran = r.status not in ("not run", "skipped")
        wall, limit = (f"{r.wall_s:.1f}", r.timeout_s) if ran else ("", s.timeout_s)
        lines.append(f"| {s.key} | `{s.shell()}` | {status} | {wall} | {limit:.0f} |")
    lines += ["", "## Goals", "", *goal_table(figures(results, steps)), ""]
    tests = results.get("tests")
    if tests is not None and tests.status not in ("not run", "skipped"):
        summary = _safe(lambda: parse_pytest(tests.stdout, tests.junit))
        lines += ["## CUDA tests", ""]
        if summary is None:
            lines.append("No pytest summary could be read (see the output below).")
        elif summary["failures"]:
            lines += ["Failures and errors:", "", *(f"- `{f}`" for f in summary["failures"])]
        else:
            lines.append("No failures or errors.")
        if summary is not None and summary["skipped"]:
            lines += ["", f"{summary['skipped']} skipped (reasons in the output below)."]
        lines.append("")
    lines += ["## Outputs", ""]
    for s in steps:
        r = results.get(s.key)
        if r is None or r.status in ("not run", "skipped"):
            continue
        out = r.stdout
        err = _tail(r.stderr, 400 if r.bad else STDERR_LINES)
        if len(out) > OUTPUT_CAP:
            out = out[:OUTPUT_CAP] + f"\n[… {len(r.stdout) - OUTPUT_CAP} more characters cut]"
        lines += [
            "<details>",
            f"<summary>{s.key}: {s.title} ({r.status}, {r.wall_s:.1f} s)</summary>",
            "",
            f"`{s.shell()}`",
            "",
            "stdout:",
            "",
            *_fence(out or "(empty)", "text" if s.part == "tests" else "markdown"),
            "",
            f"stderr{' (tail)' if err.startswith('[… ') else ''}:",
            "",
            *_fence(err or "(empty)", "text"),
            "",
            "</details>",
            "",
        ]
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- facts


def no_cuda_line() -> str:
    """The one line printed where there is no CUDA device."""
    import torch

    return (
        f"gpu_suite: no CUDA device (torch {torch.__version__}, CUDA build: "
        f"{torch.version.cuda or 'none'}); nothing to run"
    )


def machine_facts(mode: str, parts: Sequence[str], budget: float, commit: str | None) -> list[str]:
    """GPU, driver, CUDA, torch, masktopo version and commit, CPU, date (needs CUDA)."""
    import torch

    n = torch.cuda.device_count()
    props = torch.cuda.get_device_properties(0)
    driver = "unknown (nvidia-smi not found or failed)"
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
        )
        if proc.returncode == 0 and proc.stdout.strip():
            driver = proc.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        sys.path.insert(0, str(ROOT))
        from masktopo._version import __version__, git_commit

        version, commit = __version__, commit or git_commit() or "unknown (no .git here)"
    except Exception as exc:  # the report is still worth having
        version, commit = f"unknown ({exc})", commit or "unknown"
    try:
        import numpy

        np_version = numpy.__version__
    except ImportError:
        np_version = "not installed"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return [
        f"- GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB, compute capability "
        f"{props.major}.{props.minor}, {props.multi_processor_count} SMs ({n} device(s) visible; "
        "the suite uses device 0)",
        f"- driver {driver}; CUDA {torch.version.cuda} (torch's build); cuDNN {cudnn}",
        f"- torch {torch.__version__}, numpy {np_version}, Python {platform.python_version()}",
        f"- masktopo {version}, commit {commit}",
        f"- CPU: {os.cpu_count()} logical cores; {platform.platform()}",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- mode: {mode}; parts: {', '.join(parts)}; budget {budget:.0f} s",
    ]


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"the report (default: {DEFAULT_OUT} in the repository)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        dest="full",
        action="store_false",
        help="quick sizes, budget 480 s: fits one 10-minute call (the default)",
    )
    size.add_argument(
        "--full",
        dest="full",
        action="store_true",
        help="bigger sizes (ResNet-18 too and CPU comparisons in the analysis, "
        "n = 1000 PAGS end to end, more steps, B up to 155,952 in the search, all 32 LLM "
        "blocks); needs a larger --budget",
    )
    p.set_defaults(full=False)
    p.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (default: {','.join(PARTS)})",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"total time for the steps (default: {BUDGET_S['quick']:.0f} quick, "
        f"{BUDGET_S['full']:.0f} full)",
    )
    p.add_argument(
        "--commit", default=None, help="the commit to name in the report (default: read from .git)"
    )
    p.add_argument(
        "--list",
        action="store_true",
        help="print the commands it would run and exit (no GPU needed)",
    )
    args = p.parse_args(argv)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = [x for x in parts if x not in PARTS]
    if unknown or not parts:
        p.error(f"--parts: unknown {unknown} (choose from {','.join(PARTS)})")
    args.parts = [x for x in PARTS if x in parts]
    args.mode = "full" if args.full else "quick"
    if args.budget is None:
        args.budget = BUDGET_S[args.mode]
    if args.budget <= 0:
        p.error("--budget must be positive")
    return args


def main(argv=None) -> int:
    """Run the suite; see the module docstring. Returns the exit status."""
    args = parse_args(argv)
    cmd = shlex.join(
        ["python", "benchmarks/gpu_suite.py", *(sys.argv[1:] if argv is None else argv)]
    )
    if args.list:
        for s in plan(args.parts, args.full, Path(tempfile.gettempdir()) / "gpu_suite"):
            cond = " (only if chunk-16 CUDA scoring reaches 100/s)" if s.when else ""
            print(f"{s.key} [timeout {s.timeout_s:.0f} s, reserve {s.reserve_s:.0f} s]{cond}: "
                  f"{s.shell()}")  # fmt: skip
        return 0
    import torch

    if not torch.cuda.is_available():
        print(no_cuda_line())
        return 0

    out = args.out if args.out is not None else ROOT / DEFAULT_OUT
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    try:
        facts = machine_facts(args.mode, args.parts, args.budget, args.commit)
    except Exception as exc:  # a CUDA that cannot even describe itself: still run and report
        facts = [f"- machine facts could not be read: {type(exc).__name__}: {exc}"]
    log(f"gpu_suite: {facts[0][2:]}; report: {out}")
    results: dict[str, Result] = {}
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    with tempfile.TemporaryDirectory(prefix="gpu_suite_") as tmpdir:
        tmp = Path(tmpdir)
        steps = plan(args.parts, args.full, tmp)

        def write(finished: bool) -> None:
            text = render_report(
                facts,
                steps,
                results,
                command=cmd,
                total_s=time.perf_counter() - t_start,
                finished=finished,
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")

        reserved = sum(s.reserve_s for s in steps)
        avail = args.budget - (time.perf_counter() - t_start)
        scale = min(1.0, avail / reserved) if reserved > 0 else 1.0
        if scale < 1.0:
            log(f"the budget left, {avail:.0f} s, is under the steps' reserves, {reserved:.0f} s: "
                f"reserves ×{scale:.2f}")  # fmt: skip
        try:
            for i, step in enumerate(steps):
                left = args.budget - (time.perf_counter() - t_start)
                why = step.when(results) if step.when else None
                timeout = allot(step, left, steps[i + 1 :], scale)
                if why is not None:
                    results[step.key] = Result(step, "skipped", note=why)
                    log(f"{step.key}: skipped ({why})")
                elif timeout < MIN_START_S:
                    keep = scale * sum(s.reserve_s for s in steps[i + 1 :])
                    note = (
                        f"budget spent ({left:.0f} s left, {keep:.0f} s of it kept for later steps)"
                    )
                    results[step.key] = Result(step, "not run", note=note)
                    log(f"{step.key}: not run, {note}")
                else:
                    log(f"{step.key}: start, timeout {timeout:.0f} s: {step.shell()}")
                    r = run_step(step, timeout, tmp)
                    results[step.key] = r
                    log(
                        f"{step.key}: {r.status}"
                        + (f" (exit {r.rc})" if r.status == "failed" else "")
                        + f" in {r.wall_s:.1f} s"
                    )
                    if r.bad:
                        for line in _tail(r.stderr or r.stdout, 15).splitlines():
                            log(f"  {step.key} | {line}")
                write(finished=False)
        except (_Interrupted, KeyboardInterrupt):
            log("interrupted: writing the report with what finished")
            write(finished=False)
            return 1
        finally:
            signal.signal(signal.SIGTERM, old)
        write(finished=True)
    bad = [r for r in results.values() if r.bad]
    for f in figures(results, steps):
        log(f"{f.name}: {f.measured} (goal {f.goal}: {f.met})")
    names = ", ".join(r.step.key for r in bad)
    log(f"report written to {out}; " + (f"not ok: {names}" if bad else "every step ran"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
