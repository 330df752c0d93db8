"""The PAGS loop: never below its base, reproducible, chunk-independent, resumable, its files."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from _stubs import NoisyMagnitude, base_mask, theta

import masktopo
from masktopo.errors import MaskFileError
from masktopo.pags import PagsConfig, RewireSource, run_pags, score_candidates
from masktopo.pags.sampling import Drawn
from masktopo.runs.layout import STATE_DIR, STATE_FILE, snapshot_file, state_best_file

DENSITY = 0.3


@pytest.fixture(scope="module")
def w():
    return theta(0)


@pytest.fixture(scope="module")
def base(w):
    return base_mask(w, DENSITY)


def _run(w, base, out=None, **kw):
    cfg = PagsConfig(**{"n": 24, "chunk": 8, "snapshot_every": 4, "seed": 11, **kw})
    src = RewireSource(base, cfg.seed) if cfg.sampler == "rewire" else NoisyMagnitude(
        w, DENSITY, cfg.seed)  # fmt: skip
    return run_pags(base, w, src, cfg, out=out)


@pytest.mark.parametrize("selection", ["layerwise", "global"])
@pytest.mark.parametrize("sampler", ["rescore", "rewire"])
def test_never_below_base_under_its_own_criterion(w, base, tmp_path, selection, sampler):
    r = _run(w, base, tmp_path / "o", selection=selection, sampler=sampler)
    saved = masktopo.load(tmp_path / "o" / "best.safetensors")
    assert saved.equal(r.best)
    # Re-score the saved best and the base from scratch.
    sb, s0 = score_candidates([saved], weights=w), score_candidates([base], weights=w)
    tol = 1e-6
    if selection == "layerwise":
        assert np.all(sb.imdb()[0] >= s0.imdb()[0] - tol)
        assert np.all(sb.fs[0] >= s0.fs[0] - tol)
    else:
        assert sb.network()[0] >= s0.network()[0] - tol
    df = r.candidates
    assert list(df["t"]) == list(range(25))
    if selection == "global":  # the best is the argmax (ties: the earliest) of the network score
        assert sb.network()[0] == pytest.approx(df["network_score"].max(), rel=1e-7)
        assert np.all(np.diff(df["best_network_score"]) >= 0)
    else:  # PAGS found better layers on this toy problem (so the test can fail)
        assert np.any(sb.fs[0] > s0.fs[0]) and df["accepted_layers"].sum() > 0


def test_same_seed_same_result_for_any_chunk_size(w, base):
    a = _run(w, base, chunk=8)
    b = _run(w, base, chunk=5)
    c = _run(w, base, chunk=1)
    assert a.best.equal(b.best) and a.best.equal(c.best)
    pd.testing.assert_frame_equal(a.candidates, c.candidates)
    assert a.snapshots == b.snapshots == c.snapshots
    d = _run(w, base, seed=12)
    assert not d.best.equal(a.best)


def test_output_directory(w, base, tmp_path):
    out = tmp_path / "run"
    r = _run(w, base, out)
    assert {p.name for p in out.iterdir()} >= {"best.safetensors", "base.safetensors",
                                                "candidates.parquet", "run.json", "snapshots"}  # fmt: skip
    best = masktopo.load(out / "best.safetensors")
    assert best.has_weights and all(torch.equal(best.weights[n], w[n]) for n in w)
    snap0 = masktopo.load(out / snapshot_file(0))
    assert not snap0.has_weights  # snapshots are masks only: θ is in base and best
    assert masktopo.load(out / "base.safetensors").without_weights().equal(snap0)
    snaps = sorted(f"snapshots/{p.name}" for p in (out / "snapshots").iterdir())
    assert snaps == [snapshot_file(t) for t in r.snapshots]
    assert all(t % 4 == 0 for t in r.snapshots)
    df = pd.read_parquet(out / "candidates.parquet")
    assert len(df) == 25 and {"t", "network_score", "accepted_layers", "fs", "density"} <= set(df)
    assert df["accepted_layers"].iloc[0] == 0
    pd.testing.assert_frame_equal(df, r.candidates)  # the file holds the rows the run returns
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["n"] == 24 and run["seed"] == 11 and "torch" in run["versions"]
    assert len(list((out / STATE_DIR).iterdir())) == 1
    with pytest.raises(MaskFileError, match="already holds a PAGS run"):
        _run(w, base, out)
    # best.safetensors (masks and θ) is written once, when the run ends or stops; while it
    # runs, the resume point holds the best masks
    seen = []
    cfg = PagsConfig(n=24, chunk=8, snapshot_every=4, seed=11)
    src = NoisyMagnitude(w, DENSITY, cfg.seed)
    stopped = run_pags(base, w, src, cfg, out=tmp_path / "stopped",
                       stop=lambda t: seen.append((tmp_path / "stopped" / "best.safetensors")
                                                  .exists()) or t >= 16)  # fmt: skip
    assert seen == [False, False] and stopped.n_done == 16
    assert masktopo.load(tmp_path / "stopped" / "best.safetensors").equal(stopped.best)


def test_resume_equals_uninterrupted(w, base, tmp_path):
    full = _run(w, base, tmp_path / "full", repair=True)
    cfg = PagsConfig(n=24, chunk=8, snapshot_every=4, seed=11, repair=True)
    src = NoisyMagnitude(w, DENSITY, cfg.seed)
    part = run_pags(base, w, src, cfg, out=tmp_path / "part", stop=lambda t: t >= 8)
    assert part.n_done == 8
    # Resume with another chunk size (allowed; no effect on the result).
    done = run_pags(base, w, src, cfg.replace(chunk=5), out=tmp_path / "part", resume=True)
    assert done.n_done == 24 and done.best.equal(full.best)
    pd.testing.assert_frame_equal(done.candidates, full.candidates)
    for name in ("best.safetensors", "candidates.parquet"):
        a, b = tmp_path / "full" / name, tmp_path / "part" / name
        if name.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))
        else:
            assert masktopo.load(a).equal(masktopo.load(b))
    assert sorted(p.name for p in (tmp_path / "part" / "snapshots").iterdir()) == sorted(
        p.name for p in (tmp_path / "full" / "snapshots").iterdir())  # fmt: skip
    with pytest.raises(MaskFileError, match=r"other settings: seed=12 \(run: 11\)"):
        run_pags(base, w, src, cfg.replace(seed=12), out=tmp_path / "part", resume=True)
    with pytest.raises(MaskFileError, match=r"--resume: not a run directory \(no run\.json\)"):
        run_pags(base, w, src, cfg, out=tmp_path / "none", resume=True)


def test_resume_copy_is_rewritten_only_when_the_best_changes(w, base, tmp_path, monkeypatch):
    from masktopo.pags import engine

    monkeypatch.setattr(engine, "RESUME_EVERY_S", 0.0)  # a resume point after every chunk
    cfg = PagsConfig(n=12, chunk=4, snapshot_every=4, seed=11)

    def same(t):  # every candidate is the base mask: the best never changes
        return base.without_weights()

    run_pags(base, w, same, cfg, out=tmp_path / "same", stop=lambda t: t >= 8)
    state = json.loads((tmp_path / "same" / STATE_FILE).read_text())
    assert state["next_t"] == 9 and state["best_file"] == state_best_file(1)
    assert [p.name for p in (tmp_path / "same" / STATE_DIR).iterdir()] == [
        "best-000001.safetensors"
    ]
    # state.json's fingerprints of the best are not trusted (an older version hashed otherwise):
    # the resumed run recomputes them from the best masks, so the base stays no change
    state["best_fp"] = dict.fromkeys(state["best_fp"], "stale")
    (tmp_path / "same" / STATE_FILE).write_text(json.dumps(state))
    done = run_pags(base, w, same, cfg, out=tmp_path / "same", resume=True)
    assert done.n_done == 12 and done.best.without_weights().equal(base.without_weights())
    assert done.candidates["accepted_layers"].sum() == 0
    # the same with candidates given by their positions (how PAGS draws random methods): a
    # layer equal to the best's is recognised without its dense mask and is no change
    shapes = {n: base.shape(n) for n in base}
    kinds = {n: base.kind(n) for n in base}
    pos = {n: np.flatnonzero(base[n].reshape(-1).numpy()) for n in base}
    r = run_pags(base, w, lambda t: Drawn(shapes, pos, kinds), cfg)
    assert r.candidates["accepted_layers"].sum() == 0 and r.snapshots == [0]
    # A run whose best changes: state.json names the copy written after the last change.
    cfg = cfg.replace(n=20)
    r = run_pags(base, w, NoisyMagnitude(w, DENSITY, cfg.seed), cfg, out=tmp_path / "noisy")
    changed = r.candidates["t"][r.candidates["accepted_layers"] > 0]
    assert len(changed) and changed.max() <= 16  # resume points after the last change
    last = -(-int(changed.max()) // cfg.chunk) * cfg.chunk
    state = json.loads((tmp_path / "noisy" / STATE_FILE).read_text())
    assert state["next_t"] == 21 and state["best_file"] == state_best_file(last + 1)
    copy = masktopo.load(tmp_path / "noisy" / state["best_file"], weights=False)
    assert copy.equal(r.best.without_weights())


def test_resume_points_at_most_every_few_seconds(w, base, tmp_path, monkeypatch):
    """A resume point (candidates.parquet, the best's copy, state.json) is written after the
    chunks of RESUME_EVERY_S seconds, and when the run ends or stops; killed in between, the
    run resumes from the last one to the same end."""
    from masktopo.pags import engine

    written = []
    real = engine._write_state
    monkeypatch.setattr(engine, "_write_state",
                        lambda *a, **k: written.append(a[2]) or real(*a, **k))  # fmt: skip
    cfg = PagsConfig(n=24, chunk=4, snapshot_every=4, seed=11)
    src = NoisyMagnitude(w, DENSITY, cfg.seed)
    monkeypatch.setattr(engine, "RESUME_EVERY_S", 3600.0)  # (no run here takes an hour)
    full = run_pags(base, w, src, cfg, out=tmp_path / "full")
    assert written == [1, 25]  # the start and the end only
    written.clear()
    monkeypatch.setattr(engine, "RESUME_EVERY_S", 0.0)
    run_pags(base, w, src, cfg, out=tmp_path / "every")
    assert written == [1, 5, 9, 13, 17, 21, 25]
    written.clear()
    monkeypatch.setattr(engine, "RESUME_EVERY_S", 3600.0)

    def killed(t):  # the process dies in chunk 17-20: nothing written since the start
        if t == 19:
            raise KeyboardInterrupt
        return src(t)

    with pytest.raises(KeyboardInterrupt):
        run_pags(base, w, killed, cfg, out=tmp_path / "killed")
    assert written == [1]
    assert json.loads((tmp_path / "killed" / STATE_FILE).read_text())["next_t"] == 1
    done = run_pags(base, w, src, cfg, out=tmp_path / "killed", resume=True)
    assert done.best.equal(full.best)
    pd.testing.assert_frame_equal(done.candidates, full.candidates)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "killed" / "candidates.parquet"),
                                  full.candidates)  # fmt: skip


def test_repair_keeps_base_counts_under_layer_mixing(w, base):
    drift = _run(w, base)
    fixed = _run(w, base, repair=True)
    assert fixed.best.nnz_per_layer() == base.nnz_per_layer()
    assert drift.best.nnz_per_layer() != base.nnz_per_layer()  # mixing drifts without repair


def test_reference_base_and_invalid_skip_run(w, base):
    r = _run(w, base, reference="base", invalid="skip", n=8)
    assert np.all(r.base_scores.fs == 0)
    assert np.all(r.best_scores.fs >= 0)


def test_extra_files_are_written_while_the_run_goes_on(w, base, tmp_path):
    """``extra_files`` (what ``masktopo pags`` writes init.safetensors with): written once the
    run holds its directory, waited for before returning; an error writing one is raised."""
    import threading

    seen = {}

    def make():
        import fcntl
        import os

        seen["thread"] = threading.current_thread().name
        fd = os.open(tmp_path / "o" / ".lock", os.O_RDONLY)
        try:  # the run holds the lock: taking it fails
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen["lock held"] = False
        except BlockingIOError:
            seen["lock held"] = True
        finally:
            os.close(fd)
        return b"payload"

    cfg = PagsConfig(n=16, chunk=8, seed=11)
    run_pags(base, w, NoisyMagnitude(w, DENSITY, 11), cfg, out=tmp_path / "o",
             extra_files={"extra.bin": make})  # fmt: skip
    assert (tmp_path / "o" / "extra.bin").read_bytes() == b"payload"
    assert seen == {"thread": "masktopo-pags-files", "lock held": True}

    def broken():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_pags(base, w, NoisyMagnitude(w, DENSITY, 11), cfg, out=tmp_path / "b",
                 extra_files={"extra.bin": broken})  # fmt: skip
    assert not (tmp_path / "b" / "extra.bin").exists()
