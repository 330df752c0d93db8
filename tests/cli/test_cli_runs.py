"""``masktopo analyze RUN_DIR``: every event through the run-analysis cache, --every, --no-cache."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import run_masktopo

import masktopo
from masktopo.analysis.runs import NETWORK, analyze_run
from masktopo.cli.main import main
from masktopo.masks import MaskSet


def _maskset(seed: int, weights: bool = False) -> MaskSet:
    g = torch.Generator().manual_seed(seed)
    masks = {
        "conv1.weight": torch.rand(8, 4, 3, 3, generator=g) < 0.5,
        "fc.weight": torch.rand(10, 8, generator=g) < 0.6,
    }
    w = {n: torch.randn(m.shape, generator=g) * m for n, m in masks.items()} if weights else None
    return MaskSet(masks, weights=w)


def _append(root: Path, k: int, ms: MaskSet) -> None:
    rel = f"masks/event-{k:06d}.safetensors"
    masktopo.save(root / rel, ms)
    line = {"event": k, "step": 10 * k, "epoch": k, "kind": "init" if k == 0 else "regen",
            "file": rel, "has_weights": ms.has_weights, "nnz": ms.nnz_per_layer(),
            "density": ms.density(), "val_acc": 0.1 * k}  # fmt: skip
    with open(root / "events.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def write_run(root: Path, n: int) -> Path:
    """A run directory as the recorder writes it (docs/formats.md); weights at event 0."""
    root.mkdir()
    (root / "masks").mkdir()
    first = _maskset(0, weights=True)
    layers = [{"name": x.name, "kind": x.kind, "shape": list(x.shape)} for x in first.layers()]
    run = {"format": "masktopo.run", "format_version": 1, "config": {}, "layers": layers}
    (root / "run.json").write_text(json.dumps(run), encoding="utf-8")
    for k in range(n):
        _append(root, k, first if k == 0 else _maskset(k))
    return root


@pytest.fixture(autouse=True)
def _no_terminal_width(monkeypatch):
    """Text tables are fitted to $COLUMNS: these tests set it where they need it."""
    monkeypatch.delenv("COLUMNS", raising=False)


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _csv(out: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(out))


def test_every_event_incremental(tmp_path, capsys):
    root = write_run(tmp_path / "run", 3)
    rc, out, err = _run(capsys, "analyze", root, "--format", "csv")
    assert rc == 0 and err == "", err
    df = _csv(out)
    assert df["event"].tolist() == [k for k in range(3) for _ in range(3)]
    assert df["layer"].tolist() == ["conv1.weight", "fc.weight", NETWORK] * 3
    assert df["val_acc"].tolist() == pytest.approx([0.1 * k for k in range(3) for _ in range(3)])
    lib = analyze_run(root, workers=1, cache=False)
    assert df["mu_hat"].tolist() == pytest.approx(lib["mu_hat"].tolist(), nan_ok=True)
    caches = list((root / "analysis").glob("*.npz"))
    assert len(caches) == 1
    stamp = caches[0].stat().st_mtime_ns

    rc, out2, err = _run(capsys, "analyze", root, "--format", "csv")
    assert rc == 0 and out2 == out
    assert caches[0].stat().st_mtime_ns == stamp  # nothing new: the cache is not rewritten

    _append(root, 3, _maskset(3))
    rc, out3, _ = _run(capsys, "analyze", root, "--format", "csv")
    grown = _csv(out3)
    assert rc == 0 and sorted(grown["event"].unique()) == [0, 1, 2, 3]
    assert out3.startswith(out.rstrip("\n").split("\n", 1)[0])  # same header
    assert caches[0].stat().st_mtime_ns != stamp

    rc, out4, _ = _run(capsys, "analyze", root, "--format", "csv", "--every", "2", "--no-network")
    sub = _csv(out4)
    assert rc == 0 and sorted(sub["event"].unique()) == [0, 2, 3]
    assert NETWORK not in set(sub["layer"]) and set(sub["level"]) == {"layer"}
    assert "n_layers" not in sub and "ramanujan_fraction" not in sub  # network-only columns


def test_run_table_columns(tmp_path, capsys):
    root = write_run(tmp_path / "run", 3)
    rc, out, err = _run(capsys, "analyze", root, "--format", "csv", "--no-cache")
    assert rc == 0, err
    df = _csv(out)
    assert list(df.columns[:8]) == ["event", "step", "epoch", "event_kind", "level", "layer",
                                    "layer_kind", "shape"]  # fmt: skip
    assert "kind" not in df and "kind_layer" not in df
    assert df["event_kind"].tolist() == [k for k in ("init", "regen", "regen") for _ in range(3)]
    net = df[df["level"] == "network"]
    assert net["event"].is_unique and net["event"].is_monotonic_increasing  # the unique key
    assert net["is_ramanujan"].isna().all() and net["ramanujan_fraction"].notna().any()
    layers = df[df["level"] == "layer"]
    assert layers.groupby("event")["n_edges"].sum().tolist() == net["n_edges"].tolist()
    assert layers["is_ramanujan"].dropna().isin([True, False]).all()


def test_no_cache_writes_nothing(tmp_path, capsys):
    root = write_run(tmp_path / "run", 2)
    rc, out, err = _run(capsys, "analyze", root, "--no-cache", "--metrics", "mu0,n_edges")
    assert rc == 0, err
    assert not (root / "analysis").exists()
    lines = out.splitlines()
    assert lines[0].split() == ["event", "step", "layer", "shape", "mu0", "n_edges", "reason"]
    assert len(lines) == 1 + 2 * 3


def test_parquet_out(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    root = write_run(tmp_path / "run", 3)
    out_file = root / "topology.parquet"
    rc, out, err = _run(capsys, "analyze", root, "--out", out_file)
    assert rc == 0 and out == "" and err == "", err
    got = pd.read_parquet(out_file)
    want = analyze_run(root, workers=1, cache=False)
    assert list(got.columns) == list(want.columns)
    assert got["event"].tolist() == want["event"].tolist()
    pd.testing.assert_series_equal(got["ramanujan_gap"], want["ramanujan_gap"], rtol=1e-12)
    assert got.attrs["events"] == [0, 1, 2]  # pandas keeps attrs in the parquet metadata


def test_bad_event_file_is_a_warning(tmp_path, capsys):
    root = write_run(tmp_path / "run", 3)
    bad = root / "masks/event-000001.safetensors"
    bad.write_bytes(b"not a safetensors file" * 4)
    rc, out, err = _run(capsys, "analyze", root, "--format", "csv")
    assert rc == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"masktopo: warning: {bad}: ")
    assert "corrupt" in lines[0] and "Traceback" not in err
    assert sorted(_csv(out)["event"].unique()) == [0, 2]


def test_run_errors(tmp_path, capsys):
    root = write_run(tmp_path / "run", 2)
    for argv, text in (
        ([root, "--every", "3", "--event", "0"], "--every"),
        ([tmp_path / "nope"], "no such file"),
    ):
        rc, out, err = _run(capsys, "analyze", *argv)
        assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
        assert err.startswith("masktopo: error: ") and text in err
    for every in ("0", "-2", "x"):
        rc, _, err = _run(capsys, "analyze", root, "--every", every)
        assert rc == 2 and "usage:" in err
    for name in ("masks/event-000000.safetensors", "masks/event-000001.safetensors"):
        (root / name).unlink()
    rc, out, err = _run(capsys, "analyze", root, "--out", tmp_path / "t.csv")
    assert rc == 2 and out == "" and not (tmp_path / "t.csv").exists()
    assert f"masktopo: error: {root}: no event could be analyzed" in err
    (root / "events.jsonl").write_text("")
    rc, _, err = _run(capsys, "analyze", root)
    assert rc == 2 and "no mask events yet" in err


def test_help_mentions_run_options(capsys):
    rc, out, _ = _run(capsys, "analyze", "--help")
    assert rc == 0
    for opt in ("--every", "--no-cache", "--event"):
        assert opt in out


def test_subprocess_run_analysis(tmp_path):
    root = write_run(tmp_path / "run", 3)
    proc = run_masktopo("analyze", root, "--format", "json", "--progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    assert len(records) == 9 and records[-1]["layer"] == NETWORK and records[-1]["event"] == 2
    assert "events" in proc.stderr  # the progress bar


def test_analyze_invalid_rule_for_the_network_row(tmp_path, capsys):
    """--invalid zero counts gated-out layers as 0 in the network means (skip leaves them out):
    a run with one complete bipartite layer (connected, gated in) and one star-like layer whose
    Ramanujan gap is undefined under the N23 gate."""
    from masktopo.cli.main import main
    from masktopo.runs import RunWriter

    good = torch.ones(6, 8, dtype=torch.bool)
    bad = torch.zeros(6, 8, dtype=torch.bool)
    bad[0] = True  # one output node: a star, the gate leaves its Ramanujan gap undefined
    run = tmp_path / "run"
    run.mkdir()
    w = RunWriter(run)
    w.write_run_json("train", {"config": {}, "seed": 0, "layers": [
        {"name": "a", "kind": "linear", "shape": [6, 8]},
        {"name": "b", "kind": "linear", "shape": [6, 8]}]})  # fmt: skip
    w.record({"a": good, "b": bad}, None, kind="final", step=1, epoch=1.0)
    w.close()
    gaps = {}
    for rule in ("skip", "zero"):
        out = tmp_path / f"{rule}.csv"
        assert main(["analyze", str(run), "--invalid", rule, "--metrics", "ramanujan_gap",
                     "--format", "csv", "--out", str(out)]) == 0  # fmt: skip
        t = pd.read_csv(out)
        layers = t[t["level"] == "layer"].set_index("layer")["ramanujan_gap"]
        assert np.isnan(layers["b"]) and np.isfinite(layers["a"])
        gaps[rule] = float(t[t["level"] == "network"]["ramanujan_gap"].iloc[0])
        gaps["a"] = float(layers["a"])
    assert gaps["skip"] == pytest.approx(gaps["a"])
    assert gaps["zero"] == pytest.approx(gaps["a"] / 2)
