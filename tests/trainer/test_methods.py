"""The methods over real zoo models and real optimizer steps: exact counts at every event,
schedules, regrowth semantics, R_s, resume."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch
from _sparse_toys import make_run

from masktopo import MaskSet, save
from masktopo.errors import MaskFileError, MaskValidationError
from masktopo.pai import layer_counts, layer_densities
from masktopo.trainer import config as config_mod
from masktopo.trainer.config import TrainConfig, resolve
from masktopo.trainer.masking import Masking
from masktopo.trainer.methods import METHODS, Sparsifier, make_sparsifier
from masktopo.trainer.schedules import cosine_rate, cubic_density, prune_events
from masktopo.zoo import get_model, maskable_parameters

pytestmark = pytest.mark.usefixtures("one_thread")


def keep_count(d, n):
    """Kept entries at density d of n: round(d n), the count ERK starts and GMP ends at."""
    return round(d * n)


def _shapes(run):
    return {n: tuple(p.shape) for n, p in run.masking.params.items()}


def _numel(run):
    return sum(p.numel() for p in run.masking.params.values())


def test_registry_covers_the_config_methods():
    assert set(METHODS) == set(config_mod.METHODS)
    assert all(issubclass(c, Sparsifier) and c.name == n for n, c in METHODS.items())
    sp = make_sparsifier(TrainConfig(method="set", update_interval=10), steps_per_epoch=5,
                         total_steps=50, device="cpu")  # fmt: skip
    assert type(sp) is METHODS["set"] and sp.cfg.resolved
    with pytest.raises(MaskValidationError, match="total_steps"):
        make_sparsifier(TrainConfig(method="set"), steps_per_epoch=5, total_steps=0, device="cpu")


@pytest.mark.parametrize(
    ("method", "fields"),
    [
        ("set", {}),
        ("itop", {"growth": "gradient"}),
        ("itop", {"growth": "momentum", "drop": "set"}),
        ("itop", {"growth": "random_unfired", "distribution": "uniform"}),
        ("rigl", {}),
    ],
)
def test_dst_keeps_exact_layer_counts_and_rs_grows(method, fields):
    run = make_run(method, model="lenet5", update_interval=5, total_steps=36, density=0.05,
                   **fields)  # fmt: skip
    fired = {n: m.clone() for n, m in run.masking.masks.items()}
    run.train()
    shapes = _shapes(run)
    dist = run.cfg.distribution
    start = layer_counts(shapes, layer_densities(shapes, 0.05, dist))
    assert sum(start.values()) == keep_count(0.05, _numel(run))
    updates = [e for e in run.events if e["kind"] == "update"]
    expected = [s for s in range(36) if run.sparsifier.is_update(s)]
    assert [e["step"] for e in updates] == expected and expected
    r_s = []
    for e in run.events:
        assert e["nnz"] == start  # exact per-layer counts after every event
        assert e["drop"] == e["grow"]
        assert e["rate"] == pytest.approx(run.sparsifier.rate_at(e["step"]))
        for n, m in e["masks"].items():  # masked weights are zero in the recorded state
            assert bool((e["weights"][n][~m] == 0).all())
        for n in fired:
            fired[n] |= e["masks"][n]
        # R_s is the union of the start mask and every mask since, over all maskable entries.
        assert e["R_s"] == sum(int(f.sum()) for f in fired.values()) / _numel(run)
        r_s.append(e["R_s"])
    assert all(a <= b for a, b in itertools.pairwise(r_s))  # R_s non-decreasing
    assert 0.05 < r_s[-1] <= 1.0 and r_s[-1] > r_s[0]
    assert run.sparsifier.scalars()["R_s"] == r_s[-1]
    # Drop counts follow p_t: ceil (ITOP/SET) or floor (RigL) of p_t a_l.
    rounding = math.floor if method == "rigl" else math.ceil
    for e in updates:
        for n, k in e["drop"].items():
            assert k == min(start[n], rounding(round(e["rate"] * start[n], 9)))


def test_rigl_stops_at_update_end_and_skips_the_step():
    run = make_run("rigl", update_interval=4, total_steps=40)
    sp = run.sparsifier
    updates = [s for s in range(40) if sp.is_update(s)]
    assert updates == [3, 7, 11, 15, 19, 23, 27]  # step < 0.75 * 40 = 30
    assert [s for s in range(40) if sp.skip_step(s)] == updates
    # Its rate is alpha/2 (1 + cos(pi t / T_end)), 0.3 at t = 0.
    assert sp.rate_at(14) == pytest.approx(0.15 * (1 + math.cos(math.pi * 15 / 30)))
    run.train()
    assert [e["step"] for e in run.events] == updates
    # ITOP never skips and never stops (except after the last step).
    itop = make_run("itop", update_interval=4, total_steps=40).sparsifier
    assert not any(itop.skip_step(s) for s in range(40))
    assert [s for s in range(40) if itop.is_update(s)] == list(range(3, 39, 4))


def test_skipped_step_leaves_the_weights_alone():
    run = make_run("rigl", update_interval=4, total_steps=20)
    run.train(3)  # steps 0..2
    before = {n: p.detach().clone() for n, p in run.masking.params.items()}
    run.train(4)  # step 3 is an update step: no optimizer step, only the mask update
    (event,) = run.events
    for n, p in run.masking.params.items():
        kept = event["masks"][n]
        assert torch.equal(p[kept], torch.where(kept, before[n], 0)[kept])


def _linear_run(weights, grads, **fields):
    """An update on one hand-made layer: Linear(6, 1) with given weights and gradient."""
    net = torch.nn.Sequential(torch.nn.Linear(6, 1, bias=False))
    cfg = resolve(TrainConfig(method="itop", growth="gradient", update_interval=1, rate=0.25,
                              rate_min=0.25, **fields))  # fmt: skip
    sp = make_sparsifier(cfg, steps_per_epoch=10, total_steps=10, device="cpu")
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([weights]))
    mask = torch.tensor([[w != 0 for w in weights]])
    masking = Masking(net, {"0.weight": mask})
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(1, 6)).sum().backward()
    opt.step()  # create momentum buffers everywhere
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([weights]))
        opt.state[net[0].weight]["momentum_buffer"].fill_(1.0)
    masking.apply(opt)
    net[0].weight.grad = torch.tensor([grads])
    events = []
    sp.update(0, masking, opt, lambda kind, **s: events.append((kind, s)))
    return net[0].weight.detach()[0], opt.state[net[0].weight]["momentum_buffer"][0], events


def test_regrowth_semantics():
    w0 = [5.0, 4.0, 0.01, 3.0, 0.0, 0.0]  # 4 active; rate 0.25 -> drop 1 (the 0.01)
    # The top |g| is at an empty position: grown there at 0 with zero momentum; 0.01 is gone.
    w, mom, events = _linear_run(w0, [0.0, 0.0, 0.5, 0.0, 2.0, 1.0])
    assert w.tolist() == [5.0, 4.0, 0.0, 3.0, 0.0, 0.0]
    assert mom.tolist() == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    assert events[0][0] == "update" and events[0][1]["drop"] == {"0.weight": 1}
    assert events[0][1]["R_s"] == pytest.approx(5 / 6)
    # The top |g| is at the just-dropped weight: regrown, it keeps its value (and momentum).
    w, mom, _ = _linear_run(w0, [0.0, 0.0, 9.0, 0.0, 2.0, 1.0])
    assert w.tolist() == pytest.approx([5.0, 4.0, 0.01, 3.0, 0.0, 0.0])
    assert mom.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    # reinit_when_same: a weight dropped and regrown in the same update restarts at 0.
    w, mom, _ = _linear_run(w0, [0.0, 0.0, 9.0, 0.0, 2.0, 1.0], reinit_when_same=True)
    assert w.tolist() == [5.0, 4.0, 0.0, 3.0, 0.0, 0.0]
    assert mom.tolist() == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]


def test_grown_weights_start_at_zero_in_real_training():
    run = make_run("set", model="lenet5", update_interval=6, total_steps=13)
    run.train(5)
    before = {n: m.clone() for n, m in run.masking.masks.items()}
    run.train(6)
    (event,) = run.events
    for n, m in event["masks"].items():
        new = m & ~before[n]
        assert bool(new.any()) == (not bool(m.all()))  # an ERK-dense layer has no room
        assert bool((event["weights"][n][new] == 0).all())


def _check_gmp_events(run, d_i, scope):
    total_n = _numel(run)
    shapes = _shapes(run)
    prunes = [e for e in run.events if e["kind"] == "prune"]
    events = prune_events(run.total_steps, run.cfg.update_interval, run.cfg.prune_start,
                          run.cfg.prune_end)  # fmt: skip
    assert [e["step"] for e in prunes] == events
    start = None
    if d_i < 1:
        start = layer_densities(shapes, d_i, run.cfg.distribution)
    prev = None
    for u, e in enumerate(prunes, start=1):
        d_u = cubic_density(u / len(events), d_i, run.cfg.density)
        assert e["target_density"] == pytest.approx(d_u)
        assert sum(e["nnz"].values()) == keep_count(d_u, total_n)  # exact global count
        if scope == "layer":
            for n, k in e["nnz"].items():
                quota = (1.0 if start is None else start[n]) * math.prod(shapes[n]) * d_u / d_i
                assert abs(k - quota) < 1 or (prev is not None and k == prev[n])
        if prev is not None:
            assert all(e["nnz"][n] <= prev[n] for n in prev)
            assert e["drop"] == {n: prev[n] - e["nnz"][n] for n in prev}
        prev = e["nnz"]
    assert prunes[-1]["target_density"] == run.cfg.density  # reached exactly at prune_end
    assert sum(prunes[-1]["nnz"].values()) == keep_count(run.cfg.density, total_n)
    return prunes


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_gmp_follows_the_cubic_schedule(scope):
    run = make_run("gmp", update_interval=4, total_steps=48, density=0.05, prune_start=0.1,
                   prune_end=0.6, prune_scope=scope)  # fmt: skip
    pre = {}  # the weights and masks just before each event

    def snapshot(r):
        if r.step in r.sparsifier.events:
            pre[r.step] = ({n: p.detach().clone() for n, p in r.masking.params.items()},
                           {n: m.clone() for n, m in r.masking.masks.items()})  # fmt: skip

    run.before_update = snapshot
    run.train()
    prunes = _check_gmp_events(run, 1.0, scope)
    assert len(prunes) == len(run.events) == 6
    final = prunes[-1]["masks"]
    assert all(torch.equal(final[n], m) for n, m in run.masking.masks.items())  # then fixed
    for e in prunes:  # magnitude: no dropped weight is larger than a kept one
        w, m = pre[e["step"]]
        groups = [[n] for n in w] if scope == "layer" else [list(w)]
        for names in groups:
            kept = torch.cat([w[n][e["masks"][n]].abs() for n in names])
            dropped = torch.cat([w[n][m[n] & ~e["masks"][n]].abs() for n in names])
            if kept.numel() and dropped.numel():
                assert float(kept.min()) >= float(dropped.max())


@pytest.mark.parametrize(
    ("scope", "d_i"), [("global", 1.0), ("layer", 1.0), ("global", 0.5), ("layer", 0.5)]
)
def test_granet_density_follows_the_cubic_schedule(scope, d_i):
    run = make_run("granet", model="lenet5", update_interval=5, total_steps=45, density=0.05,
                   init_density=d_i, prune_end=0.5, prune_scope=scope).train()  # fmt: skip
    prunes = _check_gmp_events(run, d_i, scope)
    kinds = [(e["step"], e["kind"]) for e in run.events]
    regen_steps = [s for s in range(45) if run.sparsifier.is_regen(s)]
    assert regen_steps == [4, 9, 14, 19, 24, 29, 34, 39]  # until the end (not after 44)
    for s in regen_steps:  # prune then regen at pruning events, regen alone afterwards
        want = [(s, "prune"), (s, "regen")] if s in {e["step"] for e in prunes} else [(s, "regen")]
        assert [k for k in kinds if k[0] == s] == want
    by_step = {}
    for e in run.events:
        by_step.setdefault(e["step"], []).append(e)
    r_s = []
    for e in run.events:
        if e["kind"] != "regen":
            continue
        before = by_step[e["step"]][0]["nnz"] if len(by_step[e["step"]]) == 2 else None
        if before is not None:
            assert e["nnz"] == before  # regeneration keeps the per-layer counts
        assert e["drop"] == e["grow"]
        assert e["rate"] == pytest.approx(cosine_rate(e["step"] + 1, 45, 0.5, 0.005))
        r_s.append(e["R_s"])
    assert all(a <= b for a, b in itertools.pairwise(r_s))
    final = run.events[-1]["nnz"]
    assert final == prunes[-1]["nnz"]
    if d_i < 1:  # sparse-to-sparse: ERK start with exact counts
        shapes = _shapes(run)
        assert sum(run.masking.nnz().values()) == keep_count(0.05, _numel(run))
        start = layer_counts(shapes, layer_densities(shapes, d_i, "erk"))
        assert sum(start.values()) == keep_count(d_i, _numel(run))


def test_schedules_without_events_are_rejected():
    for method, fields in [("itop", {"update_interval": 50}), ("rigl", {"update_interval": 31}),
                           ("gmp", {"update_interval": 30}), ("granet", {"update_interval": 25})]:  # fmt: skip
        with pytest.raises(MaskValidationError, match=r"no (mask update|pruning event)"):
            make_run(method, total_steps=40, **fields)


def test_static_pai_mask_is_fixed_and_exact():
    run = make_run("static", model="lenet5", density=0.1, total_steps=6).train()
    assert run.events == []
    shapes = _shapes(run)
    want = layer_counts(shapes, layer_densities(shapes, 0.1, "erk"))
    assert run.masking.nnz() == want
    assert run.sparsifier.skip_step(0) is False
    R_s = sum(want.values()) / sum(math.prod(s) for s in shapes.values())
    assert run.sparsifier.scalars() == {"R_s": pytest.approx(R_s)}  # a fixed mask: its density


def test_static_data_driven_pai_and_dense_ends():
    net = get_model("lenet5", generator=torch.Generator().manual_seed(0))
    maskable = maskable_parameters(net, first_dense=True)
    cfg = resolve(TrainConfig(method="static", model="lenet5", init_method="snip", density=0.2,
                              first_dense=True))  # fmt: skip
    sp = make_sparsifier(cfg, steps_per_epoch=1, total_steps=1, device="cpu")
    batches = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))]
    masks, weights = sp.init_masks(net, maskable, torch.Generator().manual_seed(0), batches=batches)
    assert list(masks) == list(maskable) and weights is None
    n = sum(p.numel() for p in maskable.values())
    assert sum(int(m.sum()) for m in masks.values()) == keep_count(0.2, n)
    with pytest.raises(MaskValidationError, match="batches"):
        sp.init_masks(net, maskable, torch.Generator())
    every = maskable_parameters(net)
    odd = {k: v for i, (k, v) in enumerate(every.items()) if i != 1}  # a hole in the middle
    with pytest.raises(MaskValidationError, match="on layers chosen by name use random"):
        sp.init_masks(net, odd, torch.Generator(), batches=batches)


def test_static_mask_file_with_weights(tmp_path):
    src = get_model("mlpnet", generator=torch.Generator().manual_seed(7))
    params = maskable_parameters(src)
    masks = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) < 0.3
             for n, p in params.items()}  # fmt: skip
    weights = {n: p.detach().clone() for n, p in params.items()}
    path = save(tmp_path / "m.safetensors", MaskSet(masks, weights=weights))
    run = make_run("static", init_masks=str(path), density=0.3, total_steps=3)
    for n, p in run.masking.params.items():  # the file's weights replaced the model's, masked
        assert torch.equal(run.masking.masks[n], masks[n])
        assert torch.equal(p.detach(), weights[n] * masks[n])
    run.train()
    assert run.masking.nnz() == {n: int(m.sum()) for n, m in masks.items()}
    # Without weights in the file: masks only.
    path2 = save(tmp_path / "m2.safetensors", MaskSet(masks))
    cfg = resolve(TrainConfig(method="static", model="mlpnet", init_masks=str(path2)))
    sp = make_sparsifier(cfg, steps_per_epoch=1, total_steps=1, device="cpu")
    net = get_model("mlpnet")
    m2, w2 = sp.init_masks(net, maskable_parameters(net), torch.Generator())
    assert w2 is None and all(torch.equal(m2[n], masks[n]) for n in masks)


def test_static_mask_file_with_an_empty_layer_warns(tmp_path):
    """Layer collapse in a given mask file: trained as asked, with a warning naming it."""
    net = get_model("mlpnet")
    params = maskable_parameters(net)
    masks = {n: torch.ones(p.shape, dtype=torch.bool) for n, p in params.items()}
    last = list(masks)[-1]
    masks[last] = torch.zeros_like(masks[last])
    path = save(tmp_path / "cut.safetensors", MaskSet(masks))
    cfg = resolve(TrainConfig(method="static", model="mlpnet", init_masks=str(path)))
    sp = make_sparsifier(cfg, steps_per_epoch=1, total_steps=1, device="cpu")
    with pytest.warns(UserWarning, match=rf"cut\.safetensors: keeps no weight of 1 layer\(s\) "
                                         rf"\({last}\).*layer collapse"):  # fmt: skip
        got, _ = sp.init_masks(net, params, torch.Generator())
    assert not got[last].any()


def test_static_mask_file_that_does_not_fit(tmp_path):
    net = get_model("mlpnet")
    params = maskable_parameters(net)
    ones = {n: torch.ones(p.shape, dtype=torch.bool) for n, p in params.items()}

    def init(masks, **fields):
        path = save(tmp_path / "bad.safetensors", MaskSet(masks))
        cfg = resolve(TrainConfig(method="static", model="mlpnet", init_masks=str(path), **fields))
        sp = make_sparsifier(cfg, steps_per_epoch=1, total_steps=1, device="cpu")
        first, last = cfg.first_dense, cfg.last_dense
        return sp.init_masks(net, maskable_parameters(net, first_dense=first, last_dense=last),
                             torch.Generator())  # fmt: skip

    names = list(params)
    with pytest.raises(MaskFileError, match=f"missing: {names[-1]}"):
        init({n: ones[n] for n in names[:-1]})
    with pytest.raises(MaskFileError, match="kept dense by first_dense"):
        init(ones, first_dense=True)
    wrong = dict(ones)
    wrong[names[0]] = torch.ones(3, 3, dtype=torch.bool)
    with pytest.raises(MaskFileError, match="has shape"):
        init(wrong)
    cfg = resolve(TrainConfig(method="static", init_masks=str(tmp_path / "none.safetensors")))
    sp = make_sparsifier(cfg, steps_per_epoch=1, total_steps=1, device="cpu")
    with pytest.raises(MaskFileError):
        sp.init_masks(net, params, torch.Generator())


def test_dense_has_no_masks():
    run = make_run("dense", total_steps=3)
    net = run.model
    masks, weights = run.sparsifier.init_masks(net, maskable_parameters(net), torch.Generator())
    assert masks == {} and weights is None
    run.train()
    assert run.events == [] and run.masking.density() == 1.0


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize(
    ("method", "fields"),
    [
        ("set", {"update_interval": 3}),
        ("itop", {"update_interval": 3, "growth": "momentum"}),
        ("rigl", {"update_interval": 3}),
        ("granet", {"update_interval": 3, "init_density": 0.6}),
    ],
)
def test_resume_equals_an_uninterrupted_run(method, fields):
    full = make_run(method, total_steps=24, **fields).train()
    part = make_run(method, total_steps=24, **fields).train(11)
    ckpt = _roundtrip({"model": part.model.state_dict(), "opt": part.optimizer.state_dict(),
                       "sp": part.sparsifier.state_dict()})  # fmt: skip
    resumed = make_run(method, total_steps=24, seed=5, **fields)  # other seed: all from ckpt
    resumed.model.load_state_dict(ckpt["model"])
    resumed.optimizer.load_state_dict(ckpt["opt"])
    resumed.sparsifier.load_state_dict(ckpt["sp"])
    resumed.step = 11
    resumed.train()
    for n, m in full.masking.masks.items():
        assert torch.equal(resumed.masking.masks[n], m)
        assert torch.equal(resumed.masking.params[n], full.masking.params[n])
    assert resumed.sparsifier.scalars() == full.sparsifier.scalars()
    late = [(e["step"], e["kind"], e["nnz"]) for e in full.events if e["step"] >= 11]
    assert [(e["step"], e["kind"], e["nnz"]) for e in resumed.events] == late


def test_load_state_dict_checks_the_method():
    a = make_run("set", update_interval=3, total_steps=12).sparsifier
    b = make_run("gmp", update_interval=3, total_steps=12).sparsifier
    with pytest.raises(MaskValidationError, match="for method 'set'"):
        b.load_state_dict(a.state_dict())


def test_adamw_training_keeps_masked_entries_zero():
    run = make_run("itop", optimizer="adamw", mask_adam=True, update_interval=4,
                   total_steps=14, growth="gradient").train()  # fmt: skip
    opt = run.optimizer
    for n, p in run.masking.params.items():
        off = ~run.masking.masks[n]
        assert bool((p[off] == 0).all())
        assert bool((opt.state[p]["exp_avg"][off] == 0).all())


def test_dst_update_on_a_channels_last_resnet():
    run = make_run("itop", model="resnet20", update_interval=3, total_steps=6, growth="gradient",
                   density=0.1)  # fmt: skip
    run.model.to(memory_format=torch.channels_last)
    start = run.masking.nnz()
    run.train()
    (event,) = run.events
    assert event["nnz"] == start and event["step"] == 2
    for n, p in run.masking.params.items():
        m = run.masking.masks[n]
        if p.dim() == 4:
            assert m.is_contiguous(memory_format=torch.channels_last)
        assert bool((p[~m] == 0).all()) and bool((p[m] != 0).any())


def _regrowth_run(monkeypatch, growth, ties, exact):
    """A short sparsify run (updates every 4 steps) with the one-read update or, ``exact``, the
    layer-by-layer one (rewire_pending unavailable); its masks, weights, R_s, generator."""
    import torch.nn.functional as F

    import masktopo
    from masktopo.trainer.methods import dst

    if exact:
        monkeypatch.setattr(dst, "rewire_pending", lambda *a, **k: None)
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(12, 40), torch.nn.ReLU(), torch.nn.Linear(40, 5))
    if ties:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.round(p * 4) / 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sp = masktopo.sparsify(model, opt, method="itop", density=0.3, total_steps=40,
                           update_interval=4, growth=growth)  # fmt: skip
    x, y = torch.randn(16, 12), torch.randint(0, 5, (16,))
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if ties:
            for p in model.parameters():
                p.grad = torch.round(p.grad * 8) / 8
        opt.step()
        sp.step()
    out = ({n: m.clone() for n, m in sp.session.current_masks().items()},
           [p.detach().clone() for p in model.parameters()], sp.session.scalars()["R_s"],
           sp.session.sparsifier.generator.get_state())  # fmt: skip
    sp.finish()
    monkeypatch.undo()
    return out


@pytest.mark.parametrize("growth", ["gradient", "random", "momentum"])
@pytest.mark.parametrize("ties", [False, True])
def test_the_one_read_update_is_the_layer_by_layer_one(monkeypatch, growth, ties):
    """Regrowth rewires all layers with one read back, and falls back to layer-by-layer rewire
    (restoring the generator) when a tie needs a draw: the run is the same bit for bit."""
    from masktopo.trainer.methods import dst

    seen = []
    orig = dst.Regrowth._rewire_exact

    def spy(self, *a, **k):
        seen.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(dst.Regrowth, "_rewire_exact", spy)
    fast = _regrowth_run(monkeypatch, growth, ties, exact=False)
    fell_back = len(seen)
    monkeypatch.setattr(dst.Regrowth, "_rewire_exact", spy)
    exact = _regrowth_run(monkeypatch, growth, ties, exact=True)
    assert fast[0].keys() == exact[0].keys()
    assert all(torch.equal(fast[0][n], exact[0][n]) for n in fast[0])
    assert all(torch.equal(a, b) for a, b in zip(fast[1], exact[1], strict=True))
    assert fast[2] == exact[2] and torch.equal(fast[3], exact[3])
    if ties:
        assert fell_back > 0  # the fallback was exercised
