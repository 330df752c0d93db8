"""GaP (C-GaP and P-GaP) in the trainer: partitions, schedule, events, resume, torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_crash import _assert_same_run, _kill_at

from masktopo import runs
from masktopo.errors import MaskValidationError
from masktopo.runs.layout import CHECKPOINT_FILE
from masktopo.trainer import TrainConfig, resolve, train
from masktopo.trainer.partitions import balanced_split, partition_layers

ROOT = Path(__file__).resolve().parents[2]
needs_fmnist = pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                                  reason="Fashion-MNIST (dataset-fashion-mnist) missing")  # fmt: skip
#: spiral-mlp on the Cubist Spiral: layers of 32, 256, 256 and 16 weights; batch 1000 gives 44
#: iterations per epoch, a GaP step of 0.25 epochs is 11 iterations.
SPIRAL = {"model": "spiral-mlp", "dataset": "cubist-spiral", "density": 0.25,
          "batch_size": 1000, "device": "cpu", "seed": 3, "lr": 0.05}  # fmt: skip
CLI = ["train", "--method", "gap", "--model", "spiral-mlp", "--dataset", "cubist-spiral",
       "--density", "0.25", "--set", "batch_size=1000", "--set", "lr=0.05", "--seed", "3",
       "--device", "cpu", "--partitions", "3", "--step-epochs", "0.25", "--cycles", "2",
       "--finetune-epochs", "0.5"]  # fmt: skip


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update({"MASKTOPO_WORKERS": "1", "OMP_NUM_THREADS": "1"}, **extra)
    return env


def _run(args, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                       env=_env(), timeout=600, **kw)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    return p


# -- partitions ------------------------------------------------------------------------------------
def test_balanced_split_minimises_the_largest_group():
    assert balanced_split([32, 256, 256, 16], 3) == [0, 1, 2, 2]
    assert balanced_split([235200, 30000, 1000], 3) == [0, 1, 2]
    assert balanced_split([1, 1, 1, 1, 1, 1], 3) == [0, 0, 1, 1, 2, 2]
    assert balanced_split([5, 1, 1, 1, 1, 1], 2) == [0, 1, 1, 1, 1, 1]
    with pytest.raises(MaskValidationError, match="partitions 4 is more than the 3"):
        balanced_split([1, 2, 3], 4)


@pytest.mark.parametrize(("mapping", "message"), [
    ({"a.*": 0, "b.*": 1}, "no pattern matches layer.s. c.weight"),
    ({"*": 0, "b.*": 1}, r"matched by patterns of different partitions: b.weight \(\*, b\.\*\)"),
    ({"a.*": 0, "b.*": 1, "c.*": 1, "z.*": 2}, r"pattern\(s\) z\.\* match no maskable layer"),
    ({"a.*": 0, "b.*": 2, "c.*": 2}, r"partition ids must be 0 \.\. K-1, each used; got \[0, 2\]"),
])  # fmt: skip
def test_bad_partition_maps_are_one_line_errors(mapping, message):
    layers = {"a.weight": 10, "b.weight": 10, "c.weight": 10}
    with pytest.raises(MaskValidationError, match=message) as e:
        partition_layers(layers, None, mapping)
    assert "\n" not in str(e.value)


def test_a_partition_map_resolves_every_layer():
    layers = {"enc.0.weight": 10, "enc.1.weight": 10, "dec.0.weight": 10}
    got = partition_layers(layers, None, {"enc.*": 0, "dec.*": 1})
    assert got == {"enc.0.weight": 0, "enc.1.weight": 0, "dec.0.weight": 1}
    both = {"enc.*": 0, "enc.1.*": 0, "dec.*": 1}  # two patterns of one partition: fine
    assert partition_layers(layers, None, both) == got


def test_gap_config_derives_its_epochs_and_checks_them():
    cfg = resolve(TrainConfig(method="gap", density=0.1, step_epochs=0.5, cycles=3,
                              finetune_epochs=1.5))  # fmt: skip
    assert (cfg.partitions, cfg.epochs, cfg.gap_mode, cfg.distribution) == (3, 6, "cyclic",
                                                                             "uniform")  # fmt: skip
    with pytest.raises(MaskValidationError, match="epochs is set by the schedule"):
        resolve(TrainConfig(method="gap", density=0.1, epochs=10))
    with pytest.raises(MaskValidationError, match=r"partitions \(a count\) or partition_map, not"):
        resolve(TrainConfig(method="gap", density=0.1, partitions=2, partition_map={"*": 0}))
    with pytest.raises(MaskValidationError, match="gap_mode is not used by method 'itop'"):
        resolve(TrainConfig(method="itop", gap_mode="cyclic"))
    with pytest.raises(MaskValidationError, match="partition_map must be a table"):
        resolve(TrainConfig(method="gap", partition_map={"*": -1}))


# -- C-GaP -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cgap(tmp_path_factory):
    out = tmp_path_factory.mktemp("cgap") / "run"
    res = train(TrainConfig(method="gap", partitions=3, step_epochs=0.25, cycles=2,
                            finetune_epochs=0.5, **SPIRAL), out)  # fmt: skip
    return out, res


def test_cgap_events_follow_the_schedule(cgap):
    out, res = cgap
    run = runs.read_run(out)
    info = run.config["method_info"]
    parts = info["partitions"]
    assert parts == {"first_layer.weight": 0, "second_layer.weight": 1, "third_layer.weight": 2,
                     "clf.weight": 2}  # fmt: skip
    counts = info["counts"]
    assert counts == {n: round(0.25 * s) for n, s in zip(parts, (32, 256, 256, 16), strict=True)}
    L = info["step_iterations"]
    assert L == 11 and info["gap_steps"] == 6 and res.config.epochs == 2
    kinds = [(e["kind"], e.get("partition"), e["step"]) for e in run.events]
    expect = [("init", 0, 0)]
    for b in range(1, 7):
        expect.append(("prune", (b - 1) % 3, b * L))
        if b < 6:
            expect.append(("grow", b % 3, b * L))
    expect.append(("final", None, res.steps))
    assert kinds == expect
    numel = {n: run.load(0)[n].numel() for n in parts}
    prev = None
    for e in run.events:
        ms = run.load(e["event"])
        nnz = {n: int(ms[n].sum()) for n in parts}
        assert nnz == e["nnz"]
        if e["kind"] in ("prune", "final"):  # exact counts after every prune
            assert nnz == counts, e["event"]
        if e["kind"] in ("grow", "init"):  # exactly the dense partition is dense
            dense = 0 if e["kind"] == "init" else e["partition"]
            for n in parts:
                assert nnz[n] == (numel[n] if parts[n] == dense else counts[n]), (e["event"], n)
        if e["kind"] == "grow":  # growing changes no other layer's mask
            for n in parts:
                if parts[n] != e["partition"]:
                    assert torch.equal(ms[n], prev[n]), (e["event"], n)
        prev = ms


@needs_fmnist
def test_cgap_each_partition_changes_at_its_re_prunes(tmp_path):
    """LeNet-300-100 on Fashion-MNIST, a step of 0.1 epochs (42 iterations): every partition's
    mask changes at its second re-prune (on the tiny spiral model, grown weights that start at 0
    rarely overtake the kept ones within a few iterations, and the masks stay put)."""
    train(TrainConfig(method="gap", partitions=3, step_epochs=0.1, cycles=2, finetune_epochs=0.4,
                      model="lenet300", dataset="fashion-mnist", density=0.05, device="cpu",
                      seed=0), tmp_path / "r")  # fmt: skip
    run = runs.read_run(tmp_path / "r")
    parts = run.config["method_info"]["partitions"]
    assert parts == {"fc1.weight": 0, "fc2.weight": 1, "fc3.weight": 2}
    prunes = [e for e in run.events if e["kind"] == "prune"]
    for p, layer in enumerate(parts):
        first, second = (run.load(e["event"]) for e in prunes if e["partition"] == p)
        assert not torch.equal(first[layer], second[layer]), layer
        # between its re-prunes the partition's topology is frozen
        events = [e["event"] for e in prunes if e["partition"] == p]
        for k in range(events[0] + 1, events[1]):
            assert torch.equal(run.load(k)[layer], first[layer]) or run.events[k]["kind"] == "grow"


def test_gap_restart_clears_the_optimizer_and_restarts_the_lr():
    from masktopo.trainer.methods import make_sparsifier

    cfg = resolve(TrainConfig(method="gap", density=0.1, step_epochs=1.0, cycles=1,
                              finetune_epochs=1.0, gap_restart=True))  # fmt: skip
    sp = make_sparsifier(cfg, steps_per_epoch=10, total_steps=40, device="cpu")
    assert [sp.lr_position(s) for s in (0, 9, 10, 29, 30, 39)] == [
        (0, 10), (9, 10), (0, 10), (9, 10), (0, 10), (9, 10)]  # fmt: skip
    plain = make_sparsifier(resolve(cfg.replace(gap_restart=False)), steps_per_epoch=10,
                            total_steps=40, device="cpu")  # fmt: skip
    assert plain.lr_position(25) == (25, 40)


# -- resume ----------------------------------------------------------------------------------------
def test_cgap_sigkill_mid_cycle_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same threads (same sums) in every process
    whole = tmp_path / "whole"
    args = [*CLI, "--checkpoint-every", "20"]
    _run(["-m", "masktopo", *args, "--out", whole])
    out = tmp_path / "run"
    _kill_at([*args, "--out", out], "checkpoint:2", tmp_path)  # step 40: cycle 2, partition 0
    assert torch.load(out / CHECKPOINT_FILE, weights_only=False)["step"] == 40
    _run(["-m", "masktopo", "train", "--resume", out])
    _assert_same_run(whole, out)


# -- P-GaP -----------------------------------------------------------------------------------------
def test_pgap_one_process_equals_torchrun_with_one_replica_per_process(tmp_path):
    args = [*CLI, "--gap-mode", "parallel"]
    _run(["-m", "masktopo", *args, "--out", tmp_path / "one"])
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3", "-m", "masktopo",
          *args, "--out", tmp_path / "three"])  # fmt: skip
    a, b = runs.read_run(tmp_path / "one"), runs.read_run(tmp_path / "three")
    assert b.config["method_info"]["processes"] == 3 and a.config["method_info"]["processes"] == 1
    kinds = [(e["kind"], e.get("partition"), e.get("round")) for e in a.events]
    assert kinds == [("init", 0, 0), ("grow", 1, 0), ("grow", 2, 0), ("prune", -1, 0),
                     ("grow", 0, 1), ("grow", 1, 1), ("grow", 2, 1), ("prune", -1, 1),
                     ("final", None, None)]  # fmt: skip
    assert kinds == [(e["kind"], e.get("partition"), e.get("round")) for e in b.events]
    counts = a.config["method_info"]["counts"]
    for k in range(a.n_events):
        ma, mb = a.load(k), b.load(k)
        for n in ma:
            assert torch.equal(ma[n], mb[n]), (k, n)
            assert torch.equal(ma.weights[n], mb.weights[n]), (k, n)
        if a.events[k]["kind"] in ("prune", "final"):
            assert a.events[k]["nnz"] == counts
    fa, fb = a.summary()["final"], b.summary()["final"]
    for key in ("train_loss", "train_acc", "val_acc", "test_acc"):
        assert fa[key] == pytest.approx(fb[key], abs=1e-6), key


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("extra", "message"), [
    (["--set", "partition_map={ \"first*\" = 0, \"second*\" = 1 }", "--partitions", "2"],
     "give partitions"),
    (["--step-epochs", "0.01"], "is less than one iteration"),
    (["--partitions", "5"], "partitions 5 is more than the 4 maskable layers"),
    (["--epochs", "3"], "epochs is set by the schedule"),
    (["--step-epochs", "0"], "step_epochs must be"),
])  # fmt: skip
def test_bad_gap_settings_are_one_line_errors_with_nothing_written(tmp_path, extra, message):
    cli = list(CLI)
    if "--partitions" in extra:  # drop the default pair
        i = cli.index("--partitions")
        del cli[i : i + 2]
    p = subprocess.run([sys.executable, "-m", "masktopo", *cli, *extra, "--out",
                        str(tmp_path / "r")], capture_output=True, text=True, env=_env(),
                       timeout=300)  # fmt: skip
    assert p.returncode != 0 and message in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "r").exists()


def test_partition_map_from_a_toml_table(tmp_path):
    toml = tmp_path / "gap.toml"
    toml.write_text(
        '[train]\nmethod = "gap"\nmodel = "spiral-mlp"\ndataset = "cubist-spiral"\n'
        "density = 0.25\nstep_epochs = 0.25\ncycles = 1\nfinetune_epochs = 0.25\n"
        'batch_size = 1000\n\n[train.partition_map]\n"first_layer.*" = 0\n'
        '"second_layer.*" = 0\n"third_layer.*" = 1\n"clf.*" = 1\n'
    )
    p = _run(["-m", "masktopo", "train", "--config", toml, "--print-config"])
    assert 'partition_map = { "first_layer.*" = 0' in p.stdout
    _run(["-m", "masktopo", "train", "--config", toml, "--device", "cpu", "--out",
          tmp_path / "r"])  # fmt: skip
    run = runs.read_run(tmp_path / "r")
    assert run.config["config"]["partition_map"]["clf.*"] == 1
    assert run.config["method_info"]["partitions"]["second_layer.weight"] == 0
    assert [e["kind"] for e in run.events] == ["init", "prune", "grow", "prune", "final"]


def test_grown_weights_come_back_at_zero_with_no_adam_history():
    import torch.nn.functional as F

    import masktopo

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sp = masktopo.sparsify(model, opt, method="gap", density=0.25, partitions=2, step_epochs=1.0,
                           cycles=1, finetune_epochs=1.0, total_steps=15, steps_per_epoch=5)  # fmt: skip
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    before = None
    for i in range(5):
        if i == 4:
            before = sp.session.masking.masks["2.weight"].clone()  # partition 1, still masked
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sp.step()
    grown = ~before  # the positions partition 1 regains at the boundary after step 5
    assert bool(sp.session.masking.masks["2.weight"].all())
    state = opt.state[model[2].weight]
    assert bool(grown.any())
    for key in ("exp_avg", "exp_avg_sq"):
        assert not bool(state[key][grown].any()), key
    assert not bool(model[2].weight.detach()[grown].any())
    sp.finish()
