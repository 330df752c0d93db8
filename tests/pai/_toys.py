"""Tiny models and minibatches shared by the PaI tests (seeded, CPU, milliseconds)."""

from __future__ import annotations

import itertools

import torch
from torch import nn


class ConvNet(nn.Module):
    """conv(3->8, 3x3) + BN + ReLU + conv(8->8, 3x3) + pool + linear(8->5): three maskable layers."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))


def conv_net(seed: int = 0) -> ConvNet:
    g = torch.Generator().manual_seed(seed)
    net = ConvNet()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return net


def conv_batches(n: int = 2, seed: int = 1, size: int = 6):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 3, 6, 6, generator=g), torch.randint(0, 5, (size,), generator=g))
        for _ in range(n)
    ]


def mlp(dims, seed: int = 0, bias: bool = False) -> nn.Sequential:
    """ReLU MLP with Kaiming-normal (fan-in) weights drawn from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        lin = nn.Linear(a, b, bias=bias)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=g) * (2 / a) ** 0.5)
            if bias:
                lin.bias.copy_(torch.randn(b, generator=g) * 0.1)
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def mlp_batches(d_in: int, n_classes: int, n: int = 1, size: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, d_in, generator=g), torch.randint(0, n_classes, (size,), generator=g))
        for _ in range(n)
    ]
