r"""The ensemble trainer: B small MLPs trained at once as stacked tensors (methods-spec §7.2, §7.6).

Every model of an ensemble has the same layer sizes ``(d_0, ..., d_L)``; its weights, masks and
momentum buffers are slices ``[i]`` of tensors ``[B, d_l, d_{l-1}]`` (biases ``[B, d_l]``). One
step of all B models is a handful of batched matrix products, written out by hand (no autograd):

.. math::

    z_l = h_{l-1} W_l^\top + b_l,\quad h_l = \mathrm{relu}(z_l)\ (l < L),\quad s = z_L,

    \ell = \frac1n \sum_j \big[\max(s_j, 0) - s_j y_j + \log(1 + e^{-|s_j|})\big]
    \quad\text{(BCE with logits)},\qquad \partial\ell/\partial s = (\sigma(s) - y)/n,

the gradients of :math:`W_l, b_l` by the chain rule, masked, and PyTorch's SGD with momentum
:math:`\mu = 0.9` and weight decay :math:`\lambda = 5\cdot10^{-4}` per model:
:math:`g \leftarrow \nabla + \lambda w,\ v \leftarrow \mu v + g\ (v_0 = g),\ w \leftarrow w -
\eta_i v` (``torch.optim.SGD``; learning rate :math:`\eta_i` per model and per epoch from its
schedule: cosine annealing over the epochs, step ×0.1 at 30 % and 60 % of the epochs, or
constant). Masked weights and biases stay exactly zero (their gradient and decay are zero).

Data order. Each model sees every point once per epoch, in minibatches of 128 (the last partial
batch dropped, as ``drop_last``). Epoch ``e`` of model ``i`` visits the points
:math:`P_e[(a_i j + c_i) \bmod N]`, ``j = 0, 1, ...``: :math:`P_e` a uniformly random
permutation drawn from the *run* seed and ``e``, :math:`(a_i, c_i)` (``gcd(a_i, N) = 1``) drawn
from the model's own order seed. For every model the order is a uniformly random permutation,
fresh each epoch (a fixed bijection composed with a uniform permutation is uniform), as with the
reference's per-run shuffling; the orders of two models are not independent of each other, which
no single model's training can see. ``shared_order=True`` gives all models ``P_e`` itself.

Independence of B. Model ``i``'s numbers depend only on its own seeds, masks and settings and on
the run seed: it is the same, bit for bit on the CPU, whether trained alone or among thousands
(tests/search/test_search_ensemble.py). The batched products compute each model's matrix product
separately and the per-model sums run over that model's entries only.

Routes. The same step is computed one of two ways, chosen by ``route=``
(:attr:`EnsembleTrainer.route`):

* ``"torch"``: the formulas above as batched tensor operations over all B models
  (``baddbmm``/``bmm`` on ``[B, d_l, 128]`` activations, a few dozen kernel launches per step).
  Any device; the only route on CUDA.
* ``"compiled"``: the numba kernel ``masktopo.search._ensemble_kernel.sgd_steps``, model after
  model with each model's tensors and activations in the L1 cache, many steps per call (a whole
  epoch in :meth:`EnsembleTrainer.run` without a callback, one step per call otherwise), the
  models split into chunks run in threads. CPU only; several times faster there.

``route="auto"`` (the default) takes ``"compiled"`` on the CPU and ``"torch"`` elsewhere. Both
routes support every option (schedules, per-model or shared order, weight and bias masks,
``record_grads``, callbacks that change masks, state dicts), and a CPU trainer may change
route between steps (set :attr:`EnsembleTrainer.route`). The routes differ only in the rounding
order of the sums over points and units (the compiled route sums a minibatch's gradient in
vectorized partial sums) and in ``exp``'s last bit: a few float32 ulps per step, which training
amplifies slowly. Stated tolerance (tests/search/test_search_routes.py): weights, biases and
momentum buffers within ``1e-5`` absolute plus ``1e-5`` relative after 450 steps, and the same
train accuracy to one point of the spiral's 49,982 after two epochs (measured: identical). Each
route is independent of B, bit for bit, on the CPU.

Initialisation (:func:`init_params`): PyTorch's default for ``nn.Linear`` (Kaiming-uniform
weights and uniform biases, bound :math:`1/\sqrt{\text{fan-in}}`) of the width-``W`` spiral MLP,
drawn from the model's init seed layer by layer exactly as ``masktopo.zoo.get_model("spiral-mlp",
width=W)`` draws it, then cut to the top-left block of the ensemble's sizes. Training the
block is training the masked width-``W`` network: masked units contribute exact zeros.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
from torch.nn import init as nn_init

from ..errors import MaskValidationError, UnknownNameError
from ..seeding import generator as seeded_generator
from ..trainer.schedules import cosine_rate

__all__ = [
    "ROUTES",
    "SCHEDULES",
    "EnsembleTrainer",
    "bias_masks_from_units",
    "effective_counts",
    "init_params",
    "lr_table",
    "train_one",
    "unit_reachability",
]

#: Learning-rate schedules (per epoch), in the order of their codes.
SCHEDULES = ("cosine", "step", "constant")

#: The routes of :class:`EnsembleTrainer` (``route=``).
ROUTES = ("auto", "compiled", "torch")


def lr_table(schedule: str, epochs: int) -> list[float]:
    """The factor of the base learning rate in each epoch ``0 .. epochs-1``.

    ``cosine``: :math:`(1 + \\cos(\\pi e / E))/2` (``CosineAnnealingLR(T_max=E)``);
    ``step``: ×0.1 from epoch ``int(0.3 E)`` and again from ``int(0.6 E)`` (``MultiStepLR``);
    ``constant``: 1.
    """
    if schedule not in SCHEDULES:
        raise UnknownNameError("schedule", schedule, SCHEDULES)
    if schedule == "cosine":
        return [cosine_rate(e, epochs, 1.0) for e in range(epochs)]
    if schedule == "step":
        m1, m2 = int(0.3 * epochs), int(0.6 * epochs)
        return [0.1 ** ((e >= m1) + (e >= m2)) for e in range(epochs)]
    return [1.0] * epochs


def init_params(
    seeds: Sequence[int], sizes: Sequence[int], *, init_width: int | None = None
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Initial weights ``[B, d_l, d_{l-1}]`` and biases ``[B, d_l]`` (CPU, float32).

    Model ``i`` is the width-``init_width`` spiral MLP ``(d_0, W, ..., W, d_L)`` drawn from
    ``torch.Generator().manual_seed(seeds[i])`` as ``masktopo.zoo.get_model`` draws it (per
    layer: weight, then bias), cut to its top-left ``sizes`` block. ``init_width=None`` draws
    at ``sizes`` themselves.
    """
    sizes = [int(s) for s in sizes]
    outer = list(sizes)
    if init_width is not None:
        if max(sizes[1:-1]) > init_width:
            raise MaskValidationError(f"sizes {sizes} do not fit in init width {init_width}")
        outer = [sizes[0], *([int(init_width)] * (len(sizes) - 2)), sizes[-1]]
    B = len(seeds)
    ws = [torch.empty(B, sizes[i + 1], sizes[i]) for i in range(len(sizes) - 1)]
    bs = [torch.empty(B, sizes[i + 1]) for i in range(len(sizes) - 1)]
    w_full = [torch.empty(outer[i + 1], outer[i]) for i in range(len(outer) - 1)]
    b_full = [torch.empty(outer[i + 1]) for i in range(len(outer) - 1)]
    for k, s in enumerate(seeds):
        g = torch.Generator().manual_seed(int(s))
        for i, (w, b) in enumerate(zip(w_full, b_full, strict=True)):
            nn_init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
            bound = 1 / math.sqrt(w.shape[1])
            nn_init.uniform_(b, -bound, bound, generator=g)
            ws[i][k] = w[: sizes[i + 1], : sizes[i]]
            bs[i][k] = b[: sizes[i + 1]]
    return ws, bs


def unit_reachability(
    wmasks: Sequence[torch.Tensor],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per site ``l = 0..L``, bool ``[B, d_l]``: units reachable from an input, and units from
    which an output is reachable, through kept weights.

    Forward :math:`f_l = (M_l f_{l-1} > 0)` from all inputs, backward
    :math:`g_{l-1} = (M_l^\top g_l > 0)` from all outputs: the unit rule of
    :func:`masktopo.analysis.paths.analyze_paths` (Zhang & Papyan 2024), batched over models.
    """
    B = wmasks[0].shape[0]
    dev = wmasks[0].device
    f = [torch.ones(B, wmasks[0].shape[2], device=dev)]
    for m in wmasks:
        f.append((torch.bmm(m.float(), f[-1].unsqueeze(2)).squeeze(2) > 0).float())
    g = [torch.ones(B, wmasks[-1].shape[1], device=dev)]
    for m in reversed(wmasks):
        g.append((torch.bmm(g[-1].unsqueeze(1), m.float()).squeeze(1) > 0).float())
    return [v > 0 for v in f], [v > 0 for v in g[::-1]]


def bias_masks_from_units(wmasks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Bias masks ``[B, d_l]`` from the weight masks: a hidden unit's bias is kept iff the unit
    is on some input→output path (:func:`unit_reachability`); output biases are always kept."""
    f, g = unit_reachability(wmasks)
    out = [f[i + 1] & g[i + 1] for i in range(len(wmasks) - 1)]
    out.append(torch.ones_like(f[-1]))
    return out


def effective_counts(wmasks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Effective nnz ``[B]``: kept weights whose source unit is reachable from the input and
    whose target unit reaches the output (weights on an input→output path)."""
    f, g = unit_reachability(wmasks)
    total = torch.zeros(wmasks[0].shape[0], dtype=torch.int64, device=wmasks[0].device)
    for i, m in enumerate(wmasks):
        ok = m & g[i + 1].unsqueeze(2) & f[i].unsqueeze(1)
        total += ok.sum(dim=(1, 2))
    return total


def _coprime_step(n: int, g: torch.Generator) -> tuple[int, int]:
    while True:
        a = int(torch.randint(1, n, (1,), generator=g))
        if math.gcd(a, n) == 1:
            return a, int(torch.randint(0, n, (1,), generator=g))


#: The compiled route gives each thread at least this many models.
_MIN_MODELS_PER_THREAD = 64
_POOL: list = [None, 0]  # the executor and its number of threads


def _pool(threads: int) -> ThreadPoolExecutor:
    """At least ``threads`` threads for the compiled route (shared, created on first use)."""
    if _POOL[1] < threads:
        if _POOL[0] is not None:
            _POOL[0].shutdown(wait=False)
        _POOL[:] = [ThreadPoolExecutor(threads, thread_name_prefix="masktopo-ensemble"), threads]
    return _POOL[0]


@dataclass
class _Stats:
    accuracy: torch.Tensor
    loss: torch.Tensor


class EnsembleTrainer:
    """Train ``B`` masked MLPs of one shape at once (module docstring for the math).

    Parameters
    ----------
    x, y : torch.Tensor
        The data: float ``[N, d_0]`` and labels ``[N]`` in {0, 1} (one logit, ``d_L = 1``).
    weights, biases : list of torch.Tensor
        Initial ``[B, d_l, d_{l-1}]`` and ``[B, d_l]`` per layer (copied).
    wmasks, bmasks : list of torch.Tensor
        Bool masks of the same shapes; ``bmasks=None`` derives them from dead units
        (:func:`bias_masks_from_units`).
    lr : float or sequence of float
        Base learning rate, one for all or one per model.
    schedule : str or sequence of str
        One of :data:`SCHEDULES`, for all or per model.
    epochs : int
        Epochs of the schedules (the horizon of cosine and step).
    order_seeds : sequence of int, optional
        Per-model data-order seeds; None shares the run's order (``shared_order``).
    seed : int
        The run seed: the per-epoch permutations :math:`P_e`.
    batch_size, momentum, weight_decay : int, float, float
        128, 0.9 and 5e-4 in the reference.
    device : str
        ``"cpu"`` or ``"cuda"``.
    route : {"auto", "compiled", "torch"}
        How the steps are computed (module docstring, "Routes"): ``"auto"`` (default) is
        ``"compiled"`` on the CPU and ``"torch"`` on any other device; either can be forced
        (``"compiled"`` only on the CPU).
    threads : int, optional
        Threads of the compiled route, each training a contiguous chunk of at least 64 models
        (default ``torch.get_num_threads()``); no number depends on it.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        weights: Sequence[torch.Tensor],
        biases: Sequence[torch.Tensor],
        wmasks: Sequence[torch.Tensor],
        bmasks: Sequence[torch.Tensor] | None = None,
        *,
        lr: float | Sequence[float] = 0.05,
        schedule: str | Sequence[str] = "cosine",
        epochs: int = 50,
        order_seeds: Sequence[int] | None = None,
        seed: int = 0,
        batch_size: int = 128,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        device: str | torch.device = "cpu",
        route: str = "auto",
        threads: int | None = None,
    ):
        dev = torch.device(device)
        self.device = dev
        if route not in ROUTES:
            raise UnknownNameError("route", route, ROUTES)
        if route == "compiled" and dev.type != "cpu":
            raise MaskValidationError(f"the compiled route runs on the CPU, not on {dev}")
        #: ``"compiled"`` or ``"torch"``: the route the steps take (``route="auto"`` resolved).
        self.route = route if route != "auto" else ("compiled" if dev.type == "cpu" else "torch")
        #: Threads of the compiled route (each with at least 64 models).
        self.threads = max(1, int(torch.get_num_threads() if threads is None else threads))
        self.x = x.to(dev, torch.float32)
        self._xt = self.x.T.contiguous()  # [d_0, N]
        self.y = y.to(dev, torch.float32).reshape(-1)
        self.n = len(self.x)
        if batch_size > self.n:
            raise MaskValidationError(f"batch_size {batch_size} exceeds the {self.n} points")
        self.B = int(weights[0].shape[0])
        self.w = [w.to(dev, torch.float32).clone() for w in weights]
        self.b = [b.to(dev, torch.float32).clone() for b in biases]
        self.wmask = [m.to(dev, torch.bool) for m in wmasks]
        self.bmask = (
            bias_masks_from_units(self.wmask)
            if bmasks is None
            else [m.to(dev, torch.bool) for m in bmasks]
        )
        for i, (w, m) in enumerate(zip(self.w, self.wmask, strict=True)):
            if w.shape != m.shape or self.b[i].shape != self.bmask[i].shape:
                raise MaskValidationError(f"layer {i}: masks do not match the weights' shapes")
        self.vw = [torch.zeros_like(w) for w in self.w]
        self.vb = [torch.zeros_like(b) for b in self.b]
        self.apply_masks()
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.steps_per_epoch = self.n // self.batch_size
        self.total_steps = self.epochs * self.steps_per_epoch
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.seed = int(seed)
        lr = [float(lr)] * self.B if isinstance(lr, int | float) else [float(v) for v in lr]
        sched = [schedule] * self.B if isinstance(schedule, str) else list(schedule)
        if len(lr) != self.B or len(sched) != self.B:
            raise MaskValidationError(f"lr and schedule need one value or {self.B}")
        tables = {s: lr_table(s, self.epochs) for s in dict.fromkeys(sched)}
        self._lr = torch.tensor([[lr[i] * f for f in tables[sched[i]]] for i in range(self.B)],
                                dtype=torch.float32, device=dev).T.contiguous()  # fmt: skip
        if order_seeds is None:
            a, c = [1] * self.B, [0] * self.B
        else:
            if len(order_seeds) != self.B:
                raise MaskValidationError(f"order_seeds needs {self.B} values")
            ac = [_coprime_step(self.n, torch.Generator().manual_seed(int(s))) for s in order_seeds]
            a, c = [v[0] for v in ac], [v[1] for v in ac]
        self._a = torch.tensor(a, dtype=torch.int64, device=dev)[:, None]
        self._c = torch.tensor(c, dtype=torch.int64, device=dev)[:, None]
        self._j = torch.arange(self.batch_size, dtype=torch.int64, device=dev)[None, :]
        self.step_count = 0
        #: Keep each step's unmasked weight gradients in ``dense_grads`` (RigL).
        self.record_grads = False
        self.dense_grads: list[torch.Tensor | None] = [None] * len(self.w)
        self._perm: torch.Tensor | None = None
        self._perm_epoch = -1
        self._ordered: tuple[np.ndarray, np.ndarray] | None = None
        self._ordered_epoch = -1

    # -- state ---------------------------------------------------------------------------------------
    def apply_masks(self) -> None:
        """Zero the weights, biases and momentum buffers outside the masks (call after changing
        ``wmask`` or ``bmask``)."""
        self._wmf = [m.float() for m in self.wmask]
        self._bmf = [m.float() for m in self.bmask]
        for i in range(len(self.w)):
            self.w[i].mul_(self.wmask[i])
            self.vw[i].mul_(self.wmask[i])
            self.b[i].mul_(self.bmask[i])
            self.vb[i].mul_(self.bmask[i])

    def reset_optimizer(self) -> None:
        """Zero the momentum buffers and restart the step count (and so the LR schedule)."""
        for v in (*self.vw, *self.vb):
            v.zero_()
        self.step_count = 0

    def state_dict(self) -> dict:
        """Weights, biases, momentum buffers, masks (CPU copies) and the step count: with the
        constructor's arguments, everything a resumed trainer needs (the data order and the
        learning rate are functions of the step)."""
        return {
            "w": [t.cpu() for t in self.w],
            "b": [t.cpu() for t in self.b],
            "vw": [t.cpu() for t in self.vw],
            "vb": [t.cpu() for t in self.vb],
            "wmask": [t.cpu() for t in self.wmask],
            "bmask": [t.cpu() for t in self.bmask],
            "step": self.step_count,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output (onto this trainer's device)."""
        for name in ("w", "b", "vw", "vb", "wmask", "bmask"):
            setattr(self, name, [t.to(self.device) for t in state[name]])
        self.apply_masks()
        self.step_count = int(state["step"])

    # -- one step --------------------------------------------------------------------------------------
    def _epoch_perm(self, epoch: int) -> torch.Tensor:
        """:math:`P_e`, the run's permutation of the points in epoch ``epoch`` (cached)."""
        if epoch != self._perm_epoch:
            g = seeded_generator(self.seed, "data-order", epoch)
            self._perm = torch.randperm(self.n, generator=g).to(self.device)
            self._perm_epoch = epoch
        return self._perm

    def _batch_index(self, step: int) -> torch.Tensor:
        epoch, k = divmod(step, self.steps_per_epoch)
        pos = (self._a * (self._j + k * self.batch_size) + self._c) % self.n
        return self._epoch_perm(epoch)[pos]

    def forward(self, xb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits ``[B, n]`` of inputs ``[B, d_0, n]`` (feature-major: one column per point),
        and every layer's input activations."""
        h, hs = xb, []
        for i, (w, b) in enumerate(zip(self.w, self.b, strict=True)):
            hs.append(h)
            h = torch.baddbmm(b.unsqueeze(2), w, h)
            if i < len(self.w) - 1:
                h = torch.relu_(h)
        return h.squeeze(1), hs

    def step(self) -> None:
        """One SGD step of every model on its next minibatch (by :attr:`route`)."""
        if self.route == "compiled":
            self._compiled_steps(1)
        else:
            self._torch_step()

    def _torch_step(self) -> None:
        idx = self._batch_index(self.step_count)
        xb = self._xt[:, idx].transpose(0, 1).contiguous()  # [B, d_0, n]
        s, hs = self.forward(xb)
        g = torch.sigmoid(s).sub_(self.y[idx]).div_(self.batch_size).unsqueeze(1)  # dℓ/ds
        lr = self._lr[min(self.step_count // self.steps_per_epoch, self.epochs - 1)]
        for i in range(len(self.w) - 1, -1, -1):
            h = hs[i]
            gw = torch.bmm(g, h.transpose(1, 2))
            if self.record_grads:  # the dense gradient (RigL's growth score)
                self.dense_grads[i] = gw.clone()
            gb = g.sum(2)
            if i > 0:  # relu's backward: zero where the unit's output was 0
                g = torch.ops.aten.threshold_backward(torch.bmm(self.w[i].transpose(1, 2), g), h, 0)
            self._sgd(self.w[i], self.vw[i], gw, self._wmf[i], lr[:, None, None])
            self._sgd(self.b[i], self.vb[i], gb, self._bmf[i], lr[:, None])
        self.step_count += 1

    def _sgd(self, p, v, grad, mask, lr) -> None:
        grad = grad.add_(p, alpha=self.weight_decay).mul_(mask)
        v.mul_(self.momentum).add_(grad)
        p.sub_(lr * v)

    def _compiled_steps(self, steps: int) -> None:
        """``steps`` steps by the numba kernel: one call per epoch touched, the models split
        into :attr:`threads` contiguous chunks run in threads (the kernel releases the GIL;
        models are independent, so the split changes no number)."""
        from ._ensemble_kernel import sgd_steps

        def arrays(tensors: list[torch.Tensor]) -> list:
            for i, t in enumerate(tensors):  # the kernel updates them in place
                if not t.is_contiguous() or t.dtype != torch.float32:
                    tensors[i] = t.to(torch.float32).contiguous()
            return [t.numpy() for t in tensors]

        per_model = [arrays(self.w), arrays(self.b), arrays(self.vw), arrays(self.vb),
                     arrays(self._wmf), arrays(self._bmf)]  # fmt: skip
        if self.record_grads:
            self.dense_grads = [torch.empty_like(w) for w in self.w]
            per_model.append([g.numpy() for g in self.dense_grads])
        else:
            per_model.append(per_model[0])  # not written
        per_model += [[self._a[:, 0].numpy()], [self._c[:, 0].numpy()]]
        mu, wd = np.float32(self.momentum), np.float32(self.weight_decay)
        n_chunks = max(1, min(self.threads, self.B // _MIN_MODELS_PER_THREAD))
        bounds = [self.B * t // n_chunks for t in range(n_chunks + 1)]
        chunks = [[tuple(v[lo:hi] for v in arrs) for arrs in per_model]
                  for lo, hi in pairwise(bounds)]  # fmt: skip
        while steps > 0:
            epoch, k = divmod(self.step_count, self.steps_per_epoch)
            n = min(steps, self.steps_per_epoch - k)
            if self._ordered_epoch != epoch:  # the data in the epoch's order P_e
                perm = self._epoch_perm(epoch)
                self._ordered = (self._xt[:, perm].contiguous().numpy(), self.y[perm].numpy())
                self._ordered_epoch = epoch
            lr = self._lr[min(epoch, self.epochs - 1)].numpy()

            def call(t: int, k=k, n=n, lr=lr) -> None:
                ws, bs, vws, vbs, wms, bms, gws, (a,), (c,) = chunks[t]
                sgd_steps(*self._ordered, a, c, lr[bounds[t] : bounds[t + 1]], k, n,
                          self.batch_size, ws, bs, vws, vbs, wms, bms, mu, wd, self.record_grads,
                          gws)  # fmt: skip

            if n_chunks == 1:
                call(0)
            else:
                list(_pool(n_chunks).map(call, range(n_chunks)))
            self.step_count += n
            steps -= n

    def run(
        self,
        steps: int | None = None,
        callback: Callable[[EnsembleTrainer], None] | None = None,
    ) -> EnsembleTrainer:
        """Take ``steps`` steps (default: to the end of the schedule); ``callback(self)`` after
        each (it may change the masks and call :meth:`apply_masks`)."""
        end = self.total_steps if steps is None else min(self.total_steps, self.step_count + steps)
        if self.route == "compiled" and callback is None:  # many steps per kernel call
            self._compiled_steps(max(0, end - self.step_count))
            return self
        while self.step_count < end:
            self.step()
            if callback is not None:
                callback(self)
        return self

    # -- evaluation ----------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, chunk_bytes: int = 256 * 2**20) -> _Stats:
        """Accuracy (logit > 0 vs label) and mean BCE loss of every model on all points."""
        widest = max(w.shape[1] for w in self.w)
        per_model = self.n * (widest + 2) * 4
        step = max(1, chunk_bytes // per_model)
        acc, loss = [], []
        for lo in range(0, self.B, step):
            hi = min(self.B, lo + step)
            h = self._xt.unsqueeze(0).expand(hi - lo, -1, -1)
            for i in range(len(self.w)):
                h = torch.baddbmm(self.b[i][lo:hi].unsqueeze(2), self.w[i][lo:hi], h)
                h = torch.relu(h) if i < len(self.w) - 1 else h
            s = h.squeeze(1)
            # Means accumulated in float64, then rounded to float32: a multi-threaded reduction
            # splits a (models, points) tensor differently for different batch sizes, and the
            # float64 sum's order error (~n·2⁻⁵³) vanishes in the float32 rounding, so a model's
            # numbers do not depend on the models evaluated beside it.
            acc.append(((s > 0).float() == self.y).double().mean(1).float())
            loss.append(torch.nn.functional.binary_cross_entropy_with_logits(
                s, self.y.expand_as(s), reduction="none").double().mean(1).float())  # fmt: skip
        return _Stats(torch.cat(acc).cpu(), torch.cat(loss).cpu())


def train_one(
    x: torch.Tensor,
    y: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    wmasks: Sequence[torch.Tensor],
    bmasks: Sequence[torch.Tensor],
    *,
    lr: float = 0.05,
    schedule: str = "cosine",
    epochs: int = 50,
    order_seed: int | None = None,
    seed: int = 0,
    batch_size: int = 128,
    steps: int | None = None,
) -> torch.nn.Module:
    """The one-model loop the ensemble replaces: ``nn.Sequential`` of Linear/ReLU,
    ``torch.optim.SGD(momentum=0.9, weight_decay=5e-4)``, ``BCEWithLogitsLoss``, masks re-applied
    after each step, the same data order as :class:`EnsembleTrainer` (model 0 of the given
    tensors, ``[1, ...]`` each). For benchmarks and tests."""
    from torch import nn

    layers: list[nn.Module] = []
    for i, w in enumerate(weights):
        lin = nn.Linear(w.shape[2], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(w[0] * wmasks[i][0])
            lin.bias.copy_(biases[i][0] * bmasks[i][0])
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    lins = [m for m in model if isinstance(m, nn.Linear)]
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    factors = lr_table(schedule, epochs)
    loss_fn = nn.BCEWithLogitsLoss()
    n = len(x)
    spe = n // batch_size
    if order_seed is None:
        a, c = 1, 0
    else:
        a, c = _coprime_step(n, torch.Generator().manual_seed(int(order_seed)))
    total = epochs * spe if steps is None else steps
    j = torch.arange(batch_size)
    perm, perm_epoch = None, -1
    yf = y.float().reshape(-1)
    for step in range(total):
        epoch, k = divmod(step, spe)
        if epoch != perm_epoch:
            perm = torch.randperm(n, generator=seeded_generator(seed, "data-order", epoch))
            perm_epoch = epoch
            for group in opt.param_groups:
                group["lr"] = lr * factors[min(epoch, epochs - 1)]
        idx = perm[(a * (j + k * batch_size) + c) % n]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]).squeeze(1), yf[idx])
        loss.backward()
        opt.step()
        with torch.no_grad():
            for i, lin in enumerate(lins):
                lin.weight.mul_(wmasks[i][0])
                lin.bias.mul_(bmasks[i][0])
    return model
