"""Where a run starts (the sweep issue's gap fixes): the PaI scoring data and rounds of ``static``
as options, the model width from the config, and a run that starts from a saved network."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import masktopo
from masktopo.errors import MaskFileError, MaskValidationError
from masktopo.trainer import TrainConfig, train
from masktopo.trainer.config import resolve
from masktopo.trainer.start import load_initial_state
from masktopo.zoo import get_model

SPIRAL = dict(model="spiral-mlp", dataset="cubist-spiral", batch_size=1000, lr=0.05,
              optimizer="adamw", weight_decay=0.0, device="cpu", epochs=1)  # fmt: skip


def _start_masks(tmp_path, name: str, **kw) -> dict[str, torch.Tensor]:
    cfg = TrainConfig(method="static", density=0.3, max_steps=1, **{**SPIRAL, **kw})
    train(cfg, tmp_path / name)
    ms = masktopo.load(tmp_path / name, event=0)
    return {n: ms[n].clone() for n in ms.names}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_static_scores_on_the_whole_training_split_by_default(tmp_path):
    """score_batches: None (default) reads every batch of the training split; N reads N. SNIP
    accumulates its gradient over the batches read, so 1 batch and all of them differ, and a
    number beyond the split's batches is all of them."""
    every = _start_masks(tmp_path, "all", init_method="snip")
    capped = _start_masks(tmp_path, "capped", init_method="snip", score_batches=10_000)
    one = _start_masks(tmp_path, "one", init_method="snip", score_batches=1)
    assert _same(every, capped)
    assert not _same(every, one)
    for m in (every, one):  # exact counts either way
        assert sum(int(v.sum()) for v in m.values()) == round(
            0.3 * sum(v.numel() for v in m.values())
        )


def test_static_pai_rounds(tmp_path):
    default = _start_masks(tmp_path, "d", init_method="synflow")
    hundred = _start_masks(tmp_path, "h", init_method="synflow", pai_rounds=100)
    one = _start_masks(tmp_path, "o", init_method="synflow", pai_rounds=1)
    assert _same(default, hundred)  # SynFlow's own default is 100 rounds
    assert not _same(default, one)


def test_shuffled_pai_masks_keep_each_layers_count(tmp_path):
    """shuffle_masks: Frankle et al.'s control keeps every layer's count and drops the choice."""
    chosen = _start_masks(tmp_path, "snip", init_method="snip", score_batches=2)
    shuffled = _start_masks(tmp_path, "shuf", init_method="snip", score_batches=2,
                            shuffle_masks=True)  # fmt: skip
    again = _start_masks(tmp_path, "shuf2", init_method="snip", score_batches=2,
                         shuffle_masks=True)  # fmt: skip
    assert {n: int(m.sum()) for n, m in chosen.items()} == {
        n: int(m.sum()) for n, m in shuffled.items()
    }
    big = "second_layer.weight"  # 16x16: a permutation that changes nothing is (almost) impossible
    assert not torch.equal(chosen[big], shuffled[big])
    assert _same(shuffled, again)  # the seed decides the permutation
    with pytest.raises(MaskValidationError, match="shuffle_masks is only used by method"):
        resolve(TrainConfig(method="rigl", shuffle_masks=True))


def test_scoring_options_belong_to_static():
    with pytest.raises(MaskValidationError, match="score_batches is only used by method 'static'"):
        resolve(TrainConfig(method="set", score_batches=2))
    with pytest.raises(MaskValidationError, match="pai_rounds is only used by method 'static'"):
        resolve(TrainConfig(method="gmp", pai_rounds=2))
    with pytest.raises(MaskValidationError, match="score_batches must be >= 1"):
        TrainConfig(method="static", score_batches=0).replace()  # checked where it is set
        resolve(TrainConfig(method="static", score_batches=0))


def test_width_from_the_config(tmp_path):
    masks = _start_masks(tmp_path, "w3", width=3)
    assert [tuple(m.shape) for m in masks.values()] == [(3, 2), (3, 3), (3, 3), (1, 3)]
    with pytest.raises(MaskValidationError, match="model 'lenet300' has no option 'width'"):
        train(TrainConfig(method="static", model="lenet300", width=3, max_steps=1), None)


def test_a_run_starts_from_exactly_the_saved_network(tmp_path):
    """init_weights: every parameter and buffer comes from the file (biases included), whatever
    the run's seed; the mask is then chosen and applied on those weights."""
    model = get_model("spiral-mlp", dataset="cubist-spiral",
                      generator=torch.Generator().manual_seed(99))  # fmt: skip
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    state["clf.bias"] += 0.5  # a value no seed's initialisation gives
    save_file(state, str(tmp_path / "init.safetensors"))
    seen = {}

    def after_first_step(step, info):
        if step == 1:
            seen.update({k: v.detach().clone() for k, v in info["model"].state_dict().items()})

    # lr 1e-30: the first step moves nothing representable, so the state after it is the start
    cfg = TrainConfig(method="static", density=0.5, max_steps=1, seed=3, init_weights=str(
        tmp_path / "init.safetensors"), **{**SPIRAL, "lr": 1e-30})  # fmt: skip
    train(cfg, tmp_path / "run", callback=after_first_step)
    ms = masktopo.load(tmp_path / "run", event=0)
    for k, v in state.items():
        if k in ms.names:
            assert torch.equal(ms.weights[k], v * ms[k]), k
            assert torch.equal(seen[k], v * ms[k]), k
        else:
            assert torch.equal(seen[k], v), k  # biases: from the file, not from seed 3


def test_initial_state_errors(tmp_path):
    model = get_model("spiral-mlp", dataset="cubist-spiral")
    other = get_model("spiral-mlp", dataset="cubist-spiral", width=4)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()},
              str(tmp_path / "w4.safetensors"))  # fmt: skip
    with pytest.raises(MaskFileError, match=r"state of another network; other shapes: "
                       r"first_layer.weight \(4, 2\) \(model \(16, 2\)\)"):  # fmt: skip
        load_initial_state(model, tmp_path / "w4.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(MaskFileError, match="not a readable safetensors file"):
        load_initial_state(model, tmp_path / "bad.safetensors")
    with pytest.raises(MaskFileError, match="no such file"):
        load_initial_state(model, tmp_path / "missing.safetensors")
    nan = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    nan["clf.bias"][:] = float("nan")
    save_file(nan, str(tmp_path / "nan.safetensors"))
    with pytest.raises(MaskFileError, match=r"clf\.bias has NaN"):
        load_initial_state(model, tmp_path / "nan.safetensors")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert _same(before, model.state_dict())  # a refused file changes nothing


def test_a_pags_run_directory_trains_from_exactly_the_scored_network(tmp_path):
    """``init_masks = PAGS_RUN``: PAGS's best masks and the whole network it scored
    (init.safetensors: biases included), whatever the training seed."""
    from safetensors.torch import load_file

    from masktopo.pags import run as run_pags
    from masktopo.pags.config import PagsConfig

    run_pags(PagsConfig(model="spiral-mlp", dataset="cubist-spiral", method="erk", density=0.3,
                        n=4, chunk=2, seed=7, snapshot_every=2), tmp_path / "p")  # fmt: skip
    scored = load_file(str(tmp_path / "p" / "init.safetensors"))
    model = get_model("spiral-mlp", dataset="cubist-spiral")
    assert scored.keys() == model.state_dict().keys()
    best = masktopo.load(tmp_path / "p" / "best.safetensors")
    seen = {}

    def after_first_step(step, info):
        if step == 1:
            seen.update({k: v.detach().clone() for k, v in info["model"].state_dict().items()})

    cfg = TrainConfig(method="static", density=0.3, max_steps=1, seed=0,
                      init_masks=str(tmp_path / "p"), **{**SPIRAL, "lr": 1e-30})  # fmt: skip
    train(cfg, tmp_path / "run", callback=after_first_step)
    start = masktopo.load(tmp_path / "run", event=0)
    for k, v in scored.items():
        if k in best.names:
            assert torch.equal(start[k], best[k]), k
            assert torch.equal(seen[k], v * best[k]), k
        else:
            assert torch.equal(seen[k], v), k
    # the seed-0 model is another network: the start did not come from the seed
    assert not torch.equal(model.state_dict()["clf.bias"], scored["clf.bias"])
    (tmp_path / "p" / "init.safetensors").unlink()
    with pytest.raises(MaskFileError, match=r"this PAGS run has no init\.safetensors"):
        train(cfg, tmp_path / "run2")


def test_static_reports_its_density_as_R_s(tmp_path):
    """A fixed mask's ever-active fraction is its density: static runs have R_s (E1's axis),
    also after a resume from a checkpoint."""
    from masktopo.trainer import resume_config

    cfg = TrainConfig(method="static", density=0.3, max_steps=30, checkpoint_every=10,
                      **{**SPIRAL, "epochs": 2})  # fmt: skip
    res = train(cfg, tmp_path / "run")
    assert res.final["R_s"] == pytest.approx(res.density) and res.density == pytest.approx(
        0.3, abs=0.01
    )
    again = train(resume_config(tmp_path / "run", max_steps=60), tmp_path / "run", resume=True)
    assert again.final["R_s"] == pytest.approx(res.density)
