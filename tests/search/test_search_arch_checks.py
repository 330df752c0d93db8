"""``masktopo search`` checks its architecture and its size before anything is written: --count
counts any architecture without listing its supports, a wrong input or output width is a
one-line error, a search too large to train is refused (--limit makes it a prefix), and the
plan lists only the keys its runs need, the same keys as a listing of every support."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest

from masktopo.errors import MaskValidationError
from masktopo.search import SearchConfig, count_supports, search_plan
from masktopo.search.enumerate import joint_indices, nnz_ranges, support_weight_nnz
from masktopo.search.runner import MAX_RUNS, count_plan

ONE = ["--lr", "0.1", "--schedule", "constant", "--epochs", "1"]


def _cli(capsys, *argv):
    from masktopo.cli.main import main

    code = main(["search", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, err) -> str:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("masktopo: error: "), err
    return lines[0]


def _peak_bytes(fn, *args):
    """``fn(*args)`` and the peak of the memory Python and numpy allocated meanwhile."""
    tracemalloc.start()
    try:
        result = fn(*args)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _listed_keys(cfg: SearchConfig) -> np.ndarray:
    """The keys of a phase-2 search by listing every support (the plan before the fix)."""
    arch = tuple(int(w) for w in cfg.arch.split("-"))
    keys = np.asarray(joint_indices(arch)) if cfg.joint else np.arange(count_supports(arch))
    nnz = support_weight_nnz(arch, keys)
    if cfg.max_weight_nnz is not None:
        keys, nnz = keys[nnz <= cfg.max_weight_nnz], nnz[nnz <= cfg.max_weight_nnz]
    if cfg.per_nnz is not None:
        pick = np.zeros(len(keys), dtype=bool)
        for v in np.unique(nnz):
            where = np.flatnonzero(nnz == v)
            k = min(len(where), cfg.per_nnz)
            pick[where[(np.arange(k) * (len(where) / k)).astype(int)]] = True
        keys, nnz = keys[pick], nnz[pick]
    if cfg.sparsest_first:
        keys = keys[np.argsort(nnz, kind="stable")]
    return keys


# -- --count ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["2-8-8-8-1", "2-5-5-5-1", "2-4-4-4-1", "2-16-16-16-1"])
def test_count_of_a_large_arch_lists_nothing(capsys, arch):
    (code, out, err), peak = _peak_bytes(_cli, capsys, "--arch", arch, "--count")
    assert code == 0, err
    assert out.strip() == str(count_supports(arch))
    assert peak < 20 * 2**20  # 2-4-4-4-1 listed its 69 million indices: 550 MB


def test_count_of_phase_1_is_w_cubed_without_listing(capsys):
    code, out, _ = _cli(capsys, "--phase", "1", "--max-width", "300", "--init-width", "300",
                        "--count")  # fmt: skip
    assert code == 0 and out.strip() == str(300**3)
    code, out, _ = _cli(capsys, "--arch", "2-8-8-8-1", "--count", "--sparsest-first")
    assert code == 0 and out.strip() == str(count_supports("2-8-8-8-1"))


def test_count_ignores_limit_and_applies_the_selections(capsys):
    assert _cli(capsys, "--arch", "2-3-3-3-1", "--count", "--limit", "5")[1].strip() == "25992"
    cfg = SearchConfig(arch="2-3-3-3-1", max_weight_nnz=20, per_nnz=7)
    code, out, _ = _cli(capsys, "--arch", "2-3-3-3-1", "--count", "--max-weight-nnz", "20",
                        "--per-nnz", "7")  # fmt: skip
    assert code == 0 and int(out) == len(_listed_keys(cfg)) > 0


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"max_weight_nnz": 22},
        {"per_nnz": 5},
        {"per_nnz": 1000},
        {"sparsest_first": True},
        {"max_weight_nnz": 24, "per_nnz": 9, "sparsest_first": True},
        {"per_nnz": 3, "sparsest_first": True},
        {"joint": True},
        {"joint": True, "max_weight_nnz": 23, "sparsest_first": True},
        {"joint": True, "per_nnz": 4},
    ],
)
@pytest.mark.parametrize("arch", ["2-3-3-3-1", "2-3-2-2-1"])
def test_the_plan_has_the_keys_of_a_full_listing(arch, changes):
    cfg = SearchConfig(arch=arch, **changes)
    want = _listed_keys(cfg)
    plan = search_plan(cfg)
    np.testing.assert_array_equal(plan.keys, want)
    assert count_plan(cfg) == plan.n_keys == len(want)
    assert plan.n_runs == len(want) * len(cfg.settings())
    for limit in (1, 7, 100):  # a limited plan lists the keys of its runs: a prefix
        limited = search_plan(cfg.replace(limit=limit))
        np.testing.assert_array_equal(limited.keys, want[: math.ceil(limit / 6)])
        assert limited.n_keys == len(want) and limited.n_runs == min(limit, 6 * len(want))


def test_nnz_ranges_give_each_supports_weight_nnz():
    arch = (2, 3, 3, 3, 1)
    starts, sizes, nnz = nnz_ranges(arch)
    assert starts[0] == 0 and np.array_equal(starts[1:], np.cumsum(sizes)[:-1])
    assert sizes.sum() == count_supports(arch)
    np.testing.assert_array_equal(
        np.repeat(nnz, sizes), support_weight_nnz(arch, np.arange(count_supports(arch)))
    )


# -- searches too large to train -------------------------------------------------------------------
def test_a_search_too_large_to_train_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "big"
    code, _, err = _cli(capsys, "--arch", "2-4-4-4-1", "--out", out)
    line = _one_line_error(code, err)
    n = count_supports("2-4-4-4-1")
    assert f"{n:,} supports × 6 settings = {6 * n:,} runs" in line
    assert f"{MAX_RUNS:,}" in line and "--limit N" in line
    assert not out.exists()
    code, _, err = _cli(capsys, "--arch", "2-4-4-4-1", "--limit", MAX_RUNS + 1, "--out", out)
    assert f"--limit {MAX_RUNS} or less" in _one_line_error(code, err) and not out.exists()
    code, _, err = _cli(capsys, "--phase", "1", "--max-width", "300", "--init-width", "300",
                        "--out", out)  # fmt: skip
    assert "27,000,000 architectures" in _one_line_error(code, err) and not out.exists()


def test_a_matrix_too_large_to_list_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "huge"
    code, _, err = _cli(capsys, "--arch", "2-8-8-8-1", "--limit", "2", *ONE, "--out", out)
    assert "a [8, 8] matrix has" in _one_line_error(code, err) and not out.exists()
    code, _, err = _cli(capsys, "--arch", "2-4-4-4-1", "--joint", "--count")
    assert "joint canonicalisation of 2-4-4-4-1" in _one_line_error(code, err)


def test_limit_trains_a_prefix_of_a_large_search_without_listing_it(tmp_path, capsys):
    cfg = SearchConfig(arch="2-4-4-4-1", limit=10, lr=(0.05, 0.1), schedule=("cosine",))
    plan, peak = _peak_bytes(search_plan, cfg)
    assert peak < 20 * 2**20
    np.testing.assert_array_equal(plan.keys, np.arange(5))
    assert plan.n_keys == count_supports("2-4-4-4-1") and plan.n_runs == 10
    raised = search_plan(cfg.replace(limit=14))  # a resume may raise the limit: same first keys
    np.testing.assert_array_equal(raised.keys[:5], plan.keys)
    out = tmp_path / "prefix"
    code, printed, err = _cli(capsys, "--arch", "2-4-4-4-1", "--limit", "2", *ONE, "--out", out)
    assert code == 0, err
    assert printed.startswith("2 of 2 runs done")
    run = json.loads((out / "run.json").read_text())
    assert run["n_keys"] == count_supports("2-4-4-4-1") == run["n_runs"]


# -- input and output widths -----------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["2-3-3-3-2", "3-3-3-3-1", "1-4-1", "2-3-3-3-0"])
def test_a_wrong_input_or_output_width_is_one_line_and_writes_nothing(tmp_path, capsys, arch):
    out = tmp_path / "s"
    for extra in (["--count"], ["--limit", "2", *ONE, "--out", out], ["--print-config"]):
        code, printed, err = _cli(capsys, "--arch", arch, *extra)
        line = _one_line_error(code, err)
        assert printed == "" and not out.exists()
        if arch != "2-3-3-3-0":  # a zero width is not a width at all
            assert f"--arch {arch}:" in line and "input width 2 and output width 1" in line
    with pytest.raises(MaskValidationError, match=f"(--arch |architecture '){arch}"):
        SearchConfig(arch=arch)


def test_an_arch_without_a_hidden_layer_is_refused(tmp_path, capsys):
    code, _, err = _cli(capsys, "--arch", "2-1", "--limit", "1", *ONE, "--out", tmp_path / "s")
    assert "needs at least one hidden layer" in _one_line_error(code, err)
    assert not (tmp_path / "s").exists()


def test_phase_1_checks_its_widths_in_the_config():
    with pytest.raises(MaskValidationError, match="init_width 16 is smaller than max_width 20"):
        SearchConfig(phase=1, max_width=20)
    plan = search_plan(SearchConfig(phase=1, max_width=3, limit=4, lr=(0.1,), schedule=("step",)))
    assert plan.archs == [(2, 1, 1, 1, 1), (2, 1, 1, 2, 1), (2, 1, 1, 3, 1), (2, 1, 2, 1, 1)]
    assert plan.n_keys == 27 and plan.sizes == (2, 3, 3, 3, 1)


def test_the_help_states_the_limit_and_what_count_prints(capsys):
    from masktopo.cli.main import main

    assert main(["search", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"at most {MAX_RUNS:,}, the most one search trains" in text
    assert "--limit is not applied" in text and "input width 2" in text
