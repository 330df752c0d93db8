"""Where the runs of a sweep execute: local processes, or Slurm jobs through submitit.

An executor takes :class:`Task` objects (a command line, its log file, its environment), runs up
to its number of jobs at once, and reports each :class:`Outcome` through a callback as soon as it
ends. Each run is its own ``masktopo`` process, so a crash or a CUDA error in one run never takes
the sweep down, and a run interrupted with the sweep continues from its checkpoint next time.

- :class:`LocalExecutor`: ``jobs`` child processes on this machine; with several visible GPUs,
  job slot ``i`` sees only GPU ``i mod n`` (``CUDA_VISIBLE_DEVICES``); each child gets
  ``cores // jobs`` threads (``OMP_NUM_THREADS``, unless already set) so that jobs do not fight
  for the cores.
- :class:`SubmititExecutor`: one Slurm job per run through `submitit
  <https://github.com/facebookincubator/submitit>`_ (``pip install 'masktopo[slurm]'``);
  ``cluster="local"`` runs the same code path with submitit's local executor (no Slurm needed:
  how it is tested).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MaskTopoError

__all__ = ["LocalExecutor", "Outcome", "SubmititExecutor", "Task", "error_line", "visible_gpus"]

#: Exit code of a ``masktopo`` command stopped by Ctrl-C (cli.main).
INTERRUPTED = 130
_PREFIX = "masktopo: error: "


@dataclass(frozen=True)
class Task:
    """One run: its key, the command line, the log file (stdout and stderr, appended) and extra
    environment variables."""

    key: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """How a run ended: ``returncode`` (0: finished; 130: interrupted), ``seconds`` of wall time,
    and for a failure its one-line ``error`` (the command's ``masktopo: error:`` line, else the
    last line it printed)."""

    key: str
    returncode: int
    seconds: float
    error: str = ""

    @property
    def interrupted(self) -> bool:
        return self.returncode in (INTERRUPTED, -signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL)


def error_line(log: Path, returncode: int) -> str:
    """The one-line reason a run failed, from the end of its log."""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            tail = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        tail = []
    lines = [ln.strip() for ln in tail if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith(_PREFIX):
            return ln[len(_PREFIX) :]
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"killed by signal {name}"
    return lines[-1] if lines else f"exit code {returncode}, no output"


def _header(task: Task) -> bytes:
    """The line the log gets before each attempt: when, and the exact command line."""
    import datetime
    import shlex

    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return f"# masktopo sweep {now}: {shlex.join(task.argv)}\n".encode()


def visible_gpus() -> int:
    """How many CUDA devices this process sees (0 without torch's CUDA)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # pragma: no cover - a broken CUDA install: run on the CPU
        return 0


def _environment(task: Task, slot: int, jobs: int, gpus: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(task.env)
    if gpus > 1 and jobs > 1:
        env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    threads = str(max(1, (os.cpu_count() or 1) // max(1, jobs)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)
    return env


class LocalExecutor:
    """Run tasks as up to ``jobs`` child processes on this machine.

    Parameters
    ----------
    jobs : int
        Runs at once.
    gpus : int, optional
        Visible CUDA devices to spread the jobs over (default: :func:`visible_gpus`; with
        ``jobs == 1`` the one job sees every device).
    poll : float
        Seconds between checks of the running processes.
    """

    def __init__(self, jobs: int = 1, *, gpus: int | None = None, poll: float = 0.2):
        self.jobs = max(1, int(jobs))
        self.gpus = visible_gpus() if gpus is None else gpus
        self.poll = poll

    def slot_env(self, task: Task, slot: int) -> dict[str, str]:
        """The environment of ``task`` in job slot ``slot``."""
        return _environment(task, slot, self.jobs, self.gpus)

    def run(self, tasks: Sequence[Task], on_start: Callable[[Task], None],
            on_done: Callable[[Outcome], None]) -> None:  # fmt: skip
        """Run ``tasks`` (in order, ``jobs`` at once) and report each as it ends. On Ctrl-C
        (or SIGTERM) the running children are interrupted (then killed after 20 s) and
        ``KeyboardInterrupt`` propagates; their runs are not reported."""
        pending = list(tasks)
        running: dict[int, tuple[subprocess.Popen, Task, float, object]] = {}
        free = list(range(self.jobs))
        try:
            while pending or running:
                while pending and free:
                    task = pending.pop(0)
                    slot = free.pop(0)
                    task.log.parent.mkdir(parents=True, exist_ok=True)
                    log = open(task.log, "ab")
                    log.write(_header(task))
                    log.flush()
                    proc = subprocess.Popen(task.argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL,
                                            env=self.slot_env(task, slot))  # fmt: skip
                    running[slot] = (proc, task, time.monotonic(), log)
                    on_start(task)
                time.sleep(self.poll)
                for slot, (proc, task, t0, log) in list(running.items()):
                    rc = proc.poll()
                    if rc is None:
                        continue
                    log.close()
                    del running[slot]
                    free.append(slot)
                    free.sort()
                    err = "" if rc == 0 else error_line(task.log, rc)
                    on_done(Outcome(task.key, rc, time.monotonic() - t0, err))
        except BaseException:
            _stop([proc for proc, *_ in running.values()])
            for _, _, _, log in running.values():
                log.close()
            raise


def _stop(procs: list[subprocess.Popen], grace: float = 20.0) -> None:
    """Interrupt ``procs`` (SIGINT: a run stops and exits 130; it continues from its last
    checkpoint next time), then SIGTERM the ones still running after a quarter of ``grace``
    (a run that ignores SIGINT), then SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGINT, grace / 4), (signal.SIGTERM, grace * 3 / 4)):
        live = [p for p in procs if p.poll() is None]
        for p in live:
            try:
                p.send_signal(sig)
            except OSError:  # pragma: no cover - already gone
                pass
        end = time.monotonic() + wait
        for p in live:
            try:
                p.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def run_task(argv: list[str], log: str, env: dict[str, str]) -> tuple[int, str]:
    """Run one command line with its output appended to ``log``: the job function of
    :class:`SubmititExecutor` (returns the exit code and the error line)."""
    path = Path(log)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(_header(Task("", argv, path)))
        f.flush()
        rc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **env}, check=False).returncode  # fmt: skip
    return rc, ("" if rc == 0 else error_line(path, rc))


class SubmititExecutor:
    """Run each task as a job through submitit: Slurm (``cluster="slurm"``) or submitit's local
    executor (``cluster="local"``, the same path without a cluster).

    Parameters
    ----------
    folder : pathlib.Path
        Where submitit keeps its job files (the sweep's ``submitit/``).
    jobs : int
        Jobs at once (Slurm: ``slurm_array_parallelism``).
    partition, time_min, gpus_per_job, cpus_per_job, mem_gb
        The job's Slurm resources (``partition`` None: the cluster's default).
    cluster : {"slurm", "local"}

    Raises
    ------
    MaskTopoError
        submitit is not installed (``pip install 'masktopo[slurm]'``).
    """

    def __init__(self, folder: Path, *, jobs: int = 1, partition: str | None = None,
                 time_min: int = 60, gpus_per_job: int = 0, cpus_per_job: int = 1,
                 mem_gb: float | None = None, cluster: str = "slurm", poll: float = 1.0):  # fmt: skip
        try:
            import submitit
        except ImportError:
            raise MaskTopoError(
                "--executor slurm needs submitit: pip install 'masktopo[slurm]' (or submitit)"
            ) from None
        self.jobs = max(1, int(jobs))
        self.poll = poll
        if cluster == "local":
            self.executor = submitit.LocalExecutor(folder=str(folder))
            self.executor.update_parameters(timeout_min=time_min, gpus_per_node=gpus_per_job,
                                            cpus_per_task=cpus_per_job)  # fmt: skip
        else:
            self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
            params = {"timeout_min": time_min, "gpus_per_node": gpus_per_job,
                      "cpus_per_task": cpus_per_job, "slurm_array_parallelism": self.jobs}  # fmt: skip
            if partition:
                params["slurm_partition"] = partition
            if mem_gb is not None:
                params["mem_gb"] = mem_gb
            self.executor.update_parameters(**params)

    def run(self, tasks: Sequence[Task], on_start: Callable[[Task], None],
            on_done: Callable[[Outcome], None]) -> None:  # fmt: skip
        """Submit up to ``jobs`` tasks at once and report each as it ends; on Ctrl-C the
        submitted jobs are cancelled and ``KeyboardInterrupt`` propagates."""
        pending = list(tasks)
        running: list[tuple[object, Task, float]] = []
        try:
            while pending or running:
                while pending and len(running) < self.jobs:
                    task = pending.pop(0)
                    job = self.executor.submit(run_task, task.argv, str(task.log), task.env)
                    running.append((job, task, time.monotonic()))
                    on_start(task)
                time.sleep(self.poll)
                for item in list(running):
                    job, task, t0 = item
                    if not job.done():
                        continue
                    running.remove(item)
                    try:
                        rc, err = job.result()
                    except Exception as e:  # the job itself failed (node lost, timeout, ...)
                        rc, err = 1, " ".join(f"{type(e).__name__}: {e}".split())[:500]
                    on_done(Outcome(task.key, rc, time.monotonic() - t0, err))
        except BaseException:
            for job, _, _ in running:
                try:
                    job.cancel(check=False)
                except Exception:  # pragma: no cover - best effort
                    pass
            raise


def python_env() -> dict[str, str]:
    """Environment entries a child ``masktopo`` process needs to import the same masktopo as
    this process (the checkout's root on ``PYTHONPATH`` when it is not installed)."""
    import masktopo

    root = str(Path(masktopo.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    parts = [p for p in path.split(os.pathsep) if p]
    if root in parts:
        return {}
    return {"PYTHONPATH": os.pathsep.join([root, *parts])}
