"""Sweep files: grid expansion, include tables, deterministic keys and folders, and the errors."""

from __future__ import annotations

import hashlib
import json

import pytest

from masktopo.errors import MaskFileError, MaskValidationError
from masktopo.sweep import cell_key, expand, load_sweep, parse_sweep

BASE = {"model": "spiral-mlp", "dataset": "cubist-spiral", "density": 0.3, "epochs": 1}


def _write(tmp_path, text: str):
    f = tmp_path / "s.toml"
    f.write_text(text)
    return f


def test_grid_is_the_product_in_order_and_include_adds_cells():
    sweep = parse_sweep({
        "base": BASE,
        "grid": {"method": ["set", "rigl"], "update_interval": [20, 100], "seed": [0, 1, 2]},
        "include": [{"method": "static", "seed": [0, 1, 2]}, {"method": "dense", "seed": 7}],
    })  # fmt: skip
    assert sweep.command == "train"
    assert sweep.axes == ("method", "update_interval", "seed")
    cells = sweep.cells
    assert len(cells) == 2 * 2 * 3 + 3 + 1
    # product in grid order: the last axis varies fastest
    assert [c.axes for c in cells[:4]] == [
        {"method": "set", "update_interval": 20, "seed": 0},
        {"method": "set", "update_interval": 20, "seed": 1},
        {"method": "set", "update_interval": 20, "seed": 2},
        {"method": "set", "update_interval": 100, "seed": 0},
    ]
    assert [c.axes for c in cells[12:]] == [
        {"method": "static", "seed": 0}, {"method": "static", "seed": 1},
        {"method": "static", "seed": 2}, {"method": "dense", "seed": 7},
    ]  # fmt: skip
    for c in cells:
        assert c.settings == {**BASE, **c.axes}
    assert len({c.key for c in cells}) == len(cells)
    assert len({c.folder for c in cells}) == len(cells)


def test_key_is_sha256_of_command_and_canonical_settings():
    settings = {"seed": 1, "method": "set", "lr_milestones": (0.5, 0.75)}
    blob = json.dumps({"command": "train", "settings": {"lr_milestones": [0.5, 0.75],
                       "method": "set", "seed": 1}}, sort_keys=True, separators=(",", ":"))  # fmt: skip
    assert cell_key("train", settings) == hashlib.sha256(blob.encode()).hexdigest()[:12]
    # key order does not matter; the command and every value do
    assert cell_key("train", dict(reversed(list(settings.items())))) == cell_key("train", settings)
    assert cell_key("pags", settings) != cell_key("train", settings)
    assert cell_key("train", {**settings, "seed": 2}) != cell_key("train", settings)


def test_same_cell_same_key_in_another_file_and_int_for_float_is_one_setting():
    a = parse_sweep({"base": {**BASE, "method": "set"}, "grid": {"lr": [1, 0.5]}})
    b = parse_sweep({"base": {**BASE, "lr": 1.0}, "grid": {"method": ["rigl", "set"]}})
    # lr=1 (an int for a float option) is checked into 1.0: the same run, the same key
    assert a.cells[0].key == b.cells[1].key
    assert a.cells[0].folder != b.cells[1].folder  # folders name each file's own axes
    assert a.cells[0].folder.endswith(a.cells[0].key[:8])


def test_list_options_in_grid_and_include():
    sweep = parse_sweep({
        "base": {**BASE, "method": "set"},
        "grid": {"lr_milestones": [[0.5, 0.75], [0.3]]},
        "include": [{"lr_milestones": [0.9]}, {"lr_milestones": [[0.1], [0.2]]}],
    })  # fmt: skip
    got = [c.settings["lr_milestones"] for c in sweep.cells]
    assert got == [[0.5, 0.75], [0.3], [0.9], [0.1], [0.2]]
    assert "lr_milestones=0.5+0.75" in sweep.cells[0].folder


def test_a_path_value_is_named_by_its_last_part_in_folder_names():
    sweep = parse_sweep({
        "base": {**BASE, "method": "static"},
        "grid": {"init_masks": ["/data/studies/pags/seed0/", "/other/place/pags/seed0",
                                "runs/seed1"]},
    })  # fmt: skip
    folders = [c.folder for c in sweep.cells]
    assert [f.split("-")[0] for f in folders] == ["init_masks=seed0", "init_masks=seed0",
                                                  "init_masks=seed1"]  # fmt: skip
    assert len(set(folders)) == 3  # the key keeps equal names apart


def test_base_alone_is_one_run_and_folder_characters_are_safe():
    sweep = parse_sweep({"base": {**BASE, "method": "dense"}})
    assert len(sweep.cells) == 1 and sweep.cells[0].axes == {}
    no_model = {k: v for k, v in BASE.items() if k != "model"}
    s = parse_sweep({"base": no_model, "grid": {"method": ["set"],
                                                "model": ["pkg.mod:factory"]}})  # fmt: skip
    assert "/" not in s.cells[0].folder and ":" not in s.cells[0].folder


NO_DENSITY = {k: v for k, v in BASE.items() if k != "density"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"base": BASE, "grid": {"method": "set"}}, "a [grid] value is a non-empty list"),
        ({"base": BASE, "grid": {"method": []}}, "a [grid] value is a non-empty list"),
        ({"base": BASE, "grid": {"methd": ["set"]}}, "[grid] methd: unknown option 'methd'"),
        ({"base": {**BASE, "out": "x"}}, "'out' is set by the sweep"),
        ({"base": BASE, "grid": {"density": [0.1]}}, "density in both [base] and [grid]"),
        ({"base": BASE, "grid": {"seed": [1, 1]}}, "listed twice"),
        ({"base": NO_DENSITY, "grid": {"density": [2.0]}}, "[grid] density: density must be"),
        ({"base": {**BASE, "command": "fly"}}, "not a sweepable command"),
        ({"base": BASE, "grid": {"command": ["pags"]}}, "set 'command' in [base] only"),
        ({"base": BASE, "params": {}}, "unknown table(s) params"),
        ({"base": BASE, "grid": {"seed": [0]}, "include": [{"seed": 0}]}, "the same settings"),
        ({"base": BASE, "include": [{"seed": []}]}, "[[include]] #1 seed: an empty list"),
    ],
)
def test_bad_sweeps_are_one_line_naming_the_place(data, message):
    with pytest.raises(MaskValidationError) as e:
        parse_sweep(data, "x.toml")
    assert message in str(e.value), str(e.value)
    assert "\n" not in str(e.value) and str(e.value).startswith("x.toml")


def test_load_checks_every_cell_with_the_command(tmp_path):
    f = _write(tmp_path, '[base]\nmodel = "spiral-mlp"\ndataset = "cubist-spiral"\n'
               'density = 0.3\nupdate_interval = 10\n[grid]\nmethod = ["set", "static"]\n')  # fmt: skip
    with pytest.raises(MaskValidationError, match=r"cell method=static-\w+: update_interval is "
                       r"not used by method 'static'"):  # fmt: skip
        load_sweep(f)
    pags = _write(tmp_path, '[base]\ncommand = "pags"\nmodel = "spiral-mlp"\n'
                  'dataset = "cubist-spiral"\n[grid]\nseed = [0, 1]\n')  # fmt: skip
    with pytest.raises(MaskValidationError, match="pags needs density"):
        load_sweep(pags)


def test_file_errors(tmp_path):
    with pytest.raises(MaskFileError, match="sweep file not found"):
        load_sweep(tmp_path / "missing.toml")
    with pytest.raises(MaskFileError, match="not valid TOML"):
        load_sweep(_write(tmp_path, "[base\n"))
    good = _write(tmp_path, '[base]\nmodel = "spiral-mlp"\ndataset = "cubist-spiral"\n'
                  'method = "set"\ndensity = 0.3\n[grid]\nseed = [0, 1]\n')  # fmt: skip
    assert [c.axes for c in expand(good)] == [{"seed": 0}, {"seed": 1}]


def test_shipped_sweep_files_load_and_resolve_by_name():
    from pathlib import Path

    from masktopo.cli.sweep import sweep_file

    shipped = sorted((Path(__file__).resolve().parents[2] / "configs" / "sweeps").glob("*.toml"))
    assert {p.stem for p in shipped} >= {"e1_itop", "e2_granet", "e6_pai_mnist1d"}
    for p in shipped:
        sweep = load_sweep(p)  # every cell checked by its command
        assert sweep.cells and "seed" in sweep.axes
        assert len({c.key for c in sweep.cells}) == len(sweep.cells)
        assert Path(sweep_file(p.stem)).read_bytes() == p.read_bytes()
        assert Path(sweep_file(f"sweeps/{p.stem}.toml")).read_bytes() == p.read_bytes()
    with pytest.raises(MaskFileError, match=r"no-such-sweep: no such file, nor a shipped sweep"
                       r" of that name; shipped: e1_itop, "):  # fmt: skip
        sweep_file("no-such-sweep")
    with pytest.raises(MaskFileError, match=r"\(did you mean 'e2_granet'\?\)"):
        sweep_file("e2_grant")


def test_tags_label_cells_without_reaching_the_command():
    sweep = parse_sweep({"base": {**BASE, "method": "static"},
                         "include": [{"tag": "a", "seed": [0, 1]}, {"tag": "b", "seed": 0}]})  # fmt: skip
    assert sweep.axes == ("tag", "seed")
    assert [c.axes for c in sweep.cells] == [{"tag": "a", "seed": 0}, {"tag": "a", "seed": 1},
                                             {"tag": "b", "seed": 0}]  # fmt: skip
    assert sweep.cells[0].key != sweep.cells[2].key  # the tag is part of the key
    cfg = sweep.spec.build(sweep.cells[0].settings)
    assert cfg.seed == 0 and not hasattr(cfg, "tag")
    with pytest.raises(MaskValidationError, match="a tag is a non-empty string"):
        parse_sweep({"base": BASE, "grid": {"tag": [3]}})


def test_cells_are_checked_against_their_step_counts_before_anything_runs(tmp_path):
    """A schedule ``masktopo train`` would refuse at start (no update in the run's steps) is
    refused when the sweep is read, naming the cell; the steps come from the dataset's
    training split (spiral: 44,984 samples after the validation split, 351 steps of 128)."""
    from masktopo.trainer.config import TrainConfig, resolve
    from masktopo.trainer.loop import check_schedule

    bad = _write(tmp_path, '[base]\nmodel = "spiral-mlp"\ndataset = "cubist-spiral"\n'
                 'density = 0.3\nepochs = 1\nmethod = "set"\n[grid]\n'
                 "update_interval = [100, 400]\nseed = [0]\n")  # fmt: skip
    with pytest.raises(MaskValidationError, match=r"cell update_interval=400,seed=0"
                       r"\S*: set: no mask update in 351 steps with update_interval 400"):  # fmt: skip
        load_sweep(bad)
    cfg = resolve(TrainConfig(**BASE, method="gmp", update_interval=100))
    check_schedule(cfg)  # pruning events in 351 steps
    with pytest.raises(MaskValidationError, match="gmp: no pruning event"):
        check_schedule(resolve(TrainConfig(**BASE, method="gmp", update_interval=400)))
    with pytest.raises(MaskValidationError, match="larger than the training split"):
        check_schedule(resolve(TrainConfig(**BASE, method="set", batch_size=50_000)))
    missing = resolve(TrainConfig(model="resnet20", dataset="cifar10", density=0.1, epochs=1,
                                  method="set", data_dir=str(tmp_path / "none")))  # fmt: skip
    check_schedule(missing)  # the data is not here: nothing to check against
