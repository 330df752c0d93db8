"""``masktopo prune``'s inputs: a mask file's weights are masked, a PAGS run directory is an
input, a sparsity that keeps more weights than a sparse input has is a one-line error, and the
printed table names the input's accuracy for what it is (dense or not).

Small runs: the 2-16-16-16-1 MLP on the generated Cubist Spiral (p = 560 maskable weights).
"""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import torch

from cli.main import main
from masktopo import store
from masktopo.errors import MaskValidationError
from masktopo.masks import MaskSet
from masktopo.pags.config import PagsConfig
from masktopo.pags.runner import run as pags_run
from masktopo.pai.densities import keep_count
from masktopo.prune import PruneConfig, prune
from masktopo.prune.runner import load_source
from masktopo.runs import read_run
from masktopo.runs.layout import BEST_FILE, INIT_FILE
from masktopo.seeding import generator
from masktopo.trainer.config import TrainConfig
from masktopo.trainer.loop import train
from masktopo.zoo import get_model, get_spec

MODEL = ["--model", "spiral-mlp", "--dataset", "cubist-spiral"]
FAST = ["--fisher-samples", "5", "--device", "cpu", "--set", "max_iter=20"]
TRAIN = dict(model="spiral-mlp", dataset="cubist-spiral", batch_size=1000, lr=0.05,
             optimizer="adamw", weight_decay=0.0, epochs=1, device="cpu")  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A dense run, a SET run at density 0.3 and a PAGS run (SNIP, density 0.3) warm-started
    from the dense run's checkpoint (so its scored network is not the seed's initialisation)."""
    root = tmp_path_factory.mktemp("prune-inputs")
    train(TrainConfig(method="dense", density=1.0, max_steps=30, **TRAIN), root / "dense")
    train(TrainConfig(method="set", density=0.3, max_steps=30, update_interval=10, **TRAIN),
          root / "set")  # fmt: skip
    pags_run(PagsConfig(model="spiral-mlp", dataset="cubist-spiral", method="snip", density=0.3,
                        n=2, iters=2, score_batches=2, device="cpu",
                        warm_start=str(root / "dense" / "checkpoint.pt")), root / "pags")  # fmt: skip
    return root


def _nothing_written(out, parent) -> bool:
    return not out.exists() and not any(
        p.name.startswith(".masktopo-staging") for p in parent.iterdir()
    )


def _flat(tensors, names) -> torch.Tensor:
    return torch.cat([tensors[n].reshape(-1).double() for n in names])


# -- 1. a mask file with weights is its weights times its masks -----------------------------------
def test_a_mask_files_weights_are_masked(runs, tmp_path, capsys):
    dense = read_run(runs / "dense").load(None)
    names = dense.names
    p = dense.numel()
    q = p // 4  # an exact keep count at sparsity 0.75
    # a random mask of q entries, and weights that are nonzero everywhere (the dense θ beside
    # its masks, as PAGS's best.safetensors stores them)
    order = torch.randperm(p, generator=generator(3, "test-mask"))
    flat = torch.zeros(p, dtype=torch.bool)
    flat[order[:q]] = True
    masks, weights, i = {}, {}, 0
    for n in names:
        k = dense[n].numel()
        masks[n] = flat[i : i + k].reshape(dense[n].shape)
        w = dense.weights[n].clone()
        weights[n] = torch.where(w == 0, torch.full_like(w, 1e-3), w)
        i += k
    f = tmp_path / "masked.safetensors"
    store.save(f, MaskSet(masks, weights=weights))

    cfg = PruneConfig(model="spiral-mlp", dataset="cubist-spiral", method=("mp",),
                      sparsity=(0.75,), fisher_samples=5, device="cpu")  # fmt: skip
    src = load_source(f, cfg)
    for n in names:
        torch.testing.assert_close(src.state[n], weights[n] * masks[n])
        assert torch.equal(src.masks[n], masks[n])

    out = tmp_path / "out"
    rc = main(["prune", str(f), *MODEL, "--method", "mp,bso", "--sparsity", "0.75,0.9", "--out",
               str(out), *FAST])  # fmt: skip
    assert rc == 0
    captured = capsys.readouterr()
    assert "holds only the maskable weights" in captured.err  # biases: the seed's
    printed = captured.out
    assert f"input test accuracy {100 * read_run(out).events[0]['test_acc']:.2f}%" in printed
    run = read_run(out)
    init = run.load(0)
    assert run.events[0]["density"] == pytest.approx(q / p)  # the input's masks, not all ones
    for n in names:
        assert torch.equal(init[n], masks[n])
        torch.testing.assert_close(init.weights[n], weights[n] * masks[n])
    rows = {(r["method"], r["sparsity"]): r for r in json.loads(
        (out / "summary.json").read_text())["rows"]}  # fmt: skip
    # MP at the input's own sparsity keeps exactly the masked network: nothing moves
    mp = rows["mp", 0.75]
    assert mp["kept"] == q and mp["dist"] == 0.0 and mp["objective"] == 0.0
    assert mp["test_acc"] == run.events[0]["test_acc"]
    for r in rows.values():  # every kept weight is one the input's mask kept
        ms = run.load(r["event"])
        assert all(not (ms[n] & ~masks[n]).any() for n in names)


# -- 2. a PAGS run directory ------------------------------------------------------------------------
def test_a_pags_run_is_its_best_masks_over_the_network_it_scored(runs, tmp_path, capsys):
    pags = runs / "pags"
    best = store.load(pags / BEST_FILE)
    assert best.has_weights
    ckpt = torch.load(runs / "dense" / "checkpoint.pt", weights_only=True)["model"]
    seeded = get_model("spiral-mlp", dataset=get_spec("cubist-spiral"),
                       generator=generator(0, "model")).state_dict()  # fmt: skip

    src = load_source(pags, PruneConfig(method=("mp",), sparsity=(0.8,)))
    assert (src.kind, src.model, src.dataset, src.maskable_only) == (
        "pags", "spiral-mlp", "cubist-spiral", False)  # fmt: skip
    for n in best.names:
        assert torch.equal(src.state[n], best.weights[n] * best[n])
    # the biases are those of the network PAGS scored (the warm start), not the seed's
    assert torch.equal(src.state["first_layer.bias"], ckpt["first_layer.bias"])
    assert not torch.equal(src.state["first_layer.bias"], seeded["first_layer.bias"])

    out = tmp_path / "out"
    rc = main(["prune", str(pags), "--method", "mp,chita++", "--stages", "3", "--sparsity",
               "0.8", "--out", str(out), *FAST])  # fmt: skip
    assert rc == 0
    captured = capsys.readouterr()
    assert "holds only the maskable weights" not in captured.err
    run = read_run(out)
    assert run.config["source"]["kind"] == "pags"
    assert run.config["config"]["model"] == "spiral-mlp"
    assert run.load(0).equal(best.with_weights({n: best.weights[n] * best[n] for n in best}))
    assert f"input test accuracy {100 * run.events[0]['test_acc']:.2f}% (density " in captured.out
    rows = {r["method"]: r for r in json.loads((out / "summary.json").read_text())["rows"]}
    mp = run.load(rows["mp"]["event"])
    assert all(not (mp[n] & ~best[n]).any() for n in best.names)  # MP stays inside the mask
    assert mp.nnz() == keep_count(0.2, best.numel())
    # CHITA++ starts its schedule at the input's sparsity: no stage keeps more than it has
    q = sum(int((best.weights[n] * best[n] != 0).sum()) for n in best)
    stages = [e for e in run.events if e.get("method") == "chita++"]
    assert len(stages) == 3
    assert all(e["stage_sparsity"] > 1 - q / best.numel() for e in stages)

    # a PAGS run written before init.safetensors: the maskable weights only, said so
    old = tmp_path / "old-pags"
    shutil.copytree(pags, old, ignore=shutil.ignore_patterns(INIT_FILE, ".lock"))
    src = load_source(old, PruneConfig())
    assert src.maskable_only and "first_layer.bias" not in src.state
    # naming another model than the PAGS run's is one line
    rc = main(["prune", str(pags), "--model", "mlp", "--sparsity", "0.8", "--out",
               str(tmp_path / "other"), *FAST])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "the run used model 'spiral-mlp', not --model 'mlp'" in err
    assert len(err.splitlines()) == 1 and _nothing_written(tmp_path / "other", tmp_path)


# -- 3. a sparsity that keeps more weights than the input has -----------------------------------
@pytest.mark.parametrize("method", ["mp,bso", "chita++"])
def test_keeping_more_than_a_sparse_input_has_is_one_line(runs, tmp_path, capsys, method):
    src = read_run(runs / "set").load(None)
    p = src.numel()
    nonzeros = sum(int((w != 0).sum()) for w in src.weights.values())
    assert nonzeros < src.nnz() < p  # SET's last event holds regrown weights that are still 0
    out = tmp_path / "out"
    rc = main(["prune", str(runs / "set"), "--method", method, "--sparsity", "0.9,0.5", "--out",
               str(out), *FAST])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("masktopo: error: ")
    assert _nothing_written(out, tmp_path)
    assert (f"sparsity 0.5 keeps {keep_count(0.5, p)} weights, more than the {nonzeros} nonzero "
            f"weights of the input (density {nonzeros / p:.4g}; its masks keep {src.nnz()} "
            f"weights (density {src.density():.4g}), {src.nnz() - nonzeros} of them zero)"
            ) in lines[0]  # fmt: skip
    smallest = float(re.search(r"a sparsity of at least ([0-9.]+)$", lines[0]).group(1))
    assert keep_count(1 - smallest, p) <= nonzeros
    # one weight more than the input has is refused, and at the smallest sparsity allowed no
    # kept weight is a zero-weight tie
    cfg = PruneConfig(method=("mp",), sparsity=(1 - (nonzeros + 1) / p,), fisher_samples=5,
                      device="cpu")  # fmt: skip
    with pytest.raises(MaskValidationError, match="nonzero weights of the input"):
        prune(cfg, runs / "set", None)
    res = prune(cfg.replace(sparsity=(smallest,)), runs / "set", tmp_path / "ok")
    run = read_run(tmp_path / "ok")
    kept = run.load(res.rows[0]["event"])
    assert kept.nnz() == res.rows[0]["kept"] <= nonzeros
    assert all(not (kept[n] & (src.weights[n] == 0)).any() for n in kept)
    assert res.rows[0]["new_non_zeros"] == 0


def test_a_dense_input_takes_any_sparsity(runs):
    cfg = PruneConfig(method=("mp",), sparsity=(0.01,), fisher_samples=5, device="cpu")
    res = prune(cfg, runs / "dense", None)
    p = read_run(runs / "dense").load(None).numel()
    assert res.input_density == 1.0 and res.input_nonzeros == p
    assert res.rows[0]["kept"] == keep_count(0.99, p)


# -- 4. the label of the input's accuracy ---------------------------------------------------------
def test_the_input_accuracy_is_labelled_dense_only_for_a_dense_input(runs, tmp_path, capsys):
    for name, sparsity in (("dense", "0.5"), ("set", "0.95")):
        out = tmp_path / name
        rc = main(["prune", str(runs / name), "--method", "mp", "--sparsity", sparsity, "--out",
                   str(out), *FAST])  # fmt: skip
        assert rc == 0
        printed = capsys.readouterr().out
        first = printed.splitlines()[0]
        summary = json.loads((out / "summary.json").read_text())
        inp = summary["input"]
        density = read_run(out).events[0]["density"]
        assert inp["density"] == pytest.approx(density)
        assert inp["test_acc"] == read_run(out).events[0]["test_acc"]
        if name == "dense":
            assert density == 1.0 and summary["dense"] == inp
            assert first == f"dense test accuracy {100 * inp['test_acc']:.2f}%"
        else:
            assert density < 1.0 and "dense" not in summary
            assert "dense" not in printed
            assert (
                first == f"input test accuracy {100 * inp['test_acc']:.2f}% (density {density:.4g})"
            )


def test_the_printed_table_labels_the_input():
    from cli.prune import table

    row = {"method": "mp", "sparsity": 0.9, "kept": 10, "objective": 1.0, "dist": 2.0,
           "new_non_zeros": 0, "solver_s": 0.1, "test_acc": 0.5, "test_acc_bn": math.nan}  # fmt: skip
    assert table([row], 0.8125).splitlines()[0] == "dense test accuracy 81.25%"
    assert table([row], 0.8125, 1.0).splitlines()[0] == "dense test accuracy 81.25%"
    sparse = table([row], 0.8125, 0.05).splitlines()[0]
    assert sparse == "input test accuracy 81.25% (density 0.05)"
    # accuracies in percent, as masktopo train prints them (the files hold fractions)
    header, line = table([row], 0.8125).splitlines()[1:3]
    assert header.split()[-2:] == ["acc", "%"] and line.split()[-1] == "50"
    assert "n/a" in table([row], math.nan).splitlines()[0]
