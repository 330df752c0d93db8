"""benchmarks/gpu_suite.py without a GPU: the no-CUDA path, the plan's command lines, the parsers
of the benchmarks' Markdown, the goal table and the report, and the step runner (timeouts)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert [s.key for s in steps] == ["tests", "analysis", "pags", "pags-large", "train",
                                      "sparsify", "train-compile"]  # fmt: skip
    assert {s.part for s in steps} == set(gs.PARTS)
    assert all(s.timeout_s > 0 for s in steps)
    tests = steps[0]
    assert tests.args[:7] == ("-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider")
    assert tests.args[-1] == f"--junitxml={tmp_path / 'cuda-tests.xml'}"
    assert "cuda: " in (ROOT / "pyproject.toml").read_text()  # the marker is registered
    assert [s.key for s in gs.plan(["sparsify"], full, tmp_path)] == ["sparsify"]
    assert [s.key for s in gs.plan(["train"], full, tmp_path)] == ["train", "train-compile"]


def test_one_hung_step_cannot_eat_the_quick_budget(tmp_path):
    # the steps' limits add up to more than the budget (it cuts the last ones short), but no
    # single hang may take more than half of it
    steps = gs.plan(gs.PARTS, False, tmp_path)
    assert max(s.timeout_s for s in steps) <= gs.BUDGET_S["quick"] / 2
    assert gs.BUDGET_S["quick"] <= 8 * 60


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
        if name in ("bench_analysis", "bench_pags"):  # their parsers check the values too
            args = _load(name).parse_args(list(step.args[1:]))
            assert "cuda" in args.device


@pytest.mark.slow
def test_bench_train_steps_parse_their_command_lines(tmp_path):
    # bench_train parses everything before it looks for CUDA: exit 1 (no CUDA), never 2 (usage)
    for step in gs.plan(["train", "sparsify"], False, tmp_path):
        proc = _run(list(step.args), env=_no_cuda_env())
        assert proc.returncode == 1, (step.key, proc.stderr)
        assert "no CUDA device" in proc.stderr


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
        "train-compile": R(by["train-compile"], "not run", note="budget spent (3 s left)"),
    }  # fmt: skip
    return steps, results


def test_goal_table_with_fake_numbers(tmp_path):
    steps, results = _results(tmp_path)
    figs = gs.figures(results, steps)
    rows = {f.name: f for f in figs}
    assert len(figs) == 1 + 4 + 2 + 2 + 4 + 2
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
    assert "exit status 1: tests failed, train timed out, train-compile not run" in text
    for heading in ("## Machine", "## Steps", "## Goals", "## CUDA tests", "## Outputs"):
        assert f"\n{heading}\n" in text
    assert "- GPU: NVIDIA H200, 139.8 GiB" in text
    assert "- `tests.test_masks::test_b`" in text
    assert "| pags-large | `python benchmarks/bench_pags.py" in text
    assert "| skipped: 160.0 candidates/s at chunk 16 |" in text
    assert "**timed out: killed after 120 s**" in text
    assert text.count("<details>") == text.count("</details>") == 5  # every step that ran
    assert ANALYSIS_CUDA.strip() in text  # the full output, verbatim
    assert "| masked vs dense step" in text
    running = gs.render_report(facts, steps, {}, command="x", total_s=1.0, finished=False)
    assert "**in progress or interrupted**: 7 step(s) not finished" in running
    ok = {k: r for k, r in results.items() if k in ("analysis", "pags", "sparsify")}
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
