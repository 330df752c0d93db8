"""Same seed, same result with 1 and 2 processes (torch.distributed, gloo on CPU)."""

import os
import pickle
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _stubs import dist_worker

import masktopo

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)

KW = {"n": 20, "chunk": 6, "snapshot_every": 5, "seed": 3}


def _spawn(world, tmp_path, name):
    out = tmp_path / name
    mp.spawn(dist_worker, args=(world, str(tmp_path / f"{name}.init"), str(out), KW),
             nprocs=world, join=True)  # fmt: skip
    return out


def test_one_and_two_processes_agree(tmp_path):
    # One process: no process group at all; two: gloo.
    from _stubs import NoisyMagnitude, base_mask, theta

    from masktopo.pags import PagsConfig, run_pags

    w = theta(0)
    one = tmp_path / "w1"
    run_pags(base_mask(w, 0.3), w, NoisyMagnitude(w, 0.3, KW["seed"]), PagsConfig(**KW), out=one)
    two = _spawn(2, tmp_path, "w2")
    # The best changes more than once inside a chunk (the owners send fingerprints only of the
    # layers that beat the best before the chunk: this exercises that the others never win).
    rows = pd.read_parquet(one / "candidates.parquet")
    improving = rows[(rows.t > 0) & (rows.accepted_layers > 0)].t
    assert ((improving - 1) // KW["chunk"]).value_counts().max() >= 2
    b1, b2 = masktopo.load(one / "best.safetensors"), masktopo.load(two / "best.safetensors")
    assert b1.equal(b2)
    pd.testing.assert_frame_equal(pd.read_parquet(one / "candidates.parquet"),
                                  pd.read_parquet(two / "candidates.parquet"))  # fmt: skip
    assert sorted(p.name for p in (one / "snapshots").iterdir()) == sorted(
        p.name for p in (two / "snapshots").iterdir())  # fmt: skip
    # Every rank ends with the same best.
    masks = [pickle.loads((tmp_path / f"w2.rank{r}.pkl").read_bytes()) for r in range(2)]
    assert all(torch.equal(masks[0][n], masks[1][n]) for n in masks[0])
    assert all(torch.equal(masks[0][n], b1[n]) for n in b1)


def test_torchrun_two_processes_match_one(tmp_path):
    """The real launcher: `torchrun --nproc_per_node=2 -m masktopo pags` equals a plain run."""
    import shutil
    import subprocess
    import sys

    import masktopo

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    args = ["pags", "--model", "mlpnet", "--dataset", "fashion-mnist", "--method", "erk",
            "--density", "0.05", "--candidates", "6", "--chunk", "3"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "masktopo", *args, "--out",
                          str(tmp_path / "two")], capture_output=True, text=True, env=env,
                         timeout=300)  # fmt: skip
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run([sys.executable, "-m", "masktopo", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    a = masktopo.load(tmp_path / "one" / "best.safetensors")
    b = masktopo.load(tmp_path / "two" / "best.safetensors")
    assert a.equal(b, weights=True)
