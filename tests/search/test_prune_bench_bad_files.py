"""A prune-bench folder with a damaged results file (empty, cut off, not parquet, another
table) is one error line naming the file, from read_bench, plot and --resume, and nothing is
written; a resume rebuilds results.parquet from the parts, which read_bench prefers."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from masktopo.errors import MaskFileError
from masktopo.search import PruneBenchConfig
from masktopo.search.prune import read_bench, run_prune_bench

CFG = PruneBenchConfig(methods=("gmp", "snip"), nnz="15", widths="3", seeds=1, epochs=1)
ARGV = ["--methods", "gmp,snip", "--nnz", "15", "--widths", "3", "--seeds", "1", "--epochs", "1"]
DAMAGES = ["empty", "cut", "text", "other table"]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "done"
    run_prune_bench(CFG, out)
    return out


def _files(out) -> dict:
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
            and p.name != ".lock"}  # fmt: skip


def _damage(path, damage: str) -> str:
    """Damage ``path``; what the message says."""
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "cut":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "text":
        path.write_text("method,width\ngmp,3\n")
    else:
        pd.DataFrame({"a": [1, 2]}).to_parquet(path)
        return "is not a table of prune-bench results: no method, width"
    return "is not a readable parquet file"


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("masktopo: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_part_is_one_error_naming_it(done, tmp_path, capsys, damage):
    from cli.main import main

    out = tmp_path / "b"
    shutil.copytree(done, out)
    (out / "results.parquet").unlink()  # read_bench reads the parts
    part = out / "results" / "w3-snip-s0.parquet"
    why = _damage(part, damage)
    with pytest.raises(MaskFileError, match=why) as e:
        read_bench(out)
    assert str(e.value).startswith(f"{part}: ")
    before = _files(out)
    assert main(["prune-bench", *ARGV, "--out", str(out), "--resume"]) == 2
    err = _one_error(capsys)
    assert str(part) in err and why in err and "prune-bench --resume" in err
    assert main(["plot", str(out), "--out", str(tmp_path / "figs")]) == 2
    err = _one_error(capsys)
    assert str(part) in err and why in err
    assert _files(out) == before and not (tmp_path / "figs").exists()  # nothing written


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_results_file_is_one_error_and_resume_writes_it_again(done, tmp_path, capsys,
                                                                        damage):  # fmt: skip
    from cli.main import main

    out = tmp_path / "b"
    shutil.copytree(done, out)
    shutil.rmtree(out / "results")  # read_bench reads results.parquet only without parts
    final = out / "results.parquet"
    why = _damage(final, damage)
    with pytest.raises(MaskFileError, match=why) as e:
        read_bench(out)
    assert str(e.value).startswith(f"{final}: ")
    assert main(["plot", str(out), "--out", str(tmp_path / "figs")]) == 2
    err = _one_error(capsys)
    assert str(final) in err and why in err
    assert not (tmp_path / "figs").exists()
    assert main(["prune-bench", *ARGV, "--out", str(out), "--resume"]) == 0
    pd.testing.assert_frame_equal(read_bench(out), read_bench(done))


def test_resume_writes_the_rows_of_every_part(done, tmp_path):
    """A resume that trains a deleted part again writes results.parquet from the parts (it
    used to return the rows of the old results.parquet)."""
    out = tmp_path / "b"
    shutil.copytree(done, out)
    pd.DataFrame(read_bench(out).iloc[:1]).to_parquet(out / "results.parquet")  # stale
    (out / "results" / "w3-snip-s0.parquet").unlink()
    rows = run_prune_bench(CFG, out, resume=True)
    pd.testing.assert_frame_equal(rows, read_bench(done))
    pd.testing.assert_frame_equal(read_bench(out), read_bench(done))


def test_the_parts_are_read_before_a_stale_results_file(done, tmp_path):
    """results.parquet is the parts' concatenation when the benchmark ended; a part added
    since (a resume killed before the end) or a stale copy does not hide the parts' rows."""
    out = tmp_path / "b"
    shutil.copytree(done, out)
    pd.DataFrame(read_bench(out).iloc[:1]).to_parquet(out / "results.parquet")  # stale
    pd.testing.assert_frame_equal(read_bench(out), read_bench(done))
    shutil.rmtree(out / "results")  # without parts: results.parquet, as it is
    assert len(read_bench(out)) == 1
