"""Crash safety with real kills: a training (or PAGS) process is SIGKILLed at a known point, then
``--resume`` must end exactly as an uninterrupted run (masks, weights, events.jsonl), on CPU.

The process is held at the point by the test hook ``MASKTOPO_TEST_HOLD`` (it writes a marker file
once everything up to that point is on disk, then waits); the test then sends SIGKILL, as a
machine that loses power or a scheduler that kills a job would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from masktopo import runs
from masktopo.runs.layout import CHECKPOINT_FILE, EVENTS_FILE, RUN_FILE
from masktopo.trainer.loop import HOLD_ENV

FMNIST = Path("/usr/share/datasets/fashion-mnist")
ROOT = Path(__file__).resolve().parents[2]
needs_fmnist = pytest.mark.skipif(
    not FMNIST.is_dir(), reason="Fashion-MNIST (dataset-fashion-mnist) missing"
)

#: ITOP on Fashion-MNIST: 421 steps per epoch (54,000 training images after the validation split,
#: batch 128), a mask update every 50 steps (events 1, 2, 3 at steps 50, 100, 150) and a
#: checkpoint every 100 steps within the epoch (steps 100, 200, 300, 400).
ITOP = ["train", "--method", "itop", "--model", "lenet300", "--dataset", "fashion-mnist",
        "--density", "0.05", "--epochs", "1", "--update-interval", "50",
        "--checkpoint-every", "100"]  # fmt: skip


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["MASKTOPO_WORKERS"] = "1"
    env.update(extra)
    return env


def _masktopo(*args, env=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "masktopo", *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env or _env(), timeout=600)
    assert p.returncode == 0, f"{cmd} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def _kill_at(args: list, hold: str, tmp_path: Path) -> None:
    """Start ``masktopo *args``, wait until it holds at ``hold``, SIGKILL it."""
    marker = tmp_path / "held"
    cmd = [sys.executable, "-m", "masktopo", *map(str, args)]
    proc = subprocess.Popen(cmd, env=_env(**{HOLD_ENV: f"{hold}:{marker}"}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            if proc.poll() is not None:
                _, err = proc.communicate()
                raise AssertionError(f"exited {proc.returncode} before {hold}:\n{err.decode()}")
            assert time.monotonic() < deadline, f"never reached {hold}"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _assert_same_run(a: Path, b: Path) -> None:
    """Masks and weights of every event, and every events.jsonl line, are equal."""
    ra, rb = runs.read_run(a, strict=True), runs.read_run(b, strict=True)
    assert ra.n_events == rb.n_events
    assert (a / EVENTS_FILE).read_bytes() == (b / EVENTS_FILE).read_bytes()
    for k in range(ra.n_events):
        ma, mb = ra.load(k), rb.load(k)
        assert ma.has_weights and mb.has_weights
        for name in ma:
            assert torch.equal(ma[name], mb[name]), (k, name)
            assert torch.equal(ma.weights[name], mb.weights[name]), (k, name)
    sa, sb = ra.summary(), rb.summary()

    def strip(s):
        return {**s, "history": [{k: v for k, v in h.items() if k != "seconds"}
                                 for h in s["history"]]}  # fmt: skip

    assert strip(sa) == strip(sb)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    _masktopo(*ITOP, "--out", out)
    return out


@needs_fmnist
@pytest.mark.parametrize(
    ("hold", "checkpoint_step"),
    [
        ("event:3", 100),  # after the third mask event (step 150): resumes from step 100
        ("checkpoint:1", 100),  # right after the first checkpoint, in the middle of the epoch
    ],
)
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(
    uninterrupted, tmp_path, hold, checkpoint_step
):
    out = tmp_path / "run"
    _kill_at([*ITOP, "--out", out], hold, tmp_path)
    ckpt = torch.load(out / CHECKPOINT_FILE, weights_only=True)
    assert ckpt["step"] == checkpoint_step and ckpt["epoch"] == 0  # mid-epoch
    assert "sums" in ckpt  # the epoch's running loss/accuracy sums travel with it
    events = runs.read_run(out, strict=True)
    if hold == "event:3":
        assert events.events[-1]["event"] == 3 and events.events[-1]["step"] == 150
    _masktopo("train", "--resume", out)
    _assert_same_run(uninterrupted, out)
    assert not list(out.rglob("*.tmp"))


@needs_fmnist
def test_sigkill_before_the_first_checkpoint_restarts_from_step_0(uninterrupted, tmp_path):
    """Killed after event 0 (init), long before any checkpoint: --resume starts again with the
    recorded config, and so does the whole run."""
    out = tmp_path / "run"
    _kill_at([*ITOP, "--out", out], "event:0", tmp_path)
    assert not (out / CHECKPOINT_FILE).exists() and (out / RUN_FILE).exists()
    p = _masktopo("train", "--resume", out)
    assert "starting it again from step 0" in p.stderr
    _assert_same_run(uninterrupted, out)


def test_pags_killed_before_its_first_state_restarts(tmp_path):
    """PAGS killed between run.json and its first resume point: --resume starts again."""
    args = ["pags", "--model", "spiral-mlp", "--dataset", "cubist-spiral", "--method", "erk",
            "--density", "0.3", "--n", "4", "--chunk", "2", "--sampler", "rewire"]  # fmt: skip
    _masktopo(*args, "--out", tmp_path / "whole")
    out = tmp_path / "cut"
    _masktopo(*args, "--out", out)
    (out / "state.json").unlink()  # as a run killed before writing it leaves the folder
    p = _masktopo(*args, "--out", out, "--resume")
    assert "starting it again" in p.stderr
    a = runs.read_run(tmp_path / "whole")
    assert a.kind == "pags" and runs.read_run(out).kind == "pags"
    import masktopo

    assert masktopo.load(out / "best.safetensors").equal(
        masktopo.load(tmp_path / "whole" / "best.safetensors")
    )
    assert json.loads((out / "state.json").read_text())["next_t"] == 5


def test_a_second_writer_is_refused_and_resume_checks_the_log(tmp_path):
    """While one ``train`` writes a run, another on the same folder (fresh or --resume) fails
    with one line and changes nothing; a log edited behind the checkpoint's back is refused."""
    out = tmp_path / "run"
    args = ["train", "--method", "set", "--model", "spiral-mlp", "--dataset", "cubist-spiral",
            "--density", "0.3", "--epochs", "2", "--batch-size", "1000", "--lr", "0.05",
            "--update-interval", "10", "--set", "checkpoint_every=20"]  # fmt: skip
    marker = tmp_path / "held"
    holder = subprocess.Popen(
        [sys.executable, "-m", "masktopo", *args, "--out", str(out)],
        env=_env(**{HOLD_ENV: f"checkpoint:1:{marker}"}),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        log = (out / EVENTS_FILE).read_bytes()
        for extra in (["--out", out], ["--resume", out]):
            cmd = [sys.executable, "-m", "masktopo", *(args if extra[0] == "--out" else ["train"]),
                   *map(str, extra)]  # fmt: skip
            p = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
            assert p.returncode == 2, p.stderr
            lines = p.stderr.strip().splitlines()
            assert len(lines) == 1 and (
                "already holds a training run" in lines[0]
                or "is being written by another" in lines[0]
            ), lines
        assert (out / EVENTS_FILE).read_bytes() == log  # no event written twice
    finally:
        holder.kill()
        holder.wait()
    # the log no longer matches the checkpoint (a line changed): resume refuses it
    lines = (out / EVENTS_FILE).read_text().splitlines(keepends=True)
    first = json.loads(lines[1])
    first["step"] += 1
    lines[1] = json.dumps(first) + "\n"
    (out / EVENTS_FILE).write_text("".join(lines))
    cmd = [sys.executable, "-m", "masktopo", "train", "--resume", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert p.returncode == 2 and "not the ones the checkpoint saw" in p.stderr, p.stderr
