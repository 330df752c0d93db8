"""Live logs of a training run: metrics.jsonl, the plain line per epoch, TensorBoard and W&B."""

from __future__ import annotations

import json
import math
import re
import sys
import types
import warnings

import pytest

from masktopo import runs
from masktopo.errors import MaskFileError, MaskTopoError
from masktopo.runs.layout import METRICS_FILE, RUN_FILE, TENSORBOARD_DIR
from masktopo.trainer import TrainConfig, resume_config, train
from masktopo.trainer.logs import TENSORBOARD_MISSING, WANDB_MISSING, epoch_line

#: The Cubist Spiral (procedural, no files) with its small MLP: 44 steps per epoch.
SPIRAL = dict(model="spiral-mlp", dataset="cubist-spiral", batch_size=1000, lr=0.05,
              optimizer="adamw", weight_decay=0.0, device="cpu")  # fmt: skip
SET = dict(method="set", density=0.3, update_interval=20, **SPIRAL)
SPE = 44

#: ``epoch 1/2  step 44  loss 0.6423  acc 0.5857  val_acc 0.6162  density 0.3000  R_s 0.4357  0.1 s``
LINE = re.compile(
    r"epoch (\d+)/(\d+)  step (\d+)  loss \d\.\d{4}  acc \d\.\d{4}  val_acc \d\.\d{4}  "
    r"density \d\.\d{4}  R_s \d\.\d{4}  \d+\.\d s"
)


def _no_seconds(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in d.items() if k != "seconds"} for d in lines]


def _plain(value):
    """As metrics.jsonl stores it: NaN as None."""
    return None if isinstance(value, float) and math.isnan(value) else value


def test_metrics_jsonl_grows_per_epoch_and_ends_with_the_final_metrics(tmp_path, capsys,
                                                                       one_thread):  # fmt: skip
    out = tmp_path / "run"
    seen = {}

    def callback(step, info):  # the first step of epoch 2: epoch 1's line is already there
        if step == SPE + 1:
            seen["lines"] = runs.read_metrics(out)

    res = train(TrainConfig(epochs=2, eval_every=2, **SET), out, callback=callback)
    assert [d["epoch"] for d in seen["lines"]] == [1]
    lines = runs.read_metrics(out)
    assert [d["kind"] for d in lines] == ["epoch", "epoch", "final"]
    epochs = runs.read_metrics(out, kind="epoch")
    assert epochs == lines[:2] == runs.read_run(out).metrics("epoch")
    for got, row in zip(epochs, res.history, strict=True):  # the history rows, as they are
        assert got == {"kind": "epoch", **{k: _plain(v) for k, v in row.items()}}
    assert epochs[0]["val_acc"] is None and epochs[1]["val_acc"] > 0.5  # eval_every 2
    assert {"step", "train_loss", "lr", "density", "seconds", "R_s", "rate"} <= set(epochs[0])
    final = lines[-1]
    assert final["step"] == 2 * SPE and final["epoch"] == 2.0
    assert final == {"kind": "final", "step": 2 * SPE, "epoch": 2.0, **res.final}
    summary = runs.read_run(out).summary()
    assert [{"kind": "epoch", **h} for h in summary["history"]] == epochs
    # one write per line: every line is whole and ends with a newline
    raw = (out / METRICS_FILE).read_bytes()
    assert raw.endswith(b"\n") and all(json.loads(x) for x in raw.splitlines())

    err = capsys.readouterr().err.splitlines()  # no bar: one plain line per epoch on stderr
    plain = [ln for ln in err if ln.startswith("epoch ")]
    assert len(plain) == 2
    assert plain[0].startswith("epoch 1/2  step 44  loss ") and "val_acc" not in plain[0]
    m = LINE.fullmatch(plain[1])
    assert m and m.groups() == ("2", "2", "88"), plain[1]


def test_the_bar_writes_the_line_and_no_second_one_is_printed(tmp_path, capsys, one_thread):
    train(TrainConfig(epochs=2, **SET), tmp_path / "run", progress=True)
    out, err = capsys.readouterr()
    for e in (1, 2):
        assert err.count(f"epoch {e}/2  step {e * SPE}  ") == 1, err
    assert out == ""  # above the bar, on stderr


def test_no_run_directory_still_prints_the_lines(capsys, one_thread):
    train(TrainConfig(epochs=1, **SET), None)
    assert LINE.fullmatch(capsys.readouterr().err.strip())


def test_epoch_line_leaves_out_what_was_not_measured():
    row = {"epoch": 3, "step": 1263, "train_loss": 0.41234, "train_acc": 0.85123,
           "val_loss": float("nan"), "val_acc": float("nan"), "density": 0.05,
           "seconds": 12.34}  # fmt: skip
    assert epoch_line(row, 10) == "epoch 3/10  step 1263  loss 0.4123  acc 0.8512  density " \
        "0.0500  12.3 s"  # fmt: skip
    row.update(val_acc=0.84012, R_s=0.31)
    assert epoch_line(row) == "epoch 3  step 1263  loss 0.4123  acc 0.8512  val_acc 0.8401  " \
        "density 0.0500  R_s 0.3100  12.3 s"  # fmt: skip


def test_read_metrics_drops_a_cut_off_last_line_and_warns_on_a_bad_one(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(MaskFileError, match="not a run directory"):
        runs.read_metrics(tmp_path)
    run.mkdir()
    (run / RUN_FILE).write_text("{}")
    assert runs.read_metrics(run) == []  # no metrics.jsonl (yet)
    a, b = {"kind": "epoch", "epoch": 1, "step": 5}, {"kind": "epoch", "epoch": 2, "step": 10}
    good = (json.dumps(a) + "\n" + json.dumps(b) + "\n").encode()
    (run / METRICS_FILE).write_bytes(good + b'{"kind": "epoch", "epo')  # killed mid-write
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a cut-off last line is expected: no warning
        assert runs.read_metrics(run) == [a, b]
    bad = json.dumps(a).encode() + b"\nnot json\n[1]\n" + json.dumps(b).encode() + b"\n"
    (run / METRICS_FILE).write_bytes(bad)
    with pytest.warns(UserWarning, match=r"metrics\.jsonl: skipping line 2: not valid JSON"):
        with pytest.warns(UserWarning, match="skipping line 3: not a JSON object"):
            assert runs.read_metrics(run) == [a, b]


def test_resume_cuts_the_log_back_to_the_checkpoint_and_ends_as_an_uninterrupted_run(
    tmp_path, one_thread
):
    whole = tmp_path / "whole"
    train(TrainConfig(epochs=3, **SET), whole)
    cut = tmp_path / "cut"
    train(TrainConfig(epochs=3, max_steps=70, **SET), cut)  # stops (and checkpoints) at step 70
    assert [(d["kind"], d["step"]) for d in runs.read_metrics(cut)] == [("epoch", 44),
                                                                         ("final", 70)]  # fmt: skip
    with open(cut / METRICS_FILE, "ab") as f:  # what a run killed after step 70 may have left
        f.write(b'{"kind": "epoch", "epoch": 2, "step": 88, "train_loss": 1.0}\n{"kind": "ep')
    again = resume_config(cut, max_steps=None, tensorboard=False, wandb=False)  # resumable
    train(again, cut, resume=True)
    want = runs.read_metrics(whole)
    assert [(d["kind"], d["step"]) for d in want] == [("epoch", 44), ("epoch", 88),
                                                      ("epoch", 132), ("final", 132)]  # fmt: skip
    assert _no_seconds(runs.read_metrics(cut)) == _no_seconds(want)
    assert (cut / METRICS_FILE).read_bytes().endswith(b"\n")


def test_the_new_options_may_change_on_resume_and_are_in_run_json(tmp_path, one_thread):
    out = tmp_path / "run"
    train(TrainConfig(epochs=1, **SET), out)
    config = runs.read_run_json(out)["config"]
    assert config["tensorboard"] is False and config["wandb"] is False
    assert config["wandb_project"] is None
    again = resume_config(out, tensorboard=True, wandb=True, wandb_project="p")
    assert again.tensorboard and again.wandb and again.wandb_project == "p"
    with pytest.raises(MaskFileError, match="other settings: density"):
        resume_config(out, density=0.5, tensorboard=True)


# ---- TensorBoard -------------------------------------------------------------------------------
def test_tensorboard_missing_is_one_line_before_anything_is_written(tmp_path, capsys,
                                                                   monkeypatch):  # fmt: skip
    from masktopo.cli.main import main

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the import fails
    out = tmp_path / "run"
    with pytest.raises(MaskTopoError) as info:
        train(TrainConfig(epochs=1, tensorboard=True, **SET), out)
    assert str(info.value) == TENSORBOARD_MISSING
    assert TENSORBOARD_MISSING == (
        "--tensorboard needs the tensorboard package: pip install tensorboard"
    )
    assert not out.exists()
    rc = main(["train", "--method", "static", "--model", "spiral-mlp", "--dataset",
               "cubist-spiral", "--epochs", "1", "--tensorboard", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc != 0 and err == f"masktopo: error: {TENSORBOARD_MISSING}\n"
    assert not out.exists()


def test_tensorboard_logs_the_scalars(tmp_path, one_thread):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    res = train(TrainConfig(epochs=2, tensorboard=True, **SET), out)
    acc = EventAccumulator(str(out / TENSORBOARD_DIR))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/acc", "train/lr", "val/loss", "val/acc", "mask/density",
            "method/R_s", "method/rate", "epoch", "time/epoch_seconds", "event/density",
            "event/rate", "final/test_acc", "final/val_loss"} <= tags  # fmt: skip

    def series(tag):
        return [(e.step, e.value) for e in acc.Scalars(tag)]

    for tag, key in (("train/loss", "train_loss"), ("val/acc", "val_acc"), ("train/lr", "lr"),
                     ("method/R_s", "R_s")):  # fmt: skip
        want = [(h["step"], pytest.approx(h[key], rel=1e-6)) for h in res.history]
        assert series(tag) == want, tag
    assert series("final/test_acc") == [(2 * SPE, pytest.approx(res.final["test_acc"]))]
    events = runs.read_run(out).events  # one point per mask event, at its step
    assert series("event/density") == [(e["step"], pytest.approx(e["density"])) for e in events]


# ---- Weights & Biases (a fake module: wandb is not installed for the tests) ---------------------
def _fake_wandb(monkeypatch) -> list:
    calls = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(("init", kw))
    fake.log = lambda data, step=None: calls.append(("log", data, step))
    fake.finish = lambda **kw: calls.append(("finish", kw))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return calls


def test_wandb_logs_the_same_scalars(tmp_path, monkeypatch, one_thread):
    calls = _fake_wandb(monkeypatch)
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "run"
    cfg = TrainConfig(epochs=2, wandb=True, wandb_project="sparse", **SET)
    res = train(cfg, out)
    assert calls[0][0] == "init" and calls[-1] == ("finish", {})
    init = calls[0][1]
    assert init["project"] == "sparse" and init["dir"] == str(out)
    assert init["mode"] == "offline" and init["config"] == res.config.to_dict()
    logs = [(data, step) for kind, data, step in (c for c in calls if c[0] == "log")]
    steps = [step for _, step in logs]
    assert steps == sorted(steps) and steps[0] == 0  # the init event
    epochs = [(d, s) for d, s in logs if "train/loss" in d]
    assert [s for _, s in epochs] == [SPE, 2 * SPE]
    assert epochs[1][0]["val/acc"] == res.history[1]["val_acc"]
    assert {"train/acc", "train/lr", "val/loss", "mask/density", "method/R_s"} <= set(epochs[0][0])
    n_events = runs.read_run(out).n_events
    assert sum("event/density" in d for d, _ in logs) == n_events
    assert logs[-1][0]["final/test_acc"] == res.final["test_acc"]
    assert not (out / "wandb").exists()  # the fake writes nothing


def test_wandb_finishes_with_an_error_code_when_training_fails(tmp_path, monkeypatch, one_thread):
    calls = _fake_wandb(monkeypatch)

    def callback(step, info):
        if step == 5:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train(TrainConfig(epochs=1, wandb=True, **SET), tmp_path / "run", callback=callback)
    assert calls[0][0] == "init" and calls[-1] == ("finish", {"exit_code": 1})


def test_wandb_missing_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    out = tmp_path / "run"
    with pytest.raises(MaskTopoError) as info:
        train(TrainConfig(epochs=1, wandb=True, **SET), out)
    assert str(info.value) == WANDB_MISSING
    assert WANDB_MISSING == "--wandb needs the wandb package: pip install masktopo[wandb]"
    assert not out.exists()
