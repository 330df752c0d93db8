"""Sweeps: grids of runs (methods × settings × seeds), resumable, local or on Slurm, and their
summaries (mean ± std per cell).

- :mod:`~masktopo.sweep.spec`: the sweep file (``[base]``, ``[grid]``, ``[[include]]``) expanded
  into cells with deterministic keys and folders (:func:`load_sweep`, :func:`expand`,
  :func:`cell_key`);
- :mod:`~masktopo.sweep.commands`: the commands a sweep runs (``train``, ``pags``; another
  command plugs in with :func:`register_command`);
- :mod:`~masktopo.sweep.executors`: local processes and submitit (Slurm);
- :mod:`~masktopo.sweep.runner`: :func:`run_sweep` (skips finished runs, continues interrupted
  ones, records failures) and :func:`read_sweep`;
- :mod:`~masktopo.sweep.summary`: :func:`run_table` and :func:`summarize`;
- :mod:`~masktopo.sweep.plots`: :func:`plot_sweep`.

docs/sweeps.md is the user guide.

Names are imported lazily (on first use): ``masktopo sweep --help`` stays light.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:  # pragma: no cover
    from .commands import COMMANDS, SweepCommand, get_command, register_command  # noqa: F401
    from .config import SummarizeConfig, SweepConfig  # noqa: F401
    from .runner import SweepResult, SweepState, read_sweep, run_sweep  # noqa: F401
    from .spec import Cell, Sweep, cell_key, expand, load_sweep, parse_sweep  # noqa: F401
    from .summary import run_table, summarize  # noqa: F401

_LAZY = {
    "COMMANDS": "commands",
    "SweepCommand": "commands",
    "get_command": "commands",
    "register_command": "commands",
    "SummarizeConfig": "config",
    "SweepConfig": "config",
    "SweepResult": "runner",
    "SweepState": "runner",
    "read_sweep": "runner",
    "run_sweep": "runner",
    "Cell": "spec",
    "Sweep": "spec",
    "cell_key": "spec",
    "expand": "spec",
    "load_sweep": "spec",
    "parse_sweep": "spec",
    "run_table": "summary",
    "summarize": "summary",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
