"""The commands a sweep can run, and how: one :class:`SweepCommand` per command, registered with
:func:`register_command`.

A command plugs in with its typed config class (whose fields are the keys of a sweep file's
``[base]``, ``[grid]`` and ``[[include]]`` tables), the TOML table its ``--config`` reads, how a
cell's settings become a config (checked as the command would), the command line of a new and of
a resumed run, and when a run folder holds a finished run. ``train`` and ``pags`` are registered
here; another command registers itself where it is defined.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MaskValidationError, UnknownNameError

__all__ = ["COMMANDS", "SweepCommand", "get_command", "register_command"]


@dataclass(frozen=True)
class SweepCommand:
    """How a sweep runs one command.

    Attributes
    ----------
    name : str
        The ``masktopo`` subcommand (``train``).
    config_class : callable
        Returns the command's typed config class (imported lazily: listing a sweep stays light).
    finished : callable
        ``finished(run_dir) -> bool``: the folder holds a run that ended (e.g. ``summary.json``
        written). A run the sweep saw exit 0 counts as finished too.
    required : tuple of str
        Keys the command needs in every cell (checked before anything runs).
    check : callable, optional
        ``check(config)``: the command's own check of several fields together (e.g. a
        method-specific value for the wrong method); raises :class:`MaskValidationError`.
    resume_flags : callable
        ``resume_flags(run_dir, config_file) -> argv``: the arguments that continue an
        interrupted run.
    """

    name: str
    config_class: Callable[[], type]
    finished: Callable[[Path], bool]
    resume_flags: Callable[[Path, Path], list[str]]
    required: tuple[str, ...] = ()
    check: Callable[[Any], Any] | None = None

    @property
    def config(self) -> type:
        return self.config_class()

    @property
    def table(self) -> str:
        return self.name

    def build(self, settings: Mapping[str, Any], where: str = "") -> Any:
        """The command's config from a cell's ``settings`` (the class defaults elsewhere),
        checked as the command checks it."""
        from ..options import from_values

        prefix = f"{where}: " if where else ""
        missing = [k for k in self.required if settings.get(k) is None]
        if missing:
            raise MaskValidationError(f"{prefix}{self.name} needs {', '.join(missing)} in [base] "
                                      "or the grid")  # fmt: skip
        from .spec import TAG

        cfg = from_values(self.config, {k: v for k, v in settings.items() if k != TAG},
                          where or None)  # fmt: skip
        if self.check is not None:
            try:
                self.check(cfg)
            except MaskValidationError as e:
                raise MaskValidationError(f"{prefix}{e}") from None
        return cfg

    def argv(self, config_file: Path, run_dir: Path, *, resume: bool) -> list[str]:
        """The command line of one run: a new run from ``config_file`` into ``run_dir``, or
        the continuation of the run in ``run_dir``."""
        head = [sys.executable, "-m", "masktopo", self.name]
        if resume:
            return head + self.resume_flags(run_dir, config_file)
        return [*head, "--config", str(config_file), "--out", str(run_dir)]


#: Command name -> :class:`SweepCommand` (:func:`register_command`).
COMMANDS: dict[str, SweepCommand] = {}


def register_command(command: SweepCommand) -> SweepCommand:
    """Make ``command`` sweepable (``command = "NAME"`` in a sweep file's ``[base]``)."""
    COMMANDS[command.name] = command
    return command


def get_command(name: str) -> SweepCommand:
    """The registered :class:`SweepCommand` called ``name``.

    Raises
    ------
    UnknownNameError
        No such sweepable command (lists the known ones).
    """
    if name not in COMMANDS:
        raise UnknownNameError("sweep command", name, COMMANDS)
    return COMMANDS[name]


# -- train -----------------------------------------------------------------------------------------
def _train_config() -> type:
    from ..trainer.config import TrainConfig

    return TrainConfig


def _train_check(cfg) -> None:
    from ..trainer.config import resolve
    from ..trainer.loop import check_schedule

    check_schedule(resolve(cfg))


def _train_finished(run: Path) -> bool:
    from ..runs.layout import SUMMARY_FILE

    return (run / SUMMARY_FILE).is_file()


register_command(
    SweepCommand(
        "train",
        _train_config,
        _train_finished,
        lambda run, config: ["--resume", str(run)],
        check=_train_check,
    )
)


# -- pags ------------------------------------------------------------------------------------------
def _pags_config() -> type:
    from ..pags.config import PagsConfig

    return PagsConfig


def _pags_check(cfg) -> None:
    from ..pags.runner import check_method

    check_method(cfg.method)


def _pags_finished(run: Path) -> bool:
    from ..runs.layout import BEST_FILE, STATE_FILE

    try:
        state = json.loads((run / STATE_FILE).read_text(encoding="utf-8"))
        n = int(state["config"]["n"])
        return (run / BEST_FILE).is_file() and int(state["next_t"]) > n
    except (OSError, ValueError, KeyError, TypeError):
        return False


register_command(
    SweepCommand(
        "pags",
        _pags_config,
        _pags_finished,
        lambda run, config: ["--config", str(config), "--out", str(run), "--resume"],
        required=("model", "dataset", "density"),
        check=_pags_check,
    )
)
