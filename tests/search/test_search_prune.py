"""Pruning methods on the Cubist Spiral hit the weight budget K exactly, with bias masks from
dead units; the prune-bench command writes one row per run and resumes."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from masktopo.analysis.paths import analyze_paths, layer_graph
from masktopo.masks import MaskSet
from masktopo.search import PRUNE_METHODS, PruneBenchConfig, prune_to_k
from masktopo.search.config import parse_int_grid
from masktopo.search.prune import read_bench, run_prune_bench, topk_masks
from masktopo.zoo import cubist_spiral, get_model

NAMES = ["first_layer.weight", "second_layer.weight", "third_layer.weight", "clf.weight"]


@pytest.fixture(scope="module")
def spiral():
    return cubist_spiral()


@pytest.mark.parametrize("method", PRUNE_METHODS)
def test_every_method_keeps_exactly_k_weights(spiral, method):
    width, ks = 3, [15, 16, 26]
    tr = prune_to_k(method, width, ks, [0, 1, 2], epochs=1, x=spiral[0], y=spiral[1])
    graph = layer_graph(get_model("spiral-mlp", width=width), (2,))
    for i, k in enumerate(ks):
        assert sum(int(m[i].sum()) for m in tr.wmask) == k
        for w, m in zip(tr.w, tr.wmask, strict=True):  # pruned weights are exactly zero
            assert (w[i][~m[i]] == 0).all()
        pa = analyze_paths(MaskSet({n: m[i] for n, m in zip(NAMES, tr.wmask, strict=True)}), graph)
        for layer in range(3):  # bias masks: the alive units
            assert torch.equal(tr.bmask[layer][i], pa.alive[layer + 1])
            assert (tr.b[layer][i][~tr.bmask[layer][i]] == 0).all()


def test_topk_is_exact_under_ties():
    scores = [torch.zeros(2, 3, 2), torch.ones(2, 1, 3)]
    keep = topk_masks(scores, torch.tensor([4, 1]))
    assert [int(sum(k[i].sum() for k in keep)) for i in range(2)] == [4, 1]
    assert keep[1][0].all() and int(keep[0][0].sum()) == 1


def test_gmp_prunes_gradually_and_lth_rewinds(spiral):
    tr = prune_to_k("gmp", 3, [15], [0], epochs=1, x=spiral[0], y=spiral[1])
    assert tr.step_count == tr.total_steps
    lth = prune_to_k("lth", 3, [15], [0], epochs=1, x=spiral[0], y=spiral[1])
    assert lth.step_count == lth.total_steps  # the schedule restarted for the last round


def test_grid_parsing():
    assert parse_int_grid("15-18,30,16", "nnz") == (15, 16, 17, 18, 30)
    with pytest.raises(Exception, match="nnz"):
        parse_int_grid("20-15", "nnz")


def test_prune_bench_writes_rows_and_resumes(tmp_path):
    cfg = PruneBenchConfig(methods=("gmp", "snip"), nnz="15,20,30", widths="3", seeds=2, epochs=1)
    out = tmp_path / "bench"
    with pytest.warns(UserWarning, match="width 3: budget.s. K = 30 skipped: .* only 27 weights"):
        rows = run_prune_bench(cfg, out)
    assert len(rows) == 2 * 2 * 2  # K = 30 >= N = 27 is skipped, with a warning
    assert set(rows["k"]) == {15, 20} and (rows["weight_nnz"] == rows["k"]).all()
    assert (rows["effective_nnz"] <= rows["weight_nnz"]).all()
    assert (rows["model_nnz"] > rows["weight_nnz"]).all()
    parts = sorted(p.name for p in (out / "results").iterdir())
    assert parts == ["w3-gmp-s0.parquet", "w3-snip-s0.parquet"]
    (out / "results" / "w3-snip-s0.parquet").unlink()
    with pytest.warns(UserWarning, match="K = 30 skipped"):
        again = run_prune_bench(cfg, out, resume=True)
    key = ["method", "k", "seed"]
    pd.testing.assert_frame_equal(
        again.sort_values(key).reset_index(drop=True), rows.sort_values(key).reset_index(drop=True)
    )
    assert len(read_bench(out)) == 8


def test_cli_prune_bench_and_plot(tmp_path, capsys):
    from cli.main import main

    out = tmp_path / "b"
    code = main(["prune-bench", "--methods", "random,synflow", "--nnz", "20,26", "--widths", "3",
                 "--seeds", "1", "--epochs", "1", "--out", str(out)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "random width   3" in text and "4 runs" in text
    assert main(["prune-bench", "--methods", "magnitude", "--out", str(tmp_path / "x")]) == 2
    assert "unknown pruning method" in capsys.readouterr().err
    none = tmp_path / "none"  # every budget at least the network's 27 weights: nothing to run
    assert main(["prune-bench", "--methods", "gmp", "--nnz", "27,40", "--widths", "3",
                 "--out", str(none)]) == 2  # fmt: skip
    assert "nothing to run" in capsys.readouterr().err and not none.exists()
    assert main(["plot", str(out), "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "prune-width3.png").is_file()


def test_fixed_init_prunes_from_the_shared_width16_block(spiral):
    from masktopo.search import init_params
    from masktopo.seeding import seed_for

    tr = prune_to_k("gmp", 3, [20], [4], epochs=1, x=spiral[0], y=spiral[1], fixed_init=True)
    assert sum(int(m[0].sum()) for m in tr.wmask) == 20
    w16, _ = init_params([seed_for(4, "fixed-init")], (2, 16, 16, 16, 1))
    w3, _ = init_params([seed_for(4, "fixed-init")], (2, 3, 3, 3, 1), init_width=16)
    assert torch.equal(w16[1][0][:3, :3], w3[1][0])


def _capture_prune(monkeypatch):
    """Record the first-layer weights and the batches each ``pai.prune`` call scores."""
    from masktopo import pai

    seen = []
    real = pai.prune

    def spy(model, method, density, *, batches=None, **kw):
        w0 = next(m for m in model.modules() if isinstance(m, torch.nn.Linear)).weight.detach()
        seen.append((method, w0.clone(), batches))
        return real(model, method, density, batches=batches, **kw)

    monkeypatch.setattr(pai, "prune", spy)
    return seen


def test_snip_and_grasp_score_and_train_from_a_xavier_reinit(spiral, monkeypatch):
    """The reference's random-init benchmark re-initialises SNIP's and GraSP's weights
    Xavier-normal before scoring, and trains from them; the other methods and fixed-init runs
    keep their initialisation."""
    from masktopo.search.ensemble import init_params
    from masktopo.search.prune import _sizes, _xavier
    from masktopo.seeding import seed_for

    seen = _capture_prune(monkeypatch)
    x, y = spiral
    sizes = _sizes(16)
    own = init_params([seed_for(0, "init", 16)], sizes)[0][0][0]
    xav = _xavier([seed_for(0, "xavier", 16)], init_params([0], sizes)[0])[0][0]
    for method in ("snip", "grasp", "synflow"):
        prune_to_k(method, 16, [100], [0], epochs=1, x=x, y=y)
    prune_to_k("snip", 16, [100], [0], epochs=1, x=x, y=y, xavier_reinit=False)
    prune_to_k("snip", 16, [100], [0], epochs=1, x=x, y=y, fixed_init=True)
    scored = [w for _, w, _ in seen]
    assert torch.equal(scored[0], xav) and torch.equal(scored[1], xav)  # snip, grasp
    assert torch.equal(scored[2], own) and torch.equal(scored[3], own)  # synflow; reinit off
    assert not torch.equal(scored[4], xav) and not torch.equal(scored[4], own)  # fixed init
    # Xavier-normal: N(0, 2 / (n_in + n_out)) for every layer (560 draws at width 16 here)
    big = _xavier([1], [torch.zeros(1, 300, 500)])[0]
    assert abs(float(big.std()) / (2 / 800) ** 0.5 - 1) < 0.01 and abs(float(big.mean())) < 0.003


def test_grasp_scores_25_points_of_each_class_as_two_batches(spiral, monkeypatch):
    seen = _capture_prune(monkeypatch)
    prune_to_k("grasp", 3, [15], [0], epochs=1, x=spiral[0], y=spiral[1])
    prune_to_k("snip", 3, [15], [0], epochs=1, x=spiral[0], y=spiral[1])
    (_, _, grasp), (_, _, snip) = seen
    assert [b[0].shape[0] for b in grasp] == [25, 25]
    assert (grasp[0][1] == 0).all() and (grasp[1][1] == 1).all()  # class 0, then class 1
    assert len(snip) == 1 and snip[0][0].shape[0] == 128
