"""Sweep files: a grid of runs of one command, expanded into cells with deterministic keys.

A sweep file is TOML::

    # E1 (ITOP): accuracy vs R_s
    [base]                      # the config keys of one command, as its --config file takes them
    command = "train"           # the command (default "train"; also "pags")
    model = "lenet300"
    dataset = "fashion-mnist"
    density = 0.02
    epochs = 20

    [grid]                      # values per key; the product is taken (seed is a key like any other)
    method = ["set", "rigl"]
    update_interval = [20, 100, 500, 2000]
    seed = [0, 1, 2]

    [[include]]                 # extra cells, merged over [base]
    method = "static"
    seed = [0, 1, 2]            # a list here is a product too

A ``tag`` (a string, in any table) labels cells: it is an axis like the others and part of the
key, but it is not passed to the command.

In ``[grid]`` every value is a list of settings (a list of lists for an option that takes a list,
such as ``lr_milestones``). In an ``[[include]]`` table a value is one setting, or a list of
settings whose product is taken (for a list option: a list of lists); a flat list for a list
option is one setting.

Each cell is the merge of ``[base]`` and its grid point (or include table). Its **key** is the
first 12 hex digits of the SHA-256 of the command and the merged settings (canonical JSON, keys
sorted), so the same cell gets the same key in every sweep file and on every machine; its
**folder** is the readable ``axis=value,...`` of the keys that vary, then the key's first 8
digits. A setting changes the key only when it is written in the sweep file: a default that a
new release changes does not.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MaskValidationError
from ..options import check_value, fields, read_toml
from .commands import COMMANDS, SweepCommand, get_command

__all__ = ["Cell", "Sweep", "cell_key", "expand", "load_sweep", "parse_sweep"]

#: Keys a sweep never takes from the file: the sweep sets them for each run.
RESERVED = ("out",)
#: A free label of a cell (a string): an axis for ``summarize`` and part of the key, never
#: passed to the command (``tag = "best"`` next to settings that say the same in paths).
TAG = "tag"
_TABLES = ("base", "grid", "include")
_LIST_KINDS = ("floats", "strs")
_SLUG_CHARS = re.compile(r"[^A-Za-z0-9._=,+-]+")
SLUG_MAX = 80


@dataclass(frozen=True)
class Cell:
    """One run of a sweep.

    Attributes
    ----------
    key : str
        12 hex digits: the SHA-256 of the command and ``settings`` (canonical JSON).
    folder : str
        The run's folder name under the sweep's ``runs/``: ``axis=value,...-<key[:8]>``.
    settings : dict
        Every key written in the sweep file for this run (``[base]`` merged with the cell), as
        the command's config takes them.
    axes : dict
        The keys that vary across the sweep (grid and include keys) and their values here.
    """

    key: str
    folder: str
    settings: dict[str, Any]
    axes: dict[str, Any]

    def to_dict(self) -> dict:
        return {"key": self.key, "folder": self.folder, "settings": self.settings,
                "axes": self.axes}  # fmt: skip

    @staticmethod
    def from_dict(d: Mapping) -> Cell:
        return Cell(str(d["key"]), str(d["folder"]), dict(d["settings"]), dict(d["axes"]))


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file: its command, the cells in grid order, and the axes (the keys that
    vary: ``[grid]`` keys, then keys first set by an ``[[include]]`` table)."""

    command: str
    cells: tuple[Cell, ...]
    axes: tuple[str, ...]
    source: str = ""
    base: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> SweepCommand:
        return get_command(self.command)


def _canonical(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    return value


def cell_key(command: str, settings: Mapping[str, Any]) -> str:
    """The deterministic key of a run: the first 12 hex digits of the SHA-256 of ``command`` and
    ``settings`` as canonical JSON (keys sorted, tuples as lists)."""
    blob = json.dumps({"command": command, "settings": _canonical(dict(settings))},
                      sort_keys=True, separators=(",", ":"), allow_nan=True)  # fmt: skip
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "+".join(_text(v) for v in value)
    if isinstance(value, Mapping):
        return "+".join(f"{k}{_text(v)}" for k, v in value.items())
    if isinstance(value, str) and "/" in value.rstrip("/"):  # a path: its last part (the key
        value = value.rstrip("/").rsplit("/", 1)[1]  # keeps folders of equal names apart)
    if isinstance(value, str):
        value = value.replace("/", "_").replace(":", "_")
    return str(value)


def folder_name(axes: Mapping[str, Any], key: str) -> str:
    """``axis=value,...-<key[:8]>`` with characters unsafe in file names replaced, a path value
    shown by its last part, the readable part cut at :data:`SLUG_MAX` characters (the key keeps
    it unique)."""
    slug = ",".join(f"{k}={_text(v)}" for k, v in axes.items())
    slug = _SLUG_CHARS.sub("_", slug)[:SLUG_MAX].strip("_,")
    return f"{slug}-{key[:8]}" if slug else key[:8]


def _where(source: str, table: str, key: str | None = None) -> str:
    return f"{source}: [{table}]" + (f" {key}" if key else "")


def _check(cls: type, key: str, value: Any, where: str) -> Any:
    if key in RESERVED:
        raise MaskValidationError(f"{where}: {key!r} is set by the sweep for each run; remove it")
    value = check_value(cls, key, value, where)
    return _canonical(value) if isinstance(value, tuple | dict) else value


def _values_of(cls: type, key: str, value: Any, where: str, *, product: bool) -> list[Any]:
    """The settings of ``key`` written as ``value``: a list of settings in ``[grid]`` (always)
    or in ``[[include]]`` (``product=False``: a list only when it is one for a scalar option,
    or a list of lists for a list option)."""
    kinds = {f.name: f.kind for f in fields(cls)}
    if key == TAG:
        kinds = {TAG: "str"}
    elif key not in kinds:
        check_value(cls, key, value, where)  # the unknown-key error, listing the known keys
    is_list_option = kinds[key] in _LIST_KINDS
    if product:
        if not isinstance(value, list) or not value:
            raise MaskValidationError(f"{where}: a [grid] value is a non-empty list of settings, "
                                      f"got {value!r}")  # fmt: skip
        items = value
    elif isinstance(value, list) and (
        not is_list_option or (value and all(isinstance(v, list) for v in value))
    ):
        if not value:
            raise MaskValidationError(f"{where}: an empty list gives no cell")
        items = value
    else:
        items = [value]
    if key == TAG:
        bad = [v for v in items if not isinstance(v, str) or not v]
        if bad:
            raise MaskValidationError(f"{where}: a tag is a non-empty string, got {bad[0]!r}")
        out = list(items)
    else:
        out = [_check(cls, key, v, where) for v in items]
    for a, b in itertools.combinations(range(len(out)), 2):
        if out[a] == out[b]:
            raise MaskValidationError(f"{where}: the value {items[a]!r} is listed twice")
    return out


def parse_sweep(data: Mapping[str, Any], source: str = "sweep file") -> Sweep:
    """A :class:`Sweep` from the tables of a sweep file (``source`` names it in errors).

    Raises
    ------
    MaskValidationError
        An empty file (no table), unknown table or command, a key the command does not take
        (listing the known ones), a bad value (naming the table and key), a grid value that is
        not a list, a key both in ``[base]`` and ``[grid]``, two cells with the same settings,
        or no cell.
    """
    if not data:
        raise MaskValidationError(f"{source}: the sweep file is empty and defines no run: write "
                                  "a [base] table (one run), and [grid] or [[include]] tables "
                                  "for more")  # fmt: skip
    unknown = sorted(set(data) - set(_TABLES))
    if unknown:
        raise MaskValidationError(f"{source}: unknown table(s) {', '.join(unknown)}; a sweep "
                                  "file has [base], [grid] and [[include]]")  # fmt: skip
    base = dict(data.get("base", {}))
    grid = dict(data.get("grid", {}))
    includes = data.get("include", [])
    if not isinstance(base, dict) or not isinstance(grid, dict):
        raise MaskValidationError(f"{source}: [base] and [grid] must be tables")
    if not isinstance(includes, list) or not all(isinstance(t, dict) for t in includes):
        raise MaskValidationError(f"{source}: include must be an array of tables ([[include]])")
    command = base.pop("command", "train")
    if command not in COMMANDS:
        raise MaskValidationError(f"{source}: [base] command {command!r} is not a sweepable "
                                  f"command; known: {', '.join(COMMANDS)}")  # fmt: skip
    if "command" in grid or any("command" in t for t in includes):
        raise MaskValidationError(f"{source}: one sweep runs one command: set 'command' in "
                                  "[base] only")  # fmt: skip
    cls = get_command(command).config
    base = {k: (v if k == TAG else _check(cls, k, v, _where(source, "base", k)))
            for k, v in base.items()}  # fmt: skip
    both = sorted(set(base) & set(grid))
    if both:
        raise MaskValidationError(f"{source}: {', '.join(both)} in both [base] and [grid]; keep "
                                  "each key in one of them")  # fmt: skip
    axes = list(grid)
    values = {k: _values_of(cls, k, v, _where(source, "grid", k), product=True)
              for k, v in grid.items()}  # fmt: skip
    points: list[dict[str, Any]] = []
    if grid:
        points += [dict(zip(axes, combo, strict=True))
                   for combo in itertools.product(*values.values())]  # fmt: skip
    elif not includes:
        points.append({})  # [base] alone: one run
    for i, table in enumerate(includes):
        where = f"{source}: [[include]] #{i + 1}"
        expanded = {k: _values_of(cls, k, v, f"{where} {k}", product=False)
                    for k, v in table.items()}  # fmt: skip
        for k in table:
            if k not in axes:
                axes.append(k)
        points += [dict(zip(expanded, combo, strict=True))
                   for combo in itertools.product(*expanded.values())]  # fmt: skip
    cells, seen = [], {}
    for point in points:
        settings = {**base, **point}
        key = cell_key(command, settings)
        if key in seen:
            raise MaskValidationError(f"{source}: two cells have the same settings ({seen[key]})")
        shown = {k: point[k] for k in axes if k in point}
        seen[key] = ", ".join(f"{k}={v}" for k, v in shown.items()) or "[base]"
        cells.append(Cell(key, folder_name(shown, key), settings, shown))
    if not cells:
        raise MaskValidationError(f"{source}: the sweep has no cell")
    return Sweep(command, tuple(cells), tuple(axes), source, base)


def load_sweep(path: str | Path) -> Sweep:
    """:func:`parse_sweep` of a sweep file; every cell's config is also built and checked by the
    command (e.g. a method-specific value that does not fit the method), so a bad sweep file
    is one line before anything runs.

    Raises
    ------
    MaskFileError
        The file is missing, unreadable or not valid TOML.
    MaskValidationError
        As :func:`parse_sweep`, or a cell the command rejects (naming the cell).
    """
    p = Path(path)
    sweep = parse_sweep(read_toml(p, what="sweep file"), str(p))
    for cell in sweep.cells:
        sweep.spec.build(cell.settings, where=f"{p}: cell {cell.folder}")
    return sweep


def expand(path: str | Path) -> list[Cell]:
    """The cells of a sweep file, in grid order (grid product, then the include tables)."""
    return list(load_sweep(path).cells)
