"""masktopo.options: one declaration per option gives the flags, the TOML file, --print-config and
the checks, each bad value named with where it came from."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import pytest

from masktopo.errors import MaskFileError, MaskValidationError, UnknownNameError
from masktopo.options import (
    Options,
    RunOptions,
    add_arguments,
    add_list_argument,
    check_value,
    flag_values,
    gather,
    gather_given,
    option,
    parse_sets,
    read_toml,
    settable_help,
    to_dict,
    to_toml,
)


@dataclass(frozen=True)
class Toy:
    name: str = option("a", "a name", choices=("a", "b"), what="toy name")
    size: int = option(3, "a size", ge=1, metavar="N")
    rate: float = option(0.5, "a rate", gt=0.0, le=1.0)
    limit: int | None = option(None, "an optional limit", ge=0)
    fast: bool = option(False, "go fast")
    slow: bool = option(True, "go slow", negative="--no-slow", negative_help="do not go slow")
    points: tuple[float, ...] = option((0.5, 0.75), "some fractions")
    hidden: str = option("x", "only through --config and --set", flag=False)
    label: str | None = option(None, "a free text")
    names: tuple[str, ...] | None = option(None, "some names", choices=("a", "b", "c"),
                                           usage_choices=True)  # fmt: skip
    tags: tuple[str, ...] | None = option(None, "free texts", metavar="TAG", comma_list=False)


def _parser():
    p = argparse.ArgumentParser(prog="toy")
    p.add_argument("paths", nargs="*", metavar="PATH")
    add_arguments(p, Toy)
    return p


def _parse(*argv):
    return flag_values(_parser().parse_args(list(argv)), Toy)


def test_flags_are_derived_with_help_and_defaults():
    p = argparse.ArgumentParser()
    assert "hidden" not in add_arguments(p, Toy)
    text = p.format_help()
    assert "--size N" in text and "a size (default: 3)" in text
    assert "--fast, --no-fast" in text and "--no-slow" in text and "do not go slow" in text
    assert "--hidden" not in text
    assert _parse("--size", "4", "--no-slow", "--fast", "--points", "0.1,0.2") == {
        "size": 4, "slow": False, "fast": True, "points": (0.1, 0.2)}  # fmt: skip
    assert _parse() == {}  # nothing given: the defaults stay the config's business


def test_list_options_take_one_comma_separated_value_and_repeat():
    args = _parser().parse_args(["--names", "a,b", "--names", "c", "x.pt", "y.pt"])
    assert args.paths == ["x.pt", "y.pt"]  # a list flag never swallows the PATHs after it
    assert flag_values(args, Toy)["names"] == ("a", "b", "c")
    assert _parse("--points", "0.1,0.2", "--points", "0.3")["points"] == (0.1, 0.2, 0.3)
    # free texts: one item per flag, commas kept
    assert _parse("--tags", "a, b", "--tags", "c")["tags"] == ("a, b", "c")
    text = _parser().format_help()
    assert "--names NAME[,...]" in text and "--tags TAG " in text and "--points X[,...]" in text
    assert "--name {a,b}" in text  # known names instead of a bare placeholder


def test_add_list_argument_for_hand_declared_flags(capsys):
    p = argparse.ArgumentParser(prog="plot")
    p.add_argument("paths", nargs="+", metavar="PATH")
    add_list_argument(p, "--metric", "--metrics", dest="metrics", help="metrics")
    add_list_argument(p, "--format", dest="formats", help="formats", metavar="FMT",
                      choices=("png", "svg", "pdf"))  # fmt: skip
    args = p.parse_args(["--metric", "mu0", "--format", "png,svg", "run/"])
    assert args.paths == ["run/"] and args.metrics == ["mu0"] and args.formats == ["png", "svg"]
    assert p.parse_args(["run/"]).metrics is None
    with pytest.raises(SystemExit):
        p.parse_args(["run/", "--format", "png,gif"])
    assert "invalid choice: 'gif'" in capsys.readouterr().err


def test_list_option_names_checked_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--names", "a,z"])
    assert "invalid choice: 'z'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["--names", ","])
    assert "names nothing" in capsys.readouterr().err


def test_settable_help_lists_the_options_without_a_flag_with_their_defaults():
    text = settable_help(Toy, width=80)
    assert text.splitlines()[0].startswith("options without a flag (--set NAME=VALUE")
    assert "hidden" in text and '(default: "x")' in text  # the value --set takes
    assert "--size" not in text and "size " not in text
    assert settable_help(Options) == ""


def test_values_are_checked_and_name_where_they_came_from(tmp_path):
    with pytest.raises(MaskValidationError, match=r"^--size: size must be >= 1, got 0$"):
        gather(Toy, flags=_parse("--size", "0"))
    with pytest.raises(MaskValidationError, match=r"^--rate: rate must be in \(0\.0, 1\.0\], got"):
        gather(Toy, flags=_parse("--rate", "1.5"))
    with pytest.raises(UnknownNameError, match=r"^--name: unknown toy name 'c'; known: a, b$"):
        gather(Toy, flags=_parse("--name", "c"))
    f = tmp_path / "t.toml"
    f.write_text('size = "three"\n')
    with pytest.raises(MaskValidationError, match=rf"^{f}: size must be int, got 'three'$"):
        gather(Toy, config=f)
    f.write_text("sise = 3\n")
    with pytest.raises(MaskValidationError, match=rf"^{f}: unknown config key 'sise'; known: name"):
        gather(Toy, config=f)
    with pytest.raises(MaskValidationError, match=r"^--set: rate must be float, got 'high'$"):
        gather(Toy, sets=parse_sets(["rate=high"]))
    with pytest.raises(MaskValidationError, match="unknown --set field 'sise'"):
        gather(Toy, sets=parse_sets(["sise=3"]))
    with pytest.raises(MaskValidationError, match="rate must be in"):
        check_value(Toy, "rate", math.nan)
    with pytest.raises(MaskValidationError, match="size cannot be null"):
        check_value(Toy, "size", None)


def test_sources_are_merged_in_order(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text('[toy]\nsize = 5\nrate = 0.25\nhidden = "y"\n')
    cfg = gather(Toy, config=f, table="toy", flags=_parse("--size", "6"),
                 sets=parse_sets(["label=hello", "points=[0.1]"]))  # fmt: skip
    assert (cfg.size, cfg.rate, cfg.hidden, cfg.label, cfg.points) == (6, 0.25, "y", "hello",
                                                                        (0.1,))  # fmt: skip
    assert isinstance(gather(Toy, sets={"rate": 1}).rate, float)  # an int for a float


def test_given_names_come_from_the_file_the_flags_and_set_even_at_the_default(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text("[toy]\nsize = 3\n")  # the default value, but given
    cfg, given = gather_given(Toy, config=f, table="toy", flags=_parse("--rate", "0.25"),
                              sets=parse_sets(["label=x"]))  # fmt: skip
    assert given == {"size", "rate", "label"} and (cfg.size, cfg.rate, cfg.label) == (3, 0.25, "x")
    assert gather_given(Toy) == (Toy(), frozenset())
    assert gather_given(Toy, base=Toy(size=7))[1] == frozenset()  # a base is not "given"


def test_print_config_round_trips(tmp_path):
    cfg = Toy(name="b", size=7, rate=0.125, limit=None, fast=True, points=(0.2, 0.4),
              label='quote " and \\ back')  # fmt: skip
    text = to_toml(cfg, table="toy", header="made by a test")
    assert text.startswith("# made by a test\n") and "# limit =  (unset)" in text
    assert "# a size\nsize = 7" in text
    f = tmp_path / "x.toml"
    f.write_text(text)
    assert gather(Toy, config=f, table="toy") == cfg
    assert to_dict(cfg)["points"] == [0.2, 0.4]


def test_bad_toml_files(tmp_path):
    with pytest.raises(MaskFileError, match="config file not found"):
        read_toml(tmp_path / "none.toml")
    f = tmp_path / "bad.toml"
    f.write_text("size = [")
    with pytest.raises(MaskFileError, match="not valid TOML"):
        read_toml(f)
    f.write_text("[toy]\nsize = 1\n[other]\nx = 1\n")
    with pytest.raises(MaskFileError, match=r"keys outside the \[toy\] table: other"):
        read_toml(f, "toy")


def test_shared_analysis_options_are_checked_once():
    assert Options().conv == "unrolled" and RunOptions().cache
    with pytest.raises(UnknownNameError, match="unknown conv mode 'diagonal'; known: rolled"):
        Options(conv="diagonal")
    with pytest.raises(MaskValidationError, match="every must be >= 1, got 0"):
        RunOptions(every=0)


def test_a_literal_annotation_is_the_closed_set_of_names():
    from dataclasses import dataclass
    from typing import Literal

    from masktopo.options import check_value, fields, option

    @dataclass(frozen=True)
    class Cfg:
        mode: Literal["fast", "exact"] = option("fast", "how", what="mode")
        other: Literal["a", "b"] | None = option(None, "maybe")

    got = {f.name: (f.kind, f.nullable, f.spec.known()) for f in fields(Cfg)}
    assert got == {"mode": ("str", False, ("fast", "exact")), "other": ("str", True, ("a", "b"))}
    assert check_value(Cfg, "mode", "exact") == "exact"
    with pytest.raises(UnknownNameError, match="unknown mode 'slow'; known: exact, fast"):
        check_value(Cfg, "mode", "slow")
