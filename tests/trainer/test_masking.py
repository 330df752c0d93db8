"""Masks as bool buffers: applied after optimizer steps to weights and optimizer state."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F
from _sparse_toys import batch

from masktopo import MaskSet
from masktopo.errors import MaskValidationError
from masktopo.trainer.core import start_masks
from masktopo.trainer.masking import Masking, mask_buffer_key
from masktopo.zoo import get_model, maskable_parameters

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(name="lenet5", seed=0):
    net = get_model(name, generator=torch.Generator().manual_seed(seed))
    return net, maskable_parameters(net)


def _masks(params, density=0.2, seed=1):
    return start_masks(params, density, "erk", torch.Generator().manual_seed(seed))


def _steps(net, masking, opt, n=5, in_shape=(1, 28, 28)):
    for step in range(n):
        x, y = batch(step, in_shape)
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        masking.apply(opt)


def test_masks_are_bool_buffers_in_the_state_dict():
    net, params = _model()
    masks = _masks(params)
    mk = Masking(net, masks)
    sd = net.state_dict()
    for name in params:
        key = mask_buffer_key(name)
        assert key == name + "_mask" and sd[key].dtype == torch.bool
        assert torch.equal(sd[key], masks[name])
        assert mk.masks[name] is sd[key] or torch.equal(mk.masks[name], sd[key])
        assert bool((params[name][~masks[name]] == 0).all())  # applied at construction
    assert mk.buffer_keys() == [mask_buffer_key(n) for n in params]
    assert mk.nnz() == {n: int(m.sum()) for n, m in masks.items()}
    assert mk.numel() == {n: p.numel() for n, p in params.items()}
    assert mk.density() == pytest.approx(sum(mk.nnz().values()) / sum(mk.numel().values()))
    # A second Masking on the same model reuses the buffers.
    Masking(net, masks)
    assert sorted(k for k in net.state_dict() if k.endswith("_mask")) == sorted(mk.buffer_keys())


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_weight_decay_keeps_masked_weights_and_momentum_zero(nesterov):
    net, params = _model()
    masks = _masks(params)
    mk = Masking(net, masks)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=nesterov,
                          weight_decay=5e-2)  # fmt: skip
    before = {n: p.detach().clone() for n, p in params.items()}
    _steps(net, mk, opt)
    for n, p in params.items():
        off = ~masks[n]
        assert bool((p[off] == 0).all())
        assert bool((opt.state[p]["momentum_buffer"][off] == 0).all())
        assert bool((p[masks[n]] != before[n][masks[n]]).any())  # the kept weights trained
        if off.any():  # the gradient stays dense (RigL growth reads it)
            assert bool((p.grad[off] != 0).any())


@pytest.mark.parametrize("mask_adam", [False, True])
def test_adamw_masked_weights_stay_zero_and_moments_optionally(mask_adam):
    net, params = _model("mlpnet")
    masks = _masks(params, 0.3)
    mk = Masking(net, masks, mask_adam=mask_adam)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    _steps(net, mk, opt)
    for n, p in params.items():
        off = ~masks[n]
        assert bool((p[off] == 0).all())
        if not off.any():
            continue
        st = opt.state[p]
        zero_moments = bool((st["exp_avg"][off] == 0).all() and (st["exp_avg_sq"][off] == 0).all())
        assert zero_moments == mask_adam


def test_channels_last_buffers_follow_the_parameters():
    net, params = _model("resnet20")
    masks = _masks(params, 0.1)
    mk = Masking(net, masks)
    net.to(memory_format=torch.channels_last)  # converts params and 4-D buffers together
    conv = "layer1.0.conv1.weight"
    assert mk.params[conv].is_contiguous(memory_format=torch.channels_last)
    assert mk.masks[conv].is_contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for step in range(2):
        x, y = batch(step, (3, 32, 32), n=4)
        opt.zero_grad()
        F.cross_entropy(net(x.to(memory_format=torch.channels_last)), y).backward()
        opt.step()
        mk.apply(opt)
    for n, p in params.items():
        assert torch.equal(p != 0, masks[n] & (p != 0))
        assert bool((p[~masks[n]] == 0).all())
        assert bool((opt.state[p]["momentum_buffer"][~masks[n]] == 0).all())
    # A Masking built on a channels-last model makes channels-last buffers.
    net2, params2 = _model("resnet20", seed=1)
    net2.to(memory_format=torch.channels_last)
    mk2 = Masking(net2, _masks(params2, 0.1))
    assert mk2.masks[conv].stride() == params2[conv].stride()


def test_live_buffers_after_load_state_dict_and_set_masks():
    net, params = _model("mlpnet")
    mk = Masking(net, _masks(params, 0.5, seed=1))
    other = _masks(params, 0.2, seed=2)
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    for n, m in other.items():
        sd[mask_buffer_key(n)] = m
    with torch.no_grad():
        for p in params.values():
            p.fill_(1.0)
    net.load_state_dict(sd)
    mk.apply()  # the new buffer contents are used (the cached factors are rebuilt)
    for n, p in params.items():
        assert torch.equal(p != 0, other[n] & (sd[n] != 0))
    third = _masks(params, 0.1, seed=3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    _steps(net, mk, opt, n=1)
    mk.set_masks({n: third[n] for n in list(third)[:1]}, opt)  # a subset of the layers
    first = next(iter(third))
    assert torch.equal(mk.masks[first], third[first])
    p = params[first]
    assert bool((p[~third[first]] == 0).all())
    assert bool((opt.state[p]["momentum_buffer"][~third[first]] == 0).all())


def test_nnz_is_remembered_until_a_mask_changes():
    net, params = _model()
    masking = Masking(net, _masks(params))
    name = next(iter(params))
    truth = {n: int(m.count_nonzero()) for n, m in masking.masks.items()}
    assert masking.nnz() == truth
    calls = []
    orig = torch.Tensor.count_nonzero

    def counting(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)

    torch.Tensor.count_nonzero = counting
    try:
        assert masking.nnz() == truth and calls == []  # remembered: no count, no read
        masking.masks[name][0].fill_(False)  # changed in place: counted again
        truth[name] = int(orig(masking.masks[name]))
        assert masking.nnz() == truth and len(calls) == 1
        calls.clear()
        new = masking.masks[name].clone()
        new.reshape(-1)[: new.numel() // 2] = True
        count = int(orig(new))
        masking.set_masks({name: new}, nnz={name: count})  # counts known by construction
        assert masking.nnz()[name] == count and calls == []
        masking.set_masks({name: new.clone()})  # no counts given: counted again
        assert masking.nnz()[name] == count and len(calls) == 1
        calls.clear()
        net.load_state_dict(net.state_dict())  # copied into the buffers: counted again
        assert masking.nnz()[name] == count and len(calls) == len(params)
    finally:
        torch.Tensor.count_nonzero = orig


def test_zero_entries_resets_weights_and_optimizer_state():
    net, params = _model("mlpnet")
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
    mk = Masking(net, masks)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    _steps(net, mk, opt, n=2)
    name = next(iter(params))
    where = torch.zeros_like(masks[name])
    where[0, :5] = True
    mk.zero_entries({name: where}, opt)
    p = params[name]
    for t in (p, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]):
        assert bool((t[where] == 0).all()) and bool((t[~where] != 0).any())
    mk.zero_entries({}, opt)  # nothing to do


def test_bad_masks_are_one_clear_error():
    net, params = _model("mlpnet")
    name = next(iter(params))
    good = torch.ones_like(params[name], dtype=torch.bool)
    with pytest.raises(MaskValidationError, match="no parameter"):
        Masking(net, {"fc9.weight": good})
    with pytest.raises(MaskValidationError, match="dtype"):
        Masking(net, {name: good.float()})
    with pytest.raises(MaskValidationError, match="shape"):
        Masking(net, {name: good[:-1]})
    mk = Masking(net, {name: good})
    with pytest.raises(MaskValidationError, match="not one of the masked"):
        mk.set_masks({"fc3.weight": good})
    with pytest.raises(MaskValidationError, match="shape"):
        mk.set_masks({name: good.T})


def test_empty_masks_mask_nothing():
    net, params = _model("mlpnet")
    before = {n: p.detach().clone() for n, p in params.items()}
    mk = Masking(net, {})
    mk.apply(torch.optim.SGD(net.parameters(), lr=0.1))
    assert mk.nnz() == {} and mk.density() == 1.0
    assert all(torch.equal(before[n], p) for n, p in params.items())
    assert not any(k.endswith("_mask") for k in net.state_dict())


def test_maskset_is_a_cpu_copy_with_kinds_and_weights():
    net, params = _model("lenet5")
    masks = _masks(params, 0.3)
    mk = Masking(net, masks)
    ms = mk.maskset(weights=True)
    assert isinstance(ms, MaskSet) and ms.names == list(params)
    assert ms.kind("conv1.weight") == "conv" and ms.kind(list(params)[-1]) == "linear"
    assert ms.nnz() == sum(mk.nnz().values()) and ms.device == torch.device("cpu")
    assert torch.equal(ms.weights["conv1.weight"], params["conv1.weight"].detach())
    assert all(ms[n].data_ptr() != m.data_ptr() for n, m in mk.masks.items())  # copies
    assert mk.maskset(weights=False).weights is None


def test_ddp_does_not_broadcast_the_mask_buffers(tmp_path):
    import torch.distributed as dist

    net, params = _model("mlpnet")
    masks = _masks(params, 0.3)
    mk = Masking(net, masks)
    assert set(mk.buffer_keys()) <= set(net._ddp_params_and_buffers_to_ignore)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)  # fmt: skip
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(net)
        broadcast = {id(b) for b in ddp.modules_buffers}
        assert not any(id(m) in broadcast for m in mk.masks.values())
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        _steps(ddp, mk, opt, n=2)
        for n, p in params.items():
            assert bool((p[~masks[n]] == 0).all())
        with pytest.raises(MaskValidationError, match="unwrapped"):
            Masking(ddp, masks)
        # Free DDP's reducer while its process group lives: freed after destroy_process_group,
        # gloo's destructor can wait forever on its threads (seen under pytest-xdist).
        del ddp, opt
        gc.collect()
    finally:
        dist.destroy_process_group()
