"""Gradual CHITA as a trainer method (``masktopo train --method chita``)."""

from __future__ import annotations

import pytest
import torch
from _data import needs_fmnist

from masktopo.errors import MaskValidationError
from masktopo.pai.densities import keep_count
from masktopo.runs import read_run
from masktopo.trainer.config import TrainConfig, resolve
from masktopo.trainer.loop import train
from masktopo.trainer.methods import METHODS, Chita


def test_chita_is_registered_with_its_defaults():
    assert METHODS["chita"] is Chita
    cfg = resolve(TrainConfig(method="chita", density=0.1))
    assert cfg.chita_solver == "chita" and cfg.chita_samples == 500 and cfg.chita_stages == 4
    with pytest.raises(MaskValidationError, match="chita_samples is not used by method 'gmp'"):
        resolve(TrainConfig(method="gmp", density=0.1, chita_samples=10))


@needs_fmnist
def test_gradual_chita_prunes_on_the_cubic_schedule(tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(method="chita", model="mlpnet", dataset="fashion-mnist", density=0.1,
                      epochs=1, max_steps=50, update_interval=20, prune_end=0.1,
                      chita_samples=24, chita_batch=2, chita_stages=2, device="cpu")  # fmt: skip
    with pytest.warns(UserWarning, match="all-zero column in G"):  # 48 samples: some inputs 0
        res = train(cfg, out)
    run = read_run(out)
    kinds = [e["kind"] for e in run.events]
    assert kinds == ["init", "prune", "prune", "final"]
    p = 32360
    first, second = run.events[1], run.events[2]
    assert first["step"] == 20 and second["step"] == 40  # 1-based counts of steps 19 and 39
    assert first["target_density"] == pytest.approx(0.1 + 0.9 * 0.5**3)
    assert second["target_density"] == pytest.approx(0.1)
    for e in (first, second):
        assert sum(e["nnz"].values()) == keep_count(e["target_density"], p)
        assert e["stages"] == 2 and e["objective"] >= 0
    final = run.load(None)
    assert final.nnz() == keep_count(0.1, p) and res.density == pytest.approx(final.density())
    for name, w in final.weights.items():  # fine-tuned under the mask: zero where it is
        assert not bool((w[~final[name]] != 0).any())
    assert torch.isfinite(torch.tensor(res.final["test_acc"]))


@needs_fmnist
def test_gradual_chita_can_keep_zero_columns(tmp_path):
    import warnings

    cfg = TrainConfig(method="chita", model="mlpnet", dataset="fashion-mnist", density=0.1,
                      epochs=1, max_steps=25, update_interval=20, prune_end=0.1,
                      chita_samples=24, chita_batch=2, chita_stages=1, device="cpu",
                      chita_keep_zero_columns=True)  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="chita: .* all-zero column")
        train(cfg, tmp_path / "run")
    event = read_run(tmp_path / "run").events[1]
    assert sum(event["nnz"].values()) == keep_count(event["target_density"], 32360)


def test_gradual_chita_restarts_the_lr_after_every_prune_event():
    """The reference re-starts a cosine LR for every fine-tuning interval (chita_restart, on by
    default); off, one schedule spans the run."""
    from masktopo.trainer.loop import lr_at

    cfg = resolve(TrainConfig(method="chita", density=0.1, update_interval=20, prune_end=0.5,
                              lr_schedule="cosine", lr=0.1))  # fmt: skip
    assert cfg.chita_restart is True
    method = Chita(cfg, steps_per_epoch=10, total_steps=100, device="cpu")
    assert method.events == [19, 39]
    pos = [method.lr_position(t) for t in (0, 19, 20, 39, 40, 99)]
    assert pos == [(0, 20), (19, 20), (0, 20), (19, 20), (0, 60), (59, 60)]
    rates = [lr_at(cfg, *method.lr_position(t), 10) for t in range(100)]
    assert rates[0] == rates[20] == rates[40] == pytest.approx(0.1)  # a restart after each event
    assert rates[19] < 0.002 and rates[39] < 0.002 and rates[99] < 1e-4
    off = Chita(resolve(cfg.replace(chita_restart=False)), steps_per_epoch=10, total_steps=100,
                device="cpu")  # fmt: skip
    assert [off.lr_position(t) for t in (0, 20, 99)] == [(0, 100), (20, 100), (99, 100)]


def test_gradual_chita_draws_from_the_training_split_and_checks_its_size_at_start(tmp_path):
    """The gradient samples come from the split the model trains on (not the held-out
    validation part), and asking for more than it holds fails before anything is written
    (it failed at the first prune event), also in a sweep's cell check."""
    from masktopo.distributed import World
    from masktopo.errors import MaskValidationError
    from masktopo.trainer.config import resolve
    from masktopo.trainer.loop import _Data, check_schedule
    from masktopo.trainer.methods import METHODS

    cfg = resolve(TrainConfig(method="chita", model="spiral-mlp", dataset="cubist-spiral",
                              density=0.3, epochs=1, update_interval=50, chita_samples=8,
                              chita_batch=2))  # fmt: skip
    data = _Data(cfg, torch.device("cpu"), World())
    method = METHODS["chita"](cfg, steps_per_epoch=data.steps_per_epoch,
                              total_steps=data.steps_per_epoch, device="cpu")  # fmt: skip
    mine = method._train_data()
    assert len(mine) == len(data.train) < 50_000  # the validation part carved out
    assert torch.equal(mine.data, data.train.data) and torch.equal(mine.targets,
                                                                  data.train.targets)  # fmt: skip
    big = resolve(TrainConfig(method="chita", model="spiral-mlp", dataset="cubist-spiral",
                              density=0.3, epochs=1, update_interval=50, chita_samples=30_000,
                              chita_batch=2))  # fmt: skip
    msg = rf"chita_samples x chita_batch = 60000 is more than the {len(data.train)} training"
    with pytest.raises(MaskValidationError, match=msg):
        check_schedule(big)
    with pytest.raises(MaskValidationError, match=msg):
        train(big, tmp_path / "run")
    assert not any((tmp_path / "run").glob("events.jsonl"))  # no event was recorded
