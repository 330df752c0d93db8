"""The run writer: run.json, events in the background with kept weights, truncation, digest."""

from __future__ import annotations

import json
import math

import pytest
import torch

import masktopo
from masktopo import runs
from masktopo.errors import MaskFileError
from masktopo.runs import RunWriter
from masktopo.runs import writer as writer_module


def _masks(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.rand(6, 5, generator=g) < 0.3,
            "b.weight": torch.rand(4, 6, 3, 3, generator=g) < 0.3}  # fmt: skip


def _run_json(rec: RunWriter, masks):
    rec.write_run_json("train", {
        "config": {}, "seed": 0,
        "layers": [{"name": n, "kind": "conv" if m.dim() > 2 else "linear",
                    "shape": list(m.shape)} for n, m in masks.items()],
    })  # fmt: skip


@pytest.mark.parametrize("background", [True, False])
def test_writer_writes_a_readable_run(tmp_path, background):
    masks = _masks()
    rec = RunWriter(tmp_path, background=background)
    _run_json(rec, masks)
    w = {n: torch.randn(m.shape) for n, m in masks.items()}
    rec.record(masks, w, kind="init", step=0, epoch=0.0, scalars={"R_s": torch.tensor(0.5)})
    masks2 = _masks(1)
    rec.record(masks2, None, kind="update", step=10, epoch=0.5,
               scalars={"drop": {"a.weight": 3}, "x": float("nan")})  # fmt: skip
    rec.close()
    run = runs.read_run(tmp_path)
    assert [e["kind"] for e in run.events] == ["init", "update"]
    assert run.events[0]["R_s"] == 0.5 and run.events[1]["x"] is None
    first = run.load(0)
    assert first.has_weights
    for n in masks:
        assert torch.equal(first[n], masks[n])
        assert torch.equal(first.weights[n], w[n] * masks[n])  # stored weights are masked
    second = run.load(1)
    assert not second.has_weights and all(torch.equal(second[n], masks2[n]) for n in masks2)
    assert run.events[1]["nnz"] == {n: int(m.sum()) for n, m in masks2.items()}


def test_writer_copies_masks_at_record_time(tmp_path):
    masks = _masks()
    rec = RunWriter(tmp_path)
    _run_json(rec, masks)
    before = {n: m.clone() for n, m in masks.items()}
    rec.record(masks, None, kind="init", step=0, epoch=0)
    for m in masks.values():  # the caller changes its masks right away
        m.fill_(True)
    rec.close()
    loaded = masktopo.load(tmp_path, event=0)
    assert all(torch.equal(loaded[n], before[n]) for n in before)


def test_writer_truncate_drops_later_events(tmp_path):
    masks = _masks()
    rec = RunWriter(tmp_path)
    _run_json(rec, masks)
    for k in range(4):
        rec.record(_masks(k), None, kind="update", step=k, epoch=k)
    rec.close()
    rec = RunWriter(tmp_path, n_events=4)
    rec.truncate(2)
    run = runs.read_run(tmp_path)
    assert run.n_events == 2
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [
        "event-000000.safetensors", "event-000001.safetensors"]  # fmt: skip
    rec.record(_masks(9), None, kind="update", step=9, epoch=9)
    rec.close()
    assert runs.read_run(tmp_path).events[2]["step"] == 9


def test_full_disk_error_surfaces_and_keeps_complete_events(tmp_path, monkeypatch):
    masks = _masks()
    rec = RunWriter(tmp_path)
    _run_json(rec, masks)
    rec.record(masks, None, kind="init", step=0, epoch=0)
    rec.flush()

    def full(*a, **k):
        raise MaskFileError(tmp_path / "masks" / "x", "cannot write ([Errno 28] No space left)")

    monkeypatch.setattr(writer_module, "save_kept", full)
    rec.record(masks, None, kind="update", step=1, epoch=1)
    with pytest.raises(MaskFileError, match="No space left"):
        rec.flush()
    run = runs.read_run(tmp_path)  # still consistent: the complete event only
    assert run.n_events == 1 and run.load(0).nnz() == sum(int(m.sum()) for m in masks.values())
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["kind"] == "init"
    assert not math.isnan(run.events[0]["density"])


def _event_tensors(path):
    """Every tensor of every mask file, and each file's layer metadata (not the creation time)."""
    from safetensors import safe_open

    out = {}
    for f in sorted((path / "masks").iterdir()):
        with safe_open(str(f), "pt") as fh:
            out[f.name] = (fh.metadata()["layers"],
                           {k: fh.get_tensor(k) for k in sorted(fh.keys())})  # fmt: skip
    return out


def test_asynchronous_host_copies_write_the_same_events(tmp_path, monkeypatch):
    """The CUDA path (copies launched into host memory, kept weights gathered in the writer
    thread), run here on the CPU, writes the events the direct path writes, and its record()
    gathers nothing (no boolean indexing: on CUDA, a host synchronisation)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Gathers(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func._overloadpacket in (torch.ops.aten.index, torch.ops.aten.nonzero,
                                        torch.ops.aten._local_scalar_dense):  # fmt: skip
                self.seen.append(str(func))
            return func(*args, **(kwargs or {}))

    masks = _masks()
    weights = {n: torch.randn(m.shape, dtype=torch.bfloat16) for n, m in masks.items()}
    weights["b.weight"] = weights["b.weight"].to(memory_format=torch.channels_last)
    seen = {}
    for mode in ("direct", "async"):
        if mode == "async":
            monkeypatch.setattr(writer_module, "_ASYNC_COPY_DEVICES", ("cuda", "cpu"))
        out = tmp_path / mode
        out.mkdir()
        rec = RunWriter(out)
        _run_json(rec, masks)
        gathers = Gathers()
        with gathers:
            rec.record(masks, weights, kind="init", step=0, epoch=0.0)
        rec.record(_masks(1), None, kind="update", step=5, epoch=0.5)
        rec.close()
        seen[mode] = gathers.seen
    assert seen["direct"] and seen["async"] == []
    assert (tmp_path / "direct" / "events.jsonl").read_text() == (
        tmp_path / "async" / "events.jsonl"
    ).read_text()
    a, b = _event_tensors(tmp_path / "direct"), _event_tensors(tmp_path / "async")
    assert a.keys() == b.keys()
    for name in a:
        assert a[name][0] == b[name][0]
        assert a[name][1].keys() == b[name][1].keys()
        assert all(torch.equal(a[name][1][k], b[name][1][k]) for k in a[name][1])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_events_from_cuda_are_the_events_from_the_cpu(tmp_path):
    """The asynchronous copies from CUDA (pinned memory, gathered in the writer thread) write
    what the CPU path writes, even when the tensors change right after record()."""
    masks = _masks()
    weights = {n: torch.randn(m.shape) for n, m in masks.items()}
    weights["b.weight"] = weights["b.weight"].to(memory_format=torch.channels_last)
    for where in ("cpu", "cuda"):
        out = tmp_path / where
        out.mkdir()
        rec = RunWriter(out)
        _run_json(rec, masks)
        m = {n: t.to(where, copy=True) for n, t in masks.items()}
        w = {n: t.to(where, copy=True) for n, t in weights.items()}
        rec.record(m, w, kind="init", step=0, epoch=0.0)
        for t in (*m.values(), *w.values()):  # changed at once, as training does
            t.zero_()
        rec.close()
    assert (tmp_path / "cpu" / "events.jsonl").read_text() == (
        tmp_path / "cuda" / "events.jsonl"
    ).read_text()
    a, b = _event_tensors(tmp_path / "cpu"), _event_tensors(tmp_path / "cuda")
    assert all(a[f][0] == b[f][0] for f in a)
    assert all(torch.equal(a[f][1][k], b[f][1][k]) for f in a for k in a[f][1])
