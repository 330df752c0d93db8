"""A minimal training harness for the sparsifier tests: real zoo models, real optimizer steps on
seeded random minibatches (the loop's order: step or skip, apply, update)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from masktopo.trainer.config import TrainConfig, resolve
from masktopo.trainer.masking import Masking
from masktopo.trainer.methods import make_sparsifier
from masktopo.zoo import get_model, maskable_parameters

IN_SHAPES = {"mlpnet": (1, 28, 28), "lenet300": (1, 28, 28), "lenet5": (1, 28, 28),
             "resnet20": (3, 32, 32)}  # fmt: skip


def batch(step: int, in_shape, n: int = 8, classes: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(1000 * seed + step)
    return torch.randn(n, *in_shape, generator=g), torch.randint(0, classes, (n,), generator=g)


@dataclass
class Run:
    cfg: TrainConfig
    model: torch.nn.Module
    masking: Masking
    optimizer: torch.optim.Optimizer
    sparsifier: object
    total_steps: int
    events: list = field(default_factory=list)
    step: int = 0
    before_update: object = None  # called with the run right before sparsifier.update

    @property
    def in_shape(self):
        return IN_SHAPES[self.cfg.model]

    def record(self, kind, **scalars):
        masks = {n: m.clone() for n, m in self.masking.masks.items()}
        weights = {n: p.detach().clone() for n, p in self.masking.params.items()}
        self.events.append({"step": self.step, "kind": kind, "masks": masks, "weights": weights,
                            "nnz": self.masking.nnz(), **scalars})  # fmt: skip

    def train(self, until: int | None = None) -> Run:
        until = self.total_steps if until is None else until
        while self.step < until:
            x, y = batch(self.step, self.in_shape)
            self.optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(self.model(x), y).backward()
            if not self.sparsifier.skip_step(self.step):
                self.optimizer.step()
            self.masking.apply(self.optimizer)
            if self.before_update is not None:
                self.before_update(self)
            self.sparsifier.update(self.step, self.masking, self.optimizer, self.record)
            self.step += 1
        return self


def make_run(method: str, *, model: str = "mlpnet", total_steps: int = 40, optimizer: str = "sgd",
             seed: int = 0, **fields) -> Run:  # fmt: skip
    fields.setdefault("density", 0.1 if method != "dense" else 1.0)
    cfg = resolve(TrainConfig(method=method, model=model, seed=seed, optimizer=optimizer, **fields))
    net = get_model(model, generator=torch.Generator().manual_seed(seed))
    maskable = maskable_parameters(net, first_dense=cfg.first_dense, last_dense=cfg.last_dense)
    sp = make_sparsifier(cfg, steps_per_epoch=total_steps, total_steps=total_steps, device="cpu")
    masks, weights = sp.init_masks(net, maskable, torch.Generator().manual_seed(seed + 1))
    if weights:
        with torch.no_grad():
            for n, w in weights.items():
                maskable[n].copy_(w)
    masking = Masking(net, masks, mask_adam=cfg.mask_adam)
    if optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                              weight_decay=5e-4)  # fmt: skip
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    return Run(cfg, net, masking, opt, sp, total_steps)
