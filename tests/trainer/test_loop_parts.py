"""The loop's pure pieces: LR schedule, augmentation, seeds."""

from __future__ import annotations

import pytest
import torch

from masktopo.seeding import seed_for
from masktopo.trainer.config import TrainConfig, resolve
from masktopo.trainer.loop import crop_flip, lr_at


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
