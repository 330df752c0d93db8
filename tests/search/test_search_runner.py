"""The resumable search: a search stopped mid-batch and resumed equals an uninterrupted one;
outputs, masks above target, bad invocations; the CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from masktopo.errors import MaskFileError, MaskValidationError, UnknownNameError
from masktopo.search import SearchConfig, SupportKey, read_results, read_search_masks, run_search

CFG = SearchConfig(arch="2-3-2-2-1", epochs=2, limit=10, models_per_batch=4, lr=(0.1,),
                   schedule=("cosine", "constant"), target=0.5, checkpoint_every=1)  # fmt: skip


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "full"
    run_search(CFG, out)
    return out


def test_a_search_writes_rows_masks_and_summary(uninterrupted):
    df = read_results(uninterrupted)
    assert list(df["run"]) == list(range(10))
    assert list(df["setting"]) == [0, 1] * 5
    assert df["key"].iloc[0] == df["key"].iloc[1] == "2-3-2-2-1#0"
    for _, row in df.iterrows():  # nnz columns agree with the key's masks
        key = SupportKey.parse(row["key"])
        assert [row[f"nnz_{i}"] for i in (1, 2, 3)] == list(key.layer_nnz)
        assert row["weight_nnz"] == sum(key.layer_nnz) + 2
        assert row["model_nnz"] == row["weight_nnz"] + 3 + 2 + 2 + 1
        assert row["effective_nnz"] == row["weight_nnz"]
    assert df["above_target"].equals(df["accuracy"] >= 0.5)
    saved = list(read_search_masks(uninterrupted))
    assert [r for r, _ in saved] == df.loc[df["above_target"], "run"].tolist()
    for r, ms in saved:
        key = SupportKey.parse(df.loc[r, "key"])
        first = ms["first_layer.weight"]
        assert torch.equal(first, torch.from_numpy(key.masks()[0]))
        assert (ms.weights["first_layer.weight"][~first] == 0).all()
    summary = json.loads((uninterrupted / "summary.json").read_text())
    assert summary["n_done"] == 10 and not (uninterrupted / "checkpoint.pt").exists()


def test_a_stopped_search_resumes_to_the_same_result(tmp_path, uninterrupted):
    out = tmp_path / "cut"

    def stop(batch):
        if batch == 1:  # batch 0 is committed; batch 1 is mid-way (epoch 1 of 2)
            raise Stop

    with pytest.raises(Stop):
        run_search(CFG, out, on_checkpoint=stop)
    assert (out / "checkpoint.pt").exists()
    assert len(read_results(out)) == 4 and not (out / "results.parquet").exists()
    with pytest.raises(MaskFileError, match="--resume"):
        run_search(CFG, out)
    with pytest.raises(MaskFileError, match="other settings"):
        run_search(CFG.replace(epochs=3), out, resume=True)
    # another batch size on resume: results do not depend on it
    result = run_search(CFG.replace(models_per_batch=3), out, resume=True)
    assert result.complete
    a, b = read_results(uninterrupted), read_results(out)
    pd.testing.assert_frame_equal(a, b)
    ma, mb = list(read_search_masks(uninterrupted)), list(read_search_masks(out))
    assert [r for r, _ in ma] == [r for r, _ in mb]
    for (_, x), (_, y) in zip(ma, mb, strict=True):
        assert x == y
        for name in x.weights:
            assert torch.equal(x.weights[name], y.weights[name])


def test_raising_the_limit_on_resume_trains_only_the_new_runs(tmp_path, uninterrupted):
    out = tmp_path / "grow"
    run_search(CFG.replace(limit=6), out)
    first = read_results(out)
    run_search(CFG, out, resume=True)
    pd.testing.assert_frame_equal(read_results(out), read_results(uninterrupted))
    pd.testing.assert_frame_equal(read_results(out).iloc[:6], first)


def test_bad_configs_raise_one_line_errors(tmp_path):
    with pytest.raises(MaskValidationError, match="architecture"):
        SearchConfig(arch="2-x-1")
    with pytest.raises(UnknownNameError, match="known: constant, cosine, step"):
        SearchConfig(schedule=("linear",))
    with pytest.raises(MaskValidationError, match="init_width"):
        run_search(SearchConfig(arch="2-20-3-3-1"), tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_cli_count_and_search(tmp_path, capsys):
    from cli.main import main

    assert main(["search", "--arch", "2-3-3-3-1", "--count"]) == 0
    assert capsys.readouterr().out.strip() == "25992"
    assert main(["search", "--arch", "2-3-3-3-1", "--count", "--joint"]) == 0
    assert capsys.readouterr().out.strip() == "12400"
    assert main(["search", "--phase", "1", "--max-width", "4", "--count"]) == 0
    assert capsys.readouterr().out.strip() == "64"
    out = tmp_path / "p1"
    code = main(["search", "--phase", "1", "--max-width", "2", "--limit", "3", "--epochs", "1",
                 "--lr", "0.1", "--schedule", "cosine", "--out", str(out)])  # fmt: skip
    assert code == 0
    df = read_results(out)
    assert list(df["arch"]) == ["2-1-1-1-1", "2-1-1-2-1", "2-1-2-1-1"]
    assert list(df["weight_nnz"]) == [2 + 1 + 1 + 1, 2 + 1 + 2 + 2, 2 + 2 + 2 + 1]
    assert list(df["model_nnz"]) == [9, 12, 12]
    capsys.readouterr()
    assert main(["analyze", str(out)]) == 2  # no run reached the target: no masks were kept
    err = capsys.readouterr().err
    assert "no masks to analyze: none of the 3 runs reached the target 0.95 (the best: " in err
    assert "keeps the masks of runs at or above its target only" in err
    assert main(["info", str(out)]) == 2  # the same words from info
    assert "no masks to analyze: none of the 3 runs" in capsys.readouterr().err
    from masktopo.report import build_report

    page = build_report(out)  # the search's own figure and summary, not a training run's
    assert "<h3>Search</h3>" in page and "best_accuracy" in page
    assert "no masks to analyze: none of the 3 runs" in page and "none recorded" not in page
    summary = json.loads((out / "summary.json").read_text())
    (out / "summary.json").write_text(json.dumps({**summary, "n_runs": 8}))  # as if killed
    assert main(["analyze", str(out)]) == 2
    assert "none of the 3 runs trained so far (of 8) reached" in capsys.readouterr().err
    (out / "summary.json").write_text(json.dumps({**summary, "n_done": 1, "n_runs": 1}))
    assert main(["analyze", str(out)]) == 2
    assert "no masks to analyze: the only run did not reach the target" in capsys.readouterr().err
    (out / "summary.json").write_text(json.dumps({**summary, "n_done": 0, "n_runs": 8}))
    assert main(["analyze", str(out)]) == 2
    assert "none of its 8 runs has been trained yet" in capsys.readouterr().err
    assert main(["search", "--arch", "2-3-3-3-1", "--out", str(out)]) == 2
    assert "already holds a search run" in capsys.readouterr().err


def test_plot_draws_a_search_folder(tmp_path, uninterrupted):
    from cli.main import main

    assert main(["plot", str(uninterrupted), "--out", str(tmp_path / "figs")]) == 0
    png = tmp_path / "figs" / "search-accuracy-vs-nnz.png"
    assert png.is_file() and png.stat().st_size > 1000


def test_a_search_killed_with_sigkill_resumes_to_the_same_result(tmp_path, uninterrupted):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "masktopo", "search", "--arch", "2-3-2-2-1", "--epochs", "2",
           "--limit", "10", "--models-per-batch", "4", "--lr", "0.1", "--schedule",
           "cosine,constant", "--target", "0.5", "--checkpoint-every", "1", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if (out / "results" / "part-000000.parquet").exists() and (out / "checkpoint.pt").exists():
            break
        time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    # killed only when the signal ended it: the search may finish between poll() and the signal
    killed = proc.wait() == -signal.SIGKILL
    if killed:
        assert len(read_results(out)) < 10
    run_search(CFG, out, resume=True)
    pd.testing.assert_frame_equal(read_results(out), read_results(uninterrupted))


def test_fixed_init_shares_one_initialisation():
    from masktopo.search import search_plan

    plan = search_plan(CFG)
    _, w_own, _ = plan.batch([0, 2, 4])[:3]
    fixed = search_plan(CFG.replace(fixed_init=True))
    _, w_fix, _ = fixed.batch([0, 2, 4])[:3]
    assert torch.equal(w_fix[1][0], w_fix[1][1]) and torch.equal(w_fix[1][0], w_fix[1][2])
    assert not torch.equal(w_own[1][0], w_own[1][1])
