"""``masktopo prune`` end to end on a briefly trained MLPNet (Fashion-MNIST), and bad inputs."""

from __future__ import annotations

import csv
import itertools
import json

import pytest
import torch
from _data import skip_without_fmnist

from cli.main import main
from masktopo import store
from masktopo.masks import MaskSet
from masktopo.pai.densities import keep_count
from masktopo.prune import RESULTS_FILE, PruneConfig, prune, stage_sparsities
from masktopo.runs import read_run
from masktopo.runs.layout import KINDS
from masktopo.seeding import generator
from masktopo.trainer.config import TrainConfig
from masktopo.trainer.core import prune_magnitude
from masktopo.trainer.loop import train

FAST = ["--fisher-samples", "48", "--device", "cpu", "--set", "max_iter=40"]


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    skip_without_fmnist()
    out = tmp_path_factory.mktemp("prune") / "dense"
    cfg = TrainConfig(method="dense", density=1.0, model="mlpnet", dataset="fashion-mnist",
                      epochs=1, max_steps=120, device="cpu")  # fmt: skip
    train(cfg, out)
    return out


def test_prune_writes_a_run_with_one_event_per_solve(dense_run, tmp_path, capsys):
    out = tmp_path / "sweep"
    rc = main(["prune", str(dense_run), "--method", "mp,bso,chita,chita++", "--sparsity",
               "0.9,0.5", "--stages", "3", "--out", str(out), *FAST])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "dense test accuracy" in printed and "chita++" in printed
    assert "acc (BN)" not in printed  # MLPNet has no BatchNorm to re-estimate
    run = read_run(out)
    assert run.kind == "prune"
    assert RESULTS_FILE in KINDS["prune"]
    # init + 3 single-stage methods x 2 sparsities + chita++ 3 stages x 2 sparsities
    assert len(run.events) == 1 + 6 + 6
    assert run.events[0]["kind"] == "init" and run.events[0]["density"] == 1.0
    rows = list(csv.DictReader((out / RESULTS_FILE).open()))
    assert [(r["method"], float(r["sparsity"])) for r in rows] == [
        (m, s) for m in ("mp", "bso", "chita", "chita++") for s in (0.5, 0.9)
    ]
    dense = run.load(0)
    p = sum(m.numel() for m in dense.values())
    by = {(r["method"], float(r["sparsity"])): r for r in rows}
    for (method, s), r in by.items():
        ms = run.load(int(r["event"]))
        assert ms.nnz() == keep_count(1 - s, p) == int(r["kept"])  # exact counts
        assert 0.0 <= float(r["test_acc"]) <= 1.0
        assert r["test_acc_bn"] == ""  # MLPNet has no BatchNorm
        if method == "mp":  # weights unchanged on the kept entries
            for name in ms:
                torch.testing.assert_close(ms.weights[name], dense.weights[name] * ms[name])
    for s in (0.5, 0.9):
        # BSO re-fits the weights on MP's support: the quadratic model can only go down
        assert float(by["bso", s]["objective"]) <= float(by["mp", s]["objective"])
        assert run.load(int(by["bso", s]["event"])).equal(
            run.load(int(by["mp", s]["event"])), weights=False
        )
        assert float(by["chita", s]["objective"]) < float(by["mp", s]["objective"])
    stages = [e for e in run.events if e.get("method") == "chita++" and e["sparsity"] == 0.9]
    assert [e["stage"] for e in stages] == [1, 2, 3]
    assert [e["stage_sparsity"] for e in stages] == pytest.approx(stage_sparsities(0.9, 3, "poly",
                                                                                  0.1))  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["rows"]) == 8 and summary["dense"]["test_acc"] > 0.5


def test_block_size_is_bso_blocks_and_said_so_elsewhere(dense_run, tmp_path, capsys):
    """The reference's --block_size silently replaced CHITA by block backsolve; here
    ``--method chita --block-size B`` runs CHITA and says that B is unused."""
    assert PruneConfig().block_size is None and not PruneConfig().uses_blocks
    assert PruneConfig(method=("chita++",), stage_solver="bso-block").uses_blocks
    out = tmp_path / "chita"
    rc = main(["prune", str(dense_run), "--method", "mp,chita", "--sparsity", "0.9",
               "--block-size", "200", "--out", str(out), *FAST])  # fmt: skip
    assert rc == 0
    err = capsys.readouterr().err
    assert "--block-size 200 is used by bso-block only" in err and "mp, chita solve " in err
    rc = main(["prune", str(dense_run), "--method", "bso-block", "--sparsity", "0.9",
               "--block-size", "200", "--out", str(tmp_path / "block"), *FAST])  # fmt: skip
    assert rc == 0
    assert "--block-size" not in capsys.readouterr().err
    assert read_run(tmp_path / "block").config["config"]["block_size"] == 200


def test_mp_equals_the_trainers_magnitude_pruning(dense_run):
    cfg = PruneConfig(method=("mp",), sparsity=(0.8,), fisher_samples=16, device="cpu")
    res = prune(cfg, dense_run, None)
    assert len(res.rows) == 1
    dense = read_run(dense_run).load(None)
    weights = dense.weights
    p = sum(w.numel() for w in weights.values())
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    ref = prune_magnitude(weights, masks, keep_count(0.2, p),
                          generator(0, "ties", "mp", 0.8))  # fmt: skip
    from masktopo.prune.runner import load_source  # the same solve, by hand

    src = load_source(dense_run, cfg)
    from masktopo.prune import Problem, solve
    from masktopo.prune.gradients import flatten

    names = list(weights)
    w_bar = flatten(src.state, names).double()
    sol = solve(Problem(torch.zeros(1, p, dtype=torch.float64), w_bar, 0.0), keep_count(0.2, p),
                "mp", generator=generator(0, "ties", "mp", 0.8))  # fmt: skip
    assert torch.equal(sol.support, torch.cat([ref[n].reshape(-1) for n in names]))


def test_inputs_mask_file_and_checkpoint(dense_run, tmp_path):
    dense = read_run(dense_run).load(None)
    mf = tmp_path / "w.safetensors"
    store.save(mf, dense)
    ck = tmp_path / "w.pt"
    torch.save({"state_dict": dict(dense.weights)}, ck)
    for src in (mf, ck):
        out = tmp_path / f"out-{src.suffix[1:]}"
        rc = main(["prune", str(src), "--model", "mlpnet", "--dataset", "fashion-mnist",
                   "--method", "bso", "--sparsity", "0.7", "--out", str(out), *FAST])  # fmt: skip
        assert rc == 0
        assert read_run(out).load(None).nnz() == keep_count(0.3, 32360)


@pytest.mark.parametrize(
    "case, match",
    [
        ("sparsity1", "sparsity must be in (0.0, 1.0), got 1.0"),
        ("sparsity0", "sparsity must be in (0.0, 1.0), got 0.0"),
        ("other-model", "does not fit model 'mlpnet'"),
        ("run-model", "the run used model 'mlpnet', not --model 'lenet300'"),
        ("memory", "the gradient matrix needs"),
        ("no-weights", "is a mask file without weights"),
        ("method", "invalid choice: 'obs'"),
        ("file-without-model", "pass --model and --dataset"),
        ("nan-checkpoint", "nan.pt: holds NaN or inf values in fc2.weight"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(dense_run, tmp_path, capsys, case, match):
    from masktopo.zoo import get_model

    out = tmp_path / "out"
    args = {
        "sparsity1": [str(dense_run), "--sparsity", "0.5,1"],
        "sparsity0": [str(dense_run), "--sparsity", "0"],
        "other-model": ["OTHER", "--model", "mlpnet", "--dataset", "fashion-mnist"],
        "run-model": [str(dense_run), "--model", "lenet300"],
        "memory": [str(dense_run), "--memory-limit", "0.001"],
        "no-weights": ["NOW", "--model", "mlpnet", "--dataset", "fashion-mnist"],
        "method": [str(dense_run), "--method", "chita,obs"],
        "file-without-model": ["OTHER"],
        "nan-checkpoint": ["NAN", "--model", "mlpnet", "--dataset", "fashion-mnist"],
    }[case]
    if "NAN" in args:  # a diverged run's checkpoint
        state = get_model("mlpnet", dataset="fashion-mnist").state_dict()
        state["fc2.weight"][3, 1] = float("nan")
        ck = tmp_path / "nan.pt"
        torch.save(state, ck)
        args[args.index("NAN")] = str(ck)
    if "OTHER" in args:
        ck = tmp_path / "lenet.pt"
        torch.save(get_model("lenet300").state_dict(), ck)
        args[args.index("OTHER")] = str(ck)
    if "NOW" in args:
        ms = MaskSet({"fc1.weight": torch.ones(40, 784, dtype=torch.bool)})
        f = tmp_path / "m.safetensors"
        store.save(f, ms)
        args[args.index("NOW")] = str(f)
    rc = main(["prune", *args, "--out", str(out), *FAST])
    err = capsys.readouterr().err
    assert rc == 2
    assert match in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 or case == "method"  # argparse adds its usage line
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".masktopo-staging")]


def test_stage_sparsities():
    for schedule in ("poly", "exp", "linear", "mfac"):
        s = stage_sparsities(0.95, 8, schedule, 0.1)
        assert len(s) == 8 and s[-1] == 0.95
        assert all(a < b for a, b in itertools.pairwise(s))
        assert s[0] > 0.1
    assert stage_sparsities(0.9, 4, "const", 0.1) == [0.9] * 4
    poly = stage_sparsities(0.9, 4, "poly", 0.1)
    assert poly[0] == pytest.approx(0.9 + (0.1 - 0.9) * 0.75**3)


@pytest.mark.parametrize("name", ["chita_oneshot", "chita_plusplus"])
def test_shipped_study_configs_read(name):
    from pathlib import Path

    from masktopo.options import gather

    root = Path(__file__).resolve().parents[2]
    cfg = gather(PruneConfig, config=root / "configs" / "repro" / f"{name}.toml", table="prune")
    assert cfg.fisher_samples == 1000 and cfg.sparsity[-1] == 0.98


def test_printed_table_shows_the_bn_column_for_bn_models_only():
    from cli.prune import table

    row = {
        "method": "mp",
        "sparsity": 0.9,
        "kept": 10,
        "objective": 1.0,
        "dist": 2.0,
        "new_non_zeros": 0,
        "solver_s": 0.1,
        "test_acc": 0.5,
        "test_acc_bn": float("nan"),
    }
    assert "acc (BN)" not in table([row], 0.9)
    shown = table([row, {**row, "test_acc_bn": 0.75}], 0.9)
    assert "acc (BN) %" in shown and "75" in shown.splitlines()[-1].split()


def test_every_solve_starts_with_y_formed(dense_run, tmp_path, monkeypatch):
    """y = G w̄ is formed with the problem (in its setup time), not by the first solver timed on
    it: magnitude pruning's solver time was the whole G w̄ product when it ran first."""
    import masktopo.prune.runner as runner

    seen = []
    real = runner.solve

    def spy(pb, *args, **kwargs):
        seen.append(pb._y is not None)
        return real(pb, *args, **kwargs)

    monkeypatch.setattr(runner, "solve", spy)
    assert main(["prune", str(dense_run), "--method", "mp,chita++", "--sparsity", "0.9",
                 "--stages", "2", "--out", str(tmp_path / "o"), *FAST]) == 0  # fmt: skip
    assert len(seen) == 1 + 2 and all(seen)  # mp, then one solve per chita++ stage


def test_info_lists_the_solves_of_a_prune_run(dense_run, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["prune", str(dense_run), "--method", "mp,chita++", "--sparsity", "0.9,0.5",
                 "--stages", "2", "--out", str(out), *FAST]) == 0  # fmt: skip
    capsys.readouterr()
    import masktopo

    got = masktopo.info(out)
    assert got["kind"] == "prune"
    assert [(s["method"], s["sparsity"], s["stage"]) for s in got["solves"]] == [
        ("mp", 0.5, 1), ("mp", 0.9, 1), ("chita++", 0.5, 1), ("chita++", 0.5, 2),
        ("chita++", 0.9, 1), ("chita++", 0.9, 2),
    ]  # fmt: skip
    assert main(["info", str(out)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "solves:" in ln)
    assert line.strip().startswith("solves: mp at 0.5, 0.9; chita++ at 0.5, 0.9 (results.csv")
