"""TrainConfig: method defaults, validation, TOML loading and the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from masktopo.errors import MaskFileError, MaskValidationError, UnknownNameError
from masktopo.trainer.config import (
    METHOD_DEFAULTS,
    METHODS,
    TrainConfig,
    from_dict,
    load_toml,
    resolve,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("method", METHODS)
def test_resolve_fills_exactly_the_method_fields(method):
    density = 1.0 if method == "dense" else 0.05
    cfg = resolve(TrainConfig(method=method, density=density))
    assert cfg.resolved
    for key, value in METHOD_DEFAULTS[method].items():
        if method == "gap" and key == "partitions":  # GaP.resolve: 3 unless partition_map
            assert cfg.partitions == 3 and cfg.partition_map is None
            continue
        assert getattr(cfg, key) == value
    for key in ("growth", "update_interval", "init_density", "prune_scope", "init_method"):
        if key not in METHOD_DEFAULTS[method]:
            assert getattr(cfg, key) is None


def test_rigl_is_the_paper_schedule():
    cfg = resolve(TrainConfig(method="rigl"))
    assert (cfg.rate, cfg.rate_min, cfg.update_end) == (0.3, 0.0, 0.75)
    assert cfg.growth == "gradient" and cfg.skip_step_on_update and cfg.update_interval == 100


def test_user_value_beats_method_default():
    cfg = resolve(TrainConfig(method="itop", growth="gradient", update_interval=4000))
    assert cfg.growth == "gradient" and cfg.update_interval == 4000


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"method": "static", "growth": "random"}, "growth is not used by method 'static'"),
        ({"method": "gmp", "rate": 0.3}, "rate is not used by method 'gmp'"),
        ({"density": 0.0}, "density must be in (0.0, 1.0]"),
        ({"density": 1.5}, "density must be in"),
        ({"density": float("nan")}, "density must be in"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"method": "itop", "update_interval": 0}, "update_interval must be >= 1"),
        ({"method": "dense", "density": 0.5}, "density must be 1"),
        ({"method": "granet", "density": 0.5, "init_density": 0.2}, "init_density"),
        ({"val_fraction": 1.0}, "val_fraction must be in"),
        ({"lr_milestones": (0.75, 0.5)}, "increasing"),
        ({"method": "gmp", "prune_start": 0.6, "prune_end": 0.5}, "prune_end must be in"),
        (
            {"init_masks": "x.safetensors", "method": "itop"},
            "only used by methods 'static' and 'gap'",
        ),
    ],
)
def test_bad_values_are_one_clear_error(changes, message):
    with pytest.raises(MaskValidationError) as e:
        resolve(TrainConfig(**changes))
    assert message in str(e.value)


@pytest.mark.parametrize(
    "changes, what",
    [
        ({"method": "sparse"}, "method"),
        ({"model": "resnet99"}, "model"),
        ({"dataset": "cifar11"}, "dataset"),
        ({"method": "itop", "growth": "magic"}, "growth"),
        ({"method": "static", "init_method": "snipe"}, "PaI method"),
    ],
)
def test_unknown_names_list_the_known_ones(changes, what):
    with pytest.raises(UnknownNameError) as e:
        resolve(TrainConfig(**changes))
    assert f"unknown {what}" in str(e.value) and "known:" in str(e.value)


def test_replace_and_from_dict_check_keys_and_types():
    with pytest.raises(MaskValidationError, match="unknown option 'lr_rate'"):
        TrainConfig().replace(lr_rate=0.1)
    with pytest.raises(MaskValidationError, match="epochs must be int"):
        from_dict({"epochs": "ten"})
    with pytest.raises(MaskValidationError, match="nesterov must be bool"):
        from_dict({"nesterov": 1})
    cfg = from_dict({"lr": 1, "lr_milestones": [0.3]})  # ints accepted for floats
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.lr_milestones == (0.3,)


def test_to_dict_round_trips():
    cfg = resolve(TrainConfig(method="granet", density=0.1, seed=7))
    again = resolve(from_dict(cfg.to_dict()))
    assert again == cfg


def test_toml_file_and_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nmethod = "set"\ndensity = 0.02\nepochs = 2\n')
    cfg = load_toml(f, epochs=5)
    assert (cfg.method, cfg.density, cfg.epochs) == ("set", 0.02, 5)
    g = tmp_path / "flat.toml"
    g.write_text('method = "gmp"\n')
    assert load_toml(g).method == "gmp"


@pytest.mark.parametrize(
    "text, message",
    [
        ("method = [", "not valid TOML"),
        ('[train]\nmethod = "set"\n[other]\nx = 1\n', "keys outside the [train] table"),
        ("lr_rate = 0.1\n", "unknown config key 'lr_rate'"),
        ('epochs = "3"\n', "epochs must be int"),
    ],
)
def test_bad_toml(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises((MaskFileError, MaskValidationError)) as e:
        load_toml(f)
    assert message in str(e.value) and str(f) in str(e.value)


def test_missing_toml(tmp_path):
    with pytest.raises(MaskFileError, match="config file not found"):
        load_toml(tmp_path / "nope.toml")


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_resolve(path):
    cfg = resolve(load_toml(path))
    assert cfg.method in METHODS
