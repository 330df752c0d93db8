"""Embedded example networks: layer shapes, ERK layer densities and random mask sets.

The layer-density distributions (:func:`erk_densities`, :func:`layer_densities` and
:data:`DISTRIBUTIONS`) live in :mod:`masktopo.pai.densities` and are re-exported here.

Nothing here downloads anything: the layer shapes of two standard networks are written out, and
:func:`random_maskset` draws a seeded random mask set at a given density, so that the quick start,
the benchmarks and the tests have realistic masks on a fresh install.

Shapes are in PyTorch orientation (``[out, in]`` for a linear layer, ``[out, in, kh, kw]`` for a
convolution), in the order ``named_parameters()`` yields them.

Examples
--------
>>> from masktopo import examples
>>> shapes = examples.resnet18_cifar_shapes()
>>> len(shapes), shapes["conv1.weight"]
(21, (64, 3, 3, 3))
>>> d = examples.erk_densities(shapes, 0.05)
>>> ms = examples.random_maskset(shapes, 0.05, weights=False)
>>> ms.nnz("linear.weight") == round(d["linear.weight"] * 512 * 10)
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .pai.densities import DISTRIBUTIONS, erk_densities, layer_densities
from .pai.densities import check_shapes as _check_shapes

__all__ = [
    "DISTRIBUTIONS",
    "demo_maskset",
    "erk_densities",
    "layer_densities",
    "random_maskset",
    "resnet18_cifar_shapes",
    "resnet50_imagenet_shapes",
]

Shapes = Mapping[str, tuple[int, ...]]


def resnet18_cifar_shapes() -> dict[str, tuple[int, ...]]:
    """Weight shapes of the CIFAR ResNet-18 (10 classes) used by the sparse-training literature.

    The ``kuangliu/pytorch-cifar`` layout that RigL-torch, ITOP and GraNet train: a 3x3 stem
    ``conv1`` (3 -> 64, no max-pool), four stages of two basic blocks (64, 128, 256, 512 channels),
    a 1x1 ``shortcut.0`` convolution in the first block of stages 2-4, and ``linear`` 512 -> 10.

    Returns
    -------
    dict[str, tuple[int, ...]]
        21 layers: 17 3x3 convolutions, 3 1x1 shortcuts and the classifier, in parameter order.
    """
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 3, 3)}
    in_planes = 64
    for stage, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            shapes[f"{prefix}.conv1.weight"] = (planes, in_planes, 3, 3)
            shapes[f"{prefix}.conv2.weight"] = (planes, planes, 3, 3)
            if in_planes != planes:
                shapes[f"{prefix}.shortcut.0.weight"] = (planes, in_planes, 1, 1)
            in_planes = planes
    shapes["linear.weight"] = (10, 512)
    return shapes


def resnet50_imagenet_shapes() -> dict[str, tuple[int, ...]]:
    """Weight shapes of torchvision's ImageNet ResNet-50 (1000 classes).

    A 7x7 stem ``conv1`` (3 -> 64), bottleneck stages of 3, 4, 6 and 3 blocks (widths 64, 128, 256,
    512, expansion 4), a 1x1 ``downsample.0`` convolution in the first block of each stage, and
    ``fc`` 2048 -> 1000.

    Returns
    -------
    dict[str, tuple[int, ...]]
        54 layers: the stem, 48 bottleneck convolutions, 4 downsamples and the classifier.
    """
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}
    in_planes = 64
    for stage, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
        out_planes = 4 * width
        for block in range(blocks):
            prefix = f"layer{stage}.{block}"
            shapes[f"{prefix}.conv1.weight"] = (width, in_planes, 1, 1)
            shapes[f"{prefix}.conv2.weight"] = (width, width, 3, 3)
            shapes[f"{prefix}.conv3.weight"] = (out_planes, width, 1, 1)
            if block == 0:
                shapes[f"{prefix}.downsample.0.weight"] = (out_planes, in_planes, 1, 1)
            in_planes = out_planes
    shapes["fc.weight"] = (1000, 2048)
    return shapes


def random_maskset(
    shapes: Shapes,
    density: float,
    *,
    distribution: str = "erk",
    weights: bool = True,
    seed: int = 0,
):
    """A seeded random mask set with exactly ``round(d_l * N_l)`` kept entries per layer.

    The layer densities ``d_l`` come from :func:`layer_densities`; each layer keeps a uniformly
    random subset of exactly that many positions, drawn without replacement from a
    ``numpy.random.Generator`` seeded with ``seed`` (index sampling: memory is proportional to the
    kept count, not the layer size). Weights, when asked for, are Kaiming-normal (fan-in, gain
    √2: standard deviation ``sqrt(2 / fan_in)`` with ``fan_in = prod(shape[1:])``) from a
    ``torch.Generator`` seeded with ``seed``, float32, and zero where the mask is False, as in a
    pruned network.

    Parameters
    ----------
    shapes : Mapping[str, tuple[int, ...]]
        Layer name -> weight shape, 2-D (linear) or 3-D to 5-D (conv).
    density : float
        Global density in (0, 1].
    distribution : {"erk", "er", "uniform"}, optional
        How the global density is spread over layers.
    weights : bool, optional
        Attach companion weights.
    seed : int, optional
        Seed of both generators; the same seed gives the same masks and weights.

    Returns
    -------
    MaskSet
        With ``meta`` recording the distribution, density and seed. A layer whose ``d_l * N_l``
        rounds to 0 keeps no entry.
    """
    import numpy as np
    import torch

    from .masks import MaskSet, attach_positions

    densities = layer_densities(shapes, density, distribution)
    shapes = _check_shapes(shapes)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    masks, ws = {}, {}
    for name, shape in shapes.items():
        n = math.prod(shape)
        k = min(n, round(densities[name] * n))
        pos = np.sort(rng.choice(n, size=k, replace=False))
        flat = torch.zeros(n, dtype=torch.bool)
        flat[torch.from_numpy(pos)] = True
        masks[name] = attach_positions(flat.reshape(shape), pos)  # the analysis skips a scan
        if weights:
            fan_in = math.prod(shape[1:])
            w = torch.randn(shape, generator=gen, dtype=torch.float32) * math.sqrt(2.0 / fan_in)
            ws[name] = w.masked_fill_(~masks[name], 0.0)
    meta = {
        "source": "masktopo.examples.random_maskset",
        "distribution": distribution,
        "density": float(density),
        "seed": int(seed),
    }
    return MaskSet(masks, weights=ws if weights else None, meta=meta)


def demo_maskset():
    """The quick start's mask set: CIFAR ResNet-18, ERK at density 0.05, with weights, seed 0."""
    ms = random_maskset(resnet18_cifar_shapes(), 0.05, distribution="erk", weights=True, seed=0)
    ms.meta["model"] = "resnet18_cifar"
    return ms
