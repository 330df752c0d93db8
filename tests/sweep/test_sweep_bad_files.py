"""Bad sweep inputs are one error line and write nothing (found by fuzzing): a sweep file of other
[base] settings run into a sweep folder, an empty sweep file, a damaged sweep.json (wrong types,
a cell folder outside the sweep folder); a run whose metric is not a number is left out of the
summary with a warning naming its file. No run trains here: a stand-in executor reports each
run done, and the runs' files are written by hand."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from masktopo.errors import MaskFileError, MaskValidationError
from masktopo.sweep import SweepConfig, read_sweep, run_sweep, summarize
from masktopo.sweep.executors import Outcome

HEAD = """\
[base]
model = "spiral-mlp"
dataset = "cubist-spiral"
density = 0.3
lr = 0.05
device = "cpu"
epochs = 1
max_steps = 10
update_interval = 5
"""
GRID = '[grid]\nmethod = ["set", "rigl"]\nseed = [0, 1]\n'


class Done:
    """An executor that reports every run done at once, running nothing."""

    def run(self, tasks, on_start, on_done):
        for t in tasks:
            on_start(t)
            on_done(Outcome(t.key, 0, 0.01))


def _sweep(tmp_path: Path, text: str = HEAD + GRID) -> tuple[Path, Path]:
    f = tmp_path / "s.toml"
    f.write_text(text)
    out = tmp_path / "out"
    run_sweep(f, out, SweepConfig(), log=io.StringIO(), executor=Done())
    return f, out


def _files(out: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != ".lock"}


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("masktopo: error: ") and err.count("\n") == 1, err
    return err


def test_a_sweep_of_other_base_settings_is_refused(tmp_path, capsys):
    from cli.main import main

    _, out = _sweep(tmp_path)
    before = _files(out)
    other = tmp_path / "other.toml"
    other.write_text(HEAD.replace("max_steps = 10", "max_steps = 12")
                     + GRID.replace("[0, 1]", "[0, 1, 2]"))  # fmt: skip
    for dry in ([], ["--dry-run"]):
        assert main(["sweep", str(other), "--out", str(out), *dry]) == 2
        err = _one_error(capsys)
        assert "other settings" in err and "max_steps = 10 there, 12 here" in err
        assert "seed" not in err.split("other.toml:")[1].split(";")[0]  # an axis may grow
    assert _files(out) == before  # sweep.json, sweep.toml and status.json untouched
    added = tmp_path / "added.toml"
    added.write_text(HEAD + "batch_size = 64\n" + GRID)
    with pytest.raises(MaskValidationError, match="batch_size = not set there, 64 here"):
        run_sweep(added, out, SweepConfig(dry_run=True))
    removed = tmp_path / "removed.toml"
    removed.write_text(HEAD.replace("max_steps = 10\n", "") + GRID)
    with pytest.raises(MaskValidationError, match="max_steps = 10 there, not set here"):
        run_sweep(removed, out, SweepConfig(dry_run=True))
    assert _files(out) == before


def test_a_grown_grid_is_still_accepted(tmp_path):
    _, out = _sweep(tmp_path)
    grown = tmp_path / "grown.toml"  # more seeds, and a [base] setting made an axis
    grown.write_text(HEAD.replace("density = 0.3\n", "") + GRID.replace("[0, 1]", "[0, 1, 2]")
                     + "density = [0.3, 0.2]\n")  # fmt: skip
    result = run_sweep(grown, out, SweepConfig(), log=io.StringIO(), executor=Done())
    assert result.total == 12 and len(read_sweep(out).cells) == 12  # the old 4 cells are kept


def test_an_empty_sweep_file_is_refused(tmp_path, capsys):
    from cli.main import main

    for text in ("", "# nothing here\n"):
        f = tmp_path / "e.toml"
        f.write_text(text)
        assert main(["sweep", str(f), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
        assert f"{f}: the sweep file is empty" in _one_error(capsys)
        assert main(["sweep", str(f), "--out", str(tmp_path / "o")]) == 2
        _one_error(capsys)
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(axes="method"), "axes is 'method', not a list of axis names"),
        (lambda d: d.update(cells={"a": 1}), "cells is {'a': 1}, not a list of cells"),
        (lambda d: d.update(cells=[1]), "cells[0] is 1, not an object"),
        (lambda d: d.update(command=3), "command is 3, not a command name"),
        (lambda d: d["cells"][1].update(settings="x"), "cells[1].settings is 'x', not an object"),
        (lambda d: d["cells"][0].update(folder=5), "cells[0].folder is 5, not a string"),
        (lambda d: d["cells"][0].update(folder="../../etc"), "cells[0].folder '../../etc' is not"),
        (lambda d: d["cells"][2].update(folder="/etc"), "cells[2].folder '/etc' is not"),
        (lambda d: d["cells"][0].update(folder=".."), "cells[0].folder '..' is not"),
        (lambda d: d["cells"][1].update(key=d["cells"][0]["key"]), "is listed twice"),
    ],
)
def test_a_damaged_sweep_index_names_the_field(tmp_path, capsys, edit, message):
    from cli.main import main

    _, out = _sweep(tmp_path)
    index = out / "sweep.json"
    data = json.loads(index.read_text())
    edit(data)
    index.write_text(json.dumps(data))
    with pytest.raises(MaskFileError, match=r"sweep\.json: ") as e:
        read_sweep(out)
    assert message in str(e.value)
    assert main(["summarize", str(out)]) == 2
    err = _one_error(capsys)
    assert str(index) in err and message in err


def test_a_status_entry_that_is_not_an_object_is_refused(tmp_path):
    _, out = _sweep(tmp_path)
    status = json.loads((out / "status.json").read_text())
    status[next(iter(status))] = ["done"]
    (out / "status.json").write_text(json.dumps(status))
    with pytest.raises(MaskFileError, match=r"status\.json: .* is not an object"):
        read_sweep(out)


def _finish(run: Path, test_acc) -> None:
    """A finished training run's files, by hand: run.json and summary.json."""
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({
        "format": "masktopo.run", "format_version": 2, "kind": "train", "config": {},
        "layers": [{"name": "fc.weight", "kind": "linear", "shape": [2, 2]}],
    }))  # fmt: skip
    text = json.dumps({"final": {"test_acc": test_acc}}, allow_nan=True)
    (run / "summary.json").write_text(text)


def test_a_metric_that_is_not_a_number_is_left_out_with_a_warning(tmp_path, capsys):
    from cli.main import main

    _, out = _sweep(tmp_path)
    state = read_sweep(out)
    values = {("set", 0): 0.5, ("set", 1): "high", ("rigl", 0): 0.25, ("rigl", 1): math.nan}
    for cell in state.cells:
        _finish(state.run_dir(cell), values[cell.axes["method"], cell.axes["seed"]])
    with pytest.warns(UserWarning, match="test_acc is not a finite number in 2 of 4 runs") as w:
        df = summarize(out)
    text = str(w[0].message)
    bad = [c for c in state.cells if c.axes["seed"] == 1]
    for cell in bad:
        assert str(state.run_dir(cell) / "summary.json") in text
    assert "('high')" in text and "(nan)" in text
    rows = {r["method"]: r for _, r in df.iterrows()}
    assert rows["set"]["runs"] == 2 and rows["set"]["test_acc_n"] == 1  # n: what the mean used
    assert rows["set"]["test_acc_mean"] == 0.5 and rows["rigl"]["test_acc_mean"] == 0.25
    assert main(["summarize", str(out)]) == 0
    captured = capsys.readouterr()
    assert "masktopo: warning: test_acc is not a finite number in 2 of 4 runs" in captured.err
    assert "(n=1)" in captured.out


@pytest.mark.parametrize("final, kind", [([1, 2], "array"), ("test_acc", "string"), (5, "number")])
def test_a_run_whose_final_is_not_an_object_is_left_out_with_a_warning(tmp_path, capsys, final,
                                                                        kind):  # fmt: skip
    """summarize and plot (both read run_table) warn and leave the run out ('final' as a string
    or a number was a TypeError traceback)."""
    from cli.main import main

    _, out = _sweep(tmp_path)
    state = read_sweep(out)
    for cell in state.cells:
        _finish(state.run_dir(cell), 0.5)
    bad = next(c for c in state.cells if c.axes["method"] == "set" and c.axes["seed"] == 1)
    (state.run_dir(bad) / "summary.json").write_text(json.dumps({"final": final}))
    message = (f"{state.run_dir(bad) / 'summary.json'}: 'final' is not an object ({kind}): "
               f"run {bad.key} left out")  # fmt: skip
    with pytest.warns(UserWarning) as w:
        df = summarize(out)
    assert [str(x.message) for x in w] == [message]
    rows = {r["method"]: r for _, r in df.iterrows()}
    assert rows["set"]["runs"] == 1 and rows["rigl"]["runs"] == 2
    assert main(["summarize", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == [f"masktopo: warning: {message}"]
