"""``masktopo sweep`` end to end with real training runs (the Cubist Spiral, a few steps each):
every run done once, also after a SIGKILL mid-way; failures listed and not retried unless asked;
the submitit path through submitit's local executor; summarize checked by hand."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from masktopo.cli.main import main
from masktopo.errors import MaskFileError, MaskValidationError
from masktopo.sweep import SweepConfig, read_sweep, run_sweep, run_table, summarize
from masktopo.sweep.executors import LocalExecutor, Task
from masktopo.trainer.loop import HOLD_ENV

ROOT = Path(__file__).resolve().parents[2]

HEAD = """\
[base]
model = "spiral-mlp"
dataset = "cubist-spiral"
density = 0.3
batch_size = 1000
lr = 0.05
device = "cpu"
epochs = 1
"""
#: 2 methods × 2 seeds (44 steps, a mask update every 10), and a static cell: 5 runs.
SMALL = (
    HEAD
    + """\
[grid]
method = ["set", "rigl"]
update_interval = [10]
seed = [0, 1]

[[include]]
method = "static"
seed = 0
"""
)


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until a run held by the test hook has written ``marker`` (the sweep ``proc`` must
    still be running: else its stderr is the failure)."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, f"{marker} never appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished sweep of SMALL (2 jobs at once)."""
    d = tmp_path_factory.mktemp("sweep")
    f = d / "small.toml"
    f.write_text(SMALL)
    log = d / "progress.txt"
    with open(log, "w") as fh:
        result = run_sweep(f, d / "out", SweepConfig(jobs=2), log=fh)
    return d, f, result, log.read_text()


def test_every_run_finishes_with_its_cell_recorded(finished):
    d, _, result, progress = finished
    assert (result.total, result.done, result.ran, result.failed, result.todo) == (5, 5, 5, {}, 0)
    state = read_sweep(d / "out")
    assert len(state.cells) == 5
    for cell in state.cells:
        run = state.run_dir(cell)
        meta = json.loads((run / "run.json").read_text())
        assert meta["kind"] == "train"
        assert meta["sweep"]["key"] == cell.key and meta["sweep"]["axes"] == cell.axes
        for key, value in cell.settings.items():  # the run trained with the cell's settings
            assert meta["config"][key] == value, key
        assert (run / "summary.json").is_file()
        assert state.status[cell.key]["state"] == "done"
        assert state.status[cell.key]["attempts"] == 1
        assert (d / "out" / "logs" / f"{cell.folder}.log").is_file()
    assert "5 runs of 'train': 0 done before; 5 to run, 2 at once" in progress
    assert "[5/5 done, 0 failed] done" in progress


def test_a_finished_sweep_runs_nothing_again(finished):
    d, f, _, _ = finished
    state = read_sweep(d / "out")
    stamps = {c.key: (state.run_dir(c) / "summary.json").stat().st_mtime_ns for c in state.cells}
    with open(d / "again.txt", "w") as fh:
        result = run_sweep(f, d / "out", SweepConfig(jobs=2), log=fh)
    assert (result.done, result.ran) == (5, 0)
    again = read_sweep(d / "out")
    for c in again.cells:
        assert (again.run_dir(c) / "summary.json").stat().st_mtime_ns == stamps[c.key]
        assert again.status[c.key]["attempts"] == 1
    assert "5 done before; 0 to run" in (d / "again.txt").read_text()


def test_a_deleted_run_folder_is_run_again(tmp_path):
    """status.json says "done" but the run's folder was deleted: the sweep runs it again (it
    used to count it done for ever, and summarize then failed on the missing folder)."""
    import shutil

    f = tmp_path / "one.toml"
    f.write_text(HEAD + '[grid]\nmethod = ["static"]\nseed = [0]\n')
    with open(tmp_path / "a.txt", "w") as fh:
        assert run_sweep(f, tmp_path / "out", SweepConfig(jobs=1), log=fh).ran == 1
    state = read_sweep(tmp_path / "out")
    (cell,) = state.cells
    assert state.status[cell.key]["state"] == "done"
    shutil.rmtree(state.run_dir(cell))
    assert read_sweep(tmp_path / "out").state(cell) == "new"
    with open(tmp_path / "b.txt", "w") as fh:
        result = run_sweep(f, tmp_path / "out", SweepConfig(jobs=1), log=fh)
    assert (result.done, result.ran) == (1, 1)
    assert (state.run_dir(cell) / "summary.json").is_file()


def test_summarize_by_hand(finished):
    d, _, _, _ = finished
    out = d / "out"
    acc: dict[tuple, list[float]] = {}
    for run in sorted((out / "runs").iterdir()):
        meta = json.loads((run / "run.json").read_text())
        final = json.loads((run / "summary.json").read_text())["final"]
        cfg = meta["config"]
        group = (cfg["method"], cfg["update_interval"])
        acc.setdefault(group, []).append(final["test_acc"])
    df = summarize(out, metrics=["test_acc", "R_s"])
    assert list(df.columns[:3]) == ["method", "update_interval", "runs"]
    assert len(df) == 3
    for _, row in df.iterrows():
        key = (row["method"], row["update_interval"])
        values = acc[key]
        assert row["runs"] == len(values) == row["test_acc_n"]
        assert row["test_acc_mean"] == pytest.approx(statistics.fmean(values), abs=1e-15)
        if len(values) > 1:
            assert row["test_acc_std"] == pytest.approx(statistics.stdev(values), abs=1e-15)
        else:
            assert row["test_acc_std"] != row["test_acc_std"]  # NaN for one run
    static = df[df["method"] == "static"].iloc[0]
    assert static["update_interval"] is None  # the static cell does not set the axis
    assert static["R_s_n"] == 1 and static["R_s_mean"] == pytest.approx(0.3, abs=0.01)  # density
    one = summarize(out, by=[], metrics=["test_acc"])
    assert len(one) == 1 and one["runs"][0] == 5
    runs = run_table(out, ["test_acc", "density", "ramanujan_gap"])
    assert len(runs) == 5 and runs["density"].tolist() == pytest.approx([0.3] * 5, abs=1e-3)
    assert runs["ramanujan_gap"].notna().all()  # from the analysis cache of the last event
    with pytest.raises(MaskValidationError, match="no run has 'acuracy'"):
        summarize(out, metrics=["acuracy"])
    with pytest.raises(MaskValidationError, match="unknown axis 'lr'"):
        summarize(out, by=["lr"])


def test_summarize_and_plot_commands(finished, tmp_path, capsys):
    d, _, _, _ = finished
    out = d / "out"
    assert main(["summarize", str(out), "--by", "method", "--format", "markdown"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == "| method | n | test_acc (%) |"
    assert "| set | 2 | " in text and " ± " in text
    assert main(["summarize", str(out), "--metrics", "test_acc,R_s", "--out",
                 str(tmp_path / "t.csv")]) == 0  # fmt: skip
    csv = (tmp_path / "t.csv").read_text().splitlines()
    assert csv[0] == ("method,update_interval,runs,test_acc_mean,test_acc_std,test_acc_n,"
                      "R_s_mean,R_s_std,R_s_n")  # fmt: skip
    assert csv[1].startswith("set,10,2,")
    assert main(["plot", str(out), "--out", str(tmp_path / "figs"), "--format", "svg"]) == 0
    written = capsys.readouterr()
    assert (tmp_path / "figs" / "sweep-test_acc-vs-R_s.svg").stat().st_size > 5000
    assert "not drawn" not in written.err  # static sits at R_s = its density
    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 2  # many runs
    err = capsys.readouterr().err
    assert "is a sweep folder, not a run" in err and "masktopo report" in err
    assert not (tmp_path / "r.html").exists()
    assert main(["summarize", str(out), "--by", "none", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("5,")  # runs: every run, one row
    # the suffix chooses the format, as for analyze: .parquet is parquet, not text
    assert main(["summarize", str(out), "--metrics", "test_acc,R_s", "--out",
                 str(tmp_path / "t.parquet")]) == 0  # fmt: skip
    pq = pd.read_parquet(tmp_path / "t.parquet")
    assert list(pq.columns)[:4] == ["method", "update_interval", "runs", "test_acc_mean"]
    assert pq["runs"].tolist()[0] == 2
    assert main(["summarize", str(out), "--format", "parquet"]) == 2
    assert "--format parquet needs --out FILE" in capsys.readouterr().err
    assert main(["summarize", str(tmp_path)]) == 2
    assert "not a sweep folder" in capsys.readouterr().err
    one = next(out.rglob("run.json")).parent  # one cell's run: says what it is and what reads it
    assert main(["summarize", str(one)]) == 2
    err = capsys.readouterr().err
    assert "is a train run directory, not a sweep folder" in err and f"masktopo report {one}" in err


def test_sweep_errors_write_nothing(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text(HEAD + '[grid]\nmethod = ["set", "static"]\nupdate_interval = [10]\n')
    assert main(["sweep", str(f), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("masktopo: error: ") and "not used by method 'static'" in err
    assert not (tmp_path / "o").exists()
    other = tmp_path / "busy"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    good = tmp_path / "g.toml"
    good.write_text(HEAD + 'method = "static"\n')
    with pytest.raises(MaskFileError, match="not empty and not a sweep folder"):
        run_sweep(good, other)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    with pytest.raises(MaskFileError, match="cannot write a sweep there: it is a file"):
        run_sweep(good, other / "notes.txt")  # (was "Not a directory")


def test_gpu_slots_and_threads():
    task = Task("k", ["true"], Path("/dev/null"), {"X": "1"})
    two = LocalExecutor(jobs=2, gpus=2)
    assert [two.slot_env(task, s).get("CUDA_VISIBLE_DEVICES") for s in (0, 1, 2)] == ["0", "1",
                                                                                     "0"]  # fmt: skip
    assert two.slot_env(task, 0)["X"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in LocalExecutor(jobs=2, gpus=1).slot_env(task, 1) or (
        os.environ.get("CUDA_VISIBLE_DEVICES") is not None
    )
    one = LocalExecutor(jobs=1, gpus=4).slot_env(task, 0)
    assert one.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")


def test_failed_runs_are_listed_and_retried_only_when_asked(tmp_path, capsys):
    f = tmp_path / "s.toml"
    # an import path passes the config check but fails when the run builds the model
    f.write_text(HEAD + 'method = "static"\n[grid]\nmodel = ["spiral-mlp", "nosuchpkg.mod:net"]\n'
                 .replace('model = "spiral-mlp"\n', ""))  # fmt: skip
    f.write_text(f.read_text().replace('model = "spiral-mlp"\n', "", 1))
    with open(tmp_path / "p1.txt", "w") as fh:
        r1 = run_sweep(f, tmp_path / "o", log=fh)
    assert (r1.done, len(r1.failed)) == (1, 1)
    ((key, err),) = r1.failed.items()
    assert "nosuchpkg" in err and "\n" not in err
    p1 = (tmp_path / "p1.txt").read_text()
    assert "FAILED" in p1 and "1 failed (logs in" in p1
    with open(tmp_path / "p2.txt", "w") as fh:
        r2 = run_sweep(f, tmp_path / "o", log=fh)
    assert (r2.ran, r2.done, list(r2.failed)) == (0, 1, [key])
    assert (
        "1 failed before (skipped; --retry-failed runs them again)"
        in (tmp_path / "p2.txt").read_text()
    )
    with open(tmp_path / "p3.txt", "w") as fh:
        r3 = run_sweep(f, tmp_path / "o", SweepConfig(retry_failed=True), log=fh)
    assert (r3.ran, list(r3.failed)) == (1, [key])
    assert read_sweep(tmp_path / "o").status[key]["attempts"] == 2
    # summarize says which runs its table leaves out
    df = summarize(tmp_path / "o")
    assert df.attrs["unfinished"] == {"failed": 1} and int(df["runs"].sum()) == 1
    from cli.main import main

    assert main(["summarize", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "1 run(s) of the sweep are not in the table (1 failed;" in err
    assert "--retry-failed" in err


def test_killed_sweep_run_again_does_every_run_once(tmp_path):
    """SIGKILL the sweep and its running child while the second run holds at its second
    checkpoint; the sweep run again skips the first, continues the second from its
    checkpoint and runs the third: each finishes once, as an uninterrupted sweep would."""
    f = tmp_path / "s.toml"
    f.write_text(HEAD.replace("epochs = 1\n", "") + 'method = "set"\nupdate_interval = 10\n'
                 "checkpoint_every = 10\n[grid]\nmax_steps = [15, 40, 16]\n")  # fmt: skip
    marker = tmp_path / "held"
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "masktopo", "sweep", str(f), "--out", str(out)]
    # only the 40-step run writes a third checkpoint (steps 10, 20, 30): it holds there
    proc = subprocess.Popen(cmd, env=_env(**{HOLD_ENV: f"checkpoint:3:{marker}"}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        _wait_for(marker, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()
    state = read_sweep(out)
    first, second, third = state.cells
    assert state.state(first) == "done" and state.state(second) == "started"
    assert state.state(third) == "new"
    stamp = (state.run_dir(first) / "summary.json").stat().st_mtime_ns
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "1 done before; 2 to run" in p.stderr
    state = read_sweep(out)
    assert [state.state(c) for c in state.cells] == ["done"] * 3
    assert (state.run_dir(first) / "summary.json").stat().st_mtime_ns == stamp
    assert state.status[first.key]["attempts"] == 1
    assert state.status[second.key]["attempts"] == 2 and state.status[third.key]["attempts"] == 1
    for c in state.cells:
        summary = json.loads((state.run_dir(c) / "summary.json").read_text())
        assert summary["steps"] == c.settings["max_steps"]
    log = (out / "logs" / f"{second.folder}.log").read_text()
    starts = [ln for ln in log.splitlines() if ln.startswith("# masktopo sweep ")]
    assert len(starts) == 2 and "--out" in starts[0] and "--resume" in starts[1]
    for c in (first, third):  # run once, from the start
        one = (out / "logs" / f"{c.folder}.log").read_text()
        assert one.count("# masktopo sweep ") == 1 and "--resume" not in one


def test_submitit_local_executor(tmp_path):
    pytest.importorskip("submitit")
    f = tmp_path / "s.toml"
    f.write_text(HEAD + 'method = "static"\nmax_steps = 5\n[grid]\nseed = [0, 1]\n')
    with open(tmp_path / "p.txt", "w") as fh:
        r = run_sweep(f, tmp_path / "o", SweepConfig(executor="submitit-local", jobs=2), log=fh)
    assert (r.done, r.ran, r.failed) == (2, 2, {})
    assert (tmp_path / "o" / "submitit").is_dir()
    df = run_table(tmp_path / "o", ["test_acc"])
    assert df["test_acc"].notna().all()


def test_a_background_sweep_stops_its_runs_on_sigint(tmp_path):
    """A sweep started in the background inherits SIGINT ignored: it still stops on SIGINT,
    interrupts its running run (which exits, nothing recorded as failed), and the next sweep
    continues that run from its checkpoint."""
    f = tmp_path / "s.toml"
    f.write_text(HEAD.replace("epochs = 1\n", "") + 'method = "set"\nupdate_interval = 10\n'
                 "checkpoint_every = 10\nmax_steps = 40\n")  # fmt: skip
    marker = tmp_path / "held"
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "masktopo", "sweep", str(f), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=_env(**{HOLD_ENV: f"checkpoint:2:{marker}"}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # fmt: skip
    try:
        _wait_for(marker, proc)
        child = int(marker.read_text())
        proc.send_signal(signal.SIGINT)  # to the sweep only, as `kill -INT PID` does
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the run stopped with the sweep
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the held run is still running after the sweep stopped")
    (cell,) = read_sweep(out).cells
    assert read_sweep(out).state(cell) == "started"  # not failed: it continues next time
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    state = read_sweep(out)
    assert state.state(cell) == "done" and state.status[cell.key]["attempts"] == 2
    assert "--resume" in (out / "logs" / f"{cell.folder}.log").read_text()


def test_a_pags_sweep_is_summarized(tmp_path):
    """A PAGS run writes summary.json once complete (its final numbers), so ``masktopo
    summarize`` works on a sweep of PAGS runs as on a sweep of trainings."""
    f = tmp_path / "pags.toml"
    f.write_text('[base]\ncommand = "pags"\nmodel = "spiral-mlp"\ndataset = "cubist-spiral"\n'
                 'method = "erk"\ndensity = 0.3\nn = 6\nchunk = 3\ndevice = "cpu"\n\n'
                 '[grid]\nseed = [0, 1]\nselection = ["layerwise", "global"]\n')  # fmt: skip
    result = run_sweep(f, tmp_path / "out", SweepConfig(jobs=2))
    assert (result.done, result.failed) == (4, {})
    state = read_sweep(tmp_path / "out")
    for cell in state.cells:
        final = json.loads((state.run_dir(cell) / "summary.json").read_text())["final"]
        assert final["candidates"] == 6 and final["network_score"] >= final["base_network_score"]
        assert final["density"] == pytest.approx(0.3, abs=0.01)
    df = summarize(tmp_path / "out", metrics=["network_score", "accepted_layers"])
    assert sorted(df["selection"]) == ["global", "layerwise"]
    assert (df["runs"] == 2).all() and (df["network_score_n"] == 2).all()
    table = run_table(tmp_path / "out", ["network_score"])
    assert len(table) == 4 and table["network_score"].notna().all()
