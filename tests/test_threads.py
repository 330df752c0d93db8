"""masktopo.threads: how many threads the analysis and PAGS use on the CPU."""

import os

import pytest

from masktopo import threads
from masktopo.analysis import spectral
from masktopo.errors import MaskValidationError


@pytest.mark.parametrize(
    ("env", "cores", "local", "expected"),
    [
        ("5", 2, None, 5),  # the user's number, whatever the cores
        ("", 2, None, 2),
        ("", 1, None, 1),
        ("", 16, None, threads.MAX_THREADS),
        ("", 16, "4", 4),  # torchrun: 4 processes on this machine share its cores
        ("", 2, "4", 1),
        ("", 6, "bad", 6),  # not torchrun's number: ignored
    ],
)
def test_default_threads(monkeypatch, tmp_path, env, cores, local, expected):
    monkeypatch.setattr(threads, "CPU_MAX", tmp_path / "absent")
    monkeypatch.setenv("MASKTOPO_WORKERS", env)
    if local is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert threads.default_threads() == expected


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000\n", 8), ("200000 100000\n", 2), ("150000 100000", 2), ("50000 100000", 1),
     ("garbage", 8), ("", 8)],
)  # fmt: skip
def test_default_threads_follow_a_cgroup_quota(monkeypatch, tmp_path, cpu_max, expected):
    """A container's CPU quota (cgroup v2 ``cpu.max``) caps the threads, rounded up."""
    (tmp_path / "cpu.max").write_text(cpu_max)
    monkeypatch.setattr(threads, "CPU_MAX", tmp_path / "cpu.max")
    monkeypatch.delenv("MASKTOPO_WORKERS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    assert threads.default_threads() == expected


def test_default_threads_rejects_a_bad_variable(monkeypatch):
    monkeypatch.setenv("MASKTOPO_WORKERS", "many")
    with pytest.raises(MaskValidationError, match="MASKTOPO_WORKERS='many' is not an integer"):
        threads.default_threads()


def test_the_analysis_uses_the_same_number(monkeypatch, tmp_path):
    """``cpu_workers`` (the analysis's threads) follows the same rule as the PAGS loop: more than
    two on a bigger machine (it was min(2, cores))."""
    monkeypatch.setattr(threads, "CPU_MAX", tmp_path / "absent")
    monkeypatch.delenv("MASKTOPO_WORKERS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    assert spectral.cpu_workers() == threads.default_threads() == 6
    monkeypatch.setenv("MASKTOPO_WORKERS", "3")
    assert spectral.cpu_workers() == 3


def test_usable_cores_without_affinity(monkeypatch, tmp_path):
    (tmp_path / "cpu.max").write_text("300000 100000")
    monkeypatch.setattr(threads, "CPU_MAX", tmp_path / "cpu.max")
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 12)
    assert threads.usable_cores() == 3
