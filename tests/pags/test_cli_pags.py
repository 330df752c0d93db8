"""``masktopo pags``: a small real run, --list-methods, --help cost, bad input (exit 2, no files)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import masktopo
from masktopo.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
BASE = ["pags", "--model", "lenet300", "--dataset", "mnist", "--method", "erk"]


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_small_run_writes_every_output_and_resumes(tmp_path, capsys):
    out = tmp_path / "p"
    argv = [*BASE, "--density", "0.05", "--n", "6", "--chunk", "3", "--snapshot-every", "2",
            "--out", str(out)]  # fmt: skip
    rc, text, err = _run(capsys, *argv)
    assert rc == 0, err
    assert "best: network score" in text
    best = masktopo.load(out / "best.safetensors")
    assert best.has_weights and best.nnz() == masktopo.load(out / "base.safetensors").nnz()
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == "lenet300" and run["config"]["n"] == 6
    rc, _, err = _run(capsys, *argv)
    assert rc == 2 and "--resume" in err
    rc, _, err = _run(capsys, *argv[:-2], "--n", "8", "--out", str(out), "--resume")
    assert rc == 0, err
    import pandas as pd

    assert list(pd.read_parquet(out / "candidates.parquet")["t"]) == list(range(9))


def test_list_methods(capsys):
    rc, out, _ = _run(capsys, "pags", "--list-methods")
    assert rc == 0 and "snip" in out and "synflow" in out and "data-free" in out


def test_help_explains_parameters_without_torch(tmp_path):
    code = ("import sys; from cli.main import main; rc = main(['pags', '--help']); "
            "print('TORCH' if 'torch' in sys.modules else 'NOTORCH')")  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.stdout.strip().endswith("NOTORCH"), proc.stdout + proc.stderr
    for flag in ("--n N", "--iters", "--snapshot-every", "--sampler", "--selection", "--repair",
                 "--warm-start", "--resume", "--list-methods", "--batch-size", "--seed"):  # fmt: skip
        assert flag in proc.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "nope", "--dataset", "mnist"], "unknown model 'nope'; known: lenet300"),
        (["--model", "lenet300", "--dataset", "nope"], "unknown dataset 'nope'; known: cifar10"),
        (["--model", "lenet300", "--dataset", "mnist", "--method", "nope"],
         "unknown PaI method 'nope'; known: er, erk"),
        (["--model", "lenet300", "--dataset", "mnist", "--density", "0"], "density must be in"),
        (["--model", "lenet300", "--dataset", "mnist", "--density", "1.01"], "density must be in"),
        (["--model", "lenet300", "--dataset", "mnist", "--n", "0"],
         "--n/--candidates: n must be >= 1, got 0"),
        (["--model", "lenet300", "--dataset", "mnist", "--candidates", "0"],
         "--n/--candidates: n must be >= 1, got 0"),
        (["--model", "lenet300", "--dataset", "mnist", "--sampler", "nope"],
         "--sampler: unknown sampler 'nope'; known: rescore, rewire"),
        (["--model", "lenet300", "--dataset", "mnist", "--method", "snip", "--data-dir", "EMPTY"],
         "no mnist file"),
    ],
)  # fmt: skip
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    argv = [a.replace("EMPTY", str(tmp_path / "empty")) for a in argv]
    if "--density" not in argv:
        argv += ["--density", "0.1"]
    out = tmp_path / "out"
    rc, _, err = _run(capsys, "pags", *argv, "--out", str(out))
    assert rc == 2
    assert err.startswith("masktopo: error: ") and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_warm_start_for_another_model(tmp_path, capsys):
    from masktopo import zoo

    ckpt = tmp_path / "lenet5.pt"
    torch.save({"state_dict": zoo.get_model("lenet5").state_dict()}, ckpt)
    out = tmp_path / "out"
    rc, _, err = _run(capsys, *BASE, "--density", "0.1", "--warm-start", str(ckpt),
                      "--out", str(out))  # fmt: skip
    assert rc == 2 and "is not a checkpoint of model 'lenet300'" in err and err.count("\n") == 1
    assert not out.exists()
    good = tmp_path / "lenet300.pt"
    model = zoo.get_model("lenet300", dataset="mnist")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    torch.save({"model": model.state_dict()}, good)
    rc, _, err = _run(capsys, *BASE, "--density", "0.1", "--n", "2", "--warm-start", str(good),
                      "--out", str(out))  # fmt: skip
    assert rc == 0, err
    best = masktopo.load(out / "best.safetensors")
    name = next(iter(best))
    assert torch.equal(best.weights[name], dict(model.named_parameters())[name].detach())


def test_warm_start_with_nan_weights_names_the_checkpoint(tmp_path, capsys):
    from masktopo import zoo

    model = zoo.get_model("lenet300", dataset="mnist")
    state = model.state_dict()
    state["fc2.weight"][0, 0] = float("nan")
    state["fc3.bias"][1] = float("inf")
    ckpt = tmp_path / "diverged.pt"
    torch.save(state, ckpt)
    out = tmp_path / "out"
    rc, _, err = _run(capsys, *BASE, "--density", "0.1", "--warm-start", str(ckpt),
                      "--out", str(out))  # fmt: skip
    assert rc == 2 and err.count("\n") == 1
    assert f"{ckpt}: holds NaN or inf values in fc2.weight, fc3.bias" in err
    assert not out.exists()


def test_synflow_runs_data_free_with_the_dataset_input_shape(tmp_path, capsys):
    # SynFlow needs only the dataset's input shape (no files) and re-scores perturbed weights.
    out = tmp_path / "sf"
    rc, _, err = _run(capsys, "pags", "--model", "mlpnet", "--dataset", "fashion-mnist",
                      "--data-dir", str(tmp_path / "nothing-here"), "--method", "synflow",
                      "--density", "0.1", "--n", "2", "--out", str(out))  # fmt: skip
    assert rc == 0, err
    base = masktopo.load(out / "base.safetensors")
    assert base.nnz() == round(0.1 * base.numel())  # exact; the layer-wise best may drift (A11)
    assert abs(masktopo.load(out / "best.safetensors").density() - 0.1) < 0.01


def test_random_methods_are_redrawn_without_weight_noise():
    from masktopo.pags.sampling import RescoreSource

    calls = []

    def perturb(model, generator):
        calls.append(1)
        return model

    model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    erk = RescoreSource(model, "erk", 0.3, seed=0, perturb=perturb)
    a, b = erk(1), erk(2)
    assert not calls and not a.equal(b, weights=False)
    RescoreSource(model, "synflow", 0.3, seed=0, perturb=perturb, prune_kwargs={"in_shape": (8,)})(
        1
    )
    assert calls == [1]
