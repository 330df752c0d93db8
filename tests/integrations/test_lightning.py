"""masktopo.integrations.lightning: MaskTopoCallback in a real Lightning Trainer (CPU, tiny MLP)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

pytest.importorskip("lightning")

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from masktopo import runs
from masktopo.errors import MaskValidationError
from masktopo.integrations.lightning import MaskTopoCallback
from masktopo.maskable import find_maskable
from masktopo.trainer.core import start_counts

LAYERS = ["net.0.weight", "net.2.weight", "net.4.weight"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread (much faster than two on a loaded two-core machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class MLP(pl.LightningModule):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def _loader(batches: int = 10, batch: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batches * batch, 16, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


def _trainer(callbacks, **kw) -> pl.Trainer:
    kw = {"enable_checkpointing": False, **kw}
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0,
                      callbacks=callbacks, **kw)  # fmt: skip


def _assert_counts_kept(run, model, density):
    shapes = {n: tuple(p.shape) for n, p in find_maskable(model).items()}
    want = start_counts(shapes, density, "erk")
    for e in run.events:
        assert e["nnz"] == want, e["event"]
        ms = run.load(e["event"], weights=False)
        assert {n: int(ms[n].sum()) for n in ms} == want, e["event"]


def _assert_model_is_masked(run, model):
    last = run.load(-1, weights=False)
    for n, p in find_maskable(model).items():
        owner, _, attr = n.rpartition(".")
        buf = model.get_submodule(owner).get_buffer(attr + "_mask")
        assert torch.equal(buf, last[n]), n
        assert not bool(p.detach()[~last[n]].any()), n  # masked weights are zero


def test_rigl_in_a_trainer_records_its_schedule_with_exact_counts(tmp_path):
    model = MLP()
    cb = MaskTopoCallback("rigl", tmp_path / "r", density=0.2, update_interval=5, seed=1)
    _trainer([cb], max_steps=30).fit(model, _loader())
    run = runs.read_run(tmp_path / "r")
    assert run.kind == "loop" and [la.name for la in run.layers] == LAYERS
    assert run.config["total_steps"] == 30 and run.config["steps_per_epoch"] == 10
    # RigL: updates after steps 5, 10, ... before update_end = 0.75 of the run
    assert [(e["kind"], e["step"]) for e in run.events] == [
        ("init", 0), ("update", 5), ("update", 10), ("update", 15), ("update", 20), ("final", 30)
    ]  # fmt: skip
    assert [e["epoch"] for e in run.events] == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]
    _assert_counts_kept(run, model, 0.2)
    _assert_model_is_masked(run, model)
    final = run.events[-1]
    assert isinstance(final["train_loss"], float)  # trainer.callback_metrics
    assert run.summary()["steps"] == 30 and cb.sparsifier.steps == 30
    # the optimizer's step is unwrapped again after finish
    opt = model.trainer.optimizers[0]
    assert opt.step.__func__ is torch.optim.SGD.step


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    model = MLP()
    cb = MaskTopoCallback("itop", tmp_path / "r", density=0.3, update_interval=4)
    trainer = _trainer([cb], max_epochs=2, accumulate_grad_batches=2)
    trainer.fit(model, _loader(batches=9))  # 4 full windows and a last half one per epoch
    run = runs.read_run(tmp_path / "r")
    assert trainer.global_step == 10 and cb.sparsifier.steps == 10
    assert run.config["total_steps"] == 10 and run.config["steps_per_epoch"] == 5
    assert [(e["kind"], e["step"]) for e in run.events] == [
        ("init", 0), ("update", 4), ("update", 8), ("final", 10)
    ]  # fmt: skip
    assert [e["epoch"] for e in run.events] == [0.0, 0.8, 1.6, 2.0]
    _assert_counts_kept(run, model, 0.3)
    _assert_model_is_masked(run, model)


class _Crash(pl.Callback):
    """Raise after optimizer step ``at`` (after MaskTopoCallback's step for it)."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:
            raise RuntimeError("crash")


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_resume_from_a_lightning_checkpoint_equals_an_unbroken_run(tmp_path):
    opts = {"density": 0.25, "update_interval": 4, "seed": 3}
    model = MLP()
    _trainer([MaskTopoCallback("rigl", tmp_path / "a", **opts)], max_steps=30).fit(model, _loader())

    # b: a checkpoint after step 10 (the last batch of epoch 0), a crash after step 17. (Lightning
    # resumes a checkpoint saved at on_train_epoch_end with one batch too many; not this one.)
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=10,
                                        save_top_k=-1)  # fmt: skip
    cb = MaskTopoCallback("rigl", tmp_path / "b", **opts)
    trainer = _trainer([cb, _Crash(17), ckpt], max_steps=30, enable_checkpointing=True)
    with pytest.raises(RuntimeError, match="crash"):
        trainer.fit(MLP(), _loader())
    first = tmp_path / "ck" / "epoch=0-step=10.ckpt"
    saved = torch.load(first, weights_only=False)
    assert "net.0.weight_mask" in saved["state_dict"]  # the masks travel with the module
    assert saved["callbacks"]["MaskTopoCallback"]["sparsify"]["steps"] == 10
    assert runs.read_run(tmp_path / "b").events[-1]["step"] == 16  # events past the checkpoint
    assert "on_load_checkpoint" not in vars(trainer.lightning_module)  # hook removed

    # resume into b: another initialisation, restored from the checkpoint (strict loading)
    model = MLP(seed=5)
    cb = MaskTopoCallback("rigl", tmp_path / "b", **opts)
    _trainer([cb], max_steps=30).fit(model, _loader(), ckpt_path=first)
    a, b = runs.read_run(tmp_path / "a"), runs.read_run(tmp_path / "b")
    assert [(e["kind"], e["step"]) for e in a.events] == [(e["kind"], e["step"]) for e in b.events]
    assert b.summary()["steps"] == 30
    for k in range(a.n_events):
        ma, mb = a.load(k), b.load(k)
        for n in ma:
            assert torch.equal(ma[n], mb[n]), (k, n)
            assert torch.equal(ma.weights[n], mb.weights[n]), (k, n)
    _assert_model_is_masked(b, model)


def test_bad_options_are_refused_at_construction(tmp_path):
    with pytest.raises(MaskValidationError, match="'bogus' is not a sparsify option"):
        MaskTopoCallback("rigl", tmp_path / "r", density=0.2, bogus=1)
    with pytest.raises(MaskValidationError, match="resume="):
        MaskTopoCallback("rigl", tmp_path / "r", density=0.2, resume=True)
    with pytest.raises(MaskValidationError, match="needs density="):
        MaskTopoCallback("rigl", tmp_path / "r")
    # total_steps=0 fell back to the trainer's count; these failed only when training began
    for bad, message in (
        (dict(total_steps=0), "total_steps must be a positive integer, got 0"),
        (dict(steps_per_epoch="x"), "steps_per_epoch must be a positive integer, got 'x'"),
        (dict(example_inputs=[1, 2]), "example_inputs must be a tensor"),
    ):
        with pytest.raises(MaskValidationError, match=message):
            MaskTopoCallback("rigl", tmp_path / "r", density=0.2, **bad)
    assert not (tmp_path / "r").exists()
    assert MaskTopoCallback("dense", None).options == {"density": 1.0}


def test_without_lightning_the_import_error_says_what_to_install(monkeypatch):
    for name in [m for m in sys.modules if m == "lightning" or m.startswith("lightning.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.delitem(sys.modules, "masktopo.integrations.lightning")
    with pytest.raises(ImportError, match=r"pip install masktopo\[lightning\]"):
        importlib.import_module("masktopo.integrations.lightning")


def test_the_package_imports_neither_library():
    code = (
        "import sys, masktopo.integrations; "
        "assert 'lightning' not in sys.modules and 'transformers' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('lightning', 'transformers')))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
