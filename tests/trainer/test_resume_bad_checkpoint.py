"""``train --resume`` of a run whose checkpoint.pt holds bad fields: a one-line error naming the
file and the field, raised before anything in the run directory is rewritten (metrics.jsonl,
events.jsonl and the rest stay byte-identical). Also: a plain pickle file is refused as one."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch

from masktopo.errors import MaskFileError
from masktopo.runs.layout import CHECKPOINT_FILE, METRICS_FILE
from masktopo.store import torch_load
from masktopo.trainer import TrainConfig, resume_config, train

#: SET on the Cubist Spiral: 44 steps per epoch; stopped at step 50, so the run holds an epoch
#: line and the final line in metrics.jsonl and a mid-epoch checkpoint (with its running sums).
SET = dict(method="set", density=0.3, update_interval=10, model="spiral-mlp",
           dataset="cubist-spiral", batch_size=1000, lr=0.05, val_fraction=0.1, epochs=2,
           max_steps=50)  # fmt: skip


@pytest.fixture(scope="module")
def made_run(tmp_path_factory):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("resume") / "run"
        train(TrainConfig(**SET), out)
    finally:
        torch.set_num_threads(old)
    return out


def _tree(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy_with(made_run: Path, tmp_path: Path, edit) -> Path:
    run = tmp_path / "run"
    shutil.copytree(made_run, run)
    path = run / CHECKPOINT_FILE
    ck = torch.load(path, weights_only=True)
    edit(ck)
    torch.save(ck, path)
    return run


def _set(key, value):
    def edit(ck):
        ck[key] = value

    return edit


def _nan_weight(ck):
    name = next(k for k, t in ck["model"].items() if t.is_floating_point() and t.dim() == 2)
    ck["model"][name][0, 0] = float("nan")


def _inf_optimizer_state(ck):
    state = next(iter(ck["optimizer"]["state"].values()))
    key = next(k for k, t in state.items() if isinstance(t, torch.Tensor) and t.dim() > 0)
    state[key].view(-1)[0] = float("inf")


def _opt_groups(ck):
    ck["optimizer"]["param_groups"] = "x"


CASES = {
    "step_str": (_set("step", "abc"), "'step' must be a non-negative integer, not 'abc'"),
    "step_negative": (_set("step", -10), "'step' must be a non-negative integer, not -10"),
    "step_float": (_set("step", 10.5), "'step' must be a non-negative integer"),
    "step_beyond": (_set("step", 10**6), "'step' is 1000000, beyond this run's 88 steps"),
    "epoch_other": (_set("epoch", 0), "'epoch' is 0, but step 50 is in epoch 1"),
    "n_events_negative": (_set("n_events", -1), "'n_events' must be a non-negative integer"),
    "optimizer_str": (_set("optimizer", "x"), "'optimizer' must be a dict, not str"),
    "optimizer_groups": (_opt_groups, "'optimizer' must hold a 'state' dict and a 'param_groups'"),
    "optimizer_inf": (_inf_optimizer_state, "'optimizer' holds NaN or infinite values"),
    "sparsifier_list": (_set("sparsifier", [1]), "'sparsifier' must be a dict, not list"),
    "model_str": (_set("model", "x"), "'model' must be a dict, not str"),
    "model_nan": (_nan_weight, "'model' holds NaN or infinite values in "),
    "config_str": (_set("config", "x"), "'config' must be a dict, not str"),
    "history_ints": (_set("history", [1]), "'history' must be a list of dicts"),
    "sums_short": (_set("sums", torch.zeros(2)), "'sums' must be a tensor of 3 floats"),
    "rng_floats": (_set("rng", {"torch": torch.zeros(3)}), "'rng' must be a dict of random"),
    "events_digest_int": (_set("events_digest", 5), "'events_digest' must be a string"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_field_is_one_line_and_nothing_is_rewritten(made_run, tmp_path, one_thread, case):
    edit, message = CASES[case]
    run = _copy_with(made_run, tmp_path, edit)
    assert (run / METRICS_FILE).read_bytes().count(b"\n") == 2  # an epoch line, the final line
    before = _tree(run)
    with pytest.raises(MaskFileError) as info:
        train(resume_config(run), run, resume=True)
    text = str(info.value)
    assert text.startswith(f"{run / CHECKPOINT_FILE}: invalid checkpoint: "), text
    assert message in text and "\n" not in text
    after = _tree(run)
    assert after[run / METRICS_FILE] == before[run / METRICS_FILE]
    assert after == before


def test_cli_resume_with_a_negative_step_is_one_line(made_run, tmp_path, one_thread, capsys):
    from masktopo.cli.main import main

    run = _copy_with(made_run, tmp_path, _set("step", -10))
    metrics = (run / METRICS_FILE).read_bytes()
    rc = main(["train", "--resume", str(run)])
    err = capsys.readouterr().err
    assert rc == 2 and err == (f"masktopo: error: {run / CHECKPOINT_FILE}: invalid checkpoint: "
                               "'step' must be a non-negative integer, not -10\n")  # fmt: skip
    assert (run / METRICS_FILE).read_bytes() == metrics


def test_a_good_checkpoint_still_resumes(made_run, tmp_path, one_thread):
    run = _copy_with(made_run, tmp_path, lambda ck: None)
    res = train(resume_config(run), run, resume=True)
    assert res.steps == 50 and len(res.history) == 1


def test_a_plain_pickle_checkpoint_is_refused_as_one(made_run, tmp_path, one_thread):
    run = tmp_path / "run"
    shutil.copytree(made_run, run)
    (run / CHECKPOINT_FILE).write_bytes(pickle.dumps({"step": 1}))
    before = _tree(run)
    with pytest.raises(MaskFileError, match=r"checkpoint\.pt: refusing to unpickle: a plain "
                       r"pickle file \(pickle\.dump\), not a torch\.save checkpoint"):  # fmt: skip
        train(resume_config(run), run, resume=True)
    assert _tree(run) == before


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_plain_pickles_are_refused_and_legacy_files_still_load(tmp_path, protocol):
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=protocol))
    for mmap in (False, True):
        with pytest.raises(MaskFileError, match=r"plain\.pt: refusing to unpickle: a plain pickle"):
            torch_load(plain, mmap=mmap)
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(torch_load(legacy)["w"], torch.ones(2))
    data = legacy.read_bytes()
    for cut in (1, 2, 5, len(data) // 2):  # cut short: still "truncated", not "plain pickle"
        legacy.write_bytes(data[:cut])
        with pytest.raises(MaskFileError, match="truncated or corrupt checkpoint"):
            torch_load(legacy)
