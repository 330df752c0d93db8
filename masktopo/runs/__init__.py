"""Run directories: the one package that knows their layout, and writes and reads them.

A run directory is what a command that produces results over time writes: ``masktopo train``
(mask events, checkpoints, summary) and ``masktopo pags`` (base, best, snapshots, candidates),
each saying its ``kind`` in ``run.json``. docs/formats.md describes the layout.

- :mod:`~masktopo.runs.layout`: the file names and the format version (nothing else spells them);
- :mod:`~masktopo.runs.reader`: :func:`read_run` and :class:`Run` (events, mask files, summary),
  :func:`read_metrics` (a training run's live log, metrics.jsonl), :func:`check_summary`
  (summary.json's values of the wrong type left out, with a warning);
- :mod:`~masktopo.runs.writer`: :class:`RunWriter` (run.json, events in a background thread with
  the weights at the kept positions, summary), checkpoints;
- :mod:`~masktopo.runs.lock`: :class:`RunLock`, one writer per run;
- :mod:`~masktopo.runs.checks`: :func:`check_out_dir` (a new run, or one to resume),
  :func:`check_same_config` (a resume keeps the settings), :func:`check_output` (an output is
  not an input nor part of a run);
- atomic writes and multi-file staging come from :mod:`masktopo.files` (:func:`atomic_write`,
  :func:`atomic_write_json`, :class:`Staging`), which mask files use too.
"""

from ..files import Staging, atomic_write, atomic_write_bytes, atomic_write_json
from . import layout
from .checks import check_out_dir, check_output, check_resumable, check_same_config, run_kind
from .lock import RunLock
from .reader import (
    EVENT_FIELDS,
    Run,
    check_summary,
    not_a_run,
    read_metrics,
    read_run,
    read_run_json,
)
from .writer import (
    RunWriter,
    jsonable,
    read_checkpoint,
    run_header,
    write_checkpoint,
)

__all__ = [
    "EVENT_FIELDS",
    "Run",
    "RunLock",
    "RunWriter",
    "Staging",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "check_out_dir",
    "check_output",
    "check_resumable",
    "check_same_config",
    "check_summary",
    "jsonable",
    "layout",
    "not_a_run",
    "read_checkpoint",
    "read_metrics",
    "read_run",
    "read_run_json",
    "run_header",
    "run_kind",
    "write_checkpoint",
]
