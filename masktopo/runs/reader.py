"""Reading run directories: ``run.json``, ``events.jsonl`` and the events' mask files.

A bad line of ``events.jsonl`` (a run killed mid-write, a disk error, a line written twice) is
skipped with one warning naming the line, so that every other event stays readable; a strict read
(:func:`read_run` ``(strict=True)``, what a resumed run checks its log with) raises instead.
"""

from __future__ import annotations

import functools
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .._version import __version__
from ..checks import is_int, is_number, json_type
from ..errors import MaskFileError, MaskTopoError, MaskValidationError
from ..files import input_path, os_problem
from ..masks import LayerInfo, MaskSet
from ..store import describe_layers, parse_layers, read_file
from .layout import (
    EVENTS_FILE,
    KINDS,
    LEGACY_PAGS_FORMAT,
    MASKS_DIR,
    METRICS_FILE,
    RUN_FILE,
    RUN_FORMAT,
    RUN_FORMAT_VERSIONS,
    SUMMARY_FILE,
)

__all__ = ["EVENT_FIELDS", "Run", "check_summary", "read_metrics", "read_run", "read_run_json"]

_CUT_OFF = "a write cut off by a stopped run"
#: Keys of an events.jsonl line that describe the event rather than measure it.
EVENT_FIELDS = ("event", "step", "epoch", "kind", "file", "has_weights", "nnz")


def check_event_arg(event: Any) -> None:
    """``event`` must be an int or None."""
    if event is not None and not is_int(event):
        raise MaskValidationError(f"event must be an integer or None, not {event!r}")


@dataclass(frozen=True)
class Run:
    """A run directory.

    Attributes
    ----------
    path : pathlib.Path
        The run directory.
    config : dict
        The whole of ``run.json`` (``format``, ``kind``, ``created``, ``masktopo_version``, the
        resolved ``config``, ``seed``, ``layers``, ...).
    events : list of dict
        The readable lines of ``events.jsonl`` in order, each with its ``event`` number (0, 1,
        ... with a gap only where a bad line was skipped or a line is missing).
    skipped : list of (int, str)
        ``(line number, problem)`` of every line of ``events.jsonl`` that was skipped.
    """

    path: Path
    config: dict
    events: list[dict]
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """What wrote the run: ``"train"``, ``"pags"``, ... (run.json's ``kind``)."""
        return self.config.get("kind", "train")

    def no_events_reason(self) -> str:
        """Why the run has no mask event, in words for an error: a PAGS folder keeps its masks
        in files of its own, a search keeps the masks of its runs at or above the target only,
        a pruning benchmark keeps a table; any other run has not recorded one yet."""
        plain = f"the run has no mask events yet ({EVENTS_FILE} is missing or empty)"
        if self.kind == "pags":
            return (f"is a PAGS output folder, not a training run: analyze its masks, e.g. "
                    f"masktopo analyze {self.path / 'best.safetensors'} (or base.safetensors); "
                    f"masktopo plot {self.path} draws its scores")  # fmt: skip
        if self.kind == "prune-bench":
            return (f"is a pruning benchmark folder (no mask events): its runs are in "
                    f"results.parquet; masktopo plot {self.path} draws them")  # fmt: skip
        if self.kind != "search":
            return plain
        parts = sorted((self.path / MASKS_DIR).glob("part-*.safetensors"))
        try:
            s = self.checked_summary() or {}
        except MaskTopoError:
            s = {}
        hit = s.get("n_above_target")
        if parts or (is_int(hit) and hit > 0):
            runs = f"the {hit:,} runs" if is_int(hit) and hit > 0 else "the runs"
            target = s.get("target", self.config.get("config", {}).get("target"))
            at = f" {target:g}" if isinstance(target, int | float) else ""
            return (f"is a search output folder, not a training run: it keeps the masks of {runs} "
                    f"at or above its target{at} in {MASKS_DIR}/part-*.safetensors, stacked over "
                    f"runs; masktopo.search.read_search_masks({str(self.path)!r}) yields each "
                    f"run's MaskSet (masktopo.analysis.analyze takes one); masktopo plot "
                    f"{self.path} draws the search's accuracy against nnz")  # fmt: skip
        try:
            done, total, best, target = s["n_done"], s["n_runs"], s["best_accuracy"], s["target"]
        except KeyError:  # not finished, or summary.json lacks (or has bad) totals
            return (f"no masks to analyze: a search keeps the masks of runs at or above its "
                    f"target only, and none are in {MASKS_DIR}/ (its {SUMMARY_FILE} does not "
                    "say how many runs were trained)")  # fmt: skip
        best_txt = f" (the best: {best:.4g})" if isinstance(best, float) else ""
        if done == 0:
            return (f"no masks to analyze: none of its {total:,} runs has been trained yet; "
                    "a search keeps the masks of runs at or above its target only")  # fmt: skip
        if done == total:
            runs = "the only run" if total == 1 else f"none of the {total:,} runs"
        else:
            trained = "the only run" if done == 1 else f"none of the {done:,} runs"
            runs = f"{trained} trained so far (of {total:,})"
        verb = "did not reach" if runs.startswith("the only") else "reached"
        return (f"no masks to analyze: {runs} {verb} the target {target:g}{best_txt}; "
                "a search keeps the masks of runs at or above its target only")  # fmt: skip

    @property
    def layers(self) -> list[LayerInfo]:
        """The masked layers listed in ``run.json``, in order."""
        return [LayerInfo(d["name"], d["kind"], tuple(d["shape"])) for d in self.config["layers"]]

    @property
    def n_events(self) -> int:
        return len(self.events)

    @property
    def numbers(self) -> list[int]:
        """The event numbers of :attr:`events`, in order."""
        return list(self._positions)

    @functools.cached_property
    def _positions(self) -> dict[int, int]:
        return {ev["event"]: i for i, ev in enumerate(self.events)}

    def index(self, event: int | None = None) -> int:
        """The position in :attr:`events` of ``event``: its number when >= 0, the last when
        None, counted from the end when negative."""
        check_event_arg(event)
        n = len(self.events)
        if n == 0:
            raise MaskFileError(self.path, self.no_events_reason())
        if event is None:
            return n - 1
        if event < 0:
            if event < -n:
                raise self._out_of_range(event)
            return n + event
        if event in self._positions:
            return self._positions[event]
        if event < self.events[-1]["event"]:
            raise MaskFileError(
                self.path,
                f"event {event} is not readable: its line of {EVENTS_FILE} was skipped as bad "
                "or is missing",
            )
        raise self._out_of_range(event)

    def _out_of_range(self, event: int) -> MaskFileError:
        n, last = len(self.events), self.events[-1]["event"]
        return MaskFileError(
            self.path,
            f"event {event} is out of range: the run has {n} event(s), valid are 0..{last} "
            f"(or {-n}..-1 from the end)",
        )

    def event(self, event: int | None = None) -> dict:
        """The events.jsonl line of ``event`` (as :meth:`index`)."""
        return self.events[self.index(event)]

    def event_path(self, event: int | None = None) -> Path:
        """The mask file of ``event``."""
        return self.path / self.event(event)["file"]

    def load(self, event: int | None = None, weights: bool = True) -> MaskSet:
        """The MaskSet of ``event`` (None: the last), with weights when dumped and ``weights``."""
        return self.read(event, weights=weights)[0]

    def read(self, event: int | None, *, weights: bool) -> tuple[MaskSet, bool]:
        """``(MaskSet, whether its file has weights)`` of ``event``, checked against the run."""
        ev = self.event(event)
        k = ev["event"]
        file = self.path / ev["file"]
        if not file.is_file():
            raise MaskFileError(file, f"the mask file of event {k} is missing")
        ms, _, has_weights = read_file(file, weights=weights)
        if ms.layers() != self.layers:
            raise MaskFileError(
                file,
                f"the layers of event {k} do not match {RUN_FILE} "
                f"({describe_layers(ms.layers())} vs {describe_layers(self.layers)})",
            )
        if has_weights != ev["has_weights"]:
            raise MaskFileError(
                file,
                f"{EVENTS_FILE} says event {k} has_weights={ev['has_weights']}, the file "
                f"{'has' if has_weights else 'has no'} weights",
            )
        nnz = {n: int(np.count_nonzero(m.numpy())) for n, m in ms.items()}
        for name, count in ev["nnz"].items():
            if nnz[name] != count:
                raise MaskFileError(
                    file,
                    f"layer {name!r}: the mask has {nnz[name]} nonzeros, {EVENTS_FILE} records "
                    f"{count} for event {k}",
                )
        ms.meta = {**ms.meta, "run": str(self.path), "event": dict(ev)}
        return ms, has_weights

    def summary(self) -> dict | None:
        """``summary.json`` (history and final metrics) when the run finished, else None.

        Raises
        ------
        MaskFileError
            When the file exists but cannot be read or is not a JSON object.
        """
        f = self.path / SUMMARY_FILE
        return _json_object(f) if f.exists() else None

    def checked_summary(self) -> dict | None:
        """:meth:`summary` with every value of the wrong type left out, one warning each
        (:func:`check_summary`): what a report, a figure or a sweep's table reads."""
        s = self.summary()
        return None if s is None else check_summary(s, self.path / SUMMARY_FILE)

    def metrics(self, kind: str | None = None) -> list[dict]:
        """The lines of ``metrics.jsonl`` (:func:`read_metrics`)."""
        return read_metrics(self.path, kind=kind)


#: Values of summary.json that are integers when present (a run's steps and events; a search's
#: totals), and those that are numbers (NaN and inf included).
SUMMARY_INTS = ("steps", "n_events", "n_runs", "n_done", "n_above_target")
SUMMARY_NUMBERS = ("epochs", "density", "target", "best_accuracy")


def check_summary(summary: dict, path: str | os.PathLike = SUMMARY_FILE) -> dict:
    """A copy of a ``summary.json`` object without the values of the wrong type, each left out
    with one warning naming ``path`` (``<run>/summary.json: final 'test_acc' is not a number
    (string): left out``).

    Checked when present: :data:`SUMMARY_INTS` are integers, :data:`SUMMARY_NUMBERS` numbers,
    ``final`` an object of numbers (or null), ``history`` an array of objects of numbers (or
    null); a bad history value is left out of its entry, one warning per key. Other keys (a
    result folder's own) are kept as they are.
    """

    def drop(what: str) -> None:
        warnings.warn(f"{path}: {what}: left out", stacklevel=3)

    out = dict(summary)
    for key in (*SUMMARY_INTS, *SUMMARY_NUMBERS):
        ok, kind = (is_int, "an integer") if key in SUMMARY_INTS else (is_number, "a number")
        if key in out and not ok(out[key]):
            drop(f"{key!r} is not {kind} ({json_type(out[key])})")
            del out[key]
    if "final" in out:
        final = out["final"]
        if not isinstance(final, dict):
            drop(f"'final' is not an object ({json_type(final)})")
            del out["final"]
        else:
            for k, v in final.items():
                if v is not None and not is_number(v):
                    drop(f"final {k!r} is not a number ({json_type(v)})")
            out["final"] = {k: v for k, v in final.items() if v is None or is_number(v)}
    if "history" in out:
        history = out["history"]
        if not isinstance(history, list):
            drop(f"'history' is not an array ({json_type(history)})")
            del out["history"]
        else:
            entries = [h for h in history if isinstance(h, dict)]
            if len(entries) < len(history):
                drop(f"{len(history) - len(entries)} of the {len(history)} history entries are "
                     "not objects")  # fmt: skip
            bad: dict[str, list[str]] = {}
            for h in entries:
                for k, v in h.items():
                    if v is not None and not is_number(v):
                        bad.setdefault(k, []).append(json_type(v))
            for k, types in bad.items():
                kinds = ", ".join(dict.fromkeys(types))
                drop(f"history {k!r} is not a number in {len(types)} of the {len(entries)} "
                     f"entries ({kinds})")  # fmt: skip
            out["history"] = [{k: v for k, v in h.items() if v is None or is_number(v)}
                              for h in entries]  # fmt: skip
    return out


def _json_object(path: Path) -> dict:
    """A JSON file holding one object; every problem is a one-line MaskFileError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise MaskFileError(path, f"cannot read ({os_problem(e)})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MaskFileError(path, f"not valid JSON ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise MaskFileError(path, "not a JSON object")
    return data


def not_a_run(path: Path) -> MaskFileError:
    """The error for a folder ``path`` without run.json, saying what it holds when that helps: the
    run directories one level down (a folder of runs), or mask files (analyze them as files)."""
    text = f"not a run directory (no {RUN_FILE})"
    try:
        children = sorted(path.iterdir()) if path.is_dir() else []
    except OSError:
        children = []
    runs = [c for c in children if (c / RUN_FILE).is_file()]
    files = [c for c in children if c.suffix in (".safetensors", ".pt", ".pth", ".npz")]
    if runs:
        shown = ", ".join(str(c) for c in runs[:3]) + (", ..." if len(runs) > 3 else "")
        text += f"; it holds {len(runs)} run director{'y' if len(runs) == 1 else 'ies'}: {shown}"
    elif files:
        text += f"; it holds {len(files)} mask or weight file(s), e.g. {files[0]}: name the files"
    return MaskFileError(path, text)


def read_run_json(path: str | os.PathLike) -> dict:
    """``run.json`` of the run directory ``path``, checked; ``kind`` filled in for the runs of
    format version 1 (training runs, and PAGS runs of the legacy ``masktopo.pags`` format)."""
    p = Path(os.fspath(path))
    run_file = p / RUN_FILE
    if not run_file.exists():
        raise not_a_run(p)
    config = _json_object(run_file)
    if config.get("format") == LEGACY_PAGS_FORMAT and config.get("version") == 1:
        config = {**config, "format": RUN_FORMAT, "format_version": 1, "kind": "pags"}
    if config.get("format") != RUN_FORMAT:
        raise MaskFileError(
            run_file, f"'format' is {config.get('format')!r}, expected {RUN_FORMAT!r}"
        )
    version = config.get("format_version")
    if version not in RUN_FORMAT_VERSIONS or isinstance(version, bool):
        raise MaskFileError(
            run_file,
            f"format_version {version!r} is not supported: masktopo {__version__} reads "
            f"versions {', '.join(map(str, RUN_FORMAT_VERSIONS))}",
        )
    kind = config.setdefault("kind", "train")
    if kind not in KINDS:
        raise MaskFileError(run_file, f"'kind' is {kind!r}, not one of {', '.join(KINDS)}")
    if not isinstance(config.get("config", {}), dict):
        raise MaskFileError(run_file, "'config' is not a JSON object")
    parse_layers(run_file, config.get("layers"), nnz=False)
    return config


def read_run(path: str | os.PathLike, *, strict: bool = False) -> Run:
    """Read and check a run directory's ``run.json`` and ``events.jsonl``.

    Event mask files are read only by :meth:`Run.load`.

    Parameters
    ----------
    path : str or os.PathLike
        The run directory.
    strict : bool
        Raise on any bad line of ``events.jsonl``. By default a bad line is skipped with a
        warning naming it (``<run>/events.jsonl: skipping line N: <problem>``), and the last line
        when it was cut off by a stopped run (no trailing newline, not JSON) is ignored with a
        warning; the other events stay readable.

    Raises
    ------
    MaskFileError
        When ``path`` is not a run directory or ``run.json`` is invalid; with ``strict``, also
        for a bad line (message ``"<dir>: events.jsonl line N: ..."``).
    """
    p = input_path(path)
    if not p.is_dir():
        raise MaskFileError(p, "not a run directory")
    config = read_run_json(p)
    layers = {d["name"]: math.prod(d["shape"]) for d in config["layers"]}
    events_file = p / EVENTS_FILE
    events: list[dict] = []
    skipped: list[tuple[int, str]] = []
    if not events_file.exists():
        return Run(p, config, events, skipped)
    try:
        data = events_file.read_bytes()
    except OSError as e:
        raise MaskFileError(events_file, f"cannot read ({os_problem(e)})") from None
    lines = data.split(b"\n")
    partial = bool(lines[-1].strip())  # the last line has no newline: maybe cut off
    if not partial:
        lines.pop()  # b"" after the final newline
    parsed: list[tuple[int, dict | MaskFileError]] = []
    for i, raw in enumerate(lines, start=1):
        try:
            parsed.append((i, _parse(p, i, raw, layers, cut_off=partial and i == len(lines))))
        except MaskFileError as e:
            parsed.append((i, e))
    following = [None] * len(parsed)  # the event number of the next parsed line after each
    nxt = None
    for j in range(len(parsed) - 1, -1, -1):
        following[j] = nxt
        if isinstance(parsed[j][1], dict):
            nxt = parsed[j][1]["event"]
    prev, gap = -1, 0  # the last good event's number; bad lines since then
    for j, (i, item) in enumerate(parsed):
        if isinstance(item, dict):
            k = item["event"]
            want = f"{prev + 1}" if not gap else f"{prev + 1}..{prev + 1 + gap}"
            jump = k > prev + 1 + gap
            if k <= prev or (jump and following[j] not in (None, k + 1)):
                # a repeated or earlier number, or one the next line does not continue
                item = MaskFileError(p, f"{EVENTS_FILE} line {i}: 'event' is {k!r}, expected "
                                        f"{want} (events count from 0, one per line)")  # fmt: skip
            elif jump:  # lines gone, the next one continues: the later events stay readable
                problem = (f"event {prev + 1} is missing before line {i} (its line is gone)"
                           if k == prev + 2 else f"events {prev + 1}..{k - 1} are missing before "
                           f"line {i} (their lines are gone)")  # fmt: skip
                if strict:
                    raise MaskFileError(p, f"{EVENTS_FILE}: {problem}")
                warnings.warn(f"{events_file}: {problem}", stacklevel=2)
        if isinstance(item, MaskFileError):
            problem = item.problem.split(": ", 1)[1] if ": " in item.problem else item.problem
            cut_off = problem == _CUT_OFF
            if strict and not cut_off:
                raise item
            skipped.append((i, problem))
            if cut_off:
                msg = f"ignoring line {i}, a write cut off by a stopped run"
            else:
                msg = f"skipping line {i}: {problem}"
            warnings.warn(f"{events_file}: {msg}", stacklevel=2)
            gap += 1
            continue
        events.append(item)
        prev, gap = item["event"], 0
    return Run(p, config, events, skipped)


def _parse(run: Path, line: int, raw: bytes, layers: dict, *, cut_off: bool) -> dict:
    """One line of events.jsonl, checked alone (its number's place in the sequence is checked
    by :func:`read_run`)."""

    def bad(problem: str) -> MaskFileError:
        return MaskFileError(run, f"{EVENTS_FILE} line {line}: {problem}")

    if not raw.strip():
        raise bad("empty line")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        if cut_off:
            raise bad(_CUT_OFF) from None
        raise bad(f"not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise bad("not a JSON object")
    for key in ("event", "step", "epoch", "kind", "file", "has_weights", "nnz", "density"):
        if key not in obj:
            raise bad(f"missing key {key!r}")
    k = obj["event"]
    if not is_int(k) or k < 0:
        raise bad(f"'event' is {k!r}, not an event number (events count from 0, one per line)")
    for key in ("step", "epoch"):
        v = obj[key]
        if v is not None and not is_number(v):
            raise bad(f"{key!r} is {v!r}, not a number or null")
    if not isinstance(obj["kind"], str) or not obj["kind"]:
        raise bad(f"'kind' is {obj['kind']!r}, not a non-empty string")
    file = obj["file"]
    if not isinstance(file, str) or not file:
        raise bad(f"'file' is {file!r}, not a path")
    rel = PurePosixPath(file)
    if rel.is_absolute() or ".." in rel.parts or "\\" in file or ":" in file:
        raise bad(f"'file' {file!r} is not a relative path inside the run directory")
    if not isinstance(obj["has_weights"], bool):
        raise bad(f"'has_weights' is {obj['has_weights']!r}, not true/false")
    nnz = obj["nnz"]
    if not isinstance(nnz, dict) or set(nnz) != set(layers):
        got = sorted(nnz) if isinstance(nnz, dict) else nnz
        raise bad(f"'nnz' must map each layer of {RUN_FILE} to a count, got {got!r}")
    for name, count in nnz.items():
        if not is_int(count) or not 0 <= count <= layers[name]:
            raise bad(f"'nnz' of layer {name!r} is {count!r}, not a count in 0..{layers[name]}")
    d = obj["density"]
    if not is_number(d) or not 0 <= d <= 1:
        raise bad(f"'density' is {d!r}, not a number in [0, 1]")
    return obj


def read_metrics(run: str | os.PathLike | Run, *, kind: str | None = None) -> list[dict]:
    """The lines of a training run's live log, ``metrics.jsonl``, as dicts, in order.

    The file grows while the run trains: one line per completed epoch (``"kind": "epoch"`` and
    the history row: ``epoch``, ``step``, ``train_loss``, ``train_acc``, ``val_loss``,
    ``val_acc``, ``lr``, ``density``, ``seconds``, the method's scalars such as ``R_s``) and one
    after the final evaluation (``"kind": "final"``: ``step``, ``epoch`` and the final metrics,
    ``test_loss`` and ``test_acc`` among them). A value that was not measured (NaN) reads as None.

    Parameters
    ----------
    run : str, os.PathLike or Run
        The run directory.
    kind : str, optional
        Only the lines of this kind (``"epoch"`` or ``"final"``).

    Returns
    -------
    list of dict
        Empty when the run has no ``metrics.jsonl`` (yet, or written by an older masktopo).
        A last line cut off by a stopped run is left out silently; any other line that is not a
        JSON object is skipped with a warning naming it.

    Raises
    ------
    MaskFileError
        When ``run`` is not a run directory or the file cannot be read.
    """
    p = run.path if isinstance(run, Run) else input_path(run)
    if not (p / RUN_FILE).is_file():
        raise not_a_run(p)
    path = p / METRICS_FILE
    if not path.exists():
        return []
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MaskFileError(path, f"cannot read ({os_problem(e)})") from None
    lines = data.split(b"\n")
    last = len(lines)  # the line after the final newline is b"", or a cut-off write
    out = []
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if i == last:  # no newline after it: a write cut off by a stopped run
                continue
            warnings.warn(f"{path}: skipping line {i}: not valid JSON ({e})", stacklevel=2)
            continue
        if not isinstance(obj, dict):
            warnings.warn(f"{path}: skipping line {i}: not a JSON object", stacklevel=2)
            continue
        if kind is None or obj.get("kind") == kind:
            out.append(obj)
    return out
