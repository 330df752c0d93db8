r"""The gradient matrix of CHITA: per-sample (or per-minibatch) gradient rows at the weights.

Benbaki et al., *Fast as CHITA: Neural Network Pruning with Combinatorial Optimization*, ICML
2023 (methods-spec §5.1). With :math:`\bar w \in \mathbb R^p` the flattened maskable weights and
:math:`\ell_i` the loss of minibatch :math:`i` (``m`` samples; ``m = 1``: one sample),

.. math:: G = [\nabla \ell_1(\bar w), \dots, \nabla \ell_n(\bar w)]^\top \in \mathbb R^{n \times p},

and the empirical Fisher :math:`H \approx G^\top G / n` is never formed. The rows are computed with
``torch.func.vmap(torch.func.grad(...))`` over chunks of minibatches (the reference runs one
backward pass per row; ``bench_chita.py`` measures both), in ``eval`` mode (BatchNorm uses its
running statistics, as in the reference), and written straight into one preallocated
``[n, p]`` tensor of ``dtype`` on ``device``.

Memory: :math:`n p` entries of 4 (float32) or 8 (float64) bytes. :func:`check_memory` refuses a
matrix that does not fit (one line naming the bytes needed and available) before anything is
computed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from ..errors import MaskValidationError

__all__ = [
    "available_bytes",
    "check_memory",
    "flatten",
    "gradient_matrix",
    "gradient_matrix_loop",
    "unflatten",
]


def available_bytes(device: torch.device | str) -> int:
    """Free memory on ``device``: CUDA's free memory, or the host's ``MemAvailable``."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    try:  # pragma: no cover - not Linux
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 1 << 62


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def check_memory(
    n: int,
    p: int,
    dtype: torch.dtype,
    device: torch.device | str,
    *,
    limit: float | None = None,
    copies: float = 1.5,
) -> int:
    """Bytes of the ``n x p`` gradient matrix; raise when ``copies`` times that exceeds the free
    memory of ``device`` (or ``limit`` bytes when given).

    ``copies`` covers the solvers' working memory beside ``G`` (a column gather of the support
    in the backsolve, a copy in the active set).

    Raises
    ------
    MaskValidationError
        ``the gradient matrix needs 2.16 GB (n=1000 x p=269722, float64) but 1.2 GB is free on
        cpu; lower --fisher-samples, use --dtype float32, or prune a smaller model``.
    """
    size = torch.empty((), dtype=dtype).element_size()
    need = int(n) * int(p) * size
    free = available_bytes(device) if limit is None else float(limit)
    if need * copies > free:
        where = f"under --memory-limit {_gb(free)}" if limit is not None else (
            f"but {_gb(free)} is free on {torch.device(device)}")  # fmt: skip
        raise MaskValidationError(
            f"the gradient matrix needs {_gb(need)} (n={n} x p={p}, "
            f"{str(dtype).removeprefix('torch.')}, x{copies:g} working memory) {where}; lower "
            "--fisher-samples, use --dtype float32, or prune on a larger device"
        )
    return need


def flatten(tensors: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """The tensors ``names`` flattened and concatenated in that order (``modules_to_prune``)."""
    return torch.cat([tensors[n].detach().reshape(-1) for n in names])


def unflatten(flat: torch.Tensor, shapes: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten`: ``{name: view of flat}`` with the given shapes, in order."""
    out, start = {}, 0
    for name, shape in shapes.items():
        size = 1
        for s in shape:
            size *= int(s)
        out[name] = flat[start : start + size].reshape(tuple(shape))
        start += size
    if start != flat.numel():
        raise MaskValidationError(f"a flat vector of {flat.numel()} entries for {start} weights")
    return out


def _loss_fn(model: nn.Module, names: Sequence[str], fixed: dict, loss: Callable):
    from torch.func import functional_call

    def f(weights: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, {**fixed, **weights}, (x,))
        return loss(out, y)

    return f


@torch.no_grad()
def gradient_matrix(
    model: nn.Module,
    names: Sequence[str],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    minibatch: int = 1,
    chunk: int = 64,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    limit: float | None = None,
) -> torch.Tensor:
    r"""The ``n x p`` matrix of gradient rows of ``loss`` with respect to the parameters ``names``.

    Row :math:`i` is :math:`\nabla_w \ell(f(x_{B_i}; w), y_{B_i})` at the model's current
    weights, where :math:`B_i` is the :math:`i`-th run of ``minibatch`` consecutive samples of
    ``x`` (``n = len(x) // minibatch``; a remainder is left out). Columns follow ``names`` in
    order, each parameter flattened in row-major order (:func:`flatten`).

    Parameters
    ----------
    model : torch.nn.Module
        Evaluated in ``eval`` mode (restored afterwards); its parameters are not changed.
    names : sequence of str
        Parameter names (as in ``model.named_parameters()``): the columns of ``G``.
    x, y : torch.Tensor
        Inputs and targets, on the model's device.
    loss : callable
        ``loss(outputs, targets)``: the mean loss of a minibatch (the dataset's training loss).
    minibatch : int
        ``m``: samples per row (the reference's ``fisher_mini_bsz``; 1 = per-sample).
    chunk : int
        Rows computed by one vmapped call (speed/memory only).
    dtype : torch.dtype
        The matrix's dtype (gradients are computed in the model's dtype and converted).
    device : torch.device, optional
        Where the matrix lives (default: the model's device).
    limit : float, optional
        Refuse above this many bytes (:func:`check_memory`) instead of the free memory.

    Returns
    -------
    torch.Tensor
        ``[n, p]`` of ``dtype`` on ``device``.

    Raises
    ------
    MaskValidationError
        Fewer samples than one minibatch, an unknown parameter name, or a matrix that does not
        fit (:func:`check_memory`).
    """
    from torch.func import grad, vmap

    params = dict(model.named_parameters())
    unknown = [n for n in names if n not in params]
    if unknown:
        raise MaskValidationError(f"the model has no parameter {unknown[0]!r}")
    m = int(minibatch)
    n = len(x) // m
    if n < 1:
        raise MaskValidationError(f"{len(x)} samples make no minibatch of {m}")
    p = sum(params[name].numel() for name in names)
    device = torch.device(device) if device is not None else params[names[0]].device
    check_memory(n, p, dtype, device, limit=limit)
    weights = {name: params[name].detach() for name in names}
    fixed = {k: v.detach() for k, v in params.items() if k not in weights}
    fixed.update(dict(model.named_buffers()))
    f = _loss_fn(model, names, fixed, loss)
    per_row = vmap(grad(f), in_dims=(None, 0, 0), randomness="same")
    xs = x[: n * m].reshape(n, m, *x.shape[1:])
    ys = y[: n * m].reshape(n, m, *y.shape[1:])
    G = torch.empty((n, p), dtype=dtype, device=device)
    was = model.training
    model.eval()
    try:
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            with torch.enable_grad():
                rows = per_row(weights, xs[start:stop], ys[start:stop])
            col = 0
            for name in names:
                g = rows[name].reshape(stop - start, -1)
                G[start:stop, col : col + g.shape[1]] = g.to(device=device, dtype=dtype)
                col += g.shape[1]
    finally:
        model.train(was)
    return G


def gradient_matrix_loop(
    model: nn.Module,
    names: Sequence[str],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    minibatch: int = 1,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """:func:`gradient_matrix` the reference's way: one backward pass per row (for the
    benchmark and the tests; the same matrix up to rounding)."""
    params = dict(model.named_parameters())
    m = int(minibatch)
    n = len(x) // m
    p = sum(params[name].numel() for name in names)
    G = torch.empty((n, p), dtype=dtype, device=params[names[0]].device)
    was = model.training
    model.eval()
    try:
        for i in range(n):
            out = model(x[i * m : (i + 1) * m])
            gs = torch.autograd.grad(loss(out, y[i * m : (i + 1) * m]),
                                     [params[name] for name in names])  # fmt: skip
            G[i] = torch.cat([g.reshape(-1) for g in gs]).to(dtype)
    finally:
        model.train(was)
    return G
