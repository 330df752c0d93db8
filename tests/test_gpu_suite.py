"""benchmarks/gpu_suite.py without a GPU: the no-CUDA path, the plan's command lines, the parsers
of the benchmarks' Markdown, the goal table and the report, and the step runner (timeouts)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SUITE = BENCH / "gpu_suite.py"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the benchmark scripts import _common
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


gs = _load("gpu_suite")


def _no_cuda_env(**extra):
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", **extra}


def _run(args, **kw):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, **kw)  # fmt: skip


# --------------------------------------------------------------------------- no CUDA


def test_without_cuda_it_prints_one_line_and_writes_nothing(tmp_path):
    default = ROOT / gs.DEFAULT_OUT
    existed = default.exists()
    report = tmp_path / "report.md"
    for extra in (["--out", str(report)], []):
        proc = _run([str(SUITE), *extra], env=_no_cuda_env())
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert len(lines) == 1, proc.stdout
        assert lines[0].startswith("gpu_suite: no CUDA device (torch ")
        assert "CUDA build: " in lines[0] and lines[0].endswith("; nothing to run")
        assert proc.stderr == ""
    assert not report.exists()
    assert default.exists() == existed
    assert list(tmp_path.iterdir()) == []


def test_list_prints_the_plan_without_a_gpu(capsys):
    assert gs.main(["--list", "--parts", "pags,tests"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" ")[0] for line in out] == ["tests", "pags", "pags-large"]
    assert "python -m pytest -q -m cuda -p no:cacheprovider" in out[0]
    assert gs.main(["--list", "--parts", "llm,chita,search"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" ")[0] for line in out] == ["search", "chita", "llm-route", "llm"]
    assert out[0].startswith("search [timeout 60 s, reserve 25 s]: python benchmarks/bench_search")
    assert all("--device cuda" in line for line in out)


def test_parts_are_checked():
    with pytest.raises(SystemExit):
        gs.parse_args(["--parts", "tests,nope"])
    args = gs.parse_args(["--parts", "train, tests"])
    assert args.parts == ["tests", "train"] and args.mode == "quick" and not args.full
    assert args.budget == gs.BUDGET_S["quick"] <= 480
    assert gs.parse_args(["--full"]).budget == gs.BUDGET_S["full"]


# --------------------------------------------------------------------------- the plan


@pytest.mark.parametrize("full", [False, True])
def test_plan_covers_every_part_in_order(full, tmp_path):
    steps = gs.plan(gs.PARTS, full, tmp_path)
    assert [s.key for s in steps] == ["tests", "analysis", "pags", "pags-large", "search",
                                      "chita", "train", "sparsify", "llm-route", "llm",
                                      "train-compile"]  # fmt: skip
    assert {s.part for s in steps} == set(gs.PARTS)
    assert all(s.timeout_s > 0 for s in steps)
    tests = steps[0]
    assert tests.args[:7] == ("-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider")
    assert tests.args[-1] == f"--junitxml={tmp_path / 'cuda-tests.xml'}"
    assert "cuda: " in (ROOT / "pyproject.toml").read_text()  # the marker is registered
    assert [s.key for s in gs.plan(["sparsify"], full, tmp_path)] == ["sparsify"]
    assert [s.key for s in gs.plan(["train"], full, tmp_path)] == ["train", "train-compile"]


def _simulate(steps, budget, took):
    """The statuses main() gives when step k would take ``took[k]`` seconds (and the suite
    itself none): the same allotment rule, on a clock instead of subprocesses."""
    spent, out = 0.0, {}
    for i, s in enumerate(steps):
        limit = gs.allot(s, budget - spent, steps[i + 1 :])
        if limit < gs.MIN_START_S:
            out[s.key] = "not run"
            continue
        spent += min(took[s.key], limit)
        out[s.key] = "ok" if took[s.key] <= limit else "timed out"
    return out, spent


@pytest.mark.parametrize("full", [False, True])
def test_one_hung_step_cannot_eat_the_budget(full, tmp_path):
    # the steps' limits add up to more than the budget, but their reserves fit in it with
    # room for the suite's own start (machine facts: nvidia-smi, torch's import)
    steps = gs.plan(gs.PARTS, full, tmp_path)
    budget = gs.BUDGET_S["full" if full else "quick"]
    assert sum(s.timeout_s for s in steps) > budget
    reserved = sum(s.reserve_s for s in steps)
    assert reserved <= budget - 10
    assert all(gs.MIN_START_S <= s.reserve_s <= s.timeout_s for s in steps)
    if not full:
        assert budget <= 8 * 60 and max(s.timeout_s for s in steps) <= budget / 2
        assert reserved == 425  # as the docs say
    # whichever step hangs, every other one that takes its reserve still runs to the end
    for hung in steps:
        took = {s.key: s.reserve_s for s in steps} | {hung.key: float("inf")}
        status, spent = _simulate(steps, budget, took)
        assert status.pop(hung.key) == "timed out"
        assert set(status.values()) == {"ok"}, (hung.key, status)
        assert spent <= budget
    # nothing hangs and every step runs over its reserve by as much as the budget allows: all
    # of them still run to the end (the rule cuts nothing when the total fits)
    over = min(budget / reserved, min(s.timeout_s / s.reserve_s for s in steps))
    status, spent = _simulate(steps, budget, {s.key: over * s.reserve_s - 1e-9 for s in steps})
    assert set(status.values()) == {"ok"} and spent <= budget
    # every step twice its reserve: the first ones run, later ones are cut short
    status, _ = _simulate(steps, budget, {s.key: 2 * s.reserve_s for s in steps})
    assert status["tests"] == "ok" and "timed out" in status.values()


def test_allot_keeps_the_later_reserves_back():
    a = gs.Step("a", "train", "a", ("-c", "pass"), 100.0, reserve_s=10.0)
    b = gs.Step("b", "train", "b", ("-c", "pass"), 50.0, reserve_s=30.0)
    c = gs.Step("c", "train", "c", ("-c", "pass"), 50.0, reserve_s=20.0)
    assert gs.allot(a, 500.0, [b, c]) == 100.0  # its own timeout
    assert gs.allot(a, 80.0, [b, c]) == 30.0  # 80 - (30 + 20)
    assert gs.allot(a, 80.0, [b, c], scale=0.5) == 55.0
    assert gs.allot(a, 40.0, [b, c]) == 0.0
    assert gs.allot(c, 35.0, []) == 35.0
    assert b.value("--x") is None
    route, step = gs.plan(["llm"], False, Path("/tmp"))
    assert route.key == "llm-route" and route.value("--device") == ["cuda"]
    assert step.value("--patterns") == ["row,2:4"] and step.value("--blocks") == ["1"]


_HELP: dict[str, str] = {}


def _help(script: str) -> str:
    if script not in _HELP:
        proc = _run([script, "--help"])
        assert proc.returncode == 0, proc.stderr
        _HELP[script] = proc.stdout
    return _HELP[script]


@pytest.mark.slow
@pytest.mark.parametrize("full", [False, True])
def test_every_benchmark_accepts_the_flags_it_is_given(full, tmp_path):
    for step in gs.plan(gs.PARTS, full, tmp_path):
        if step.script is None:
            continue
        assert (ROOT / step.script).is_file()
        text = _help(step.script)
        for flag in step.flags:
            assert flag in text, f"{step.key}: {step.script} --help has no {flag}"
        name = Path(step.script).stem
        if name in ("bench_analysis", "bench_pags", "bench_search", "bench_chita", "bench_llm"):
            args = _load(name).parse_args(list(step.args[1:]))  # their parsers check the values
            assert "cuda" in args.device
            if name == "bench_search":
                assert args.device == ["cuda"] and len(args.cuda_batch) >= 2
            if name == "bench_chita":
                assert (args.n_mlp, args.n_resnet) == (1000, 500)  # the shapes
                assert args.sparsity == [0.9, 0.98] and not args.quick
            if name == "bench_llm":
                assert args.device == "cuda" and args.pattern_list == ["row", "2:4"]
                assert (args.hidden, args.intermediate) == (4096, 11008)


@pytest.mark.slow
@pytest.mark.parametrize("parts", [["train", "sparsify"], ["search", "chita", "llm"]])
def test_benchmark_steps_parse_their_command_lines(parts, tmp_path):
    # the benchmarks parse everything before they look for CUDA: exit 1 (no CUDA), never 2
    # (usage); with --device cuda alone they stop there instead of timing the CPU side only
    for full in (False, True):
        for step in gs.plan(parts, full, tmp_path):
            if step.key == "chita" and full:  # --device cpu cuda: the CPU side would run
                continue
            proc = _run(list(step.args), env=_no_cuda_env())
            assert proc.returncode == 1, (step.key, proc.stderr)
            assert "no CUDA device" in proc.stderr
            assert proc.stdout == "", step.key


# --------------------------------------------------------------------------- parsers

ANALYSIS_CUDA = """\
## masktopo analysis benchmark

### ResNet-50 (ImageNet): 54 layers, 25,502,912 weights, uniform densities

| density | ours all metrics (cuda) s | ours spectra-only (cuda) s | networkx s | eigsh on A s | nx / ours-all | nx / ours-spectra | eigsh / ours-spectra | max rel err (vs nx / vs eigsh) |
|---|---|---|---|---|---|---|---|---|
| 0.10 (90 %) | 0.182 | 0.071 | skipped | 4.89 | n/a | n/a | 69× | n/a / 2.1e-13 |
| 0.02 (98 %) | 0.095 | 0.040 | skipped | 1.87 | n/a | n/a | 47× | n/a / 9.5e-15 |
| 0.01 (99 %) | 0.061 | 0.030 | skipped | 1.58 | n/a | n/a | 53× | n/a / 1.3e-14 |

Benchmark wall time: 30 s.
"""

PAGS_CUDA = """\
### 1. Graph-scoring throughput: `score_candidates`, all full-spectrum terms

| device | CPU workers | chunk | s / call (median) | candidates/s | s / candidate | target | vs networkx (1 candidate) |
|---|---|---|---|---|---|---|---|
| cuda | — | 16 | 0.100 | **160** | 0.006 | ≥ 1,000/s (H100): **not met** | n/a |

### 3. End to end: `masktopo.pags.run` (what `masktopo pags` calls)

| device | n | chunk | total s | candidates/s (overall) | candidates/s (steady) | time for n = 1000 | target: n = 1000 < 60 s |
|---|---|---|---|---|---|---|---|
| cuda | 32 | 16 | 5.10 | 6.3 | 150 | **11.6 s (extrapolated)** | met (extrapolated) |
"""

PAGS_LARGE = """\
| device | CPU workers | chunk | s / call (median) | candidates/s | s / candidate | target | vs networkx (1 candidate) |
|---|---|---|---|---|---|---|---|
| cuda | — | 64 | 0.050 | **1,280** | 0.001 | ≥ 1,000/s (H100): met | n/a |
| cuda | — | 256 | 0.180 | **1,422** | 0.001 | ≥ 1,000/s (H100): met | n/a |
"""

TRAIN_CUDA = """\
# bench_train: resnet18 (cifar10 shapes), batch 128, density 0.01, device cuda (bf16 autocast, channels-last)

| what | time | share |
|---|---|---|
| dense step | 12.0 ms | |
| masked step (+ post-step masking of weights and momentum) | 12.6 ms | **+5.0%** vs dense |
| post-step masking alone (`Masking.apply`) | 0.20 ms | **1.67%** of a dense step |

| dump | file | critical path | total incl. background write | share at ΔT = 100 | 1000 | 1500 |
|---|---|---|---|---|---|---|
| masks + kept weights (default, every event) | 1.85 MB | 6.3 ms | 40.0 ms | 0.500% (3.175%) | 0.050% (0.317%) | 0.033% (0.212%) |
| masks only | 1.40 MB | 3.9 ms | 18.6 ms | 0.310% (1.476%) | 0.031% (0.148%) | 0.021% (0.098%) |
"""

SPARSIFY_CUDA = """\
| loop | out | time per step | overhead vs dense |
|---|---|---|---|
| dense loop (forward, backward, AdamW step) | | 30.0 ms | |
| static, density 0.1 + `sp.step()` | None | 30.3 ms | **+1.0%** |
| static, density 0.1 + `sp.step()` | temp dir (2 event files, 3.1 MB) | 30.4 ms | **+1.3%** |
| rigl, density 0.1, ΔT = 100 + `sp.step()` | None | amortised, 31.2 ms | **+4.0%** |
| rigl, density 0.1, ΔT = 100 + `sp.step()` | temp dir (7 event files, 9.0 MB) | amortised, 31.5 ms | **+5.0%** |
| post-step masking alone (`Masking.apply`, 4 weights) | | 0.10 ms | **0.33%** of a dense step |
"""

CHITA_CUDA = """\
# bench_chita: torch solvers vs a numpy port of the CHITA reference

- GPU: NVIDIA H200; devices timed for ours: cpu, cuda

## Solvers (same G, same k, same dtype on both sides)

| model | n | p | solver | dtype | sparsity | ours on | numpy s | ours s | speed-up | numpy peak GB | ours peak GB | rel. objective diff | support Jaccard |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| mlpnet | 1000 | 32,360 | bso | float32 | 0.9 | cpu | 0.097 | 0.076 | 1.3× | 0.004 | 0.000 | 9.5e-10 | 1.0000 |
| mlpnet | 1000 | 32,360 | bso | float32 | 0.9 | cuda | 0.097 | 0.010 | 9.7× | 0.004 | 0.013 | 9.5e-10 | 1.0000 |
| mlpnet | 1000 | 32,360 | bso | float32 | 0.98 | cuda | 0.031 | 0.005 | 6.2× | 0.000 | 0.000 | 1.5e-11 | 1.0000 |
| mlpnet | 1000 | 32,360 | bso | float64 | 0.9 | cuda | 0.113 | 0.010 | 11.3× | 0.015 | 0.026 | 2.0e-16 | 1.0000 |
| mlpnet | 1000 | 32,360 | chita | float64 | 0.9 | cuda | 2.856 | 0.120 | 23.8× | 0.039 | 0.259 | 3.1e-12 | 1.0000 |
| mlpnet | 1000 | 32,360 | chita | float64 | 0.98 | cuda | 1.478 | 0.090 | 16.4× | 0.039 | 0.259 | 8.0e-12 | 0.9990 |

## Gradient rows per second

| model | device | n | inputs | vmap(grad), rows/s | one backward per row, rows/s | speed-up |
|---|---|---|---|---|---|---|
| mlpnet | cpu | 1000 | random inputs | 5,339 | 2,853 | 1.9× |
| mlpnet | cuda | 1000 | random inputs | 52,000 | 3,100 | 16.8× |
"""

SEARCH_CUDA = """\
# Ensemble trainer vs the one-model loop (2-3-3-3-1 supports, batch 128)

one-model loop: 1,900 model-steps/s before the ensembles, 2,000 after; the faster is the reference.

| trainer | models at once | model-steps/s | × one-model loop | full phase 2 |
|---|---:|---:|---:|---:|
| one-model loop (cpu) | 1 | 2,000 | 1.0 | 17.6 d |
| ensemble (cuda, torch) | 16,384 | 3,000,000 | 1,500.0 | 16.9 min |
| ensemble (cuda, torch) | 65,536 | 8,000,000 | 4,000.0 | 6.3 min |

load average after: (1.0, 1.0, 1.0); full phase 2 = 155,952 runs × 19,500 steps, extrapolated from each row's rate.
"""

LLM_CUDA = """\
# bench_llm: Llama-2-7B shapes, 1 of 32 blocks, bf16, 50 % sparse

- GPU: NVIDIA H200 (CUDA 12.4)
- device: cuda; chunk: 67,108,864 entries; dense route: auto; input: generated in memory

| pattern | matrices | total (wall) | CPU | per block (wall) | whole model, wall (×32/blocks) | whole model, CPU | peak RSS | svds baseline, whole model (wall; CPU) | max rel. error vs svds | load (start, end) |
|---|---|---|---|---|---|---|---|---|---|---|
| row (N:M found: -) | 7 | 0.250 s | 0.400 s | 0.250 s | 8.00 s | 12.8 s | 2.10 GiB | not run |  | 1.0, 1.2 |
| 2:4 (N:M found: 2:4) | 7 | 0.400 s | 0.500 s | 0.400 s | 12.8 s | 16.0 s | 2.20 GiB | not run |  | 1.1, 1.3 |
"""

ROUTE_CUDA = """\
# bench_batched_route: eigh against block Krylov on the batched route

| device | values | eigh s | Krylov s | eigh / Krylov | block steps | max rel. diff |
|---|---|---|---|---|---|---|
| cuda | binary | 3.41 | 0.52 | 6.6× | 33, 33, 34, 33, 38, 38, 38 | 2.2e-15 |
| cuda | weighted | 3.38 | 4.10 | 0.8× | 35, 35, 35, 35, 40, 40, 40 | 1.9e-15 |
"""

LLM_ROW_JSON = (
    '{"pattern": "row", "device": "cuda", "matrices": 14, "blocks": 2, "seconds": 0.5, '
    '"per_block": 0.25, "peak_rss": 2254857830}'
)

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0"
failures="1" skipped="1" tests="4"><testcase classname="tests.test_masks" name="test_a"/>
<testcase classname="tests.test_masks" name="test_b"><failure message="boom"/></testcase>
<testcase classname="tests.pai.test_pruning" name="test_c[erk]"/>
<testcase classname="tests.x" name="test_d"><skipped message="needs CUDA"/></testcase>
</testsuite></testsuites>"""


def _by_met(figs):
    return [(f.measured, f.met) for f in figs]


def test_md_tables_and_numbers():
    tables = gs.md_tables(ANALYSIS_CUDA)
    assert len(tables) == 1 and tables[0].heading.startswith("ResNet-50 (ImageNet)")
    assert tables[0].header[1] == "ours all metrics (cuda) s" and len(tables[0].rows) == 3
    assert gs.number("**1,234**") == 1234.0 and gs.number("**-3.4%** vs dense") == -3.4
    assert gs.number("2.1e-13") == 2.1e-13 and gs.number("n/a") is None
    assert gs.percent_pair("0.009% (0.017%)") == (0.009, 0.017)
    assert gs.percent_pair("12 ms") is None


def test_analysis_figures():
    figs = gs.analysis_figures(ANALYSIS_CUDA)
    assert _by_met(figs) == [
        ("0.182 s (spectra only 0.071 s)", "no"),
        ("0.095 s (spectra only 0.04 s)", "yes"),
        ("0.061 s (spectra only 0.03 s)", "yes"),
        ("2.1e-13", "—"),
    ]
    assert "90 % sparse" in figs[0].name and figs[0].goal == "≤ 0.1 s"
    assert [f.met for f in gs.analysis_figures("garbage")] == ["not parsed"] * 4
    # a CPU-only table is not the CUDA figure
    assert gs.analysis_figures(ANALYSIS_CUDA.replace("(cuda)", "(cpu)"))[0].met == "not parsed"


def test_pags_figures_take_the_best_chunk_over_both_runs():
    assert gs.pags_rates(PAGS_CUDA) == {16: 160.0}
    figs = gs.pags_figures([PAGS_CUDA, PAGS_LARGE])
    assert figs[0].measured == "1,422.0/s at chunk 256 (chunk 16: 160.0/s, chunk 64: 1,280.0/s)"
    assert figs[0].met == "yes"
    assert (figs[1].measured, figs[1].met) == ("11.6 s (extrapolated from n = 32)", "yes")
    figs = gs.pags_figures([PAGS_CUDA, ""])
    assert figs[0].met == "no" and figs[0].measured == "160.0/s at chunk 16"
    assert [f.met for f in gs.pags_figures(["", ""])] == ["not parsed", "not parsed"]


def test_pags_large_runs_only_when_chunk_16_is_fast(tmp_path):
    step = gs.plan(["pags"], False, tmp_path)[0]
    fast = {"pags": gs.Result(step, "ok", 0, stdout=PAGS_CUDA)}
    assert gs._pags_fast(fast) is None  # 160/s at chunk 16: a chunk of 256 takes 1.6 s
    slow = {"pags": gs.Result(step, "ok", 0, stdout=PAGS_CUDA.replace("**160**", "**40**"))}
    assert "40.0 candidates/s at chunk 16, under 100/s" in gs._pags_fast(slow)
    assert gs._pags_fast({"pags": gs.Result(step, "timed out")}) is not None
    assert gs._pags_fast({}) is not None


def test_train_and_sparsify_figures():
    step, dump = gs.train_figures(TRAIN_CUDA, "eager")
    assert (step.measured, step.met) == ("+5.0 % (dense 12.0 ms, masked 12.6 ms)", "no")
    assert (dump.measured, dump.met) == ("0.500 % (3.175 % with the background write)", "yes")
    assert "eager" in step.name and step.goal == "≤ +3 %"
    assert [f.met for f in gs.train_figures("", "torch.compile")] == ["not parsed"] * 2
    figs = gs.sparsify_figures(SPARSIFY_CUDA)
    assert _by_met(figs) == [("+1.0 % (30.3 ms)", "yes"), ("+1.3 % (30.4 ms)", "yes"),
                             ("+4.0 % (amortised 31.2 ms)", "no"),
                             ("+5.0 % (amortised 31.5 ms)", "no")]  # fmt: skip
    assert [f.name.split(", ")[-2:] for f in figs] == [
        ["static", "out = None"], ["static", "out = temp dir"],
        ["rigl", "out = None"], ["rigl", "out = temp dir"],
    ]  # fmt: skip


def test_chita_figures():
    figs = gs.chita_figures(CHITA_CUDA)
    assert [f.name for f in figs[:3]] == [
        "CHITA `bso`, MLPNet n = 1000, float32 (the reference's): numpy port / ours (cuda)",
        "CHITA `chita`, MLPNet n = 1000, float64 (the reference's): numpy port / ours (cuda)",
        "CHITA `bso-block`, ResNet-20 n = 500, block 500, float32 (the reference's): numpy port "
        "/ ours (cuda)",
    ]
    assert _by_met(figs) == [  # bso: the float32 rows only (the reference's dtype for it)
        ("9.7× at 90 %, 6.2× at 98 % (numpy 0.097 / 0.031 s, ours 0.010 / 0.005 s)", "no"),
        ("23.8× at 90 %, 16.4× at 98 % (numpy 2.856 / 1.478 s, ours 0.120 / 0.090 s)", "yes"),
        ("not parsed", "not parsed"),  # no ResNet-20 rows
        ("objectives within 8.0e-12 relative, support Jaccard ≥ 0.9990 (3 float64 solves)", "—"),
        ("MLPNet n = 1000: 52,000 vs 3,100 rows/s (16.8×)", "—"),
    ]
    assert figs[0].goal == "≥ 10× the numpy port"
    # the CPU rows are not the GPU figures; a smaller n is named
    assert [f.met for f in gs.chita_figures(CHITA_CUDA.replace("cuda", "cpu"))] == [
        "not parsed"
    ] * 5
    small = gs.chita_figures(CHITA_CUDA.replace("| 1000 | 32,360 |", "| 200 | 32,360 |"))
    assert small[1].measured.endswith("; at n = 200, not 1000)")
    # an older report without the dtype column: every row is float64, so no backsolve figure
    old = CHITA_CUDA.replace(" dtype |", "").replace(
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", "|" + "---|" * 13
    )
    old = "\n".join(
        ln.replace(" float32 |", "").replace(" float64 |", "") for ln in old.split("\n")
    )
    assert [f.met for f in gs.chita_figures(old)[:3]] == ["not parsed", "yes", "not parsed"]
    assert "(5 float64 solves)" in gs.chita_figures(old)[3].measured
    assert [f.met for f in gs.chita_figures("garbage")] == ["not parsed"] * 5


def test_search_figures():
    (fig,) = gs.search_figures(SEARCH_CUDA)
    assert fig.name.startswith("full phase 2 of 2-3-3-3-1 (155,952 runs × 19,500 steps)")
    assert fig.measured == (
        "380 s = 6.3 min (8.00 M model-steps/s at B = 65,536, 4,000× the one-model loop on the "
        "CPU; B = 16,384: 3.00 M/s)"
    )
    assert (fig.goal, fig.met) == ("≤ 10 min (one H100)", "yes")
    slow = SEARCH_CUDA.replace("| 65,536 | 8,000,000 |", "| 65,536 | 2,500,000 |")
    (fig,) = gs.search_figures(slow)
    assert fig.met == "no" and fig.measured.startswith("1,014 s = 16.9 min (3.00 M model-steps/s")
    # the runs and steps are read from the report's last line
    (fig,) = gs.search_figures(SEARCH_CUDA.replace("155,952 runs", "77,976 runs"))
    assert fig.measured.startswith("190 s = 3.2 min")
    assert gs.search_figures(SEARCH_CUDA.replace("cuda", "cpu"))[0].met == "not parsed"
    assert gs.search_figures("")[0].met == "not parsed"


def test_llm_figures_from_the_table_and_from_the_json_lines():
    figs = gs.llm_figures(LLM_CUDA)
    assert [f.name for f in figs] == [
        "whole Llama-2-7B mask set (32 blocks), 50 % per-row (Wanda-style), all metrics (cuda)",
        "whole Llama-2-7B mask set (32 blocks), 50 % 2:4, all metrics (cuda)",
    ]
    assert _by_met(figs) == [
        ("8 s (extrapolated ×32 from 1 block, 0.25 s per block; peak RSS 2.10 GiB)", "yes"),
        ("12.8 s (extrapolated ×32 from 1 block, 0.4 s per block; peak RSS 2.20 GiB)", "no"),
    ]
    assert figs[0].goal == "≤ 10 s (one H100)"
    whole = gs.llm_figures(LLM_CUDA.replace("1 of 32 blocks", "32 of 32 blocks"), patterns=["row"])
    assert whole[0].measured.startswith("8 s (measured on all 32 blocks, 0.25 s per block")
    # a run stopped in its second pattern: the first from its JSON line on stderr
    cpu_line = LLM_ROW_JSON.replace('"cuda"', '"cpu"').replace('"row"', '"2:4"')
    figs = gs.llm_figures("", f"row: 14 matrices\n{LLM_ROW_JSON}\n{cpu_line}\n2:4: 14 mat")
    assert _by_met(figs) == [
        ("8 s (extrapolated ×16 from 2 blocks, 0.25 s per block; peak RSS 2.10 GiB)", "yes"),
        ("not parsed", "not parsed"),
    ]
    # a CPU run is not the GPU figure; layers of other shapes are said so and not judged
    assert [f.met for f in gs.llm_figures(LLM_CUDA.replace("device: cuda", "device: cpu"))] == [
        "not parsed"
    ] * 2
    other = LLM_CUDA.replace("Llama-2-7B shapes", "hidden 64, MLP 128 (NOT Llama-2-7B)")
    fig = gs.llm_figures(other, patterns=["row"])[0]
    assert fig.met == "—" and fig.measured.endswith("; NOT Llama-2-7B shapes)")


def test_parse_pytest_from_junit_and_from_the_summary_line():
    s = gs.parse_pytest("", JUNIT)
    assert (s["passed"], s["failed"], s["errors"], s["skipped"]) == (2, 1, 0, 1)
    assert s["failures"] == ["tests.test_masks::test_b"]
    out = ("..F.s\nFAILED tests/test_masks.py::test_b - AssertionError\n"
           "1 failed, 3 passed, 1 skipped, 1303 deselected in 10.03s\n")  # fmt: skip
    s = gs.parse_pytest(out, None)
    assert (s["passed"], s["failed"], s["errors"], s["skipped"]) == (3, 1, 0, 1)
    assert s["failures"] == ["tests/test_masks.py::test_b"]
    assert gs.parse_pytest("Traceback ...", "<not xml") is None
    fig = gs.tests_figures({"passed": 44, "failed": 0, "errors": 0, "skipped": 0, "failures": []})
    assert fig[0].met == "yes" and fig[0].measured.startswith("44 passed, 0 failed")
    assert gs.tests_figures(s)[0].met == "no"


# --------------------------------------------------------------------------- report


def _results(tmp_path):
    steps = gs.plan(gs.PARTS, False, tmp_path)
    by = {s.key: s for s in steps}
    R = gs.Result
    results = {
        "tests": R(by["tests"], "failed", 1, 20.0, 150.0, "..F.s\n", "", junit=JUNIT),
        "analysis": R(by["analysis"], "ok", 0, 40.0, 150.0, ANALYSIS_CUDA, "progress\n"),
        "pags": R(by["pags"], "ok", 0, 30.0, 120.0, PAGS_CUDA),
        "pags-large": R(by["pags-large"], "skipped", note="160.0 candidates/s at chunk 16"),
        "train": R(by["train"], "timed out", None, 120.0, 120.0, TRAIN_CUDA.split("| dump")[0],
                   "round 5/5: masked\n", note="killed after 120 s"),
        "sparsify": R(by["sparsify"], "ok", 0, 35.0, 120.0, SPARSIFY_CUDA),
        "search": R(by["search"], "ok", 0, 25.0, 60.0, SEARCH_CUDA),
        "chita": R(by["chita"], "ok", 0, 45.0, 90.0, CHITA_CUDA),
        "llm-route": R(by["llm-route"], "ok", 0, 12.0, 60.0, ROUTE_CUDA),
        "llm": R(by["llm"], "timed out", None, 90.0, 90.0, "", f"{LLM_ROW_JSON}\n2:4: 7 matrices\n",
                 note="killed after 90 s"),
        "train-compile": R(by["train-compile"], "not run", note="budget spent (3 s left)"),
    }  # fmt: skip
    return steps, results


def test_goal_table_with_fake_numbers(tmp_path):
    steps, results = _results(tmp_path)
    figs = gs.figures(results, steps)
    rows = {f.name: f for f in figs}
    assert len(figs) == 1 + 4 + 2 + 1 + 5 + 2 + 4 + 2 + 2 + 2
    keys = [f.name.split(" ")[0] for f in figs]
    assert keys.index("full") < keys.index("CHITA") < keys.index("masked")  # the plan's order
    llm = [f for f in figs if f.name.startswith("whole Llama-2-7B")]
    assert [f.met for f in llm] == ["yes", "not parsed"]  # row from its JSON line; 2:4 cut
    assert llm[1].measured == "not parsed (timed out)"
    route = [f for f in figs if f.name.startswith("batched route")]
    assert [f.met for f in route] == ["yes", "no"]  # slower than eigh: not met
    assert route[0].measured == "0.52 s against eigh 3.41 s; max rel. diff 2.2e-15"
    assert gs.route_figures(ROUTE_CUDA.replace("2.2e-15", "3.0e-09"))[0].met == "no"
    assert [f.met for f in gs.route_figures(ROUTE_CUDA.replace("| cuda |", "| cpu |"))] == [
        "not parsed",
        "not parsed",
    ]
    tests = rows["CUDA tests (`pytest -m cuda`)"]
    assert tests.measured == "2 passed, 1 failed, 0 errors, 1 skipped" and tests.met == "no"
    step = next(f for f in figs if f.name.startswith("masked vs dense") and "eager" in f.name)
    assert step.met == "no"  # parsed from what the timed-out step printed
    dump = next(f for f in figs if f.name.startswith("event dump") and "eager" in f.name)
    assert (dump.measured, dump.met) == ("not parsed (timed out)", "not parsed")
    compiled = [f for f in figs if "torch.compile" in f.name]
    assert [f.met for f in compiled] == ["not run", "not run"]
    table = gs.goal_table(figs)
    assert table[:2] == ["| figure | measured | goal | met? |", "|---|---|---|---|"]
    assert len(table) == 2 + len(figs)
    assert any(line.endswith("| ≤ 0.1 s | **no** |") for line in table)
    assert all(line.count(" | ") == 3 for line in table if not line.startswith("|---"))


def test_render_report(tmp_path):
    steps, results = _results(tmp_path)
    facts = ["- GPU: NVIDIA H200, 139.8 GiB", "- masktopo 0.1.0, commit abc"]
    text = gs.render_report(facts, steps, results, command="python benchmarks/gpu_suite.py",
                            total_s=245.0)  # fmt: skip
    assert text.startswith("# GPU suite report\n")
    assert (
        "exit status 1: tests failed, train timed out, llm timed out, train-compile not run" in text
    )
    for heading in ("## Machine", "## Steps", "## Goals", "## CUDA tests", "## Outputs"):
        assert f"\n{heading}\n" in text
    assert "- GPU: NVIDIA H200, 139.8 GiB" in text
    assert "- `tests.test_masks::test_b`" in text
    assert "| pags-large | `python benchmarks/bench_pags.py" in text
    assert "| skipped: 160.0 candidates/s at chunk 16 |" in text
    assert "**timed out: killed after 120 s**" in text
    assert text.count("<details>") == text.count("</details>") == 9  # every step that ran
    assert ANALYSIS_CUDA.strip() in text  # the full output, verbatim
    assert "| masked vs dense step" in text
    running = gs.render_report(facts, steps, {}, command="x", total_s=1.0, finished=False)
    assert "**in progress or interrupted**: 11 step(s) not finished" in running
    ok = {k: r for k, r in results.items() if k in ("analysis", "pags", "sparsify", "search")}
    sub = [s for s in steps if s.key in ok]
    assert "exit status 0: every step ran" in gs.render_report(facts, sub, ok, command="x",
                                                               total_s=1.0)  # fmt: skip


# --------------------------------------------------------------------------- running


def _py(key, code, timeout=60.0):
    return gs.Step(key, "train", key, ("-c", code), timeout)


def test_main_runs_the_steps_with_their_timeouts_and_writes_the_report(tmp_path, monkeypatch):
    import torch

    table = TRAIN_CUDA.replace("\n", "\\n")
    steps = [
        _py("train", f"print('{table}')"),
        _py("sparsify", "import sys; print('partial'); sys.stdout.flush(); sys.exit(3)"),
        _py("train-compile", "import time; time.sleep(60)"),
        _py("late", "print('never')"),
    ]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gs, "machine_facts", lambda *a: ["- GPU: fake"])
    monkeypatch.setattr(gs, "plan", lambda parts, full, tmp: steps)
    monkeypatch.setattr(gs, "MIN_START_S", 2.0)
    out = tmp_path / "sub" / "report.md"
    rc = gs.main(["--out", str(out), "--budget", "6", "--parts", "train"])
    assert rc == 1
    text = out.read_text()
    assert "| train | `python -c" in text and "| ok |" in text
    assert "**failed (exit 3)**" in text and "partial" in text
    assert "**timed out: killed after" in text
    assert "**not run: budget spent" in text
    assert "+5.0 % (dense 12.0 ms, masked 12.6 ms)" in text


def test_main_stops_a_hung_step_in_time_for_the_later_ones(tmp_path, monkeypatch):
    import torch

    steps = [
        gs.Step("train", "train", "hangs", ("-c", "import time; time.sleep(60)"), 60.0,
                reserve_s=1.0),
        gs.Step("sparsify", "sparsify", "quick", ("-c", "print('one')"), 30.0, reserve_s=3.0),
        gs.Step("late", "train", "quick", ("-c", "print('two')"), 30.0, reserve_s=3.0),
    ]  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gs, "machine_facts", lambda *a: ["- GPU: fake"])
    monkeypatch.setattr(gs, "plan", lambda parts, full, tmp: steps)
    monkeypatch.setattr(gs, "MIN_START_S", 1.0)
    out = tmp_path / "report.md"
    assert gs.main(["--out", str(out), "--budget", "9", "--parts", "train"]) == 1
    text = out.read_text()
    # the hang got 9 - (3 + 3) = 3 s, not its 60: both later steps ran
    assert (
        "| train | `python -c 'import time; time.sleep(60)'` | **timed out: killed after 3 s** |"
        in text
    )
    assert text.count("| ok |") == 2 and "one" in text and "two" in text


def test_run_step_kills_a_hung_step(tmp_path):
    t = gs.run_step(_py("hang", "import time; print('started', flush=True); time.sleep(60)"),
                    1.5, tmp_path)  # fmt: skip
    assert t.status == "timed out" and t.bad and t.wall_s < 15 and t.stdout == "started\n"
    ok = gs.run_step(_py("ok", "print('hi')"), 30, tmp_path)
    assert (ok.status, ok.rc, ok.stdout, ok.bad) == ("ok", 0, "hi\n", False)


# --------------------------------------------------------------------------- real outputs
# The parsers on what the benchmark scripts print today (on the CPU, tiny sizes): a change of
# their Markdown that would make the GPU suite's figures "not parsed" fails here first.


@pytest.mark.slow
def test_parsers_on_real_bench_train_output():
    proc = _run([str(BENCH / "bench_train.py"), "--model", "lenet300", "--dataset",
                 "fashion-mnist", "--density", "0.05", "--steps", "3", "--rounds", "1",
                 "--gap-cycles", "2"], env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert all(f.met in ("yes", "no") for f in gs.train_figures(proc.stdout, "eager"))
    proc = _run([str(BENCH / "bench_train.py"), "--sparsify", "--steps", "4", "--rounds", "1",
                 "--d-model", "32", "--nhead", "2", "--ff", "64", "--seq", "8", "--batch", "4"],
                env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert all(f.met in ("yes", "no") for f in gs.sparsify_figures(proc.stdout))


@pytest.mark.slow
def test_parsers_on_real_analysis_and_pags_output():
    proc = _run([str(BENCH / "bench_analysis.py"), "--networks", "resnet18", "--densities",
                 "0.01", "--skip-nx", "--repeats", "1"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    figs = gs.analysis_figures(proc.stdout, device="cpu", network="ResNet-18")
    assert [f.met for f in figs[:2]] == ["not parsed"] * 2  # densities 0.1 and 0.02 not run
    assert figs[2].met in ("yes", "no") and figs[3].measured != "not parsed"
    proc = _run([str(BENCH / "bench_pags.py"), "--skip-nx", "--skip-e2e", "--chunks", "2",
                 "--repeats", "1"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert set(gs.pags_rates(proc.stdout, device="cpu")) == {2}


@pytest.mark.slow
def test_parser_on_real_batched_route_output():
    proc = _run([str(BENCH / "bench_batched_route.py"), "--shrink", "8"])
    assert proc.returncode == 0, proc.stderr
    figs = gs.route_figures(proc.stdout, device="cpu")
    assert [f.met in ("yes", "no") for f in figs] == [True, True]  # binary, weighted
    assert all(" s against eigh " in f.measured for f in figs)
    diffs = [float(f.measured.split("max rel. diff ")[1]) for f in figs]
    assert max(diffs) <= 1e-12  # the same σ as the eigh route


@pytest.mark.slow
def test_parsers_on_real_chita_search_and_llm_output():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = _run([str(BENCH / "bench_chita.py"), "--n-mlp", "64", "--n-resnet", "8", "--sparsity",
                 "0.9", "--repeat", "1", "--loop-rows", "4", "--threads", "1"], env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    figs = gs.chita_figures(proc.stdout, device="cpu")
    assert all(f.met in ("yes", "no") for f in figs[:3])
    assert all(" at n = " in f.measured for f in figs[:3])  # not the n
    assert (
        figs[3].measured.startswith("objectives within ")
        and "(3 float64 solves)" in figs[3].measured
    )
    assert (
        figs[4].measured.startswith("MLPNet n = 64: ") and "; ResNet-20 n = 8: " in figs[4].measured
    )
    proc = _run([str(BENCH / "bench_search.py"), "--batch", "8", "--steps", "2", "--loop-models",
                 "1", "--loop-steps", "5", "--routes", "torch"], env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (fig,) = gs.search_figures(proc.stdout, device="cpu")
    assert fig.met in ("yes", "no") and " at B = 8, " in fig.measured
    proc = _run([str(BENCH / "bench_llm.py"), "--blocks", "1", "--hidden", "64", "--intermediate",
                 "128", "--svds-blocks", "0"], env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    figs = gs.llm_figures(proc.stdout, device="cpu")
    assert [f.met for f in figs] == ["—", "—"]  # not Llama-2-7B shapes: not judged
    assert all("extrapolated ×32 from 1 block" in f.measured for f in figs)
    # the JSON lines alone give the same figures (the table's are rounded to 3 digits)
    from_json = gs.llm_figures("", proc.stderr, device="cpu")
    for f, j in zip(figs, from_json, strict=True):
        assert gs.number(j.measured) == pytest.approx(gs.number(f.measured), rel=0.02)


@pytest.mark.slow
def test_bench_search_trains_more_models_than_there_are_supports():
    # the CUDA rows run B = 65,536 > 25,992 supports: model i takes support i mod 25,992
    bs = _load("bench_search")
    n = bs.count_supports(bs.ARCH)
    masks, w, _ = bs._models(n + 2)
    assert len(masks) == 4 and masks[0].shape[0] == n + 2
    for m in masks:
        assert torch.equal(m[n], m[0]) and torch.equal(m[n + 1], m[1])
    assert not torch.equal(w[0][n], w[0][0])  # its own initial weights
