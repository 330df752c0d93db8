"""Run analysis (masktopo.analysis.runs): the table, the incremental cache, bad events."""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _files import write_run_json

import masktopo
from masktopo import runs, store
from masktopo.analysis import aggregate, analyze, metric_names
from masktopo.analysis import runs as runs_mod
from masktopo.analysis.runs import NETWORK, analyze_run
from masktopo.errors import MaskFileError, MaskValidationError, UnknownNameError
from masktopo.masks import MaskSet

LAYERS = ("conv.weight", "fc.weight", "head.weight")
UNWEIGHTED = metric_names(weighted=False)
WEIGHTED = [n for n in metric_names() if n not in UNWEIGHTED]


# ---------------------------------------------------------------------------------------------
# helpers: a run directory written the way the recorder writes one (docs/formats.md)
# ---------------------------------------------------------------------------------------------
def make_maskset(seed: int, *, weights: bool) -> MaskSet:
    """Three small layers; ``head.weight`` has one output, so several metrics are NaN."""
    g = torch.Generator().manual_seed(seed)
    masks = {
        "conv.weight": torch.rand(8, 4, 3, 3, generator=g) < 0.4,
        "fc.weight": torch.rand(12, 9, generator=g) < 0.5,
        "head.weight": torch.rand(1, 12, generator=g) < 0.7,
    }
    masks["head.weight"][0, 0] = True
    w = {n: torch.randn(m.shape, generator=g) * m for n, m in masks.items()} if weights else None
    return MaskSet(masks, weights=w)


def _line(i: int, ms: MaskSet, rel: str) -> dict:
    line = {
        "event": i,
        "step": 100 * i,
        "epoch": i / 2,
        "kind": "init" if i == 0 else "regen",
        "file": rel,
        "has_weights": ms.has_weights,
        "nnz": ms.nnz_per_layer(),
        "density": ms.density(),
    }
    if i:
        line["drop"] = {n: i + j for j, n in enumerate(LAYERS)}
        line["R_s"] = 0.1 * i
    if i % 2 == 0:
        line["val_acc"] = 0.5 + i / 100
    return line


def write_run(root: Path, masksets: list[MaskSet]) -> Path:
    """A run directory: run.json, then per event its mask file (atomically) and its line."""
    write_run_json(root, masksets[0], {"method": "test"})
    append_events(root, masksets, start=0)
    return root


def append_events(root: Path, masksets: list[MaskSet], *, start: int) -> None:
    for i, ms in enumerate(masksets, start=start):
        rel = f"masks/event-{i:06d}.safetensors"
        store.save(root / rel, ms)
        with open(root / "events.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(_line(i, ms, rel)) + "\n")


def masksets(n: int, *, seed: int = 0, weighted=(0,)) -> list[MaskSet]:
    return [make_maskset(seed + i, weights=i in weighted) for i in range(n)]


@pytest.fixture
def run5(tmp_path) -> Path:
    return write_run(tmp_path / "run", masksets(5, weighted=(0, 4)))


@pytest.fixture
def count_events(monkeypatch):
    """Count the events the per-event function analyzes (in this process: use workers=1)."""
    calls: list[int] = []
    original = runs_mod._event_values

    def counting(job, k):
        calls.append(k)
        return original(job, k)

    monkeypatch.setattr(runs_mod, "_event_values", counting)
    return calls


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------
def test_table_matches_analyze_and_aggregate(run5):
    df = analyze_run(run5, workers=1, cache=False)
    run = runs.read_run(run5)
    fixed = ["event", "step", "epoch", "event_kind", "level", "layer", "layer_kind", "shape"]
    assert list(df.columns[:8]) == fixed
    names = metric_names()
    at = names.index("is_ramanujan") + 1  # the network's fraction right after the layer flag
    metric_cols = [*names[:at], "ramanujan_fraction", *names[at:]]
    assert list(df.columns[8 : 8 + len(metric_cols)]) == metric_cols
    assert df.columns[8 + len(metric_cols) : 10 + len(metric_cols)].tolist() == [
        "n_layers",
        "reason",
    ]
    assert "kind" not in df.columns and "kind_layer" not in df.columns  # one meaning per name
    for col in ("R_s", "train_loss", "train_acc", "val_loss", "val_acc", "drop"):
        assert col in df.columns
    assert len(df) == 5 * (len(LAYERS) + 1)
    assert df["event"].tolist() == [k for k in range(5) for _ in range(len(LAYERS) + 1)]
    assert df["layer"].tolist() == [*LAYERS, NETWORK] * 5
    assert df["level"].tolist() == [*["layer"] * len(LAYERS), "network"] * 5
    assert df.attrs["events"] == list(range(5)) and df.attrs["bad_events"] == []
    assert df.attrs["weighted"] is True and df.attrs["cache"] is None

    for k in range(5):
        ms = run.load(k)
        ref = analyze(ms, allow_empty=True)
        net = aggregate(ref)
        got = df[df["event"] == k]
        layers, netrow = got.iloc[:-1], got.iloc[-1]
        names = metric_names(weighted=ms.has_weights)
        for name in names:
            want = ref[name].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
            np.testing.assert_allclose(
                layers[name].astype("Float64").to_numpy(dtype=float, na_value=np.nan),
                want,
                rtol=1e-12,
                err_msg=f"event {k} {name}",
            )
            on_net = "ramanujan_fraction" if name == "is_ramanujan" else name
            assert math.isclose(float(netrow[on_net]), float(net[on_net]), rel_tol=1e-12) or (
                math.isnan(float(netrow[on_net])) and math.isnan(float(net[on_net]))
            ), (k, name)
        if ms.has_weights:
            assert layers["reason"].tolist() == ref["reason"].tolist()
        else:  # weighted metrics of an event without weights: NaN, with the reason
            assert layers[WEIGHTED].isna().all().all()
            assert all("no weights dumped" in r for r in layers["reason"])
        ev = run.events[k]
        assert (got["step"] == ev["step"]).all() and (got["event_kind"] == ev["kind"]).all()
        assert netrow["n_layers"] == len(LAYERS) and layers["n_layers"].isna().all()
        assert pd.isna(netrow["is_ramanujan"]) and layers["ramanujan_fraction"].isna().all()
        flags = layers["is_ramanujan"].dropna()
        if len(flags):
            assert netrow["ramanujan_fraction"] == pytest.approx(flags.astype(float).mean())
        assert netrow["density"] == pytest.approx(ev["density"])
        assert layers["density"].tolist() == pytest.approx(list(ms.densities().values()))
        assert layers["layer_kind"].tolist() == ["conv", "linear", "linear"]
        assert layers["shape"].tolist() == [[8, 4, 3, 3], [12, 9], [1, 12]]
        assert pd.isna(netrow["layer_kind"]) and netrow["shape"] is None
        if k:  # per-layer records: the layer's value, the sum on the network row
            assert layers["drop"].tolist() == [ev["drop"][n] for n in LAYERS]
            assert netrow["drop"] == sum(ev["drop"].values())
            assert got["R_s"].tolist() == pytest.approx([0.1 * k] * len(got))
        else:
            assert got["drop"].isna().all() and got["R_s"].isna().all()
        assert got["val_acc"].isna().all() == (k % 2 == 1)
        assert got["train_loss"].isna().all()  # never recorded: a NaN column
    assert df["n_edges"].dtype == "Int64" and df["is_ramanujan"].dtype == "boolean"
    assert df["ramanujan_fraction"].dtype == np.float64
    # summing the layer rows counts every edge once
    layer_rows = df[df["level"] == "layer"]
    assert layer_rows.groupby("event")["n_edges"].sum().tolist() == [
        sum(e["nnz"].values()) for e in run.events
    ]


def test_layer_and_network_tables_apart(run5):
    both = analyze_run(run5, workers=1, cache=False)
    layers = analyze_run(run5, workers=1, level="layer")
    net = analyze_run(run5, workers=1, level="network")
    assert len(layers) == 5 * len(LAYERS) and len(net) == 5
    assert "level" not in layers and "level" not in net
    assert not {"ramanujan_fraction", "n_layers"} & set(layers.columns)
    assert not {"layer", "layer_kind", "shape", "is_ramanujan"} & set(net.columns)
    assert net["event"].tolist() == list(range(5)) and net["event"].is_unique  # the event key
    cols = [c for c in layers.columns if c != "shape"]
    want = both[both["level"] == "layer"].reset_index(drop=True)[cols]
    assert_same(layers[cols], want)
    assert layers["shape"].tolist() == both.loc[both["level"] == "layer", "shape"].tolist()
    assert net["ramanujan_gap"].tolist() == pytest.approx(
        both.loc[both["level"] == "network", "ramanujan_gap"].tolist(), nan_ok=True
    )
    # one row per (event, layer): a pivot on the unique key works
    wide = layers.pivot(index="event", columns="layer", values="n_edges")
    assert wide.shape == (5, len(LAYERS))
    assert layers.attrs["events"] == list(range(5))
    with pytest.raises(UnknownNameError, match="unknown level 'rows'"):
        analyze_run(run5, level="rows")


def test_weighted_columns_dropped_when_no_event_has_weights(tmp_path):
    run = write_run(tmp_path / "run", masksets(2, weighted=()))
    df = analyze_run(run, workers=1, cache=False)
    assert not set(WEIGHTED) & set(df.columns) and df.attrs["weighted"] is False
    with pytest.raises(MaskValidationError, match="weighted_mu0"):
        analyze_run(run, metrics=["mu0", "weighted_mu0"], workers=1, cache=False)
    df = analyze_run(run, metrics="mu0,n_edges", workers=1, cache=False)
    # the metric columns asked for, then the event's density
    assert [c for c in df.columns if c in metric_names()] == ["mu0", "n_edges", "density"]


def test_parallel_equals_serial(run5):
    serial = analyze_run(run5, workers=1, cache=False)
    parallel = analyze_run(run5, workers=2, cache=False)
    assert parallel.attrs["computed"] == list(range(5))
    assert_same(serial, parallel)


# ---------------------------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------------------------
def test_incremental_computes_only_new_events(tmp_path, count_events):
    root = write_run(tmp_path / "run", masksets(3))
    first = analyze_run(root, workers=1)
    assert count_events == [0, 1, 2] and first.attrs["computed"] == [0, 1, 2]
    cache_file = Path(first.attrs["cache"])
    assert cache_file.parent == root / "analysis" and cache_file.suffix == ".npz"

    count_events.clear()
    again = analyze_run(root, workers=1)
    assert count_events == [] and again.attrs["cached"] == [0, 1, 2]
    assert_same(first, again)

    append_events(root, masksets(2, seed=10, weighted=(1,)), start=3)  # the run goes on
    grown = analyze_run(root, workers=1)
    assert count_events == [3, 4]
    assert grown.attrs["computed"] == [3, 4] and grown.attrs["cached"] == [0, 1, 2]
    count_events.clear()
    fresh = analyze_run(root, workers=1, cache=False)
    assert count_events == [0, 1, 2, 3, 4]
    assert_same(grown, fresh)
    # the parallel path also computes only new events
    append_events(root, masksets(2, seed=20), start=5)
    par = analyze_run(root, workers=2)
    assert par.attrs["computed"] == [5, 6]
    assert_same(par, analyze_run(root, workers=1, cache=False))


def test_options_get_their_own_cache(run5, count_events):
    a = analyze_run(run5, workers=1, metrics="mu0,mu_hat")
    b = analyze_run(run5, workers=1, metrics="mu0,mu_hat", conv="rolled")
    c = analyze_run(run5, workers=1, metrics="mu0,mu_hat")
    assert a.attrs["cache"] != b.attrs["cache"] and a.attrs["cache"] == c.attrs["cache"]
    assert count_events == [*range(5), *range(5)]
    assert not np.allclose(a["mu0"], b["mu0"])  # rolled convs are another graph
    assert len(list((run5 / "analysis").glob("*.npz"))) == 2


def test_a_redefined_metric_is_computed_again_not_read_stale(run5, count_events):
    """The cache key holds a digest of the metrics' definitions: a metric registered again
    under the same name with another formula gets its own cache file."""
    from masktopo.analysis.metrics import register_metric, unregister_metric

    register_metric("mu_scaled", lambda c: 2.0 * c["mu0"], depends=("mu0",),
                    description="2 mu0")  # fmt: skip
    try:
        a = analyze_run(run5, workers=1, metrics="mu0,mu_scaled")
        again = analyze_run(run5, workers=1, metrics="mu0,mu_scaled")
        assert again.attrs["computed"] == [] and again.attrs["cache"] == a.attrs["cache"]
        unregister_metric("mu_scaled")
        register_metric("mu_scaled", lambda c: 3.0 * c["mu0"], depends=("mu0",),
                        description="2 mu0")  # same name and text, another formula  # fmt: skip
        b = analyze_run(run5, workers=1, metrics="mu0,mu_scaled")
    finally:
        unregister_metric("mu_scaled")
    assert b.attrs["cache"] != a.attrs["cache"] and sorted(b.attrs["computed"]) == [*range(5)]
    np.testing.assert_allclose(b["mu_scaled"], 1.5 * a["mu_scaled"])
    assert count_events == [*range(5), *range(5)]


def test_every(tmp_path, count_events):
    root = write_run(tmp_path / "run", masksets(7))
    df3 = analyze_run(root, every=3, workers=1)
    assert df3.attrs["events"] == [0, 3, 6] and count_events == [0, 3, 6]
    df4 = analyze_run(root, every=4, workers=1)
    assert df4.attrs["events"] == [0, 4, 6] and df4.attrs["computed"] == [4]
    full = analyze_run(root, workers=1)
    assert sorted(full.attrs["computed"]) == [1, 2, 5]
    for sub, ks in ((df3, [0, 3, 6]), (df4, [0, 4, 6])):
        want = full[full["event"].isin(ks)].reset_index(drop=True)
        assert_same(sub, want)
    assert analyze_run(root, every=100, workers=1).attrs["events"] == [0, 6]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(MaskValidationError, match="every"):
            analyze_run(root, every=bad)


def test_rewritten_events_invalidate_stale_rows(tmp_path, count_events):
    root = write_run(tmp_path / "run", masksets(4))
    before = analyze_run(root, workers=1)
    # A resumed run truncates events.jsonl after event 1 and writes new events 2 and 3 under
    # the same file names.
    lines = (root / "events.jsonl").read_text().splitlines(keepends=True)
    (root / "events.jsonl").write_text("".join(lines[:2]))
    count_events.clear()
    short = analyze_run(root, workers=1)
    assert count_events == [] and short.attrs["events"] == [0, 1]
    assert_same(short, before[before["event"] < 2].reset_index(drop=True))
    append_events(root, masksets(2, seed=50), start=2)
    after = analyze_run(root, workers=1)
    assert count_events == [2, 3] and after.attrs["cached"] == [0, 1]
    assert_same(after, analyze_run(root, workers=1, cache=False))
    assert not after[after["event"] >= 2]["n_edges"].equals(before[before["event"] >= 2]["n_edges"])
    # A changed line alone (its mask file untouched) also invalidates the event.
    lines = (root / "events.jsonl").read_text().splitlines(keepends=True)
    line = json.loads(lines[1])
    line["step"] = 12345
    lines[1] = json.dumps(line) + "\n"
    (root / "events.jsonl").write_text("".join(lines))
    count_events.clear()
    edited = analyze_run(root, workers=1)
    assert count_events == [1]
    assert (edited[edited["event"] == 1]["step"] == 12345).all()


def test_replaced_mask_file_with_the_same_line_is_recomputed(tmp_path, count_events):
    root = write_run(tmp_path / "run", masksets(2))
    analyze_run(root, workers=1)
    # Same nnz per layer (so the same events.jsonl line), other positions: a row permutation.
    ms = runs.read_run(root).load(1)
    perm = {n: m[torch.arange(m.shape[0] - 1, -1, -1)] for n, m in ms.items()}
    path = root / "masks/event-000001.safetensors"
    st = path.stat()
    store.save(path, MaskSet(perm))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    count_events.clear()
    df = analyze_run(root, workers=1)
    assert count_events == [1]
    assert_same(df, analyze_run(root, workers=1, cache=False))


def test_interrupted_analysis_keeps_what_it_computed(tmp_path, monkeypatch):
    root = write_run(tmp_path / "run", masksets(4))
    original = runs_mod._event_values

    def interrupted(job, k):
        if k == 2:
            raise KeyboardInterrupt
        return original(job, k)

    monkeypatch.setattr(runs_mod, "_event_values", interrupted)
    with pytest.raises(KeyboardInterrupt):
        analyze_run(root, workers=1)
    monkeypatch.setattr(runs_mod, "_event_values", original)
    df = analyze_run(root, workers=1)
    assert df.attrs["cached"] == [0, 1] and df.attrs["computed"] == [2, 3]


def test_unreadable_cache_is_recomputed_with_a_warning(run5):
    df = analyze_run(run5, workers=1)
    Path(df.attrs["cache"]).write_bytes(b"not an npz file")
    with pytest.warns(UserWarning, match="unreadable run-analysis cache"):
        again = analyze_run(run5, workers=1)
    assert again.attrs["computed"] == list(range(5))
    assert_same(df, again)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert analyze_run(run5, workers=1).attrs["computed"] == []  # rewritten, valid again

    def rewrite(edit):
        path = Path(df.attrs["cache"])
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        edit(arrays)
        np.savez(path, **arrays)

    def other_layers(arrays):
        header = json.loads(str(arrays["header"]))
        header["layers"][0]["shape"] = [1, 1]
        arrays["header"] = np.array(json.dumps(header))

    for edit, text in (
        (lambda a: a.update(values=a["values"][:, :-1]), "damaged"),
        (other_layers, "other options or layers"),
    ):
        rewrite(edit)
        with pytest.warns(UserWarning, match=text):
            assert analyze_run(run5, workers=1).attrs["computed"] == list(range(5))


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_missing_and_corrupt_event_files_are_reported_and_skipped(run5, count_events):
    missing = run5 / "masks/event-000001.safetensors"
    corrupt = run5 / "masks/event-000003.safetensors"
    saved = missing.read_bytes()
    missing.unlink()
    corrupt.write_bytes(b"\x07garbage, not a safetensors header" * 3)
    with pytest.warns(UserWarning) as record:
        df = analyze_run(run5, workers=1)
    messages = [str(w.message) for w in record]
    assert any(m.startswith(str(missing)) and "missing" in m for m in messages), messages
    assert any(m.startswith(str(corrupt)) and "corrupt" in m for m in messages), messages
    assert df.attrs["events"] == [0, 2, 4]
    assert sorted(df["event"].unique()) == [0, 2, 4]
    bad = {b["event"]: b for b in df.attrs["bad_events"]}
    assert sorted(bad) == [1, 3]
    assert bad[1]["file"] == "masks/event-000001.safetensors" and "missing" in bad[1]["problem"]
    assert "truncated or corrupt" in bad[3]["problem"]
    # The intact events were cached; the bad ones are tried again (and reported again).
    count_events.clear()
    with pytest.warns(UserWarning):
        again = analyze_run(run5, workers=2)
    assert again.attrs["computed"] == [] and again.attrs["cached"] == [0, 2, 4]
    assert [b["event"] for b in again.attrs["bad_events"]] == [1, 3]
    # Restored: analyzed like any other event.
    missing.write_bytes(saved)
    with pytest.warns(UserWarning, match=str(corrupt.name)):
        fixed = analyze_run(run5, workers=1)
    assert fixed.attrs["computed"] == [1] and fixed.attrs["events"] == [0, 1, 2, 4]


def test_not_a_run_directory(tmp_path, run5):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MaskFileError, match="not a run directory"):
        analyze_run(tmp_path / "empty")
    with pytest.raises(MaskFileError, match="not a run directory"):
        analyze_run(run5 / "masks/event-000000.safetensors")
    with pytest.raises(MaskFileError, match="no such file"):
        analyze_run(tmp_path / "nope")
    assert not (tmp_path / "empty" / "analysis").exists()


def test_unknown_metric_lists_the_known_ones(run5):
    with pytest.raises(UnknownNameError) as info:
        analyze_run(run5, metrics="mu0,bogus")
    assert "bogus" in str(info.value) and "ramanujan_gap" in str(info.value)
    with pytest.raises(UnknownNameError, match="gate"):
        analyze_run(run5, gate="xyz")
    with pytest.raises(MaskValidationError, match="workers"):
        analyze_run(run5, workers=0)
    assert not (run5 / "analysis").exists()  # nothing written for bad arguments


def test_run_without_events(tmp_path):
    root = write_run(tmp_path / "run", masksets(1))
    (root / "events.jsonl").unlink()
    df = analyze_run(root)
    assert len(df) == 0 and df.attrs["events"] == []
    assert {"event", "layer", "mu0", "reason", "val_acc"} <= set(df.columns)


def test_unwritable_cache_still_returns_the_result(run5):
    (run5 / "analysis").write_text("a file where the cache directory should be")
    with pytest.warns(UserWarning, match="cannot write the run-analysis cache") as record:
        df = analyze_run(run5, workers=1)
    assert len(record) == 1  # warned once, not once per event
    assert df.attrs["computed"] == list(range(5))
    assert_same(df, analyze_run(run5, workers=1, cache=False))


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write a read-only directory"
)
def test_read_only_run_directory(tmp_path):
    root = write_run(tmp_path / "run", masksets(2))
    mode = root.stat().st_mode
    root.chmod(0o555)
    try:
        with pytest.warns(UserWarning, match="cannot write the run-analysis cache"):
            df = analyze_run(root, workers=1)
        assert df.attrs["events"] == [0, 1]
    finally:
        root.chmod(mode)


def test_no_cache_writes_nothing(run5):
    before = sorted(p.name for p in run5.rglob("*"))
    analyze_run(run5, cache=False, workers=1)
    assert sorted(p.name for p in run5.rglob("*")) == before
    shutil.rmtree(run5 / "masks")  # sanity: the fixture really is a run with files
    with pytest.warns(UserWarning, match="missing"):
        assert len(analyze_run(run5, cache=False, workers=1)) == 0


def test_events_and_layers_run_in_threads_never_in_forks(run5, monkeypatch):
    """Forking a multi-threaded process (every process that imported torch) can deadlock, and
    Python >= 3.12 warns about it: the parallel parts are threads of this process."""
    import threading

    from masktopo.analysis import metrics, spectral

    def no_fork(*args, **kwargs):
        raise AssertionError("a process was forked")

    monkeypatch.setattr(os, "fork", no_fork)
    monkeypatch.setattr(os, "posix_spawn", no_fork, raising=False)
    seen: set[str] = set()
    original = runs_mod._event_values

    def spy(job, k):
        seen.add(threading.current_thread().name)
        return original(job, k)

    monkeypatch.setattr(runs_mod, "_event_values", spy)
    parallel = analyze_run(run5, workers=2, cache=False)
    serial = analyze_run(run5, workers=1, cache=False)
    pd.testing.assert_frame_equal(parallel, serial)
    assert any(name.startswith("masktopo-events") for name in seen), seen
    monkeypatch.setenv("MASKTOPO_WORKERS", "2")
    monkeypatch.setattr(spectral, "_PARALLEL_MIN_NNZ", 0)
    ms = masktopo.load(run5, event=0)
    rows = metrics.layer_metric_rows([(n, ms[n], ms.weights[n]) for n in ms])
    assert len(rows) == len(ms) and spectral._POOL is not None
