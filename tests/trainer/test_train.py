"""End-to-end training: real data, real models, the run directory, resume, DDP and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import masktopo
from masktopo import runs, store
from masktopo.errors import MaskFileError, MaskTopoError
from masktopo.trainer import TrainConfig, TrainingError, resume_config, train
from masktopo.trainer.loop import CHECKPOINT_FILE, CRASH_ENV
from masktopo.trainer.session import mask_checksum as _mask_checksum

FMNIST = Path("/usr/share/datasets/fashion-mnist")
ROOT = Path(__file__).resolve().parents[2]

#: A small but real setup: the Cubist Spiral (50k generated points) with its 2-16-16-16-1 MLP.
SPIRAL = dict(model="spiral-mlp", dataset="cubist-spiral", batch_size=1000, lr=0.05,
              val_fraction=0.1, optimizer="adamw", weight_decay=0.0)  # fmt: skip


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["MASKTOPO_WORKERS"] = "1"
    return env


def _masktopo(*args, env=None, check=True):
    cmd = [sys.executable, "-m", "masktopo", *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env or _env(), timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST (dataset-fashion-mnist) missing")
def test_short_fashion_mnist_training_learns_and_its_masks_analyze(tmp_path):
    cfg = TrainConfig(method="set", model="lenet300", dataset="fashion-mnist", density=0.05,
                      epochs=1, max_steps=200, update_interval=50, lr=0.05)  # fmt: skip
    res = train(cfg, tmp_path / "run")
    assert res.final["val_acc"] > 0.70  # chance is 0.10
    assert res.final["test_acc"] > 0.70
    run = runs.read_run(tmp_path / "run")
    kinds = [e["kind"] for e in run.events]
    assert kinds[0] == "init" and kinds[-1] == "final" and kinds.count("update") == 4
    total = sum(math_prod(x.shape) for x in run.layers)
    for ev in run.events:  # exact counts after every event
        assert sum(ev["nnz"].values()) == round(0.05 * total)
    final = masktopo.load(tmp_path / "run")
    assert final.has_weights
    for name, w in final.weights.items():
        assert not w[~final[name]].any()
    df = masktopo.analysis.analyze(final)
    assert len(df) == 3 and df["mu0"].notna().all()
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["config"]["method"] == "set" and meta["config"]["growth"] == "random"
    assert [d["name"] for d in meta["layers"]] == list(final.keys())
    assert meta["versions"]["torch"] == torch.__version__


def math_prod(shape):
    out = 1
    for s in shape:
        out *= s
    return out


@pytest.mark.parametrize("method", ["rigl", "granet"])
def test_kill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, method):
    extra = {"rigl": ["--update-interval", "15"],
             "granet": ["--update-interval", "15", "--set", "prune_end=0.6"]}[method]  # fmt: skip
    args = ["train", "--method", method, "--model", "spiral-mlp", "--dataset", "cubist-spiral",
            "--density", "0.3", "--epochs", "3", "--batch-size", "1000", "--lr", "0.05",
            "--optimizer", "adamw", "--set", "weight_decay=0.0", *extra]  # fmt: skip
    _masktopo(*args, "--out", tmp_path / "whole")
    env = _env()
    spe = json.loads((tmp_path / "whole" / "run.json").read_text())["steps_per_epoch"]
    assert spe == 44  # 44,984 training points after the 10% validation split, batch 1000
    env[CRASH_ENV] = "70"  # dies in the middle of epoch 2
    p = _masktopo(*args, "--out", tmp_path / "cut", env=env, check=False)
    assert p.returncode == 137
    ck = torch.load(tmp_path / "cut" / CHECKPOINT_FILE, weights_only=True)
    assert ck["step"] == spe and ck["epoch"] == 1
    assert runs.read_run(tmp_path / "cut").events[-1]["step"] > spe  # events after the checkpoint
    _masktopo("train", "--resume", tmp_path / "cut")
    a, b = runs.read_run(tmp_path / "whole"), runs.read_run(tmp_path / "cut")
    strip = [{k: v for k, v in e.items() if k not in ("seconds",)} for e in a.events]
    assert [{k: v for k, v in e.items() if k != "seconds"} for e in b.events] == strip
    fa, fb = a.load(), b.load()
    for name in fa:
        assert torch.equal(fa[name], fb[name])
        assert torch.equal(fa.weights[name], fb.weights[name])
    for k in range(a.n_events):
        ma, mb = a.load(k, weights=False), b.load(k, weights=False)
        assert all(torch.equal(ma[n], mb[n]) for n in ma)


def test_resume_refuses_other_settings_and_bad_checkpoints(tmp_path):
    cfg = TrainConfig(method="static", density=0.2, epochs=1, **SPIRAL)
    train(cfg, tmp_path / "r")
    with pytest.raises(MaskFileError, match="other settings: density"):
        resume_config(tmp_path / "r", density=0.5)
    again = resume_config(tmp_path / "r", max_steps=3)
    assert again.density == 0.2 and again.max_steps == 3
    ck = tmp_path / "r" / CHECKPOINT_FILE
    ck.write_bytes(ck.read_bytes()[:1000])  # truncated
    with pytest.raises(MaskFileError, match="truncated or corrupt checkpoint"):
        train(resume_config(tmp_path / "r"), tmp_path / "r", resume=True)
    with pytest.raises(MaskFileError, match="already holds a training run"):
        train(cfg, tmp_path / "r")
    with pytest.raises(MaskFileError, match=r"no run\.json"):
        train(cfg, tmp_path / "empty", resume=True)


def test_full_disk_while_dumping_leaves_the_run_consistent(tmp_path, monkeypatch):
    from masktopo.runs import writer as writer_module

    real_save = writer_module.save_kept
    calls = {"n": 0}

    def save(path, ms, values):
        calls["n"] += 1
        if calls["n"] >= 3:  # init and the first update succeed
            raise MaskFileError(path, "cannot write ([Errno 28] No space left on device)")
        return real_save(path, ms, values)

    monkeypatch.setattr(writer_module, "save_kept", save)
    cfg = TrainConfig(method="set", density=0.3, epochs=2, update_interval=10, **SPIRAL)
    with pytest.raises(MaskFileError, match="No space left"):
        train(cfg, tmp_path / "r")
    run = runs.read_run(tmp_path / "r")
    assert run.n_events == 2
    for k in range(2):
        run.load(k)  # every recorded event is complete
    assert not list((tmp_path / "r" / "masks").glob(".*tmp"))


def test_nan_loss_is_a_clear_error(tmp_path):
    cfg = TrainConfig(method="static", density=0.5, epochs=1, **{**SPIRAL, "lr": 1e30,
                      "optimizer": "sgd", "nesterov": False, "momentum": 0.0})  # fmt: skip
    with pytest.raises(TrainingError, match="training loss is"):
        train(cfg, tmp_path / "r")
    run = runs.read_run(tmp_path / "r")
    assert run.events[0]["kind"] == "init"


def test_static_trains_a_mask_file_with_its_weights(tmp_path):
    from masktopo.zoo import get_model, maskable_parameters

    model = get_model("spiral-mlp", dataset="cubist-spiral")
    params = maskable_parameters(model)
    g = torch.Generator().manual_seed(3)
    masks = {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in params.items()}
    weights = {n: torch.randn(p.shape, generator=g) * masks[n] for n, p in params.items()}
    store.save(tmp_path / "m.safetensors", masktopo.MaskSet(masks, weights=weights))
    cfg = TrainConfig(method="static", init_masks=str(tmp_path / "m.safetensors"),
                      density=0.5, epochs=1, max_steps=1, **SPIRAL)  # fmt: skip
    train(cfg, tmp_path / "r")
    init = masktopo.load(tmp_path / "r", event=0)
    for n in masks:
        assert torch.equal(init[n], masks[n])
        assert torch.equal(init.weights[n], weights[n])
    # the command line: the file's density, not a --density that would be ignored
    args = ["train", "--method", "static", "--init-masks", tmp_path / "m.safetensors",
            "--model", "spiral-mlp", "--dataset", "cubist-spiral", "--epochs", "1",
            "--max-steps", "1", "--batch-size", "1000"]  # fmt: skip
    p = _masktopo(*args, "--density", "0.2", "--out", tmp_path / "c1", check=False)
    assert p.returncode == 2 and "drop density (--density)" in p.stderr
    assert not (tmp_path / "c1").exists()
    p = _masktopo(*args, "--out", tmp_path / "c2")
    assert "(the masks of --init-masks)" in p.stdout


def test_mask_file_for_another_model_is_refused(tmp_path):
    ms = masktopo.MaskSet({"conv1.weight": torch.ones(4, 3, 3, 3, dtype=torch.bool)})
    store.save(tmp_path / "m.safetensors", ms)
    cfg = TrainConfig(method="static", init_masks=str(tmp_path / "m.safetensors"), density=0.5,
                      epochs=1, **SPIRAL)  # fmt: skip
    with pytest.raises(MaskTopoError, match=r"conv1\.weight"):
        train(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_mask_checksum_tells_masks_apart():
    a = {"x": torch.tensor([[True, False], [False, True]])}
    b = {"x": torch.tensor([[False, True], [True, False]])}
    assert not torch.equal(_mask_checksum(a), _mask_checksum(b))
    assert torch.equal(_mask_checksum(a), _mask_checksum({"x": a["x"].clone()}))


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_torchrun_two_processes_keep_masks_identical(tmp_path):
    """Two gloo processes: the loop compares mask checksums across ranks after every event."""
    args = ["--standalone", "--nproc_per_node=2", "-m", "masktopo", "train", "--method", "rigl", "--model",
            "spiral-mlp", "--dataset", "cubist-spiral", "--density", "0.3", "--epochs", "1",
            "--batch-size", "1000", "--update-interval", "10", "--out", str(tmp_path / "ddp")]  # fmt: skip
    p = subprocess.run([shutil.which("torchrun"), *args], capture_output=True, text=True,
                       env=_env(), timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    run = runs.read_run(tmp_path / "ddp")
    assert run.config["world_size"] == 2
    kinds = [e["kind"] for e in run.events]
    assert kinds.count("update") >= 2 and kinds[-1] == "final"
    total = sum(math_prod(x.shape) for x in run.layers)
    assert all(sum(e["nnz"].values()) == round(0.3 * total) for e in run.events)


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path):
    cases = [
        (["--method", "sparse"], "unknown method 'sparse'; known:"),
        (["--model", "resnet99"], "unknown model"),
        (["--density", "1.5"], "density must be in"),
        (["--density", "0.5", "--epochs", "0"], "epochs must be >= 1"),
        (["--method", "itop", "--update-interval", "0"], "update_interval must be >= 1"),
        (["--set", "lr_rate=1"], "unknown --set field 'lr_rate'"),
        (["--dataset", "cifar10", "--data-dir", str(tmp_path / "none"), "--model", "resnet20"],
         "no such folder"),
    ]  # fmt: skip
    for i, (args, message) in enumerate(cases):
        out = tmp_path / f"o{i}"
        p = _masktopo("train", *args, "--out", out, check=False)
        assert p.returncode == 2, (args, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, p.stderr)
        assert not out.exists(), args


def test_pags_warm_start_from_a_short_dense_training(tmp_path):
    """PAGS's "warm start after a few hundred dense steps": `masktopo train --method dense
    --max-steps K` then `masktopo pags --warm-start RUN/checkpoint.pt` scores on those weights."""
    _masktopo("train", "--method", "dense", "--density", "1", "--model", "spiral-mlp",
              "--dataset", "cubist-spiral", "--epochs", "1", "--max-steps", "20",
              "--batch-size", "500", "--out", tmp_path / "warm")  # fmt: skip
    summary = json.loads((tmp_path / "warm" / "summary.json").read_text())
    assert (
        summary["steps"] == 20 and summary["final"]["train_loss"] == summary["final"]["train_loss"]
    )
    _masktopo("pags", "--model", "spiral-mlp", "--dataset", "cubist-spiral", "--method", "erk",
              "--density", "0.3", "--n", "2", "--warm-start", tmp_path / "warm" / "checkpoint.pt",
              "--out", tmp_path / "pags")  # fmt: skip
    trained = masktopo.load(tmp_path / "warm")  # the dense run's final weights (all-ones masks)
    best = masktopo.load(tmp_path / "pags" / "best.safetensors")
    for name, mask in best.items():
        assert mask.any()
        assert torch.equal(best.weights[name][mask], trained.weights[name][mask])


def test_weights_diverging_before_a_mask_update_is_a_training_error(tmp_path):
    cfg = TrainConfig(method="set", density=0.3, epochs=1, update_interval=10, **SPIRAL)

    def poison(step, info):
        if step == 5:
            from masktopo.zoo import maskable_parameters

            model = info.get("model")
            assert model is not None
            with torch.no_grad():
                next(iter(maskable_parameters(model).values())).fill_(float("nan"))

    with pytest.raises(TrainingError, match="NaN or infinite before the mask update at step 10"):
        train(cfg, tmp_path / "r", callback=poison)
    assert runs.read_run(tmp_path / "r").events[0]["kind"] == "init"
