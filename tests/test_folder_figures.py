"""One registry of result folders with figures of their own, for ``masktopo plot`` and
``masktopo report`` (masktopo.folder_figures)."""

import json

import pytest

from masktopo import folder_figures
from masktopo.runs.layout import RUN_FILE, RUN_FORMAT
from masktopo.sweep.runner import SWEEP_FILE


def _run_dir(path, kind):
    path.mkdir()
    (path / RUN_FILE).write_text(
        json.dumps(
            {
                "format": RUN_FORMAT,
                "format_version": 2,
                "kind": kind,
                "layers": [{"name": "fc", "kind": "linear", "shape": [2, 3]}],
            }
        )
    )
    return path


def test_every_kind_is_found_by_its_marker_or_run_kind(tmp_path):
    assert [f.name for f in folder_figures.FOLDERS] == ["sweep", "search", "pags", "prune"]
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / SWEEP_FILE).write_text("{}")
    assert folder_figures.for_folder(sweep).name == "sweep"
    for kind, name in [("search", "search"), ("prune-bench", "search"), ("pags", "pags"),
                       ("prune", "prune"), ("train", None)]:  # fmt: skip
        entry = folder_figures.for_folder(_run_dir(tmp_path / kind, kind))
        assert (entry.name if entry else None) == name, kind
    assert folder_figures.for_folder(tmp_path / "missing") is None
    assert folder_figures.for_folder(tmp_path / "pags" / RUN_FILE) is None  # a file


def test_report_sections_come_from_the_same_entries():
    assert folder_figures.for_kind("search").headings["search"] == "search"
    assert folder_figures.for_kind("prune-bench").name == "search"
    assert folder_figures.for_kind("prune").name == "prune"
    # a sweep is refused by the report, a PAGS folder has a section of its own, a run none
    for kind in ("sweep", "pags", "train", "?"):
        assert folder_figures.for_kind(kind) is None


@pytest.mark.parametrize("name", ["sweep", "search", "pags", "prune"])
def test_drawing_an_empty_folder_is_a_clear_error(tmp_path, name):
    from masktopo.errors import MaskTopoError

    entry = next(f for f in folder_figures.FOLDERS if f.name == name)
    (tmp_path / "in").mkdir()
    with pytest.raises(MaskTopoError):
        folder_figures.draw(entry, tmp_path / "in", tmp_path / "out")
