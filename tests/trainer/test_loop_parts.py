"""The loop's pure pieces: LR schedule, augmentation, seeds, and the event recorder."""

from __future__ import annotations

import json
import math

import pytest
import torch

from masktopo import store
from masktopo.errors import MaskFileError
from masktopo.trainer.config import TrainConfig, resolve
from masktopo.trainer.loop import crop_flip, lr_at, seed_for
from masktopo.trainer.recorder import Recorder


def test_step_schedule_milestones():
    cfg = resolve(TrainConfig(lr=0.1, lr_milestones=(0.5, 0.75), lr_gamma=0.1))
    values = [lr_at(cfg, t, 100, 10) for t in (0, 49, 50, 74, 75, 99)]
    assert values == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_cosine_schedule_with_warmup_endpoints():
    cfg = resolve(TrainConfig(lr=0.2, lr_schedule="cosine", warmup_epochs=1.0, epochs=10))
    assert lr_at(cfg, 0, 100, 10) == pytest.approx(0.02)  # warm-up starts at lr / 10
    assert lr_at(cfg, 5, 100, 10) == pytest.approx(0.02 + 0.18 * 0.5)
    assert lr_at(cfg, 10, 100, 10) == pytest.approx(0.2)  # warm-up done: the peak
    assert lr_at(cfg, 55, 100, 10) == pytest.approx(0.1)  # half way through the cosine
    assert lr_at(cfg, 100, 100, 10) == pytest.approx(0.0, abs=1e-12)


def test_seeds_differ_by_purpose_and_are_stable():
    assert seed_for(0, "model") == seed_for(0, "model")
    assert len({seed_for(0, "model"), seed_for(0, "masks"), seed_for(1, "model")}) == 3
    assert 0 <= seed_for(123, "x", 4) < 2**63


def test_crop_flip_is_a_shifted_possibly_flipped_window():
    g = torch.Generator().manual_seed(0)
    raw = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) + 1
    out = crop_flip(raw, g, pad=2)
    assert out.shape == raw.shape
    padded = torch.nn.functional.pad(raw, (2, 2, 2, 2))
    for n in range(2):  # each output is some window of the padded image, maybe mirrored
        found = False
        for oy in range(5):
            for ox in range(5):
                win = padded[n, :, oy : oy + 8, ox : ox + 8]
                if torch.equal(out[n], win) or torch.equal(out[n], win.flip(-1)):
                    found = True
        assert found
    again = crop_flip(raw, torch.Generator().manual_seed(0), pad=2)
    assert torch.equal(out, again)


def test_crop_flip_varies_across_samples():
    g = torch.Generator().manual_seed(1)
    raw = torch.rand(1, 3, 16, 16).expand(64, -1, -1, -1)
    out = crop_flip(raw, g)
    assert len({out[i].sum().item() for i in range(64)}) > 10


def _masks(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.rand(6, 5, generator=g) < 0.3,
            "b.weight": torch.rand(4, 6, 3, 3, generator=g) < 0.3}  # fmt: skip


def _run_json(rec: Recorder, masks):
    rec.write_run_json({
        "format": "masktopo.run", "format_version": 1, "created": "now",
        "masktopo_version": "x", "config": {}, "seed": 0,
        "layers": [{"name": n, "kind": "conv" if m.dim() > 2 else "linear",
                    "shape": list(m.shape)} for n, m in masks.items()],
    })  # fmt: skip


@pytest.mark.parametrize("background", [True, False])
def test_recorder_writes_a_readable_run(tmp_path, background):
    masks = _masks()
    rec = Recorder(tmp_path, background=background)
    _run_json(rec, masks)
    w = {n: torch.randn(m.shape) for n, m in masks.items()}
    rec.record(masks, w, kind="init", step=0, epoch=0.0, scalars={"R_s": torch.tensor(0.5)})
    masks2 = _masks(1)
    rec.record(masks2, None, kind="update", step=10, epoch=0.5,
               scalars={"drop": {"a.weight": 3}, "x": float("nan")})  # fmt: skip
    rec.close()
    run = store.read_run(tmp_path)
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


def test_recorder_copies_masks_at_record_time(tmp_path):
    masks = _masks()
    rec = Recorder(tmp_path)
    _run_json(rec, masks)
    before = {n: m.clone() for n, m in masks.items()}
    rec.record(masks, None, kind="init", step=0, epoch=0)
    for m in masks.values():  # the caller changes its masks right away
        m.fill_(True)
    rec.close()
    loaded = store.load(tmp_path, event=0)
    assert all(torch.equal(loaded[n], before[n]) for n in before)


def test_recorder_truncate_drops_later_events(tmp_path):
    masks = _masks()
    rec = Recorder(tmp_path)
    _run_json(rec, masks)
    for k in range(4):
        rec.record(_masks(k), None, kind="update", step=k, epoch=k)
    rec.close()
    rec = Recorder(tmp_path, n_events=4)
    rec.truncate(2)
    run = store.read_run(tmp_path)
    assert run.n_events == 2
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [
        "event-000000.safetensors", "event-000001.safetensors"]  # fmt: skip
    rec.record(_masks(9), None, kind="update", step=9, epoch=9)
    rec.close()
    assert store.read_run(tmp_path).events[2]["step"] == 9


def test_full_disk_error_surfaces_and_keeps_complete_events(tmp_path, monkeypatch):
    masks = _masks()
    rec = Recorder(tmp_path)
    _run_json(rec, masks)
    rec.record(masks, None, kind="init", step=0, epoch=0)
    rec.flush()

    def full(*a, **k):
        raise MaskFileError(tmp_path / "masks" / "x", "cannot write ([Errno 28] No space left)")

    monkeypatch.setattr(store, "save", full)
    rec.record(masks, None, kind="update", step=1, epoch=1)
    with pytest.raises(MaskFileError, match="No space left"):
        rec.flush()
    run = store.read_run(tmp_path)  # still consistent: the complete event only
    assert run.n_events == 1 and run.load(0).nnz() == sum(int(m.sum()) for m in masks.values())
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["kind"] == "init"
    assert not math.isnan(run.events[0]["density"])
