"""``masktopo plot`` of a PAGS output folder: the network score per candidate, the best's
trajectory and the accepted layers; a chosen column; clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from cli.main import main
from masktopo.errors import MaskFileError, MaskValidationError
from masktopo.folder_figures import for_folder
from masktopo.pags.plots import plot_pags

BASE = ["pags", "--model", "lenet300", "--dataset", "mnist", "--method", "erk", "--density",
        "0.05", "--n", "6", "--chunk", "3"]  # fmt: skip


@pytest.fixture(scope="module")
def pags_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("pags") / "p"
    assert main([*BASE, "--out", str(out)]) == 0
    return out


def test_cli_draws_the_score_figure_of_a_pags_folder(pags_out, tmp_path, capsys):
    assert for_folder(pags_out).name == "pags" and for_folder(tmp_path) is None
    capsys.readouterr()
    assert main(["plot", str(pags_out), "--out", str(tmp_path / "figs")]) == 0
    written = capsys.readouterr().out.split()
    png = tmp_path / "figs" / "pags-network_score.png"
    assert written == [str(png)] and png.stat().st_size > 5000


def test_chosen_columns_and_formats(pags_out, tmp_path):
    files = plot_pags(pags_out, tmp_path, metrics=["imdb_mean", "density"], formats=("svg",),
                      title="{} (ERK)")  # fmt: skip
    assert [f.name for f in files] == ["pags-imdb_mean.svg", "pags-density.svg"]
    text = files[0].read_text()
    assert "(ERK)" in text and "layers" in text
    assert "ranking estimates" in text  # the dots of a default (ranking-then-exact) run


def test_network_score_dots_say_when_they_were_not_estimated(pags_out, tmp_path):
    """A default run estimates IMDB only: its network-score dots are missing and the legend
    names the flag that estimates them; with --estimates they are there."""
    lean = plot_pags(pags_out, tmp_path / "a", formats=("svg",))[0].read_text()
    assert "not estimated (masktopo pags" in lean  # (the SVG comment spells -- as "- -")
    est = tmp_path / "est"
    assert main([*BASE, "--estimates", "--out", str(est)]) == 0
    assert pd.read_parquet(est / "candidates.parquet")["network_score"].notna().all()
    text = plot_pags(est, tmp_path / "b", formats=("svg",))[0].read_text()
    assert "ranking estimates" in text and "not estimated" not in text


def test_bad_column_and_missing_table(pags_out, tmp_path, capsys):
    with pytest.raises(MaskValidationError, match=r"'nope' is not a numeric column.*network_score"):
        plot_pags(pags_out, tmp_path / "a", metrics=["nope"])
    assert not (tmp_path / "a").exists()  # nothing written
    rc = main(["plot", str(pags_out), "--out", str(tmp_path / "b"), "--metric", "nope"])
    assert rc == 2 and "'nope' is not a numeric column" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "run.json").write_bytes((pags_out / "run.json").read_bytes())
    with pytest.raises(MaskFileError, match=r"holds no candidates\.parquet yet"):
        plot_pags(empty, tmp_path / "c")
    pd.DataFrame({"t": []}).to_parquet(empty / "candidates.parquet")
    with pytest.raises(MaskFileError, match="holds no candidate rows"):
        plot_pags(empty, tmp_path / "c")


def test_analyze_of_a_pags_folder_points_to_its_masks(pags_out, capsys):
    capsys.readouterr()
    assert main(["analyze", str(pags_out)]) == 2
    err = capsys.readouterr().err
    assert "is a PAGS output folder, not a training run" in err
    assert str(pags_out / "best.safetensors") in err
    assert main(["info", str(pags_out)]) == 2  # the same words from info
    assert "is a PAGS output folder, not a training run" in capsys.readouterr().err
    assert main(["analyze", str(pags_out / "best.safetensors")]) == 0


def test_report_of_a_pags_folder_shows_its_scores_and_masks(pags_out, tmp_path):
    from masktopo.report import build_report

    page = build_report(pags_out)
    assert "PAGS: candidates" in page and page.count("<img") == 1
    assert "PAGS: base and best masks, per layer" in page
    assert "ramanujan_gap (base)" in page and "full_spectrum_norm (best)" in page
    assert "no mask events" not in page and "Problems" not in page
    assert "network_score" in page  # summary.json's final metrics
    (pags_out / "best.safetensors").rename(tmp_path / "best.safetensors")
    try:  # an unfinished run: no best mask yet
        page = build_report(pags_out)
        assert "no best.safetensors (written when the PAGS run ends)" in page
        assert "PAGS: base and best masks" not in page and "PAGS: candidates" in page
    finally:
        (tmp_path / "best.safetensors").rename(pags_out / "best.safetensors")
