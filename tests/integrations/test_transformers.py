"""masktopo.integrations.transformers: MaskTopoCallback in a real transformers Trainer (CPU,
a 2-layer GPT-2 built from its config)."""

from __future__ import annotations

import importlib
import sys

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from masktopo import runs
from masktopo.errors import MaskValidationError
from masktopo.integrations.transformers import MaskTopoCallback
from masktopo.trainer.core import start_counts

CONV1D = [f"transformer.h.{i}.{m}.weight" for i in range(2)
          for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread (much faster than two on a loaded two-core machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class Tokens(torch.utils.data.Dataset):
    """Random token ids; the labels are the inputs (causal LM)."""

    def __init__(self, n: int = 64, length: int = 16):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 64, (n, length), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=64, n_positions=32,
                     bos_token_id=0, eos_token_id=0)  # fmt: skip
    return GPT2LMHeadModel(cfg)


def _train(tmp_path, cb, **kw) -> Trainer:
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), per_device_train_batch_size=4,
                             report_to=[], save_strategy="no", logging_steps=5, use_cpu=True,
                             disable_tqdm=True, learning_rate=1e-3, seed=0,
                             **kw)  # fmt: skip
    trainer = Trainer(model=_gpt2(), args=args, train_dataset=Tokens(), callbacks=[cb])
    trainer.train()
    return trainer


def _assert_model_is_masked(run, model):
    last = run.load(-1, weights=False)
    params = dict(model.named_parameters())
    for n in CONV1D:
        owner, _, attr = n.rpartition(".")
        assert torch.equal(model.get_submodule(owner).get_buffer(attr + "_mask"), last[n]), n
        assert not bool(params[n].detach()[~last[n]].any()), n  # masked weights are zero


def test_gmp_masks_the_gpt2_conv1d_layers_and_reaches_its_density(tmp_path):
    cb = MaskTopoCallback("gmp", tmp_path / "r", density=0.2, update_interval=4, prune_end=0.6)
    trainer = _train(tmp_path, cb, max_steps=20)
    run = runs.read_run(tmp_path / "r")
    assert run.kind == "loop"
    # the attention/MLP Conv1D weights; not the embeddings nor the head tied to them
    assert [la.name for la in run.layers] == CONV1D
    assert [(e["kind"], e["step"]) for e in run.events] == [
        ("init", 0), ("prune", 4), ("prune", 8), ("prune", 12), ("final", 20)
    ]  # fmt: skip
    assert run.config["total_steps"] == 20 and run.config["steps_per_epoch"] == 16
    n = sum(int(torch.tensor(la.shape).prod()) for la in run.layers)
    assert run.events[0]["density"] == 1.0
    assert run.events[-1]["density"] == round(0.2 * n) / n
    assert [e["density"] for e in run.events] == sorted((e["density"] for e in run.events),
                                                        reverse=True)  # fmt: skip
    assert isinstance(run.events[-1]["train_loss"], float)  # from state.log_history
    assert run.events[-1]["epoch"] == 20 / 16  # the run's column, not the Trainer's log's
    _assert_model_is_masked(run, trainer.model)
    assert trainer.model.lm_head.weight is trainer.model.transformer.wte.weight
    assert bool((trainer.model.transformer.wte.weight != 0).all())  # dense


def test_rigl_with_gradient_accumulation_keeps_counts_and_reads_gradients(tmp_path):
    # RigL's growth reads p.grad: sp.step() must run before the Trainer's zero_grad
    cb = MaskTopoCallback("rigl", tmp_path / "r", density=0.3, update_interval=3)
    trainer = _train(tmp_path, cb, max_steps=12, gradient_accumulation_steps=2)
    assert trainer.state.global_step == 12 and cb.sparsifier.steps == 12
    run = runs.read_run(tmp_path / "r")
    assert run.config["steps_per_epoch"] == 8  # 16 batches, 2 per optimizer step
    # updates after steps 3, 6, 9 (< update_end 0.75 of 12)
    assert [(e["kind"], e["step"]) for e in run.events] == [
        ("init", 0), ("update", 3), ("update", 6), ("update", 9), ("final", 12)
    ]  # fmt: skip
    want = start_counts({la.name: la.shape for la in run.layers}, 0.3, "erk")
    for e in run.events:
        assert e["nnz"] == want, e["event"]
    assert run.load(0, weights=False) != run.load(-1, weights=False)  # the masks moved
    _assert_model_is_masked(run, trainer.model)


def test_a_resumed_training_is_refused(tmp_path):
    cb = MaskTopoCallback("itop", tmp_path / "r", density=0.3, update_interval=3)
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), report_to=[], use_cpu=True)
    model = _gpt2()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = TrainerState(global_step=5, max_steps=20)
    with pytest.raises(MaskValidationError, match=r"resuming .* is not supported"):
        cb.on_train_begin(args, state, TrainerControl(), model=model, optimizer=opt)
    assert not (tmp_path / "r").exists()


def test_bad_options_are_refused_at_construction(tmp_path):
    with pytest.raises(MaskValidationError, match="'bogus' is not a sparsify option"):
        MaskTopoCallback("gmp", tmp_path / "r", density=0.2, bogus=1)
    with pytest.raises(MaskValidationError, match="needs density="):
        MaskTopoCallback("gmp", tmp_path / "r")
    # total_steps=0 fell back to the trainer's count; these failed only when training began
    for bad, message in (
        (dict(total_steps=0), "total_steps must be a positive integer, got 0"),
        (dict(steps_per_epoch="x"), "steps_per_epoch must be a positive integer, got 'x'"),
        (dict(example_inputs=[1, 2]), "example_inputs must be a tensor"),
    ):
        with pytest.raises(MaskValidationError, match=message):
            MaskTopoCallback("gmp", tmp_path / "r", density=0.2, **bad)


def test_without_transformers_the_import_error_says_what_to_install(monkeypatch):
    for name in [m for m in sys.modules if m == "transformers" or m.startswith("transformers.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.delitem(sys.modules, "masktopo.integrations.transformers")
    with pytest.raises(ImportError, match=r"pip install masktopo\[transformers\]"):
        importlib.import_module("masktopo.integrations.transformers")
