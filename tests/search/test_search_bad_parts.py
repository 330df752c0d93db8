"""A search folder with a damaged results part (empty, cut off, another table) is one error line
naming the part, for --resume, plot and report, and nothing is written; deleting the part and
resuming trains its runs again. A search that kept masks says where they are (info, analyze,
report), and info on one of its masks parts says what the file is (found by fuzzing)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from masktopo.errors import MaskFileError
from masktopo.search import SearchConfig, read_results, read_search_masks, run_search

#: 8 runs in 2 batches (parts 0 and 1); every run reaches the low target, so masks are kept.
CFG = SearchConfig(arch="2-3-1", epochs=2, lr=(0.1,), schedule=("constant",), target=0.3,
                   models_per_batch=4)  # fmt: skip


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "done"
    run_search(CFG, out)
    return out


def _copy(done, tmp_path):
    out = tmp_path / "s"
    shutil.copytree(done, out)
    return out


def _files(out) -> dict:
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
            and p.name != ".lock"}  # fmt: skip


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("masktopo: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("damage", ["empty", "cut", "other table"])
def test_a_damaged_part_is_one_error_naming_it(done, tmp_path, capsys, damage):
    from cli.main import main

    out = _copy(done, tmp_path)
    part = out / "results" / "part-000001.parquet"
    if damage == "empty":
        part.write_bytes(b"")
    elif damage == "cut":
        part.write_bytes(part.read_bytes()[:300])
    else:
        pd.DataFrame({"a": [1, 2]}).to_parquet(part)
    why = "no run, key" if damage == "other table" else "not a readable parquet file"
    with pytest.raises(MaskFileError, match=why) as e:
        read_results(out)
    assert str(e.value).startswith(str(part))
    before = _files(out)
    argv = ["search", "--resume", "--out", str(out), "--arch", "2-3-1", "--epochs", "2", "--lr",
            "0.1", "--schedule", "constant", "--target", "0.3", "--models-per-batch", "4"]  # fmt: skip
    assert main(argv) == 2
    err = _one_error(capsys)
    assert str(part) in err and why in err and "search --resume" in err
    assert _files(out) == before  # nothing written, nothing lost
    assert main(["plot", str(out), "--out", str(tmp_path / "figs")]) == 2
    assert str(part) in _one_error(capsys)
    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "search figures: " in page and "part-000001.parquet" in page


def test_a_deleted_part_is_trained_again_into_a_new_part(done, tmp_path):
    out = _copy(done, tmp_path)
    (out / "results" / "part-000000.parquet").unlink()
    (out / "masks" / "part-000000.safetensors").unlink()
    result = run_search(CFG, out, resume=True)
    assert result.complete
    names = sorted(p.name for p in (out / "results").iterdir())
    assert names == ["part-000001.parquet", "part-000002.parquet"]  # part 1 kept, not overwritten
    pd.testing.assert_frame_equal(read_results(out), read_results(done))
    assert sorted(r for r, _ in read_search_masks(out)) == list(range(8))


def test_a_search_with_masks_says_where_they_are(done, tmp_path, capsys):
    from cli.main import main
    from masktopo.report import build_report

    summary = (done / "summary.json").read_text()
    assert '"n_above_target": 8' in summary
    for command in ("info", "analyze"):
        assert main([command, str(done)]) == 2
        err = _one_error(capsys)
        assert "none of the" not in err and "reached" not in err
        assert "keeps the masks of the 8 runs at or above its target 0.3" in err
        assert "masks/part-*.safetensors" in err and "read_search_masks" in err
    page = build_report(done)
    assert "keeps the masks of the 8 runs" in page and "none of the 8 runs" not in page
    part = done / "masks" / "part-000000.safetensors"
    for command in ("info", "analyze"):
        assert main([command, str(part)]) == 2
        err = _one_error(capsys)
        assert "no masks found" not in err
        assert "is a part of a search's masks" in err and "of 4 runs at or above the target" in err
        assert f"read_search_masks({str(done)!r})" in err


@pytest.mark.parametrize(
    "edit, warning",
    [
        ({"target": "high"}, "'target' is not a number (string)"),
        ({"n_runs": "x"}, "'n_runs' is not an integer (string)"),
        ({"n_done": [1]}, "'n_done' is not an integer (array)"),
        ({"n_done": 0, "n_runs": "x"}, "'n_runs' is not an integer (string)"),
    ],
)
def test_a_malformed_summary_is_a_warning_and_one_error_line(done, tmp_path, capsys, edit, warning):
    """A search without kept masks whose summary.json has values of the wrong type: info and
    analyze give one error line (a ValueError traceback from formatting them before), report
    a page; each bad value is a warning naming the file."""
    from cli.main import main

    out = _copy(done, tmp_path)
    shutil.rmtree(out / "masks")
    summary = out / "summary.json"
    data = json.loads(summary.read_text())
    data.pop("n_above_target")
    summary.write_text(json.dumps({**data, **edit}))
    for command in ("info", "analyze"):
        assert main([command, str(out)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err[0] == f"masktopo: warning: {summary}: {warning}: left out"
        assert err[1].startswith(f"masktopo: error: {out}: no masks to analyze: a search keeps")
        assert len(err) == 2
    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    assert "no masks to analyze" in (tmp_path / "r.html").read_text()
