"""Before writing: fresh or resumable --out, runs of another kind, outputs that are inputs or run
parts, a resume's settings; and one writer per run (the lock)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from masktopo import runs
from masktopo.errors import MaskFileError
from masktopo.runs import RunLock, check_out_dir, check_output, check_same_config
from masktopo.runs.layout import LOCK_FILE, RUN_FILE


def _run_json(path, kind="train"):
    path.mkdir(parents=True, exist_ok=True)
    body = {**runs.run_header(kind), "config": {},
            "layers": [{"name": "fc.weight", "kind": "linear", "shape": [3, 4]}]}  # fmt: skip
    (path / RUN_FILE).write_text(json.dumps(body))
    return path


def test_check_out_dir_fresh_and_resume(tmp_path):
    assert check_out_dir(tmp_path / "new", "train", resume=False) == tmp_path / "new"
    empty = tmp_path / "empty"
    empty.mkdir()
    check_out_dir(empty, "train", resume=False)
    (empty / LOCK_FILE).write_text("")  # a writer killed before run.json leaves only its lock
    check_out_dir(empty, "train", resume=False)
    (empty / "notes.txt").write_text("x")
    with pytest.raises(MaskFileError, match="is not empty"):
        check_out_dir(empty, "train", resume=False)
    run = _run_json(tmp_path / "run")
    with pytest.raises(MaskFileError, match="already holds a training run; pass --resume"):
        check_out_dir(run, "train", resume=False)
    check_out_dir(run, "train", resume=True)
    with pytest.raises(MaskFileError, match=r"not a run directory \(no run\.json\)"):
        check_out_dir(tmp_path / "new", "train", resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(MaskFileError, match="it is a file, not a folder"):
        check_out_dir(tmp_path / "file", "pags", resume=False)


def test_a_run_of_another_kind_is_refused(tmp_path):
    run = _run_json(tmp_path / "run", "train")
    before = (run / RUN_FILE).read_bytes()
    with pytest.raises(MaskFileError, match="holds a training run; a PAGS run needs a new"):
        check_out_dir(run, "pags", resume=False)
    with pytest.raises(MaskFileError, match="--resume: holds a training run, not a PAGS run"):
        check_out_dir(run, "pags", resume=True)
    assert (run / RUN_FILE).read_bytes() == before


def test_check_output_refuses_inputs_and_run_parts(tmp_path):
    run = _run_json(tmp_path / "run")
    (run / "masks").mkdir()
    for part in ("run.json", "events.jsonl", "masks/event-000000.safetensors", "checkpoint.pt",
                 "analysis/x.npz", "summary.json"):  # fmt: skip
        if part.startswith("analysis"):
            (run / "analysis").mkdir(exist_ok=True)
        with pytest.raises(MaskFileError, match="is part of the run directory"):
            check_output(run / part)
    check_output(run / "report.html")  # a new file inside the run directory is fine
    src = tmp_path / "in.safetensors"
    src.write_bytes(b"x")
    with pytest.raises(MaskFileError, match="is also an input"):
        check_output(src, [src])
    with pytest.raises(MaskFileError, match="does not exist"):
        check_output(tmp_path / "no" / "x.csv")


def test_check_same_config():
    check_same_config({"a": 1, "device": "cpu"}, {"a": 1, "device": "cuda"},
                      allowed=("device",), where="w")  # fmt: skip
    with pytest.raises(MaskFileError, match=r"w: the run was started with other settings: "
                       r"a=2 \(run: 1\); only device may change"):  # fmt: skip
        check_same_config({"a": 1}, {"a": 2}, allowed=("device",), where="w")


def test_one_writer_per_run(tmp_path):
    run = _run_json(tmp_path / "run")
    with RunLock(run) as lock:
        assert lock.held
        holder = json.loads((run / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(MaskFileError, match=rf"is being written by another masktopo command "
                           rf"\(process {os.getpid()} on "):  # fmt: skip
            RunLock(run).acquire()
    RunLock(run).acquire().release()  # free again


def test_a_killed_writer_leaves_no_lock_behind(tmp_path):
    """The lock is an flock: a writer killed with SIGKILL releases it; its pid stays in the file
    (a stale note), and the next writer takes the lock."""
    run = _run_json(tmp_path / "run")
    code = ("import sys, time; from masktopo.runs import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(600)")  # fmt: skip
    p = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(MaskFileError, match=f"process {p.pid} on"):
            RunLock(run).acquire()
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == p.pid  # stale content
    deadline = time.monotonic() + 10
    while True:
        try:
            RunLock(run).acquire().release()
            break
        except MaskFileError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_a_folder_without_run_json_says_what_it_holds(tmp_path):
    """A folder of runs names them; a folder of mask files says to name the files."""
    parent = tmp_path / "runs"
    for name in ("a", "b"):
        (parent / name).mkdir(parents=True)
        (parent / name / "run.json").write_text("{}")
    with pytest.raises(MaskFileError, match=r"it holds 2 run directories: .*runs/a, .*runs/b$"):
        runs.read_run(parent)
    files = tmp_path / "files"
    files.mkdir()
    (files / "m.safetensors").write_bytes(b"")
    with pytest.raises(
        MaskFileError, match=r"1 mask or weight file.*m\.safetensors: name the files"
    ):
        runs.read_run_json(files)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MaskFileError, match=r"not a run directory \(no run\.json\)$"):
        runs.read_run(tmp_path / "empty")


def test_the_lock_holder_removes_what_a_killed_writer_left(tmp_path):
    """A writer killed in an atomic write (SIGKILL: no unwinding) leaves ``.<name>.<hex>.tmp``
    beside the file; whoever takes the run's lock next removes them (the run directory and its
    folders), but not in ``analysis/`` (readers write there without the lock) nor other files."""
    run = tmp_path / "run"
    (run / "masks").mkdir(parents=True)
    (run / "analysis").mkdir()
    left = [run / ".checkpoint.pt.08160a60f513.tmp",
            run / "masks" / ".event-000085.safetensors.3a77664b1444.tmp"]  # fmt: skip
    kept = [run / "analysis" / ".cache.parquet.0123456789ab.tmp", run / ".notes.tmp",
            run / "masks" / "event-000001.safetensors", run / ".x.0123456789ab.tmp.bak"]  # fmt: skip
    for p in left + kept:
        p.write_bytes(b"x")
    with RunLock(run):
        assert not any(p.exists() for p in left)
        assert all(p.exists() for p in kept)


@pytest.mark.parametrize("damage", ["truncated", "empty", "not-json", "no-config", "a-folder"])
def test_resuming_a_run_with_a_damaged_run_json_names_it(tmp_path, damage):
    """--resume on a run whose run.json is damaged says what is wrong with run.json (it used to
    say "holds a (unreadable) run, not a training run"; a run.json without its settings was
    compared against the defaults)."""
    run = _run_json(tmp_path / "run")
    path = run / RUN_FILE
    text = path.read_text()
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "empty":
        path.write_text("")
    elif damage == "not-json":
        path.write_bytes(b"\x00\xff garbage")
    elif damage == "no-config":
        obj = json.loads(text)
        obj.pop("config", None)
        path.write_text(json.dumps(obj))
    else:
        path.unlink()
        path.mkdir()
    with pytest.raises(MaskFileError) as err:
        check_out_dir(run, "train", resume=True)
    msg = str(err.value)
    assert "\n" not in msg and "unreadable" not in msg
    assert msg.startswith(f"{path}: ") and msg.endswith("; --resume cannot continue this run")
    if damage == "no-config":
        assert "'config'" in msg
    with pytest.raises(MaskFileError, match=r"holds a"):
        check_out_dir(run, "train", resume=False)  # and a new run does not overwrite it
