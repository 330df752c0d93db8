"""Tiny models, weights and candidate sources shared by the PAGS tests (no zoo/pai needed)."""

from __future__ import annotations

import torch

from masktopo.masks import MaskSet
from masktopo.pags.sampling import generators

SHAPES = {"conv.weight": (8, 3, 3, 3), "fc1.weight": (24, 72), "fc2.weight": (10, 24)}


def theta(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=g) * 0.3 for n, s in SHAPES.items()}


def global_topk(scores: dict[str, torch.Tensor], density: float) -> MaskSet:
    """Global top-k of scores at ``density`` (exact total count; per-layer counts drift)."""
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    k = round(density * flat.numel())
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[torch.topk(flat, k).indices] = True
    out, start = {}, 0
    for n, s in scores.items():
        out[n] = keep[start : start + s.numel()].reshape(s.shape)
        start += s.numel()
    return MaskSet(out)


class NoisyMagnitude:
    """A stub 'rescore' source: |θ| + noise from the generators of (seed, t), global top-k."""

    def __init__(self, weights, density: float, seed: int, noise: float = 0.3):
        self.weights, self.density, self.seed, self.noise = weights, density, seed, noise

    def __call__(self, t: int) -> MaskSet:
        g, _ = generators(self.seed, t)
        scores = {
            n: w.abs() + self.noise * torch.randn(w.shape, generator=g)
            for n, w in self.weights.items()
        }
        return global_topk(scores, self.density)


def base_mask(weights, density: float) -> MaskSet:
    return global_topk({n: w.abs() for n, w in weights.items()}, density)


def dist_worker(rank: int, world: int, init_file: str, out: str, kwargs: dict) -> None:
    """One torch.multiprocessing process of the distributed test (gloo on CPU)."""
    import pickle

    import torch.distributed as dist

    from masktopo.pags import PagsConfig, run_pags

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        w = theta(0)
        base = base_mask(w, 0.3)
        cfg = PagsConfig(**kwargs)
        r = run_pags(base, w, NoisyMagnitude(w, 0.3, cfg.seed), cfg, out=out)
        with open(f"{out}.rank{rank}.pkl", "wb") as f:
            pickle.dump({n: r.best[n] for n in r.best}, f)
    finally:
        dist.destroy_process_group()
