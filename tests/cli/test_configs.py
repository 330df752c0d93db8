"""Configs derived from one declaration: ``COMMAND --print-config > x.toml`` then ``COMMAND
--config x.toml`` is the same run, for train and pags; a strategy registered through the public
registries (a growth rule, a layer-density distribution, a method) works like a built-in one."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
import torch

import masktopo
from masktopo import runs
from masktopo.cli.main import main

SPIRAL = ["--model", "spiral-mlp", "--dataset", "cubist-spiral"]


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _events(run) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "seconds"} for e in runs.read_run(run).events]


def test_train_print_config_then_config_is_the_same_run(tmp_path, capsys):
    args = ["train", "--method", "set", *SPIRAL, "--density", "0.3", "--epochs", "1",
            "--batch-size", "1000", "--update-interval", "10", "--set", "lr_schedule=cosine",
            "--set", "optimizer=adamw", "--set", "weight_decay=0.0"]  # fmt: skip
    rc, toml_text, err = _run(capsys, *args, "--print-config")
    assert rc == 0 and err == ""
    assert "update_interval = 10" in toml_text and 'lr_schedule = "cosine"' in toml_text
    assert "growth = " in toml_text  # resolved: the method's defaults are written out
    (tmp_path / "x.toml").write_text(toml_text)
    assert _run(capsys, *args, "--out", tmp_path / "a")[0] == 0
    assert _run(capsys, "train", "--config", tmp_path / "x.toml", "--out", tmp_path / "b")[0] == 0
    ra = json.loads((tmp_path / "a" / "run.json").read_text())
    rb = json.loads((tmp_path / "b" / "run.json").read_text())
    assert ra["config"] == rb["config"]
    assert _events(tmp_path / "a") == _events(tmp_path / "b")
    fa, fb = masktopo.load(tmp_path / "a"), masktopo.load(tmp_path / "b")
    assert all(torch.equal(fa.weights[n], fb.weights[n]) for n in fa)
    # the printed config, printed again from itself, is the same text
    rc, again, _ = _run(capsys, "train", "--config", tmp_path / "x.toml", "--print-config")
    assert again == toml_text


def test_train_dense_trains_at_density_one_unless_told_otherwise(tmp_path, capsys):
    """``--method dense`` needs no ``--density 1``; a density that was asked for (flag, --set or
    config file) is still checked."""
    rc, text, err = _run(capsys, "train", "--method", "dense", *SPIRAL, "--print-config")
    assert rc == 0 and "density = 1.0" in text
    rc, _, err = _run(capsys, "train", "--method", "dense", *SPIRAL, "--density", "0.5",
                      "--print-config")  # fmt: skip
    assert rc == 2 and "method 'dense' trains every weight: density must be 1, got 0.5" in err
    (tmp_path / "d.toml").write_text('method = "dense"\ndensity = 0.2\n')
    rc, _, err = _run(capsys, "train", "--config", tmp_path / "d.toml", *SPIRAL, "--print-config")
    assert rc == 2 and "got 0.2" in err
    rc, _, err = _run(capsys, "train", "--method", "dense", *SPIRAL, "--set", "density=0.3",
                      "--print-config")  # fmt: skip
    assert rc == 2 and "got 0.3" in err


def test_pags_print_config_then_config_is_the_same_run(tmp_path, capsys):
    args = ["pags", *SPIRAL, "--method", "erk", "--density", "0.3", "--n", "4", "--chunk", "2",
            "--sampler", "rewire", "--seed", "3", "--set", "invalid=skip"]  # fmt: skip
    rc, toml_text, err = _run(capsys, *args, "--print-config")
    assert rc == 0 and err == "" and 'invalid = "skip"' in toml_text and "[pags]" in toml_text
    (tmp_path / "x.toml").write_text(toml_text)
    assert _run(capsys, *args, "--out", tmp_path / "a")[0] == 0
    assert _run(capsys, "pags", "--config", tmp_path / "x.toml", "--out", tmp_path / "b")[0] == 0
    ra = json.loads((tmp_path / "a" / "run.json").read_text())
    rb = json.loads((tmp_path / "b" / "run.json").read_text())
    assert ra["config"] == rb["config"] and ra["config"]["invalid"] == "skip"
    a = masktopo.load(tmp_path / "a" / "best.safetensors")
    b = masktopo.load(tmp_path / "b" / "best.safetensors")
    assert a.equal(b)


def test_a_bad_value_in_a_config_file_names_the_file_and_writes_nothing(tmp_path, capsys):
    f = tmp_path / "bad.toml"
    f.write_text('[train]\nmethod = "set"\nupdate_interval = 0\n')
    rc, _, err = _run(capsys, "train", "--config", f, "--out", tmp_path / "o")
    assert rc == 2 and err.strip() == (f"masktopo: error: {f}: update_interval must be >= 1, got 0")
    assert not (tmp_path / "o").exists()


@pytest.fixture
def toy_growth():
    from masktopo.trainer.core import GROWTHS, register_growth

    @register_growth("smallest_index", "the empty positions with the smallest flat index")
    def smallest_index(x):
        n = x.weight.numel()
        return -torch.arange(n, dtype=torch.float32, device=x.weight.device).reshape(x.weight.shape)

    yield "smallest_index"
    del GROWTHS["smallest_index"]


def test_a_registered_growth_rule_trains(toy_growth, tmp_path, capsys):
    rc, _, err = _run(capsys, "train", "--method", "set", *SPIRAL, "--density", "0.3",
                      "--epochs", "1", "--batch-size", "1000", "--update-interval", "10",
                      "--growth", toy_growth, "--out", tmp_path / "r")  # fmt: skip
    assert rc == 0, err
    run = runs.read_run(tmp_path / "r")
    assert run.config["config"]["growth"] == toy_growth
    updates = [e for e in run.events if e["kind"] == "update"]
    assert updates and all(sum(e["grow"].values()) > 0 for e in updates)
    rc, _, err = _run(capsys, "train", "--method", "set", "--growth", "nope", "--out",
                      tmp_path / "x")  # fmt: skip
    assert rc == 2 and "unknown growth 'nope'; known: gradient, momentum, random, " in err
    assert toy_growth in err


def test_a_registered_distribution_and_method(tmp_path, capsys):
    from masktopo.pai.densities import DISTRIBUTIONS, register_distribution, uniform_densities
    from masktopo.trainer.methods import METHODS, SET, register_method

    @register_distribution("half_uniform")
    def half_uniform(shapes, density):
        return uniform_densities(shapes, density)

    @register_method
    class Wired(SET):
        """SET with the toy distribution: a method is one class and one registration."""

        name = "wired"
        summary = "SET on uniform layer densities (a test method)"
        defaults: ClassVar[dict] = {**SET.defaults, "distribution": "half_uniform",
                                    "update_interval": 10}  # fmt: skip

    try:
        rc, out, _ = _run(capsys, "train", "--list-methods")
        assert rc == 0 and "wired" in out and "a test method" in out
        rc, _, err = _run(capsys, "train", "--method", "wired", *SPIRAL, "--density", "0.3",
                          "--epochs", "1", "--batch-size", "1000", "--out", tmp_path / "w")  # fmt: skip
        assert rc == 0, err
        run = runs.read_run(tmp_path / "w")
        assert run.config["config"]["distribution"] == "half_uniform"
        first = run.events[0]
        total = sum(x.numel for x in run.layers)
        for x in run.layers:  # uniform: every layer at the global density, within one entry
            assert abs(first["nnz"][x.name] / x.numel - 0.3) <= 1 / x.numel + 1e-9, x.name
        assert sum(first["nnz"].values()) == round(0.3 * total)
    finally:
        METHODS.pop("wired", None)
        DISTRIBUTIONS.pop("half_uniform", None)


def test_a_shipped_config_by_name_and_the_list(capsys):
    from masktopo.cli.main import main

    assert main(["train", "--list-configs"]) == 0
    listing = capsys.readouterr().out
    assert "gap_fmnist_lenet300" in listing and "repro/e3_gmp_lenet300" in listing
    for name in ("gap_fmnist_lenet300", "gap_fmnist_lenet300.toml", "configs/gap_fmnist_lenet300"):
        assert main(["train", "--config", name, "--print-config"]) == 0
        out = capsys.readouterr().out
        assert 'method = "gap"' in out and "partitions = 3" in out
    assert main(["train", "--config", "gap_fmnist_lenet30", "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("masktopo train: error: argument --config: gap_fmnist_lenet30: no such file, "
                   "nor a shipped config of that name (did you mean 'gap_fmnist_lenet300'?); "
                   "--list-configs lists them")  # fmt: skip
