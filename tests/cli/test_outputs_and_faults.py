"""Outputs that would destroy inputs, special files, faults and the messages of the bad inputs
and faults found by trying them (each: one line, exit 2, nothing written, nothing lost)."""

from __future__ import annotations

import errno
import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from cli_helpers import ROOT, run_masktopo

import masktopo
from masktopo.analysis import layer_metrics
from masktopo.cli.main import main
from masktopo.errors import MaskValidationError
from masktopo.masks import MaskSet

SPIRAL = ["--model", "spiral-mlp", "--dataset", "cubist-spiral", "--batch-size", "1000"]


def _maskset(seed: int = 0) -> MaskSet:
    g = torch.Generator().manual_seed(seed)
    masks = {"conv.weight": torch.rand(6, 3, 3, 3, generator=g) < 0.5,
             "fc.weight": torch.rand(10, 8, generator=g) < 0.6}  # fmt: skip
    return MaskSet(masks, weights={n: torch.randn(m.shape, generator=g) * m
                                   for n, m in masks.items()})  # fmt: skip


def _run(capsys, *argv):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc, err, *contains):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("masktopo: error: "), err
    for text in contains:
        assert text in lines[0], lines[0]


def _tree(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- outputs that are inputs, or parts of runs ----------------------------------------------------
def test_analyze_out_equal_to_its_input_is_refused(tmp_path, capsys):
    src = masktopo.save(tmp_path / "in.safetensors", _maskset())
    link = tmp_path / "alias.csv"
    link.symlink_to(src)  # the same file under another name
    before = _tree(tmp_path)
    rc, _, err = _run(capsys, "analyze", src, "--out", src)
    _one_line_error(rc, err, "in.safetensors", "is also an input")
    rc, _, err = _run(capsys, "analyze", src, "--format", "csv", "--out", link)
    _one_line_error(rc, err, "is also an input")
    assert _tree(tmp_path) == before


def _train_run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    rc = main(["train", "--method", "set", *SPIRAL, "--density", "0.3", "--epochs", "1",
               "--update-interval", "20", "--out", str(out)])  # fmt: skip
    assert rc == 0
    return out


def test_pags_out_into_a_training_run_is_refused(tmp_path, capsys):
    run = _train_run(tmp_path)
    capsys.readouterr()
    before = _tree(run)
    rc, _, err = _run(capsys, "pags", *SPIRAL[:4], "--method", "erk", "--density", "0.3",
                        "--n", "2", "--out", run)  # fmt: skip
    _one_line_error(rc, err, "holds a training run; a PAGS run needs a new or empty folder")
    assert _tree(run) == before
    rc, _, err = _run(capsys, "analyze", run, "--event", "0", "--out", run / "events.jsonl")
    _one_line_error(rc, err, "is part of the run directory")
    assert _tree(run) == before


def test_outputs_onto_special_files_and_symlinks(tmp_path, capsys):
    src = masktopo.save(tmp_path / "m.safetensors", _maskset())
    rc, _, err = _run(capsys, "analyze", src, "--format", "csv", "--out", "/dev/null")
    assert rc == 0 and err == "" and Path("/dev/null").is_char_device()
    target = tmp_path / "table.csv"
    target.write_text("old")
    link = tmp_path / "latest.csv"
    link.symlink_to(target)
    rc, _, err = _run(capsys, "analyze", src, "--out", link)
    assert rc == 0 and link.is_symlink() and target.read_text().startswith("level,layer,")


# -- faults ------------------------------------------------------------------------------------
def test_disk_full_while_writing_a_checkpoint_is_one_line(tmp_path, capsys, monkeypatch):
    """The checkpoint's write fails for lack of space (on its fsync, the point where a full disk
    shows): one line, exit 2, and the events and the previous checkpoint stay intact."""
    from masktopo import files

    real_fsync = files.os.fsync
    calls = {"checkpoints": 0}

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".checkpoint.pt." in name:
            calls["checkpoints"] += 1
            if calls["checkpoints"] >= 2:  # the first checkpoint succeeds
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    out = tmp_path / "run"
    rc, _, err = _run(capsys, "train", "--method", "set", *SPIRAL, "--density", "0.3",
                           "--epochs", "2", "--update-interval", "20",
                           "--set", "checkpoint_every=30", "--out", out)  # fmt: skip
    # the run's plain per-epoch log lines come first; the error itself is one line
    err = "\n".join(ln for ln in err.splitlines() if not ln.startswith("epoch "))
    _one_line_error(rc, err, "checkpoint.pt: cannot write (No space left on device)")
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 30  # the previous checkpoint, intact
    run = masktopo.runs.read_run(out, strict=True)
    for k in run.numbers:
        run.load(k)  # every recorded event is complete
    assert not list(out.rglob("*.tmp"))


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="needs pyarrow to hide")
def test_pags_without_pyarrow_fails_before_any_work(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyarrow" else real(name, *a))  # fmt: skip
    out = tmp_path / "p"
    rc, _, err = _run(capsys, "pags", *SPIRAL[:4], "--method", "erk", "--density", "0.3",
                           "--n", "2", "--out", out)  # fmt: skip
    _one_line_error(rc, err, "needs pyarrow", "pip install 'masktopo[parquet]'")
    assert not out.exists()


def test_analyze_with_a_bad_input_writes_no_run_cache(tmp_path, capsys):
    run = _train_run(tmp_path)
    capsys.readouterr()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    rc, _, err = _run(capsys, "analyze", run, bad, "--out", tmp_path / "x.csv")
    _one_line_error(rc, err, "bad.pt", "truncated or corrupt")
    assert not (run / "analysis").exists() and not (tmp_path / "x.csv").exists()


def test_analyze_to_a_closed_stdout_is_one_line(tmp_path):
    src = masktopo.save(tmp_path / "m.safetensors", _maskset())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(["bash", "-c", f'"{sys.executable}" -m masktopo analyze "{src}" '
                        "--format csv >&-"], capture_output=True, text=True, env=env,
                       timeout=300)  # fmt: skip
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines == ["masktopo: error: standard output is closed; write to a file with --out FILE"]


def test_a_fifo_input_does_not_hang(tmp_path):
    fifo = tmp_path / "masks.npz"
    os.mkfifo(fifo)
    for command in ("info", "analyze"):
        p = run_masktopo(command, fifo, cwd=tmp_path, timeout=120)
        assert p.returncode == 2 and "is a FIFO (named pipe)" in p.stderr, p.stderr


# -- messages ------------------------------------------------------------------------------------
def test_a_symlink_loop_is_named(tmp_path, capsys):
    loop = tmp_path / "loop.pt"
    loop.symlink_to(loop)
    for command in ("info", "analyze"):
        rc, _, err = _run(capsys, command, loop)
        _one_line_error(rc, err, "loop.pt: is a symlink loop")


def test_info_prints_warnings_like_every_command(tmp_path, capsys):
    run = _train_run(tmp_path)
    capsys.readouterr()
    with open(run / "events.jsonl", "a") as f:
        f.write('{"event": 99, "st')  # a write cut off by a kill
    rc, _, err = _run(capsys, "info", run)
    assert rc == 0
    assert err.splitlines() == [
        f"masktopo: warning: {run / 'events.jsonl'}: ignoring line "
        f"{len((run / 'events.jsonl').read_text().splitlines())}, a write cut off by a stopped run"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "seed=-1"], "--set: seed must be >= 0, got -1"),
        (["--method", "set", "--density", "1e-9"], "density 1e-09 keeps no entry of the"),
        (["--method", "rigl", "--density", "1e-9"], "keeps no entry"),
        (["--method", "static", "--density", "1e-9"], "keeps no entry"),
    ],
)
def test_train_refuses_what_pags_refuses(tmp_path, capsys, args, message):
    out = tmp_path / "o"
    rc, _, err = _run(capsys, "train", *SPIRAL, "--epochs", "1", *args, "--out", out)
    _one_line_error(rc, err, message)
    assert not out.exists()


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (None, "mask is a NoneType, not a tensor"),
        (torch.ones(3, 4, dtype=torch.bool, device="meta"), "on the meta device"),
        (torch.ones(3, 4).to_sparse(), "is a sparse tensor"),
        (torch.ones(2, 2, 2, 2, 2, 2, dtype=torch.bool), "neither linear"),
        (torch.ones(4, dtype=torch.bool), "neither linear"),
    ],
)
def test_layer_metrics_refuses_what_the_loaders_refuse(mask, message):
    with pytest.raises(MaskValidationError, match=message):
        layer_metrics(mask)
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:  # the same rule for MaskSet
        with pytest.raises(MaskValidationError, match=message):
            MaskSet({"x.weight": mask})
