"""Options of ``masktopo sweep`` and ``masktopo summarize``, declared once (the command-line flags
are derived from them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..options import check_value, fields, option

__all__ = ["EXECUTORS", "SUMMARY_FORMATS", "SummarizeConfig", "SweepConfig"]

#: Where the runs execute (:mod:`masktopo.sweep.executors`).
EXECUTORS = ("local", "slurm", "submitit-local")
#: Output formats of ``masktopo summarize``.
SUMMARY_FORMATS = ("table", "markdown", "csv", "json")


@dataclass(frozen=True)
class SweepConfig:
    """How a sweep runs (not what: that is the sweep file)."""

    jobs: int = option(1, "runs at once (local: processes, one GPU each when several are "
                       "visible; slurm: jobs in the queue at once)", ge=1, metavar="N")  # fmt: skip
    executor: Literal["local", "slurm", "submitit-local"] = option(
        "local", "where the runs execute: local processes, Slurm jobs through submitit (pip "
        "install 'masktopo[slurm]'), or submitit's local executor (the Slurm path without a "
        "cluster)", what="executor")  # fmt: skip
    retry_failed: bool = option(False, "run again the runs that failed before (they are listed "
                                "and skipped otherwise)")  # fmt: skip
    limit: int | None = option(None, "run at most N of the runs still to do (in grid order)",
                               ge=1, metavar="N")  # fmt: skip
    dry_run: bool = option(False, "list the runs and their state; run nothing")
    partition: str | None = option(None, "slurm: the partition", metavar="NAME")
    time_min: int = option(240, "slurm: the time limit of one run's job, minutes", ge=1,
                           metavar="MIN")  # fmt: skip
    gpus_per_job: int = option(0, "slurm: GPUs per run's job", ge=0, metavar="N")
    cpus_per_job: int = option(2, "slurm: CPU cores per run's job", ge=1, metavar="N")
    mem_gb: float | None = option(None, "slurm: memory per run's job, GB", gt=0, metavar="GB")

    def __post_init__(self):
        for f in fields(SweepConfig):
            check_value(SweepConfig, f.name, getattr(self, f.name))


@dataclass(frozen=True)
class SummarizeConfig:
    """What ``masktopo summarize`` groups by and shows."""

    by: tuple[str, ...] | None = option(None, "the axes to group by, comma-separated (none: "
                                        "every run in one group)",
                                        metavar="AXES",
                                        default_text="every axis of the sweep but seed")  # fmt: skip
    metrics: tuple[str, ...] = option(
        ("test_acc",), "the columns, comma-separated: final metrics of the run (test_acc, "
        "train_acc, val_acc, train_loss, R_s, ...), fields of its last mask event (density, "
        "R_s, rate, ...), or network topology metrics of its last mask event (ramanujan_gap, "
        "imdb, ... from the analysis cache; computed and cached when missing)",
        metavar="NAMES")  # fmt: skip
    format: Literal["table", "markdown", "csv", "json", "parquet"] | None = option(
        None, "output format: table, markdown (mean ± std), csv, json or parquet (mean, std, n "
        "columns)",
        what="format", default_text="from the --out suffix, else table")  # fmt: skip
    percent: bool = option(True, "show accuracies (*_acc) in percent in table and markdown",
                           negative="--no-percent",
                           negative_help="show accuracies as fractions")  # fmt: skip

    def __post_init__(self):
        for f in fields(SummarizeConfig):
            check_value(SummarizeConfig, f.name, getattr(self, f.name))
