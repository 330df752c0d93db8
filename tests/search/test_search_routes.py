"""The ensemble trainer's two CPU routes (compiled numba kernel, batched torch) agree to the
stated tolerance on every option; the compiled route's own guarantees (one step per call equals
many, threads change nothing, resuming equals not stopping) hold bit for bit."""

from __future__ import annotations

import pytest
import torch

from masktopo.errors import MaskValidationError, UnknownNameError
from masktopo.search import EnsembleTrainer, init_params, support_masks
from masktopo.search.ensemble import bias_masks_from_units

ARCH = (2, 3, 3, 3, 1)
# The stated tolerance between the routes: they differ in the rounding order of sums (a few
# float32 ulps per step), which 450 steps amplify to at most ~1e-5 (measured: <= 5e-6 for the
# weights after 780 steps with per-model order, <= 1.2e-5 with the shared one).
RTOL, ATOL = 1e-5, 1e-5


@pytest.fixture(scope="module")
def spiral():
    from masktopo.zoo import cubist_spiral

    return cubist_spiral()


def _models(n: int, start: int = 0):
    idx = [(start + 397 * i) % 25992 for i in range(n)]
    masks = [torch.from_numpy(m) for m in support_masks(ARCH, idx)]
    w, b = init_params([7 + i for i in idx], ARCH, init_width=16)
    lrs = [(0.05, 0.1, 0.2)[i % 3] for i in range(n)]
    scheds = [("cosine", "step", "constant")[i % 3] for i in range(n)]
    return masks, w, b, lrs, scheds, [11 + i for i in idx]


def _make(spiral, models, route, shared=False, bmasks=None, **kw):
    masks, w, b, lrs, scheds, seeds = models
    return EnsembleTrainer(*spiral, w, b, masks, bmasks, lr=lrs, schedule=scheds, epochs=2,
                           order_seeds=None if shared else seeds, seed=5, route=route,
                           **kw)  # fmt: skip


def _state(t: EnsembleTrainer) -> list[torch.Tensor]:
    return [*t.w, *t.b, *t.vw, *t.vb]


def _assert_close(a: EnsembleTrainer, b: EnsembleTrainer) -> None:
    for u, v in zip(_state(a), _state(b), strict=True):
        torch.testing.assert_close(u, v, rtol=RTOL, atol=ATOL)


def _assert_equal(a: EnsembleTrainer, b: EnsembleTrainer) -> None:
    for u, v in zip(_state(a), _state(b), strict=True):
        assert torch.equal(u, v)


def test_auto_takes_the_compiled_route_on_the_cpu_and_checks_its_argument(spiral):
    models = _models(2)
    assert _make(spiral, models, "auto").route == "compiled"
    assert _make(spiral, models, "torch").route == "torch"
    with pytest.raises(UnknownNameError):
        _make(spiral, models, "numba")
    with pytest.raises(MaskValidationError, match="CPU"):
        _make(spiral, models, "compiled", device="cuda")


@pytest.mark.parametrize("shared", [False, True])
def test_routes_agree_through_an_epoch_boundary_and_on_the_accuracy(spiral, shared):
    """Every schedule (cosine, step, constant: mixed in the batch), 450 steps (390 per epoch),
    then to the end of the 2 epochs: the same train accuracy within one point of 49,982."""
    models = _models(24)
    fast = _make(spiral, models, "compiled", shared).run(450)
    ref = _make(spiral, models, "torch", shared).run(450)
    _assert_close(fast, ref)
    moved = max(float((u - v).abs().max()) for u, v in zip(fast.w, models[1], strict=True))
    assert moved > 1e-2  # the models trained
    for t in (fast, ref):  # masked weights and biases are exact zeros on both routes
        for p, m in zip([*t.w, *t.b], [*t.wmask, *t.bmask], strict=True):
            assert (p[~m] == 0).all()
    fast.run()
    ref.run()
    a, r = fast.evaluate(), ref.evaluate()
    assert (a.accuracy - r.accuracy).abs().max() <= 1.5 / fast.n
    torch.testing.assert_close(a.loss, r.loss, rtol=1e-4, atol=1e-6)
    assert a.accuracy.max() > 0.55  # some models learned something


def test_routes_agree_with_given_bias_masks(spiral):
    """Bias masks given (not derived): an output bias and hidden biases switched off."""
    models = _models(8, start=5)
    bm = bias_masks_from_units(models[0])
    bm = [m.clone() for m in bm]
    bm[0][:, 0] = False
    bm[3][::2] = False
    fast = _make(spiral, models, "compiled", bmasks=bm).run(200)
    ref = _make(spiral, models, "torch", bmasks=bm).run(200)
    _assert_close(fast, ref)
    assert (fast.b[0][:, 0] == 0).all() and (fast.b[3][::2] == 0).all()
    assert (fast.b[3][1::2] != 0).all()


def test_routes_agree_under_a_mask_changing_callback_with_dense_gradients(spiral):
    """A RigL-like callback: the dense gradients it reads agree, and so do the masks it sets
    from them and the weights trained under those masks."""
    models = _models(6, start=3)
    seen = {}

    def regrow(t: EnsembleTrainer) -> None:
        if t.step_count % 50:
            return
        seen.setdefault(t.route, []).append([g.clone() for g in t.dense_grads])
        for j, (m, g) in enumerate(zip(t.wmask, t.dense_grads, strict=True)):
            # grow the pruned weight with the largest |gradient| in each model
            score = torch.where(m, -1.0, g.abs()).flatten(1)
            best = score.argmax(1)
            grow = torch.zeros_like(score, dtype=torch.bool)
            grow[torch.arange(len(best)), best] = score.max(1).values >= 0
            t.wmask[j] = m | grow.view_as(m)
        t.apply_masks()

    runs = {}
    for route in ("compiled", "torch"):
        t = _make(spiral, models, route)
        t.record_grads = True
        runs[route] = t.run(300, callback=regrow)
    fast, ref = runs["compiled"], runs["torch"]
    for m1, m2 in zip(fast.wmask, ref.wmask, strict=True):
        assert torch.equal(m1, m2)
    assert sum(int(m.sum()) for m in fast.wmask) > sum(int(m.sum()) for m in models[0])
    _assert_close(fast, ref)
    for g1, g2 in zip(seen["compiled"], seen["torch"], strict=True):
        for u, v in zip(g1, g2, strict=True):
            torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-6)
    # dense: gradients at pruned positions too
    assert any((g[~m] != 0).any() for g, m in zip(seen["compiled"][0], models[0], strict=True))


def test_one_step_per_call_threads_and_resuming_change_no_bit(spiral):
    """The compiled route: ``step()`` one at a time (a callback) equals whole epochs per call;
    three threads equal one; stopping, saving and resuming equals running through."""
    models = _models(200)
    ref = _make(spiral, models, "compiled", threads=1).run(420)
    assert ref.step_count == 420
    threaded = _make(spiral, models, "compiled", threads=3).run(420)
    _assert_equal(ref, threaded)
    stepped = _make(spiral, models, "compiled", threads=1).run(420, callback=lambda t: None)
    _assert_equal(ref, stepped)
    first = _make(spiral, models, "compiled", threads=2).run(250)
    resumed = _make(spiral, models, "compiled")
    resumed.load_state_dict(first.state_dict())
    resumed.run(170)
    _assert_equal(ref, resumed)


def test_a_trainer_may_switch_routes(spiral):
    """Both routes read and write the same tensors: compiled, then torch, then compiled again
    tracks torch throughout within the tolerance."""
    models = _models(10, start=2)
    mixed = _make(spiral, models, "compiled").run(150)
    mixed.route = "torch"
    mixed.run(150)
    mixed.route = "compiled"
    mixed.run(150)
    ref = _make(spiral, models, "torch").run(450)
    _assert_close(mixed, ref)
