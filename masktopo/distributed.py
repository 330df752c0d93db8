"""The processes of a ``torchrun`` launch: joining, describing and leaving the process group.

One place for what training (``masktopo train``), analysis (``masktopo analyze``) and PAGS
(``masktopo pags``) do under ``torchrun``. The launch is read from the environment torchrun sets
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``). A process group this module starts is also destroyed
by it (:func:`close_world`, called by the ``masktopo`` command when a command ends, and at
interpreter exit as a backstop); a group the caller started is left alone.
"""

from __future__ import annotations

import atexit
import os

__all__ = [
    "World",
    "close_world",
    "current_world",
    "exit_process",
    "init_world",
    "process_device",
]

_STARTED = False  # whether init_world started the default process group of this process


class World:
    """The processes of this launch: ``rank`` of ``size`` (``0`` of ``1`` without torchrun)."""

    __slots__ = ("rank", "size")

    def __init__(self, rank: int = 0, size: int = 1):
        self.rank = rank
        self.size = size

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Whether this process writes the output (rank 0)."""
        return self.rank == 0

    def __repr__(self) -> str:
        return f"World(rank={self.rank}, size={self.size})"


def init_world(device: str | None = None, *, backend: str | None = None) -> World:
    """The launch's :class:`World`, with the default process group started when torchrun
    launched several processes and none is started yet.

    Parameters
    ----------
    device : {"cpu", "cuda"}, optional
        ``"cuda"``: each rank on GPU ``LOCAL_RANK`` (when this call starts the group) and, unless ``backend`` says otherwise, the
        ``nccl`` backend; else ``gloo``.
    backend : str, optional
        The backend to start the group with (``"gloo"`` where only small Python objects travel,
        even between GPU processes).
    """
    global _STARTED
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend or ("nccl" if device == "cuda" else "gloo"))
        if not _STARTED:
            atexit.register(close_world)
        _STARTED = True
    return World(dist.get_rank(), dist.get_world_size())


def current_world() -> World:
    """The :class:`World` of the process group running now (``World()`` when none runs)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def close_world() -> None:
    """Destroy the default process group if :func:`init_world` started it; else nothing.

    A process should not exit with its gloo or nccl group alive (pending work, the group's
    threads at interpreter exit). Even after this, a gloo process can abort during interpreter
    finalization ("terminate called without an active exception", measured in 1 of 4–8
    3-process runs), so ``python -m masktopo`` under torchrun also ends without finalization
    (:func:`exit_process`).
    """
    global _STARTED
    if not _STARTED:
        return
    _STARTED = False
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def process_device(name: str):
    """The ``torch.device`` a command's ``--device NAME`` means for this process: ``"auto"``
    is CUDA when a GPU is available, else the CPU; ``"cuda"`` is this process's GPU (its
    ``LOCAL_RANK`` under ``torchrun``, else GPU 0), with a one-line error when there is none;
    anything else is the CPU. Used by ``masktopo train`` and ``masktopo prune``."""
    import torch

    from .errors import MaskValidationError

    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise MaskValidationError("device cuda: no CUDA device is available on this machine")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def exit_process(code: int = 0):
    """End the process with ``code``. Under torchrun (``WORLD_SIZE`` > 1) the interpreter's
    finalization is skipped (``os._exit`` after flushing the output and logging): a gloo
    process group's threads can abort a process there even after ``destroy_process_group``
    ("terminate called without an active exception": 1 run in 4–8 of a 3-process P-GaP
    training, and 1 in 5 of a plain two-process DDP script on a busy machine, measured; a
    PyTorch issue), and torchrun then reports a failure and kills the other ranks. Call it last,
    once every file is written and closed: ``python -m masktopo`` ends with it, and so should a
    script of your own that trains with :func:`masktopo.sparsify` under torchrun. Without
    torchrun it raises ``SystemExit(code)``."""
    import sys

    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(code)
    raise SystemExit(code)
