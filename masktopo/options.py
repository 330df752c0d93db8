"""Options declared once: typed config dataclasses whose fields carry their help, bounds and known
names; command-line flags, TOML files, ``--print-config`` and run.json are all derived from them.

A command's config is a frozen dataclass whose fields are declared with :func:`option`::

    @dataclass(frozen=True)
    class PagsConfig:
        n: int = option(1000, "number of candidate masks to sample", ge=1, metavar="N")
        sampler: str = option("rescore", "how candidates are drawn", choices=("rescore", "rewire"))

and nothing else describes them: :func:`add_arguments` makes the flags (``--n``, ``--sampler``),
with the help text and the default; :func:`gather` merges defaults, a TOML file (``--config``),
the flags and ``--set KEY=VALUE`` in that order and checks every value *where it came from* (a
bad value is one line naming the key and the file or the flag); :func:`to_toml` writes a config
back as TOML that :func:`gather` reads into the same config (``--print-config``); :func:`to_dict`
is what run.json records.

Option groups that several commands share are declared at the end of this module:
:class:`Options` (how a layer mask is read as a graph, which metric variants: ``analyze``,
``analyze_run``, ``layer_metrics``, PAGS's scoring, and the ``analyze``, ``plot``, ``report``
and ``pags`` flags) and :class:`RunOptions` (which events of a run are analyzed, and the cache).
Options of one command are declared with it (:class:`masktopo.trainer.config.TrainConfig`,
:class:`masktopo.pags.config.PagsConfig`).

This module is light (standard library only): building a command's ``--help`` never imports
torch.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import keyword
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .checks import is_int, is_number
from .errors import MaskFileError, MaskValidationError, UnknownNameError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "CONV_MODES",
    "GATES",
    "IMDB_VARIANTS",
    "INVALID",
    "NARC_EDGES",
    "X_AXES",
    "FigureOptions",
    "Options",
    "RunOptions",
    "SetupOptions",
    "Spec",
    "add_arguments",
    "add_list_argument",
    "check_bounds",
    "check_value",
    "fields",
    "from_values",
    "gather",
    "grouped",
    "is_import_path",
    "option",
    "parse_sets",
    "read_toml",
    "same_as",
    "settable_help",
    "to_dict",
    "to_toml",
    "tomllib",
]

_KEY = "masktopo.option"


@dataclass(frozen=True)
class Spec:
    """How one config field is described, checked and offered on the command line.

    Attributes
    ----------
    help : str
        One line for ``--help`` and for the comment above the key in ``--print-config``.
    flag : str, bool
        The flag (``"--batch-size"``); True (default) derives it from the field name; False
        offers the field only through ``--config``/``--set``.
    aliases : tuple of str
        More flags for the same field (``("--candidates",)``).
    metavar : str, optional
        The value's name in ``--help``.
    choices : tuple of str or callable, optional
        The known names (a callable returning them, for registries read on first use).
    what : str, optional
        How an unknown name is described (``"PaI method"``); default the field name.
    accepts : callable, optional
        ``accepts(value) -> bool``: values taken besides the known names (a model's import path,
        :func:`is_import_path`); checked in the config, never by the parser.
    accepts_text : str, optional
        How those values are spelled in the unknown-name error (``"module.path:callable"``: the
        message ends ``known: a, b, or module.path:callable``).
    ge, gt, le, lt : float, optional
        Bounds of a number.
    negative, negative_help : str, optional
        For a bool whose flag turns it off (``"--no-weights"`` for ``weights = True``), and that
        flag's help.
    default_text : str, optional
        What ``--help`` says the default is, where the dataclass default (None) means more.
    usage_choices : bool
        Check the known names in the parser itself (argparse's usage error, ``argument --conv:
        invalid choice``) rather than in the config.
    usage_bounds : bool
        Check the bounds of a number in the parser itself (argparse's usage error).
    comma_list : bool
        For a list of names in a config file or ``--set``: split each item at commas (and
        spaces) too; False keeps every item whole (labels). On the command line a list option
        always takes one comma-separated value per flag (:func:`add_arguments`).
    """

    help: str
    flag: str | bool = True
    aliases: tuple[str, ...] = ()
    metavar: str | None = None
    choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None
    what: str | None = None
    accepts: Callable[[Any], bool] | None = None
    accepts_text: str | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    negative: str | None = None
    negative_help: str | None = None
    default_text: str | None = None
    usage_choices: bool = False
    usage_bounds: bool = False
    comma_list: bool = True

    def known(self) -> tuple[str, ...] | None:
        if self.choices is None:
            return None
        return tuple(self.choices() if callable(self.choices) else self.choices)


def option(default: Any, help: str, **spec: Any) -> Any:
    """A dataclass field with ``default`` and its :class:`Spec` (``help`` and ``**spec``)."""
    if isinstance(default, list):
        default = tuple(default)
    return dataclasses.field(default=default, metadata={_KEY: Spec(help, **spec)})


_SAME = object()


def same_as(cls: type, name: str, default: Any = _SAME, **changes: Any) -> Any:
    """A field declared as option ``name`` of ``cls`` (its default, help, bounds and known
    names), with another ``default`` and ``changes`` to its :class:`Spec` (e.g.
    ``flag=False``): one declaration for an option that several configs share."""
    f = next(f for f in fields(cls) if f.name == name)
    spec = dataclasses.replace(f.spec, **changes)
    return dataclasses.field(default=f.default if default is _SAME else default,
                             metadata={_KEY: spec})  # fmt: skip


@dataclass(frozen=True)
class _Field:
    name: str
    kind: str  # "bool", "int", "float", "str", "floats", "strs" (tuples of floats, of str),
    # "map" (a dict of name -> non-negative int: a TOML table)
    nullable: bool
    default: Any
    spec: Spec

    @property
    def flags(self) -> list[str]:
        if self.spec.flag is False:
            return []
        main = (
            self.spec.flag
            if isinstance(self.spec.flag, str)
            else "--" + self.name.replace("_", "-")
        )
        return [main, *self.spec.aliases]


def _literals(annotation: Any) -> tuple[str, ...] | None:
    """The values of a ``Literal["a", "b"]`` annotation (``| None`` allowed), else None."""
    text = annotation if isinstance(annotation, str) else str(annotation)
    text = text.replace("typing.", "")
    start = text.find("Literal[")
    if start < 0:
        return None
    end = text.index("]", start)
    return tuple(ast.literal_eval("(" + text[start + len("Literal[") : end] + ",)"))


def _kind(annotation: Any) -> tuple[str, bool]:
    """``(kind, nullable)`` of a field's annotation (a string under postponed evaluation); a
    ``Literal`` of strings is a ``str`` whose known names are the literals."""
    text = annotation if isinstance(annotation, str) else str(annotation)
    parts = [p.strip() for p in text.replace("typing.", "").split("|")]
    nullable = "None" in parts
    base = next(p for p in parts if p != "None")
    if base.startswith("Literal["):
        return "str", nullable
    if base.startswith("tuple[float"):
        return "floats", nullable
    if base.startswith("tuple[str"):
        return "strs", nullable
    if base.startswith("dict[str, int"):
        return "map", nullable
    if base in ("bool", "int", "float", "str"):
        return base, nullable
    raise TypeError(f"unsupported option type {text!r}")


def fields(cls: type) -> list[_Field]:
    """The declared fields of a config class, in order (fields without a :class:`Spec` are not
    options and are left out)."""
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_KEY)
        if spec is None:
            continue
        kind, nullable = _kind(f.type)
        literals = _literals(f.type)
        if literals is not None and spec.choices is None:  # the closed set is the type
            spec = dataclasses.replace(spec, choices=literals)
        out.append(_Field(f.name, kind, nullable, f.default, spec))
    return out


def _field(cls: type, name: str, what: str, where: str | None) -> _Field:
    for f in fields(cls):
        if f.name == name:
            return f
    prefix = f"{where}: " if where else ""
    known = ", ".join(f.name for f in fields(cls))
    raise MaskValidationError(f"{prefix}unknown {what} {name!r}; known: {known}")


def _fmt(x: float) -> str:
    return repr(float(x)) if isinstance(x, float) else repr(x)


def check_value(cls: type, name: str, value: Any, where: str | None = None) -> Any:
    """``value`` for field ``name`` of ``cls``, converted (an int for a float, a list for a
    tuple) and checked against the field's type, known names and bounds.

    Raises
    ------
    MaskValidationError
        ``<where>: epochs must be int, got 'ten'``, ``<where>: density must be in (0.0, 1.0],
        got 1.5``, ``<where>: unknown option 'lr_rate'; known: ...``.
    UnknownNameError
        An unknown name: ``<where>: unknown method 'sparse'; known: ...``.
    """
    f = _field(cls, name, "option", where)
    prefix = f"{where}: " if where else ""
    if value is None:
        if f.nullable:
            return None
        raise MaskValidationError(f"{prefix}{name} cannot be null")
    if f.kind == "floats":
        if not isinstance(value, list | tuple) or not all(is_number(v) for v in value):
            raise MaskValidationError(f"{prefix}{name} must be a list of numbers")
        return tuple(float(v) for v in value)
    if f.kind == "map":
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and k and is_int(v) and v >= 0 for k, v in value.items()
        ):
            raise MaskValidationError(
                f"{prefix}{name} must be a table of names to non-negative integers, got {value!r}"
            )
        if not value:
            raise MaskValidationError(f"{prefix}{name} is an empty table")
        return dict(value)
    if f.kind == "strs":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise MaskValidationError(f"{prefix}{name} must be a list of names")
        if not f.spec.comma_list:
            return tuple(value)
        names = [n for v in value for n in v.replace(",", " ").split()]
        return tuple(dict.fromkeys(names))
    ok = {
        "bool": isinstance(value, bool),
        "int": is_int(value),
        "float": is_number(value),
        "str": isinstance(value, str),
    }[f.kind]
    if not ok:
        raise MaskValidationError(f"{prefix}{name} must be {f.kind}, got {value!r}")
    if f.kind == "float":
        value = float(value)
    s = f.spec
    known = s.known()
    if known is not None and value not in known and not (s.accepts and s.accepts(value)):
        err = UnknownNameError(s.what or name, value, known)
        also = f", or {s.accepts_text}" if s.accepts_text else ""
        if where or also:
            err.args = (f"{prefix}{err}{also}",)
        raise err
    if f.kind in ("int", "float"):
        _check_bounds(name, value, s, prefix)
    return value


def _check_bounds(name: str, value: float, s: Spec, prefix: str) -> None:
    check_bounds(name, value, ge=s.ge, gt=s.gt, le=s.le, lt=s.lt, prefix=prefix)


def check_bounds(
    name: str,
    value: float,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    prefix: str = "",
) -> None:
    """Raise unless ``value`` lies within the bounds (NaN and infinities never do, where a bound
    is given): ``density must be in (0.0, 1.0], got 1.5``. The bounds of a declared option are
    checked with it; a config checks bounds that depend on other fields with this."""
    lo = ge if ge is not None else gt
    hi = le if le is not None else lt
    bad = not math.isfinite(value) and (lo is not None or hi is not None)
    bad = bad or (ge is not None and value < ge) or (gt is not None and value <= gt)
    bad = bad or (le is not None and value > le) or (lt is not None and value >= lt)
    if not bad:
        return
    if hi is None:
        op = ">=" if ge is not None else ">"
        raise MaskValidationError(f"{prefix}{name} must be {op} {lo!r}, got {value!r}")
    if lo is None:
        op = "<=" if le is not None else "<"
        raise MaskValidationError(f"{prefix}{name} must be {op} {hi!r}, got {value!r}")
    left = "[" if ge is not None else "("
    right = "]" if le is not None else ")"
    raise MaskValidationError(
        f"{prefix}{name} must be in {left}{_fmt(lo)}, {_fmt(hi)}{right}, got {value!r}"
    )


def from_values(cls: type, values: Mapping[str, Any], where: str | Mapping[str, str] | None = None):
    """An instance of ``cls`` from field values, each checked (:func:`check_value`);
    ``where`` names their source (one for all, or one per key)."""
    checked = {}
    for key, value in values.items():
        w = where.get(key) if isinstance(where, Mapping) else where
        checked[key] = check_value(cls, key, value, w)
    return cls(**checked)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Every option of ``cfg`` as JSON-able values (tuples become lists), in declaration order:
    what run.json records."""
    out = {}
    for f in fields(type(cfg)):
        value = getattr(cfg, f.name)
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[f.name] = value
    return out


# -- TOML ------------------------------------------------------------------------------------------
def read_toml(path: str | Path, table: str | None = None, *,
              what: str = "config file") -> dict[str, Any]:  # fmt: skip
    """The keys of a TOML config file: its top level, or the ``[table]`` when it has one (then
    nothing may stand outside it). ``what`` names the file in the not-found error (a sweep
    file reads through here too).

    Raises
    ------
    MaskFileError
        ``config file not found``, ``not valid TOML (...)``, ``keys outside the [train] table``.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise MaskFileError(p, f"{what} not found") from None
    except OSError as e:
        raise MaskFileError(p, f"cannot read ({e.strerror or e})") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise MaskFileError(p, f"not valid TOML ({e})") from None
    if table is not None and table in data:
        extra = sorted(k for k in data if k != table)
        if extra:
            raise MaskFileError(p, f"keys outside the [{table}] table: {', '.join(extra)}")
        data = data[table]
        if not isinstance(data, dict):
            raise MaskFileError(p, f"'{table}' is not a table")
    return data


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}"
                                for k, v in value.items()) + " }"  # fmt: skip
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(cfg: Any, *, table: str | None = None, header: str = "") -> str:
    """``cfg`` as a TOML file that :func:`gather` ``(config=...)`` reads back into ``cfg``: one
    ``key = value`` per option with its help as a comment; an unset (None) option is a
    commented-out line (TOML has no null)."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    if table:
        lines += ["", f"[{table}]"]
    for f in fields(type(cfg)):
        value = getattr(cfg, f.name)
        lines.append(f"# {f.spec.help}")
        if value is None:
            lines.append(f"# {f.name} =  (unset)")
        else:
            lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines).lstrip("\n") + "\n"


def parse_sets(items: Iterable[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as a dict; VALUE in TOML syntax (a bare word is a string)."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise MaskValidationError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare word: a string
        out[key] = value
    return out


# -- the command line ------------------------------------------------------------------------------
def _argparse_type(f: _Field) -> Callable[[str], Any]:
    def bounded(value):
        if f.spec.usage_bounds:
            try:
                _check_bounds(f.name, value, f.spec, "")
            except MaskValidationError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
        return value

    def integer(text: str) -> int:
        try:
            return bounded(int(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None

    def number(text: str) -> float:
        try:
            return bounded(float(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None

    def numbers(text: str) -> tuple[float, ...]:
        return tuple(number(t) for t in text.replace(",", " ").split())

    return {"int": integer, "float": number, "floats": numbers}.get(f.kind, str)


def _split_list(
    known: Iterable[str] | None = None, split: bool = True
) -> Callable[[str], list[str]]:
    """The argparse type of a list of names: one value split at commas (``mu0,mu_hat``), each
    name checked against ``known`` (when given) in the parser; ``split=False`` (a list of free
    texts: labels) takes the value whole, one item per flag."""
    known = None if known is None else tuple(known)

    def names(text: str) -> list[str]:
        if not split:
            return [text]
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{text!r} names nothing")
        for item in items:
            if known is not None and item not in known:
                raise argparse.ArgumentTypeError(
                    f"invalid choice: {item!r} (choose from {', '.join(known)})"
                )
        return items

    return names


def add_list_argument(
    parser: argparse.ArgumentParser,
    *flags: str,
    dest: str,
    help: str,
    metavar: str = "NAME",
    choices: Iterable[str] | None = None,
    split: bool = True,
) -> argparse.Action:
    """Add a list flag the way :func:`add_arguments` declares list options: one value per flag,
    comma separated (``--metric a,b``; ``split=False``: taken whole, for free texts), the flag
    repeated to add more, the names checked against ``choices`` by the parser. It never takes
    the positional arguments after it. The value is a list (None when the flag is not given).

    For commands that declare a list flag by hand (``add_list_argument(p, "--metric",
    "--metrics", dest="metrics", help=...)``).
    """
    return parser.add_argument(*flags, dest=dest, action="extend", default=None,
                               type=_split_list(choices, split),
                               metavar=f"{metavar}[,...]" if split else metavar,
                               help=help)  # fmt: skip


def _metavar(f: _Field) -> str:
    """The value's name in ``--help``: the declared one; else the known names when there are few
    (``{sgd,adamw}``); else the field's name in capitals."""
    if f.spec.metavar:
        return f.spec.metavar
    if f.spec.choices is not None and not callable(f.spec.choices):
        known = f.spec.known()
        if known and len(known) <= 8:
            return "{" + ",".join(known) + "}"
    return f.name.upper()


def _default_text(f: _Field) -> str:
    if f.spec.default_text is not None:
        return f.spec.default_text
    d = f.default
    if d is None:
        return "unset"
    if isinstance(d, bool):
        return "on" if d else "off"
    if isinstance(d, tuple):
        return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in d)
    return str(d)


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    exclude: Iterable[str] = (),
    only: Iterable[str] | None = None,
) -> list[str]:
    """Add a flag for every option of ``cls`` that has one (or those named in ``only``); returns
    the fields added.

    Every flag's default is None (not given), so that :func:`gather` knows which values came from
    the command line; its help ends with the option's default. A list (``tuple[str, ...]``,
    ``tuple[float, ...]``) takes exactly one value per flag, comma separated (``--metrics
    mu0,mu_hat``), and the flag may be repeated to add more (``--metrics mu0 --metrics
    mu_hat``): a list flag never takes the positional arguments that follow it. A list of free
    texts (``comma_list=False``: labels) takes one item per flag, commas included.
    """
    skip = set(exclude)
    keep = None if only is None else set(only)
    added = []
    for f in fields(cls):
        if f.name in skip or not f.flags or (keep is not None and f.name not in keep):
            continue
        help_text = f"{f.spec.help} (default: {_default_text(f)})"
        if f.kind == "bool":
            if f.spec.negative:
                parser.add_argument(f.spec.negative, dest=f.name, action="store_const",
                                    const=False, default=None,
                                    help=f.spec.negative_help or help_text)  # fmt: skip
            else:
                parser.add_argument(*f.flags, dest=f.name, action=argparse.BooleanOptionalAction,
                                    default=None, help=help_text)  # fmt: skip
        elif f.kind == "strs":
            add_list_argument(parser, *f.flags, dest=f.name, help=help_text,
                              metavar=f.spec.metavar or "NAME",
                              choices=f.spec.known() if f.spec.usage_choices else None,
                              split=f.spec.comma_list)  # fmt: skip
        elif f.kind == "floats":
            parser.add_argument(*f.flags, dest=f.name, action="extend", type=_argparse_type(f),
                                default=None, metavar=f"{f.spec.metavar or 'X'}[,...]",
                                help=help_text)  # fmt: skip
        elif f.spec.usage_choices:
            parser.add_argument(*f.flags, dest=f.name, choices=f.spec.known(), default=None,
                                help=help_text)  # fmt: skip
        else:
            parser.add_argument(*f.flags, dest=f.name, type=_argparse_type(f), default=None,
                                metavar=_metavar(f), help=help_text)  # fmt: skip
        added.append(f.name)
    return added


def settable_help(cls: type, *, width: int | None = None, exclude: Iterable[str] = ()) -> str:
    """The options of ``cls`` that have no flag, as text for the end of ``--help``: one line
    each, ``name  help (default: ...)`` with the default in TOML syntax (what ``--set`` takes),
    wrapped to ``width`` (default: the terminal's); they are set with ``--set NAME=VALUE`` or
    in ``--config FILE``. Empty when every option has a flag."""
    import shutil
    import textwrap

    rows = [f for f in fields(cls) if not f.flags and f.name not in set(exclude)]
    if not rows:
        return ""
    if width is None:
        width = max(shutil.get_terminal_size().columns - 2, 40)
    pad = min(max(len(f.name) for f in rows) + 4, 24)
    lines = ["options without a flag (--set NAME=VALUE, or a --config FILE):"]
    for f in rows:
        head = f"  {f.name}"
        if len(head) + 2 > pad:  # a long name: its text starts on the next line
            lines.append(head)
            head = ""
        default = f.spec.default_text
        if default is None:
            default = "unset" if f.default is None else _toml_value(f.default)
        text = f"{f.spec.help} (default: {default})"
        lines += textwrap.wrap(text, width, initial_indent=head.ljust(pad),
                               subsequent_indent=" " * pad, break_on_hyphens=False)  # fmt: skip
    return "\n".join(lines)


def flag_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options given as flags (those not None) in ``args``; lists as tuples."""
    out = {}
    for f in fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out


def gather(
    cls: type,
    *,
    config: str | Path | None = None,
    table: str | None = None,
    flags: Mapping[str, Any] | None = None,
    sets: Mapping[str, Any] | None = None,
    base: Any = None,
):
    """The config from ``base`` (default: the class defaults), then a TOML file, then flags, then
    ``--set`` values: each value is checked where it came from (the file's path, ``--flag``,
    ``--set``), so that a bad value is one line naming both."""
    return gather_given(cls, config=config, table=table, flags=flags, sets=sets, base=base)[0]


def gather_given(
    cls: type,
    *,
    config: str | Path | None = None,
    table: str | None = None,
    flags: Mapping[str, Any] | None = None,
    sets: Mapping[str, Any] | None = None,
    base: Any = None,
) -> tuple[Any, frozenset[str]]:
    """:func:`gather`'s config and the names of the fields given explicitly (a key of the TOML
    file, a flag or a ``--set``), the file read once: what a command needs to tell "left at
    the default" from "set to the default value"."""
    values: dict[str, Any] = {} if base is None else to_dict(base)
    where: dict[str, str] = {}
    if config is not None:
        data = read_toml(config, table)
        for key in data:
            _field(cls, key, "config key", str(config))
        values.update(data)
        where.update(dict.fromkeys(data, str(config)))
    # a value given by a flag is named by its flags, all of them when it has aliases (the
    # command line does not say which one was typed): "--n/--candidates: ..."
    by_flag = {f.name: "/".join(f.flags) for f in fields(cls) if f.flags}
    for key, value in (flags or {}).items():
        values[key] = value
        where[key] = by_flag.get(key, f"--{key}")
    for key, value in (sets or {}).items():
        _field(cls, key, "--set field", None)
        values[key] = value
        where[key] = "--set"
    return from_values(cls, values, where), frozenset(where)


def grouped(values: Mapping[str, Any], *classes: type, where: str | None = None) -> list[Any]:
    """One instance of each option group in ``classes`` from keyword ``values`` (each checked by
    its group; the defaults elsewhere): how a function takes the options of a group as keyword
    arguments without declaring them again (``analyze(ms, conv="rolled")``).

    Raises
    ------
    MaskValidationError
        For a keyword that is an option of none of the groups (listing the known ones).
    """
    names = {f.name: cls for cls in classes for f in fields(cls)}
    for key in values:
        if key not in names:
            prefix = f"{where}: " if where else ""
            raise MaskValidationError(f"{prefix}unknown option {key!r}; known: {', '.join(names)}")
    return [
        from_values(cls, {k: v for k, v in values.items() if names[k] is cls}) for cls in classes
    ]


# -- option groups shared by several commands ------------------------------------------------
#: How a conv layer becomes a graph (:mod:`masktopo.analysis.graph`).
CONV_MODES = ("unrolled", "rolled")
#: Validity gates of the Ramanujan metrics (pags-spec §3.7).
GATES = ("n23", "i23")
#: Variants of IMDB (pags-spec §3.3).
IMDB_VARIANTS = ("n23", "i23")
#: NaRC's edge count convention: ``e = 2|E|`` (the I23 code) or ``|E|``.
NARC_EDGES = ("directed", "undirected")
#: How undefined layer values enter a network mean: skipped, or counted as 0 (N23).
INVALID = ("skip", "zero")


@dataclass(frozen=True)
class Options:
    """Validated analysis options (checked once, here: an unknown value is one line listing the
    known ones)."""

    conv: str = option("unrolled", "conv layer graph: one edge per kernel entry (unrolled) or "
                       "channel pairs with edge counts (rolled)", choices=CONV_MODES,
                       what="conv mode", usage_choices=True)  # fmt: skip
    gate: str = option("n23", "validity gate of the Ramanujan metrics (spec variant)",
                       choices=GATES, what="gate", usage_choices=True)  # fmt: skip
    imdb: str = option("n23", "nested-regular-subgraph (IMDB) variant", choices=IMDB_VARIANTS,
                       what="IMDB variant", usage_choices=True)  # fmt: skip
    narc: str = option("directed", "edge count e in NaRC: 2|E| as the I23 code (directed) or "
                       "|E|", choices=NARC_EDGES, what="NaRC edge convention",
                       usage_choices=True)  # fmt: skip
    allow_empty: bool = option(False, "analyze layers with no kept entry (their metrics are "
                               "NaN) instead of failing", flag="--allow-empty-layers")  # fmt: skip

    def __post_init__(self):
        for f in fields(Options):
            check_value(Options, f.name, getattr(self, f.name))


@dataclass(frozen=True)
class RunOptions:
    """Which events of a run directory are analyzed, whether the cache is used, and how the
    network row treats layers whose Ramanujan metrics are gated out."""

    every: int = option(1, "for run directories: analyze events 0, K, 2K, ... and the last "
                        "(1: all)", ge=1, metavar="K", usage_bounds=True)  # fmt: skip
    cache: bool = option(True, "for run directories: read and update the cache in "
                         "RUN/analysis/", negative="--no-cache",
                         negative_help="for run directories: neither read nor update the cache "
                         "in RUN/analysis/")  # fmt: skip
    invalid: Literal["skip", "zero"] = option(
        "skip", "the network row's means over layers whose gated metrics are undefined (NaN): "
        "skip those layers (I23), or count them as 0 (N23, PAGS's default); pags-spec §6.3",
        what="invalid-value rule")  # fmt: skip

    def __post_init__(self):
        for f in fields(RunOptions):
            check_value(RunOptions, f.name, getattr(self, f.name))


#: Horizontal axes of the figures over training (:mod:`masktopo.plots`).
X_AXES = ("step", "epoch", "event")


@dataclass(frozen=True)
class FigureOptions:
    """How runs are drawn over training (``masktopo plot``, ``masktopo report``)."""

    labels: tuple[str, ...] | None = option(None, "one label per run, in the runs' order: "
                                            "repeat the flag (--labels A --labels B)",
                                            metavar="LABEL",
                                            default_text="the run folders' names",
                                            comma_list=False)  # fmt: skip
    x: str = option("step", "horizontal axis of the figures over training", choices=X_AXES,
                    what="x axis", usage_choices=True)  # fmt: skip
    against: str | None = option(None, "sweep folders: the horizontal axis, a metric of the "
                                 "runs or an axis of the sweep", metavar="NAME",
                                 default_text="R_s when the runs have it, else the first "
                                 "numeric axis")  # fmt: skip

    def __post_init__(self):
        for f in fields(FigureOptions):
            check_value(FigureOptions, f.name, getattr(self, f.name))


def is_import_path(value: Any) -> bool:
    """Whether ``value`` is a well-formed import path ``module.path:callable``: exactly one colon,
    a dotted module path before it and a dotted attribute path after it, every part a Python
    identifier that is not a keyword (``mypkg.models:make_net``, ``nets:Zoo.small``).

    Only the spelling is checked; nothing is imported. A model option takes such a path besides
    the zoo names (:func:`masktopo.zoo.get_model` imports and calls it).
    """
    if not isinstance(value, str) or value.count(":") != 1:
        return False
    parts = [p.split(".") for p in value.split(":")]
    return all(n.isidentifier() and not keyword.iskeyword(n) for path in parts for n in path)


def _zoo_models() -> tuple[str, ...]:
    from .zoo import MODEL_NAMES  # light: plain names

    return MODEL_NAMES


def _zoo_datasets() -> tuple[str, ...]:
    from .zoo import DATASET_NAMES

    return DATASET_NAMES


@dataclass(frozen=True)
class SetupOptions:
    """What a command trains or prunes, and how: the model (a zoo name, or an import path
    ``module.path:callable`` of one's own model, see :func:`masktopo.zoo.get_model`) and
    dataset, where the data is, the target density and the run seed (``masktopo train``,
    ``masktopo pags``; each command's config takes these declarations with :func:`same_as`)."""

    model: str | None = option(None, "zoo network: resnet18 resnet34 resnet20 resnet50 vgg16 "
                               "vgg19 lenet5 lenet300 mlpnet spiral-mlp mlp smallcnn, or "
                               "module.path:callable "
                               "(your own, docs/zoo.md)", choices=_zoo_models, what="model",
                               accepts=is_import_path, accepts_text="module.path:callable",
                               metavar="NAME")  # fmt: skip
    dataset: str | None = option(None, "dataset: cifar10 cifar100 tiny-imagenet imagenet mnist "
                                 "fashion-mnist cubist-spiral mnist1d", choices=_zoo_datasets,
                                 what="dataset", metavar="NAME")  # fmt: skip
    data_dir: str | None = option(None, "folder with the dataset's files", metavar="DIR",
                                  default_text="the dataset's standard place")  # fmt: skip
    width: int | None = option(None, "hidden width of the models that take one (spiral-mlp: "
                               "16, mlp: 100)", ge=1, metavar="W",
                               default_text="the model's own")  # fmt: skip
    density: float = option(0.05, "fraction of the maskable weights kept", gt=0.0, le=1.0,
                            metavar="D")  # fmt: skip
    seed: int = option(0, "seed of every random draw (masktopo.seeding)", ge=0, metavar="S")
    score_batches: int | None = option(None, "minibatches (of the batch size) a data-driven PaI "
                                       "method (snip, grasp, iter-snip, force) scores on",
                                       ge=1, metavar="N",
                                       default_text="all of the training data")  # fmt: skip
    pai_rounds: int | None = option(None, "pruning rounds of an iterative PaI method (synflow, "
                                    "iter-snip, force)", ge=1, metavar="R",
                                    default_text="the method's own: synflow 100, iter-snip and "
                                    "force 10")  # fmt: skip
