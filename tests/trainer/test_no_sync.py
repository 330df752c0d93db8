"""No host synchronisation in the training step (issue: GPU paths by design).

On CUDA a host sync stalls the GPU queue; the step must not make one between mask events. On
the CPU there is no queue, so these tests count the calls that *would* sync on CUDA (a tensor's
``item``, ``tolist``, ``cpu``, ``numpy``, its conversion to a Python bool/int/float) in the window
of ordinary steps between two mask events, for ``masktopo train``'s loop and for
``masktopo.sparsify`` in a plain loop; where CUDA exists, ``torch.cuda.set_sync_debug_mode``
checks the same on the device.

A drop-and-grow update step may read back once (whether a tie needs a random draw, and R_s):
those tests also watch the aten operators that read data or size their output by it
(``nonzero``, boolean indexing, ``_local_scalar_dense``, ...), and ``kthvalue``, which runs one
CUDA thread block per slice (a whole layer: tens of ms on an H200).
"""

from __future__ import annotations

import contextlib
import itertools
import threading

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import masktopo
from masktopo.trainer import TrainConfig, train

_SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def _counting(monkeypatch):
    """Count the calls of the sync-making tensor methods while ``state["on"]``."""
    state = {"on": False, "calls": [], "thread": threading.get_ident()}
    for name in _SYNCS:
        orig = getattr(torch.Tensor, name)

        def wrapper(self, *a, _orig=orig, _name=name, **k):
            if (
                state["on"]
                and self.device.type != "meta"
                and threading.get_ident() == state["thread"]  # not the event writer's thread
            ):
                import traceback

                state["calls"].append((_name, traceback.format_stack(limit=6)[-3]))
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    yield state


_aten = torch.ops.aten
#: Operators that read device data on the host, or size their output by it (a sync on CUDA).
_READS = {_aten._local_scalar_dense, _aten.nonzero, _aten.masked_select, _aten._unique2,
          _aten.unique_dim, _aten.unique_consecutive, _aten.equal, _aten.repeat_interleave,
          _aten.kthvalue}  # fmt: skip


class _HostReads(TorchDispatchMode):
    """Records the :data:`_READS` operators and boolean-mask indexing run in this thread."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func._overloadpacket
        if packet in _READS:
            self.seen.append(str(func))
        elif packet in (_aten.index, _aten.index_put, _aten.index_put_) and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] or ()
        ):
            self.seen.append(f"{func} with a boolean mask")
        return func(*args, **(kwargs or {}))


SPIRAL = {"model": "spiral-mlp", "dataset": "cubist-spiral", "density": 0.3, "epochs": 1,
          "batch_size": 500, "device": "cpu", "seed": 0, "checkpoint_every": 0}  # fmt: skip


@pytest.mark.parametrize("method", ["itop", "rigl", "gmp", "gap"])
def test_train_steps_between_events_make_no_host_sync(monkeypatch, method):
    extra = {"gap": {"step_epochs": 0.5, "cycles": 1, "finetune_epochs": 0.5, "partitions": 2},
             "gmp": {"update_interval": 45, "prune_end": 1.0}}.get(method, {"update_interval": 60})  # fmt: skip
    cfg = TrainConfig(method=method, **{**SPIRAL, **extra})
    if method == "gap":
        cfg = cfg.replace(epochs=None)
    with _counting(monkeypatch) as state:

        def callback(step, info):  # steps 5..45 hold no mask event and no 50-step log
            state["on"] = 5 <= step < 40

        train(cfg, None, callback=callback)
    assert state["calls"] == [], state["calls"][:5]


def test_sparsify_steps_between_events_make_no_host_sync(monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sp = masktopo.sparsify(model, opt, method="rigl", density=0.2, total_steps=200,
                           update_interval=100)  # fmt: skip
    x, y = torch.randn(64, 20), torch.randint(0, 4, (64,))
    with _counting(monkeypatch) as state:
        for i in range(40):
            state["on"] = i >= 5  # after the first steps (the fired masks start once)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            sp.step()
        state["on"] = False
        clean = list(state["calls"])
        state["on"] = True  # the counter itself sees a sync (a control)
        float(F.cross_entropy(model(x), y).detach())
        state["on"] = False
    sp.finish()
    assert clean == [], clean[:5]
    assert [name for name, _ in state["calls"]] == ["__float__"]


@pytest.mark.parametrize(("method", "growth"), [("rigl", "gradient"), ("itop", "random"),
                                               ("itop", "random_unfired")])  # fmt: skip
@pytest.mark.parametrize("record", [False, True])
def test_an_update_step_reads_back_once(monkeypatch, tmp_path, method, growth, record):
    """A drop-and-grow update (every layer, and its event) reads back once: one ``tolist`` of
    the selections' checks and the fired counts; no count, no ``nonzero``, no kthvalue. With a
    run directory, the event's copies take the CUDA path (launched, gathered in the writer
    thread), forced here on the CPU."""
    from masktopo.runs import writer

    if record:
        monkeypatch.setattr(writer, "_ASYNC_COPY_DEVICES", ("cuda", "cpu"))
    torch.manual_seed(0)
    # tanh: no dead unit, so no tie among the gradients (a tie at a threshold needs a draw, and
    # the exact path's reads; test_methods checks that path)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 32),
                                torch.nn.Tanh(), torch.nn.Linear(32, 4))  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sp = masktopo.sparsify(model, opt, method=method, density=0.2, total_steps=200,
                           update_interval=10, growth=growth,
                           out=tmp_path / "run" if record else None)  # fmt: skip
    x, y = torch.randn(64, 20), torch.randint(0, 4, (64,))
    before = {n: m.clone() for n, m in sp.session.current_masks().items()}
    with _counting(monkeypatch) as state:
        for i in range(10):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            reads = _HostReads()
            state["on"] = i == 9  # the update step (step + 1) % 10 == 0
            with reads:
                sp.step()
            state["on"] = False
    assert sp.n_events == 2  # init and this update
    assert any(not torch.equal(m, before[n]) for n, m in sp.session.current_masks().items())
    assert reads.seen == []
    assert [name for name, _ in state["calls"]] == ["tolist"], state["calls"]
    sp.finish()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_steps_between_events_make_no_sync():
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 4)).cuda()  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sp = masktopo.sparsify(model, opt, method="rigl", density=0.2, total_steps=200,
                           update_interval=100)  # fmt: skip
    x = torch.randn(64, 20, device="cuda")
    y = torch.randint(0, 4, (64,), device="cuda")
    for i in range(40):
        if i == 5:
            torch.cuda.set_sync_debug_mode("error")
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sp.step()
    torch.cuda.set_sync_debug_mode("default")
    sp.finish()


def test_no_cuda_hard_coding_in_the_library():
    """Devices come from the inputs or the config: no ``.cuda()`` and no literal ``"cuda:0"``."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    bad = []
    for path in [*(root / "masktopo").rglob("*.py"), *(root / "cli").rglob("*.py")]:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\.cuda\(\)|[\"']cuda:\d", code):
                bad.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
    assert bad == []


def test_the_masks_check_puts_its_checksum_on_cuda_under_nccl(monkeypatch):
    """NCCL only moves CUDA tensors: under an NCCL group the ranks' masks check sends a CUDA
    tensor (faked here: no GPU or NCCL is needed to see which device it picks)."""
    import torch.distributed as dist

    from masktopo.trainer import session

    seen = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_backend", lambda: "nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)

    def fake_to(self, *args, **kwargs):
        seen.append(args)
        return self

    def fake_gather(out, value):
        for t in out:
            t.copy_(value)

    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    monkeypatch.setattr(dist, "all_gather", fake_gather)
    assert session.masks_agree({"w": torch.ones(2, 2, dtype=torch.bool)})
    assert ("cuda", torch.cuda.current_device()) in seen
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    seen.clear()
    assert session.masks_agree({"w": torch.ones(2, 2, dtype=torch.bool)})
    assert all("cuda" not in a for a in seen)  # gloo takes the CPU tensor as it is


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_update_step_synchronises_once(tmp_path):
    """On CUDA a RigL update step with its event (masks and kept weights to a run directory)
    makes one synchronisation: the update's read of its checks and R_s."""
    import warnings

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 256), torch.nn.Tanh(),
                                torch.nn.Linear(256, 4)).cuda()  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sp = masktopo.sparsify(model, opt, method="rigl", density=0.2, total_steps=200,
                           update_interval=10, out=tmp_path / "run")  # fmt: skip
    x = torch.randn(64, 20, device="cuda")
    y = torch.randint(0, 4, (64,), device="cuda")
    for i in range(10):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if i == 9:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    sp.step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        else:
            sp.step()
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) == 1, [str(w.message) for w in syncs]
    sp.finish()
    assert sp.n_events == 3


def test_an_update_with_tied_gradients_reads_once_per_selection(monkeypatch):
    """bfloat16-valued gradients (autocast) tie at the growth threshold at most updates: after
    an update that drew, the next goes layer by layer at once (no pending pass to throw away),
    with one read per selection, the tied positions, and R_s."""
    from masktopo.trainer.methods import dst

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 32),
                                torch.nn.Tanh(), torch.nn.Linear(32, 4))  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sp = masktopo.sparsify(model, opt, method="rigl", density=0.2, total_steps=200,
                           update_interval=10)  # fmt: skip
    regrowth = sp.session.sparsifier.regrowth
    x, y = torch.randn(64, 20), torch.randint(0, 4, (64,))
    pending = []
    orig = dst.Regrowth._rewire_pending

    def spy(self, *a, **k):
        pending.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(dst.Regrowth, "_rewire_pending", spy)
    updates = []  # (tried the one-read pass, drew, sync-making calls, operators that read)
    with _counting(monkeypatch) as state:
        for i in range(60):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            for p in model.parameters():
                p.grad = p.grad.to(torch.bfloat16).float()
            opt.step()
            update = (i + 1) % 10 == 0
            reads, before = _HostReads(), len(pending)
            state["on"], state["calls"] = update, []
            with reads:
                sp.step()
            state["on"] = False
            if update:
                calls = [name for name, _ in state["calls"]]
                updates.append((len(pending) > before, regrowth._drew, calls, reads.seen))
    assert any(drew for _, drew, _, _ in updates)
    one_by_one = [u for u in updates[1:] if not u[0]]
    assert one_by_one
    for prev, now in itertools.pairwise(updates):
        assert not (prev[1] and now[0])  # after a draw, no one-read pass
    for _, _, calls, seen in one_by_one:
        assert calls.count("tolist") == 2 * 3 and set(calls) == {"tolist", "__float__"}, calls
        assert set(seen) <= {"aten.nonzero.default", "aten._local_scalar_dense.default"}, seen
    sp.finish()
