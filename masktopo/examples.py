"""Embedded example networks: layer shapes, ERK layer densities and random mask sets.

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

from .errors import MaskValidationError, UnknownNameError

__all__ = [
    "DISTRIBUTIONS",
    "demo_maskset",
    "erk_densities",
    "layer_densities",
    "random_maskset",
    "resnet18_cifar_shapes",
    "resnet50_imagenet_shapes",
]

#: Names of the layer-density distributions :func:`random_maskset` accepts.
DISTRIBUTIONS = ("erk", "uniform")

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


def _check_density(density: float) -> float:
    density = float(density)
    if not 0.0 < density <= 1.0:
        raise MaskValidationError(f"density must be in (0, 1], got {density!r}")
    return density


def _check_shapes(shapes: Shapes) -> dict[str, tuple[int, ...]]:
    if not shapes:
        raise MaskValidationError("no layer shapes given")
    out = {}
    for name, shape in shapes.items():
        shape = tuple(int(s) for s in shape)
        if not shape or any(s <= 0 for s in shape):
            raise MaskValidationError(f"layer {name!r}: shape {shape} has no entries")
        out[name] = shape
    return out


def erk_densities(shapes: Shapes, density: float, *, power_scale: float = 1.0) -> dict[str, float]:
    r"""Per-layer densities of the Erdős–Rényi-Kernel (ERK) distribution at a global density.

    RigL's algorithm (Evci et al. 2020; the same in ITOP, GraNet and rigl-torch): each layer gets
    the raw score :math:`r_l = (\sum \text{dims}) / (\prod \text{dims})`, raised to
    ``power_scale``, and density :math:`d_l = \varepsilon r_l` with one :math:`\varepsilon` for all
    layers such that the kept count matches the global density:

    .. math::
        \sum_{l \notin \mathcal{D}} \varepsilon r_l N_l
        = D \sum_l N_l - \sum_{l \in \mathcal{D}} N_l .

    While some layer would get :math:`\varepsilon r_l > 1`, the layer(s) with the largest score move
    to the dense set :math:`\mathcal{D}` (density 1) and :math:`\varepsilon` is solved again.

    Parameters
    ----------
    shapes : Mapping[str, tuple[int, ...]]
        Layer name -> weight shape (any number of dimensions: ``[out, in]``, ``[out, in, kh, kw]``).
    density : float
        Global density ``D`` in (0, 1]: kept entries over all entries of all layers.
    power_scale : float, optional
        Exponent applied to the raw scores (RigL's ``erk_power_scale``); 1 is ERK, 0 is uniform.

    Returns
    -------
    dict[str, float]
        Layer name -> density in (0, 1], in the order of ``shapes``. ``sum(d_l * N_l)`` equals
        ``density * sum(N_l)`` up to floating-point rounding.

    Raises
    ------
    MaskValidationError
        On a density outside (0, 1] or an empty shape.

    Examples
    --------
    >>> d = erk_densities({"a": (4, 4), "b": (100, 100)}, 0.5)
    >>> d["a"]
    1.0
    >>> round(d["b"], 6)   # (0.5 * 10016 - 16) / 10000
    0.4992
    """
    shapes = _check_shapes(shapes)
    density = _check_density(density)
    numel = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: (sum(s) / numel[n]) ** power_scale for n, s in shapes.items()}
    total = math.fsum(numel.values())
    dense: set[str] = set()
    eps = 0.0
    while len(dense) < len(shapes):
        sparse = [n for n in shapes if n not in dense]
        divisor = math.fsum(raw[n] * numel[n] for n in sparse)
        rhs = density * total - math.fsum(numel[n] for n in dense)
        eps = rhs / divisor
        top = max(raw[n] for n in sparse)
        if eps * top <= 1.0:
            break
        # eps only grows as layers go dense, so every layer over 1 now stays over 1: moving the
        # largest-score layers one round at a time (as RigL does) ends in the same dense set.
        dense.update(n for n in sparse if raw[n] == top)
    return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}


def layer_densities(shapes: Shapes, density: float, distribution: str = "erk") -> dict[str, float]:
    """Per-layer densities of a named distribution: ``"erk"`` or ``"uniform"`` (every layer at D).

    Raises
    ------
    UnknownNameError
        On a distribution other than those in :data:`DISTRIBUTIONS`.
    """
    if distribution == "erk":
        return erk_densities(shapes, density)
    if distribution == "uniform":
        shapes = _check_shapes(shapes)
        density = _check_density(density)
        return dict.fromkeys(shapes, density)
    raise UnknownNameError("layer-density distribution", distribution, DISTRIBUTIONS)


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
    distribution : {"erk", "uniform"}, optional
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

    from .masks import MaskSet

    densities = layer_densities(shapes, density, distribution)
    shapes = _check_shapes(shapes)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    masks, ws = {}, {}
    for name, shape in shapes.items():
        n = math.prod(shape)
        k = min(n, round(densities[name] * n))
        flat = torch.zeros(n, dtype=torch.bool)
        flat[torch.from_numpy(rng.choice(n, size=k, replace=False))] = True
        masks[name] = flat.reshape(shape)
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
