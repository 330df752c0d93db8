"""BatchNorm statistics re-estimated after pruning (the reference's ``recompute_bn_stats``).

Pruning changes the weights feeding every BatchNorm layer, so the running mean and variance
recorded in training no longer match; one pass over training data in train mode, with a
cumulative average (``momentum=None``), replaces them (methods-spec §5.3).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["has_batchnorm", "reestimate_bn"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer that tracks running statistics."""
    return any(isinstance(m, _BN) and m.track_running_stats for m in model.modules())


@torch.no_grad()
def reestimate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Reset every BatchNorm's running statistics and re-estimate them from ``batches`` (inputs
    only) as exact averages over the batches; returns the number of samples seen.

    The model's weights are unchanged and its train/eval mode restored. Without BatchNorm it
    does nothing (and returns 0).
    """
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not bns:
        return 0
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the mean over the batches
    was = model.training
    model.train()
    seen = 0
    try:
        for x in batches:
            model(x)
            seen += len(x)
    finally:
        for m, mom in saved:
            m.momentum = mom
        model.train(was)
    return seen
