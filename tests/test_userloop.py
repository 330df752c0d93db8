"""masktopo.sparsify and masktopo.record in a hand-written loop (masktopo/userloop.py)."""

from __future__ import annotations

import gc
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import masktopo
from masktopo import runs
from masktopo.errors import MaskFileError, MaskValidationError, UnknownNameError
from masktopo.maskable import find_maskable
from masktopo.trainer.core import start_counts


class ConvAttnMLP(nn.Module):
    """A custom model with a conv stem, self-attention and an MLP head (plus embedding, norm)."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.pos = nn.Embedding(16, 8)
        self.conv = nn.Conv1d(3, 8, 3, padding=1)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8 * 16, 32)
        self.fc2 = nn.Linear(32, classes)

    def forward(self, x):  # x: (B, 3, 16)
        h = self.conv(x).transpose(1, 2) + self.pos.weight
        a, _ = self.attn(h, h, h, need_weights=False)
        h = self.norm(h + a).flatten(1)
        return self.fc2(F.relu(self.fc1(h)))


def _data(n: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, generator=g)
    y = (x[:, 0].sum(1) > 0).long() + 2 * (x[:, 1].sum(1) > 0).long()
    return x, y


def _loop(model, opt, sp, steps: int, seed: int = 0, batch: int = 16, start: int = 0):
    x, y = _data(256, seed)
    for i in range(start, steps):
        j = (i * batch) % len(x)
        loss = F.cross_entropy(model(x[j : j + batch]), y[j : j + batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sp.step()


def _model(seed: int = 0) -> ConvAttnMLP:
    torch.manual_seed(seed)
    return ConvAttnMLP()


# -- maskable layers -------------------------------------------------------------------------------
def test_find_maskable_takes_conv_attention_and_linear_but_not_embeddings_or_norms():
    m = _model()
    assert list(find_maskable(m)) == [
        "conv.weight", "attn.in_proj_weight", "attn.out_proj.weight", "fc1.weight", "fc2.weight"
    ]  # fmt: skip
    assert list(find_maskable(m, exclude="attn.*")) == ["conv.weight", "fc1.weight", "fc2.weight"]
    assert list(find_maskable(m, layers=["fc*", "pos.*"])) == ["pos.weight", "fc1.weight",
                                                               "fc2.weight"]  # fmt: skip
    assert list(find_maskable(m, last_dense=True))[-1] == "fc1.weight"


def test_a_head_tied_to_the_embedding_stays_dense():
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.mid = nn.Linear(4, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.emb.weight

    assert list(find_maskable(LM())) == ["mid.weight"]


# -- sparsify: a custom model ------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["itop", "rigl", "set"])
def test_constant_count_methods_keep_exact_counts_at_every_event(tmp_path, method):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = masktopo.sparsify(model, opt, method=method, density=0.2, total_steps=40,
                           update_interval=5, out=tmp_path / "r")  # fmt: skip
    _loop(model, opt, sp, 40)
    sp.finish(metrics={"test_acc": 0.5})
    run = runs.read_run(tmp_path / "r")
    assert run.kind == "loop"
    shapes = {n: tuple(p.shape) for n, p in find_maskable(model).items()}
    want = start_counts(shapes, 0.2, "erk")
    kinds = [e["kind"] for e in run.events]
    assert kinds[0] == "init" and kinds[-1] == "final" and kinds.count("update") >= 3
    for e in run.events:
        assert e["nnz"] == want, e["event"]
        ms = run.load(e["event"])
        assert {n: int(ms[n].sum()) for n in ms} == want
    # the live model: masked weights are zero, the final event is the model's masks
    last = run.load(-1)
    for n, p in find_maskable(model).items():
        assert torch.equal(p.detach() != 0, (p.detach() != 0) & last[n])
    assert run.events[-1]["test_acc"] == 0.5 and run.events[-1]["step"] == 40


def test_gmp_reaches_the_exact_target_count(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sp = masktopo.sparsify(model, opt, method="gmp", density=0.1, total_steps=30,
                           update_interval=5, prune_end=0.7, out=tmp_path / "r")  # fmt: skip
    _loop(model, opt, sp, 30)
    sp.finish()
    run = runs.read_run(tmp_path / "r")
    total = sum(p.numel() for p in find_maskable(model).values())
    assert sum(run.events[-1]["nnz"].values()) == round(0.1 * total)
    prunes = [e for e in run.events if e["kind"] == "prune"]
    assert len(prunes) == 4
    nnz = [sum(e["nnz"].values()) for e in prunes]
    assert nnz == sorted(nnz, reverse=True)


def test_adam_moments_are_masked_with_mask_adam():
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sp = masktopo.sparsify(model, opt, method="static", density=0.3, total_steps=5, mask_adam=True)
    _loop(model, opt, sp, 5)
    for n, p in find_maskable(model).items():
        m = sp.session.masking.masks[n]
        st = opt.state[p]
        assert not bool(st["exp_avg"][~m].any()) and not bool(st["exp_avg_sq"][~m].any()), n


def test_the_run_is_read_by_analyze_plot_and_report(tmp_path):
    from masktopo.cli.main import main

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sp = masktopo.sparsify(model, opt, method="itop", density=0.3, total_steps=10,
                           update_interval=5, out=tmp_path / "r")  # fmt: skip
    _loop(model, opt, sp, 10)
    sp.finish()
    run = runs.read_run(tmp_path / "r")
    # MultiheadAttention is not traceable by torch.fx: the run says why it has no layer graph
    assert run.config["graph"] is None and "traced" in run.config["graph_error"]
    assert main(["analyze", str(tmp_path / "r"), "--format", "csv", "--out",
                 str(tmp_path / "t.csv")]) == 0  # fmt: skip
    assert "attn.in_proj_weight" in (tmp_path / "t.csv").read_text()
    assert main(["plot", str(tmp_path / "r"), "--out", str(tmp_path / "figs")]) == 0
    assert list((tmp_path / "figs").glob("*.png"))
    assert main(["report", str(tmp_path / "r"), "--out", str(tmp_path / "rep.html")]) == 0
    assert "could not be traced" in (tmp_path / "rep.html").read_text()


def test_a_traceable_model_gets_its_layer_graph_from_the_first_forward(tmp_path):
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = masktopo.sparsify(model, opt, method="static", density=0.5, total_steps=3,
                           out=tmp_path / "r")  # fmt: skip
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    for _ in range(3):
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sp.step()
    sp.finish()
    graph = runs.read_run(tmp_path / "r").config["graph"]
    assert graph["in_shape"] == [6] and [e["name"] for e in graph["layers"]] == ["0.weight",
                                                                                 "2.weight"]  # fmt: skip


# -- the same core as masktopo train --------------------------------------------------------------
@pytest.mark.parametrize("method,extra", [("rigl", {"update_interval": 4}),
                                          ("granet", {"update_interval": 4, "prune_end": 0.6})])  # fmt: skip
def test_sparsify_equals_masktopo_train_on_a_zoo_model(tmp_path, method, extra):
    from masktopo.distributed import World
    from masktopo.seeding import generator
    from masktopo.trainer import TrainConfig, resolve, train
    from masktopo.trainer.loop import _Data, lr_at
    from masktopo.zoo import get_model

    cfg = resolve(TrainConfig(method=method, model="spiral-mlp", dataset="cubist-spiral",
                              density=0.3, epochs=1, max_steps=24, batch_size=2000,
                              device="cpu", seed=5, **extra))  # fmt: skip
    train(cfg, tmp_path / "train")
    data = _Data(cfg, torch.device("cpu"), World())
    spe = data.steps_per_epoch
    model = get_model(cfg.model, dataset=data.spec, generator=generator(cfg.seed, "model"))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                          weight_decay=cfg.weight_decay)  # fmt: skip
    sp = masktopo.sparsify(model, opt, method=method, density=0.3, seed=5, total_steps=spe,
                           steps_per_epoch=spe, out=tmp_path / "mine", **extra)  # fmt: skip
    for i, (x, y) in enumerate(data.epoch_batches(0)):
        if i == 24:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, i, spe, spe)
        loss = data.spec.loss_fn(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sp.step()
    sp.finish()
    a, b = runs.read_run(tmp_path / "train"), runs.read_run(tmp_path / "mine")
    assert [e["kind"] for e in a.events] == [e["kind"] for e in b.events]
    assert len(a.events) >= 5
    for k in range(a.n_events):
        ma, mb = a.load(k), b.load(k)
        for n in ma:
            assert torch.equal(ma[n], mb[n]), (k, n)
            assert torch.equal(ma.weights[n], mb.weights[n]), (k, n)


# -- the loop's variants ---------------------------------------------------------------------------
def test_gradient_accumulation_counts_optimizer_steps():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sp = masktopo.sparsify(model, opt, method="itop", density=0.3, total_steps=10,
                           update_interval=2)  # fmt: skip
    x, y = _data(64)
    counted = []
    for i in range(20):
        F.cross_entropy(model(x[i : i + 8]), y[i : i + 8]).backward()
        if i % 2 == 1:
            opt.step()
            opt.zero_grad()
        counted.append(sp.step())
    assert counted == [False, True] * 10 and sp.steps == 10
    assert sp.n_events == 1 + 4  # init + updates after steps 2, 4, 6, 8 (none after the last)


def test_a_step_the_grad_scaler_skips_is_no_iteration():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    sp = masktopo.sparsify(model, opt, method="itop", density=0.3, total_steps=10,
                           update_interval=3)  # fmt: skip
    x, y = _data(32)
    counted = []
    for i in range(4):
        loss = F.cross_entropy(model(x[:8]), y[:8])
        if i == 1:
            loss = loss * float("inf")  # inf gradients: the scaler skips this step
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        counted.append(sp.step())
    assert counted == [True, False, True, True] and sp.steps == 3
    assert sp.n_events == 2  # init and the update after the third real step


def test_rigl_skips_the_parameter_update_on_its_update_steps():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = masktopo.sparsify(model, opt, method="rigl", density=0.3, total_steps=20,
                           update_interval=4)  # fmt: skip
    x, y = _data(32)
    bias = model.fc2.bias
    for i in range(5):
        before = bias.detach().clone()
        opt.zero_grad()
        F.cross_entropy(model(x[:8]), y[:8]).backward()
        opt.step()
        sp.step()
        # step 3 (0-based) is RigL's first update step: no optimizer step there
        assert torch.equal(bias, before) == (i == 3), i
    sp.finish()
    assert opt.step.__func__ is torch.optim.SGD.step  # the wrapper is gone after finish


def test_gradient_growth_after_zero_grad_says_where_to_call_step():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = masktopo.sparsify(model, opt, method="rigl", density=0.3, total_steps=20,
                           update_interval=2)  # fmt: skip
    x, y = _data(32)
    with pytest.raises(MaskValidationError, match=r"before optimizer.zero_grad\(\)"):
        for _ in range(2):
            F.cross_entropy(model(x[:8]), y[:8]).backward()
            opt.step()
            opt.zero_grad()
            sp.step()


def test_gradient_growth_on_a_frozen_layer_names_the_layer():
    # the message said to move sp.step(), which was where it belonged
    model = _model()
    model.fc1.weight.requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = masktopo.sparsify(model, opt, method="rigl", density=0.3, total_steps=20,
                           update_interval=2)  # fmt: skip
    x, y = _data(32)
    with pytest.raises(MaskValidationError, match=r"layer 'fc1\.weight' is frozen") as e:
        for _ in range(2):
            opt.zero_grad()
            F.cross_entropy(model(x[:8]), y[:8]).backward()
            opt.step()
            sp.step()
    assert "zero_grad" not in str(e.value)


def test_a_compiled_model_is_looked_through(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    compiled = torch.compile(model, backend="eager")
    sp = masktopo.sparsify(compiled, opt, method="set", density=0.3, total_steps=6,
                           update_interval=2, out=tmp_path / "r")  # fmt: skip
    _loop(compiled, opt, sp, 6)
    sp.finish()
    run = runs.read_run(tmp_path / "r")
    assert run.layers[0].name == "conv.weight"  # no "_orig_mod." prefix
    assert sp.density == pytest.approx(0.3, abs=1e-3)


# -- resume from the user's checkpoint ------------------------------------------------------------
def test_resume_from_the_users_checkpoint_equals_an_unbroken_run(tmp_path):
    def setup(out, resume=False):
        model = _model(1)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sp = masktopo.sparsify(model, opt, method="itop", density=0.25, total_steps=30,
                               update_interval=4, seed=2, out=out, resume=resume)  # fmt: skip
        return model, opt, sp

    model, opt, sp = setup(tmp_path / "a")
    _loop(model, opt, sp, 30)
    sp.finish()

    model, opt, sp = setup(tmp_path / "b")
    _loop(model, opt, sp, 14)
    ckpt = {"model": model.state_dict(), "opt": opt.state_dict(), "sp": sp.state_dict()}
    torch.save(ckpt, tmp_path / "ckpt.pt")
    _loop(model, opt, sp, 19, start=14)  # events after the checkpoint, then a "crash"
    sp.session.writer.flush()
    del sp, opt, model  # a "crash": the unfinished run's lock goes with its objects
    gc.collect()

    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    model, opt, sp = setup(tmp_path / "b", resume=True)
    with pytest.raises(MaskValidationError, match="load_state_dict"):
        sp.step()
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    sp.load_state_dict(ckpt["sp"])
    _loop(model, opt, sp, 30, start=14)
    sp.finish()
    a, b = runs.read_run(tmp_path / "a"), runs.read_run(tmp_path / "b")
    assert (tmp_path / "a" / "events.jsonl").read_text().count("\n") == a.n_events
    assert [e["step"] for e in a.events] == [e["step"] for e in b.events]
    for k in range(a.n_events):
        ma, mb = a.load(k), b.load(k)
        for n in ma:
            assert torch.equal(ma[n], mb[n]) and torch.equal(ma.weights[n], mb.weights[n])


def test_resume_with_other_settings_is_refused(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sp = masktopo.sparsify(model, opt, method="itop", density=0.25, total_steps=8,
                           update_interval=4, out=tmp_path / "r")  # fmt: skip
    sp.finish()
    with pytest.raises(MaskFileError, match=r"density=0\.5 \(run: 0\.25\)"):
        masktopo.sparsify(model, opt, method="itop", density=0.5, total_steps=8,
                          update_interval=4, out=tmp_path / "r", resume=True)  # fmt: skip


# -- bad input ---------------------------------------------------------------------------------
def test_bad_input_gives_one_line_errors_and_writes_nothing(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    out = tmp_path / "r"
    cases = [
        (dict(model=nn.Sequential(nn.ReLU(), nn.LayerNorm(3))), "has no maskable layer"),
        (
            dict(optimizer=torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)),
            "the optimizer does not hold the model's parameter 'conv.weight'",
        ),
        (dict(density=1.5), "density must be in"),
        (dict(density=0.0), "density"),
        (dict(lr=0.1), "'lr' is not a sparsify option"),
        (dict(growth="gradient", method="gmp"), "growth is not used by method 'gmp'"),
        (dict(method="sparse"), "unknown method 'sparse'"),
        (dict(total_steps=0), "total_steps must be a positive integer"),
        (dict(total_steps=np.float64(10)), "total_steps must be a positive integer"),
        (dict(total_steps=True), "total_steps must be a positive integer"),
    ]
    for change, message in cases:
        kw = {"model": model, "optimizer": opt, "method": "itop", "density": 0.3,
              "total_steps": 10, "out": out, **change}  # fmt: skip
        args = (kw.pop("model"), kw.pop("optimizer"))
        with pytest.raises((MaskValidationError, UnknownNameError), match=message) as e:
            masktopo.sparsify(*args, **kw)
        assert "\n" not in str(e.value)
        assert not out.exists(), change
    assert opt.step.__func__ is torch.optim.SGD.step


def test_step_counts_may_be_numpy_integers(tmp_path):
    """A count taken from an array (``len`` of one, a numpy scalar) is an integer too; the run
    records plain ints."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sp = masktopo.sparsify(model, opt, method="static", density=0.3, total_steps=np.int64(3),
                           steps_per_epoch=np.int32(3), out=tmp_path / "r")  # fmt: skip
    assert sp.total_steps == 3 and type(sp.total_steps) is int
    sp.finish()
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert json.dumps(run)  # plain JSON numbers


def test_step_after_finish_and_finish_twice_are_errors():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sp = masktopo.sparsify(model, opt, method="static", density=0.3, total_steps=3)
    sp.finish()
    with pytest.raises(MaskValidationError, match=r"step\(\) after finish\(\)"):
        sp.step()
    with pytest.raises(MaskValidationError, match="already called"):
        sp.finish()
    with pytest.raises(MaskValidationError, match="must be a number"):
        masktopo.sparsify(model, torch.optim.SGD(model.parameters(), lr=0.1), method="static",
                          density=0.3, total_steps=3).finish(metrics={"acc": "high"})  # fmt: skip


def test_a_taken_run_directory_is_refused(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    masktopo.sparsify(model, opt, method="static", density=0.3, total_steps=3,
                      out=tmp_path / "r").finish()  # fmt: skip
    with pytest.raises(MaskFileError, match="already holds a own-loop run"):
        masktopo.sparsify(model, opt, method="static", density=0.3, total_steps=3,
                          out=tmp_path / "r")  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # the method's own checks run once the folder is made: it is removed again
        (dict(method="rigl", update_interval=100), "no mask update in 10 steps"),
        (dict(method="static", init_method="snip"), "pass batches="),
        (dict(method="static", init_method="snip", batches=[1, 2]), "an .inputs, targets. pair"),
        (dict(example_inputs=[[1.0] * 16]), "example_inputs must be a tensor"),
    ],
)
def test_a_failed_start_leaves_out_as_it_was_and_free_for_a_retry(tmp_path, change, message):
    out = tmp_path / "new" / "r"
    for where in (out, tmp_path / "empty"):
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        if where.name == "empty":
            where.mkdir()
        kw = {"method": "itop", "density": 0.3, "total_steps": 10, "out": where, **change}
        with pytest.raises(MaskValidationError, match=message) as e:
            masktopo.sparsify(model, opt, **kw)
        assert "\n" not in str(e.value)
        if where.name == "empty":  # an empty folder given stays, empty
            assert list(where.iterdir()) == []
        else:  # no run.json, lock or folder of the failed call
            assert not (tmp_path / "new").exists()
        assert "step" not in opt.__dict__
        assert not model._forward_pre_hooks
        masktopo.sparsify(model, opt, method="static", density=0.3, total_steps=3,
                          out=where).finish()  # fmt: skip


def test_non_finite_weights_are_refused_before_anything_is_written(tmp_path):
    model = _model()
    with torch.no_grad():
        model.fc1.weight[0, :3] = float("nan")
    before = model.fc1.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(MaskValidationError, match=r"parameter 'fc1\.weight' has 3 NaN or infinite"):
        masktopo.sparsify(model, opt, method="rigl", density=0.3, total_steps=10,
                          update_interval=2, out=tmp_path / "r")  # fmt: skip
    assert not (tmp_path / "r").exists()
    assert torch.equal(model.fc1.weight.isnan(), before.isnan())  # not masked, not zeroed
    with pytest.raises(MaskValidationError, match=r"record: parameter 'fc1\.weight' has 3 NaN"):
        masktopo.record(model, tmp_path / "r2")
    assert not (tmp_path / "r2").exists()


# -- record ----------------------------------------------------------------------------------------
def test_record_a_torch_nn_utils_prune_loop(tmp_path):
    import torch.nn.utils.prune as prune

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    rec = masktopo.record(model, tmp_path / "r", every=5)
    x, y = _data(64)
    seen = []
    for i in range(15):
        if i % 5 == 0:
            for mod in (model.conv, model.fc1, model.fc2):
                prune.l1_unstructured(mod, "weight", amount=0.3)
        loss = F.cross_entropy(model(x[:16]), y[:16])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if rec.step():
            seen.append({n: model.get_submodule(n.rsplit(".", 1)[0]).weight_mask.bool().clone()
                         for n in ("conv.weight", "fc1.weight", "fc2.weight")})  # fmt: skip
    rec.finish(metrics={"test_acc": 0.25})
    run = runs.read_run(tmp_path / "r")
    assert [e["kind"] for e in run.events] == ["init", "update", "update", "update", "final"]
    for k, masks in enumerate(seen, start=1):
        ms = run.load(k)
        for n, m in masks.items():
            assert torch.equal(ms[n], m)
    # attention weights are not pruned: their mask is their nonzeros (all kept)
    assert run.load(-1)["attn.in_proj_weight"].all()
    first = run.load(0)  # before any pruning: dense
    assert all(bool(first[n].all()) for n in first)
    assert math.isclose(
        run.events[-1]["nnz"]["fc1.weight"], round(model.fc1.weight.numel() * 0.7**3), abs_tol=2
    )


def test_record_torch_ao_parametrized_sparsity(tmp_path):
    from torch.ao.pruning import WeightNormSparsifier

    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    sparsifier = WeightNormSparsifier(sparsity_level=0.5, sparse_block_shape=(1, 4),
                                      zeros_per_block=4)  # fmt: skip
    sparsifier.prepare(model, [{"tensor_fqn": "0.weight"}, {"tensor_fqn": "2.weight"}])
    sparsifier.step()
    rec = masktopo.record(model, tmp_path / "r", mask="parametrize")
    rec.finish()
    ms = runs.read_run(tmp_path / "r").load(0)
    assert list(ms) == ["0.weight", "2.weight"]
    assert torch.equal(ms["0.weight"], model[0].parametrizations.weight[0].mask.bool())
    assert 0.4 <= ms.density() <= 0.6


def test_record_nonzero_and_its_errors(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight[0] = 0
    rec = masktopo.record(model, tmp_path / "r", mask="nonzero", every=2)
    assert [rec.step() for _ in range(4)] == [False, True, False, True]
    rec.finish()
    assert runs.read_run(tmp_path / "r").events[0]["nnz"] == {"0.weight": 12, "1.weight": 8}
    with pytest.raises(UnknownNameError, match="unknown mask source 'zeros'"):
        masktopo.record(model, None, mask="zeros")
    with pytest.raises(MaskValidationError, match="no layer with a prune mask"):
        masktopo.record(model, None, mask="prune")
    with pytest.raises(MaskValidationError, match="every must be a positive integer"):
        masktopo.record(model, None, every=0)
    with pytest.raises(MaskValidationError, match=r"step\(\) after finish"):
        rec.step()
    with pytest.raises(MaskValidationError, match=r"record: model must be a torch\.nn\.Module"):
        masktopo.record(None, None)
    with pytest.raises(MaskValidationError, match="record: example_inputs must be a tensor"):
        masktopo.record(model, None, example_inputs=[1.0, 2.0, 3.0, 4.0])
    rec = masktopo.record(model, tmp_path / "r3")
    with pytest.raises(MaskValidationError, match="snapshot kind must be a non-empty string"):
        rec.snapshot(kind=5)  # events.jsonl would get a line its reader skips
    rec.finish()
    assert runs.read_run(tmp_path / "r3").n_events == 2


_DDP_SCRIPT = """
import sys, torch, torch.distributed as dist, torch.nn.functional as F
from torch import nn
import masktopo
import masktopo.distributed
dist.init_process_group("gloo")
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
ddp = nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
sp = masktopo.sparsify(ddp, opt, method="rigl", density=0.3, total_steps=20, update_interval=4,
                       out=sys.argv[1])
g = torch.Generator().manual_seed(1)
x, y = torch.randn(20, 16, 6, generator=g), torch.randint(0, 3, (20, 16), generator=g)
r, w = dist.get_rank(), dist.get_world_size()
for i in range(20):
    opt.zero_grad()
    F.cross_entropy(ddp(x[i, r::w]), y[i, r::w]).backward()
    opt.step()
    sp.step()
sp.finish()
with open(sys.argv[1] + f".nnz{r}", "w") as f:  # a file per rank: a shared pipe can interleave
    f.write(str(sum(sp.nnz().values())))
dist.destroy_process_group()
# gloo's threads can abort a process at interpreter exit (1 run in 5 on a busy machine)
masktopo.distributed.exit_process(0)
"""


def test_ddp_under_torchrun_keeps_masks_identical_and_rank0_writes(tmp_path):
    import os
    import subprocess

    script = tmp_path / "ddp_loop.py"
    script.write_text(_DDP_SCRIPT)
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}  # fmt: skip
    import sys

    # torchrun of this interpreter (its console script may belong to another Python on PATH)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", str(script),
                        str(tmp_path / "r")], capture_output=True, text=True, env=env,
                       timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    run = runs.read_run(tmp_path / "r")
    assert run.config["world_size"] == 2
    kinds = [e["kind"] for e in run.events]
    assert kinds.count("update") == 3 and kinds[-1] == "final"  # RigL stops at 75 %
    nnz = [(tmp_path / f"r.nnz{i}").read_text() for i in (0, 1)]  # both ranks end with the same
    assert nnz[0] == nnz[1]  # masks (checked at every event by an all-gather of checksums)


def test_fsdp2_sharded_parameters_are_refused_in_one_line(tmp_path):
    import torch.distributed as dist

    fsdp = pytest.importorskip("torch.distributed.fsdp")
    if not hasattr(fsdp, "fully_shard"):
        pytest.skip("this torch has no FSDP2 (torch.distributed.fsdp.fully_shard)")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)  # fmt: skip
    try:
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
        fsdp.fully_shard(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with pytest.raises(MaskValidationError, match=r"'0.weight' is a sharded DTensor \(FSDP2"):
            masktopo.sparsify(model, opt, method="static", density=0.5, total_steps=3,
                              out=tmp_path / "r")  # fmt: skip
        assert not (tmp_path / "r").exists()
    finally:
        dist.destroy_process_group()


def test_static_on_layers_chosen_by_name_uses_exact_random_counts():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = masktopo.sparsify(model, opt, method="static", density=0.3, total_steps=3,
                           layers=["fc*"], init_method="uniform")  # fmt: skip
    assert sp.nnz() == {"fc1.weight": round(0.3 * 4096), "fc2.weight": round(0.3 * 128)}
    with pytest.raises(MaskValidationError, match="already serves another sparsify run"):
        masktopo.sparsify(model, opt, method="static", density=0.3, total_steps=3)
    sp.finish()
    with pytest.raises(MaskValidationError, match="on layers chosen by name use random"):
        masktopo.sparsify(model, opt, method="static", density=0.3, total_steps=3,
                          layers=["fc*"], init_method="snip")  # fmt: skip


def test_close_keeps_the_run_resumable_in_the_same_process(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    kw = {"method": "itop", "density": 0.25, "total_steps": 8, "update_interval": 2}
    sp = masktopo.sparsify(model, opt, out=tmp_path / "r", **kw)
    _loop(model, opt, sp, 3)
    state = sp.state_dict()
    sp.close()  # a crash: no final event, the lock released, optimizer.step restored
    assert opt.step.__func__ is torch.optim.SGD.step
    with pytest.raises(
        MaskFileError, match="pass resume=True to continue it, or choose another out"
    ):
        masktopo.sparsify(model, opt, out=tmp_path / "r", **kw)
    with pytest.raises(MaskFileError, match=r"density=0\.5 \(run: 0\.25\); none may change"):
        masktopo.sparsify(model, opt, out=tmp_path / "r", resume=True, **{**kw, "density": 0.5})
    sp = masktopo.sparsify(model, opt, out=tmp_path / "r", resume=True, **kw)  # lock free again
    sp.load_state_dict(state)
    _loop(model, opt, sp, 8, start=3)
    sp.finish()
    kinds = [e["kind"] for e in runs.read_run(tmp_path / "r").events]
    assert kinds == ["init", "update", "update", "update", "final"]


def test_dense_needs_no_density_and_metrics_may_not_shadow_event_fields(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sp = masktopo.sparsify(model, opt, method="dense", total_steps=2, out=tmp_path / "r")
    assert sp.density == 1.0 and sp.session.masking is None
    with pytest.raises(MaskValidationError, match="metric 'epoch' is the name of an event field"):
        sp.finish(metrics={"epoch": 3.0})


@pytest.mark.parametrize("scheduler_first", [True, False])
def test_lr_schedulers_made_before_or_after_sparsify_work_without_warnings(scheduler_first):
    import warnings

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (torch's "optimizer.step() overridden") fails
        if scheduler_first:
            sched = torch.optim.lr_scheduler.StepLR(opt, 2)
        sp = masktopo.sparsify(model, opt, method="rigl", density=0.3, total_steps=8,
                               update_interval=2)  # fmt: skip
        if not scheduler_first:
            sched = torch.optim.lr_scheduler.StepLR(opt, 2)
        x, y = _data(32)
        for _ in range(6):
            opt.zero_grad()
            F.cross_entropy(model(x[:8]), y[:8]).backward()
            opt.step()
            sp.step()
            sched.step()
        assert sp.steps == 6 and sp.n_events == 4  # init + RigL updates after steps 2, 4, 6
        with pytest.raises(MaskValidationError, match="already serves another sparsify run"):
            masktopo.sparsify(model, opt, method="static", density=0.3, total_steps=3)
        sp.finish()
        opt.step()  # after finish: a plain step (a later scheduler's wrapper stays in front)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.1**3)
    if scheduler_first:  # our wrapper is gone, the scheduler's is back
        assert getattr(opt.step, "_wrapped_by_lr_sched", False)
        assert not hasattr(opt.step, "_masktopo_sparsify")


def test_gap_in_your_own_loop_needs_steps_per_epoch():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(MaskValidationError, match="pass steps_per_epoch="):
        masktopo.sparsify(model, opt, method="gap", density=0.2, partitions=2, step_epochs=1.0,
                          total_steps=25)  # fmt: skip


@pytest.mark.parametrize("mode", ["cyclic", "parallel"])
def test_gap_runs_in_your_own_loop(tmp_path, mode):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = masktopo.sparsify(model, opt, method="gap", gap_mode=mode, density=0.2, partitions=2,
                           step_epochs=1.0, cycles=2, finetune_epochs=1.0, total_steps=25,
                           steps_per_epoch=5, out=tmp_path / "r")  # fmt: skip
    _loop(model, opt, sp, 25)
    sp.finish()
    run = runs.read_run(tmp_path / "r")
    kinds = [e["kind"] for e in run.events]
    if mode == "cyclic":
        assert kinds == ["init", "prune", "grow", "prune", "grow", "prune", "grow", "prune",
                         "final"]  # fmt: skip
    else:
        assert kinds == ["init", "grow", "prune", "grow", "grow", "prune", "final"]
    counts = start_counts({n: tuple(p.shape) for n, p in find_maskable(model).items()}, 0.2,
                          "uniform")  # fmt: skip
    assert run.events[-1]["nnz"] == counts
